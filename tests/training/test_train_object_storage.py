"""A training run whose workdir is s3:// (a real moto server): everything lands in the bucket, nothing locally.

Resume from s3, eval and export-hf: tests/cli/test_object_storage_cli.py (slow).
"""

import json

from distill_jax import storage
from distill_jax.training.trainer import train


def test_a_run_on_s3_keeps_its_whole_workdir_in_the_bucket(
    s3_server, s3_bucket, small_train_config, tmp_path, monkeypatch
):
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    workdir = f"s3://{s3_bucket}/runs/r1"
    train(small_train_config(train__steps=8), workdir)
    keys = s3_server.keys(s3_bucket)
    assert {"runs/r1/config.json", "runs/r1/metrics.jsonl", "runs/r1/checkpoints/retention.json"} <= set(keys)
    assert "runs/r1/checkpoints/8/commit_success.txt" in keys
    assert any(k.startswith("runs/r1/tensorboard/events.out.tfevents") for k in keys)
    assert list((tmp_path / "cwd").iterdir()) == []  # Nothing written to a local `s3:` directory.
    rows = [json.loads(line) for line in storage.read_text(f"{workdir}/metrics.jsonl").splitlines()]
    assert [r["step"] for r in rows if "train/loss" in r] == [4, 8]
