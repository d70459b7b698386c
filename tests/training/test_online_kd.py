"""Online KD: a frozen teacher on the student's mesh, its forward inside the jitted train step."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest

from distill_jax.config import DEFAULT_LOGICAL_AXIS_RULES, ConfigError
from distill_jax.models import family
from distill_jax.training import memory, trainer
from distill_jax.training.kd_setup import kd_mode, open_kd
from distill_jax.training.run_setup import setup_run
from distill_jax.training.train_state import create_train_state


def metric_rows(workdir: str, key: str) -> list[dict]:
    return [r for r in map(json.loads, open(os.path.join(workdir, "metrics.jsonl"))) if key in r]


def test_teacher_equal_to_the_students_init_gives_zero_kd_and_mfu_counts_its_forward(small_train_config, tmp_path):
    cfg = small_train_config(train__steps=4, train__log_every=2, train__checkpoint_every=4)
    cfg.optimizer.learning_rate = 0.0  # the student stays at its init: the teacher's very weights
    cfg.train.peak_flops_per_device = 1e12
    run = setup_run(cfg)
    init = create_train_state(run.model_config, run.tx, run.mesh, run.rules, cfg.seed)
    teacher_dir = str(tmp_path / "teacher_hf")
    family.save_hf(teacher_dir, run.model_config, jax.tree.map(np.asarray, init.params), tokenizer_dir=None)
    cfg.kd.teacher_dir = teacher_dir
    cfg.kd.alpha = 1.0
    # Its own rules: the teacher's weights sharded over the data axis, the student's replicated (mesh data=8).
    cfg.kd.teacher_logical_axis_rules = (("embed", "data"),) + DEFAULT_LOGICAL_AXIS_RULES
    result = trainer.train(cfg, str(tmp_path / "student"))
    rows = metric_rows(str(tmp_path / "student"), "train/kd")
    assert len(rows) == 2
    for row in rows:
        assert abs(row["train/kd"]) < 1e-5
        assert row["train/kd_token_fraction"] == pytest.approx(1.0)
        assert abs(row["train/loss"]) < 1e-5  # alpha 1: the loss is the KD term alone
        assert row["train/ce"] > 1.0  # ... while the untrained student's CE is large
    # MFU counts the student's training FLOPs plus the teacher's forward (a third of its training FLOPs).
    per_token = family.flops_per_token(run.model_config, cfg.data.max_input_len, cfg.data.max_target_len)
    flops_per_example = rows[-1]["perf/mfu"] * 1e12 * jax.device_count() / rows[-1]["perf/examples_per_s"]
    assert flops_per_example == pytest.approx(per_token * cfg.data.max_target_len * 4 / 3, rel=1e-3)
    assert result.step == 4
    # Its own sharding: every device holds an eighth of the teacher's matrices, while the student's are whole.
    teacher = open_kd(cfg, run.model_config.vocab_size, run.mesh).teacher
    whole = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(teacher.params))
    assert teacher.bytes_per_device() < whole / 4
    assert memory.per_device_bytes(run.abstract_state.params) == sum(
        x.size * x.dtype.itemsize for x in jax.tree.leaves(run.abstract_state.params)
    )
    assert memory.resident_line(10 * 2**20, teacher.bytes_per_device()).endswith(
        "(frozen: no gradients, no optimizer state)"
    )


def test_logits_dir_and_teacher_dir_are_exclusive(small_train_config, tmp_path):
    cfg = small_train_config()
    assert kd_mode(cfg) == ""
    cfg.kd.teacher_dir = str(tmp_path)
    assert kd_mode(cfg) == "online"
    cfg.kd.logits_dir = str(tmp_path)
    with pytest.raises(ConfigError, match="exclusive"):
        kd_mode(cfg)
    cfg.kd.logits_dir = ""
    with pytest.raises(ConfigError, match="neither a training workdir"):
        trainer.train(cfg, str(tmp_path / "never"))
    assert not os.path.exists(tmp_path / "never")  # refused before the workdir exists


def test_online_kd_from_a_trained_run_trains(kd_teacher, small_train_config, tmp_path):
    cfg = small_train_config(train__steps=16, train__log_every=4, train__checkpoint_every=16, optimizer__warmup_steps=0)
    cfg.seed = 1  # the student starts away from the teacher's initialisation
    cfg.optimizer.learning_rate = 3e-3
    cfg.train.grad_accum_steps = 2  # the teacher runs per microbatch
    cfg.kd.teacher_dir = kd_teacher
    cfg.kd.alpha = 0.9
    cfg.kd.loss = "jsd"
    cfg.kd.temperature = cfg.kd.temperature_end = 2.0
    workdir = str(tmp_path / "student")
    trainer.train(cfg, workdir)
    kd = [r["train/kd"] for r in metric_rows(workdir, "train/kd")]
    assert len(kd) == 4 and all(np.isfinite(kd))
    assert kd[-1] < 0.8 * kd[0], kd
