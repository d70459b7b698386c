"""distill.loss=kd: a stage's train config gains the teacher's top-k over the stage's data; CE stages are untouched;
a teacher that cannot provide distributions is refused in one line."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest
from flax import linen as nn

from distill_jax.config import ConfigError
from distill_jax.data import kd_logits, shards
from distill_jax.distill import stage_kd
from distill_jax.models import family
from distill_jax.presets import demo_config
from distill_jax.training.run_setup import setup_run


@pytest.fixture(scope="module")
def hf_teacher(tmp_path_factory, demo_prepared) -> str:
    """A random tiny T5 over the demo's byte vocabulary, as an HF directory (a local teacher needs no training here)."""
    cfg = demo_config()
    cfg.data.train_dir = demo_prepared["train"]
    run = setup_run(cfg)
    params = nn.unbox(family.init_params(run.model_config, jax.random.key(3)))
    out = str(tmp_path_factory.mktemp("stage_kd") / "teacher_hf")
    family.save_hf(out, run.model_config, jax.tree.map(np.asarray, params), tokenizer_dir=None)
    return out


def test_ce_stages_are_untouched_and_kd_needs_a_local_teacher(demo_prepared, tmp_path):
    cfg = demo_config()
    cfg.data.train_dir = demo_prepared["test"]
    cfg.teacher.kind = "program"
    assert stage_kd.kd_teacher(cfg) == ""
    assert stage_kd.with_stage_logits(cfg, str(tmp_path)) is cfg and not os.listdir(tmp_path)
    cfg.distill.loss = "kd"
    with pytest.raises(ConfigError, match="set distill.kd_teacher"):
        stage_kd.kd_teacher(cfg)
    cfg.teacher.kind, cfg.teacher.checkpoint = "local", "/some/run"
    assert stage_kd.kd_teacher(cfg) == "/some/run"  # the annotating local teacher provides them
    cfg.kd.logits_dir = "/elsewhere"
    with pytest.raises(ConfigError, match="leave kd.logits_dir"):
        stage_kd.kd_teacher(cfg)
    cfg.distill.loss = "kl"
    with pytest.raises(ConfigError, match="distill.loss='kl'"):
        stage_kd.kd_teacher(cfg)


def test_kd_stage_trains_on_its_teachers_top_k(hf_teacher, demo_prepared, tmp_path):
    cfg = demo_config()
    cfg.data.train_dir = demo_prepared["test"]
    cfg.teacher.kind = "program"
    cfg.distill.loss, cfg.distill.kd_teacher = "kd", hf_teacher
    cfg.kd.top_k = 16
    stage = stage_kd.with_stage_logits(cfg, str(tmp_path))
    assert cfg.kd.logits_dir == ""  # the scheduler's config is not modified
    assert stage.kd.logits_dir == os.path.join(str(tmp_path), "kd_logits")
    store = kd_logits.StoredLogits.open(stage.kd.logits_dir)
    examples = [r for s in shards.open_domain_sources(cfg.data.train_dir).values() for r in s]
    assert store.k == 16 and len(store) == len(examples)
    assert all(len(store.get(e["id"])[2]) == len(e["targets"]) for e in examples)
    # A resumed stage finds its logits done and computes nothing again.
    again = stage_kd.with_stage_logits(cfg, str(tmp_path))
    meta = json.loads(open(os.path.join(again.kd.logits_dir, kd_logits.META_FILE)).read())
    assert meta["run"]["chunks_written"] == 0 and again.kd.logits_dir == stage.kd.logits_dir


@pytest.mark.slow  # two stages of a distill run (purchases, prepare, teacher logits, training, eval)
def test_distill_run_with_kd_stages(hf_teacher, tmp_path):
    from distill_jax.data.demo_corpus import write_demo_corpus
    from distill_jax.distill.scheduler import run_distillation
    from tests.distill.test_scheduler import _config

    corpus = write_demo_corpus(str(tmp_path / "corpus"), seed=0, num_train=800, num_test_per_domain=6)
    cfg = _config(corpus, methods="random", budget=60, loss="kd", kd_teacher=hf_teacher)
    workdir = str(tmp_path / "run")
    report = run_distillation(cfg, workdir)
    assert report["methods"]["random"]["phase"] == "done"
    for stage in range(2):
        stage_dir = os.path.join(workdir, "random", f"stage_{stage}")
        prepared = shards.load_manifest(os.path.join(stage_dir, "train_data"))["domains"].values()
        meta = json.loads(open(os.path.join(stage_dir, "kd_logits", kd_logits.META_FILE)).read())
        # The stage's cumulative data, every row with its teacher's top-k.
        assert meta["num_examples"] == sum(d["num_examples"] for d in prepared) > 0
    rows = [json.loads(line) for line in open(os.path.join(workdir, "random", "train", "metrics.jsonl"))]
    kd_rows = [r for r in rows if "train/kd" in r]
    assert kd_rows and all(r["train/kd_token_fraction"] == pytest.approx(1.0) for r in kd_rows)
