"""Fixtures shared by the word-level KD tests (test_teacher_logits.py, test_kd_training.py)."""

from __future__ import annotations

import pytest

KD_TOP_K = 8


@pytest.fixture(scope="session")
def kd_teacher(tmp_path_factory, demo_prepared) -> str:
    """A tiny teacher trained a few steps at a high LR on the demo corpus (its distributions are not the init's)."""
    from distill_jax.training import trainer
    from tests.conftest import _small_train_config

    workdir = str(tmp_path_factory.mktemp("kd_teacher") / "run")
    cfg = _small_train_config(
        demo_prepared["train"],
        train__steps=8,
        train__checkpoint_every=8,
        optimizer__warmup_steps=0,
        optimizer__learning_rate=3e-3,
    )
    trainer.train(cfg, workdir)
    return workdir


@pytest.fixture(scope="session")
def kd_stored(tmp_path_factory, kd_teacher, demo_prepared) -> str:
    """The teacher's top-8 over the demo training data (a finished teacher-logits output directory)."""
    from distill_jax.training.teacher_logits import teacher_logits

    out = str(tmp_path_factory.mktemp("kd_logits") / "logits")
    teacher_logits(kd_teacher, demo_prepared["train"], out, top_k=KD_TOP_K, batch_size=32)
    return out
