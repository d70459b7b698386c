"""A training run whose workdir is s3:// (moto) or gs:// (fake-gcs-server): everything lands in the bucket,
nothing locally.

Resume from s3, eval and export-hf: tests/cli/test_object_storage_cli.py (slow).
"""

import json

import pytest

from distill_jax import storage
from distill_jax.training.trainer import train


@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_a_run_on_object_storage_keeps_its_whole_workdir_in_the_bucket(
    scheme, request, small_train_config, tmp_path, monkeypatch
):
    server = request.getfixturevalue("s3_server" if scheme == "s3" else "gcs_emulator")
    bucket = request.getfixturevalue("s3_bucket" if scheme == "s3" else "gcs_bucket")
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    workdir = f"{scheme}://{bucket}/runs/r1"
    train(small_train_config(train__steps=8), workdir)
    keys = server.keys(bucket)
    assert {"runs/r1/config.json", "runs/r1/metrics.jsonl", "runs/r1/checkpoints/retention.json"} <= set(keys)
    assert "runs/r1/checkpoints/8/commit_success.txt" in keys
    assert any(k.startswith("runs/r1/tensorboard/events.out.tfevents") for k in keys)
    assert list((tmp_path / "cwd").iterdir()) == []  # Nothing written to a local `s3:` or `gs:` directory.
    rows = [json.loads(line) for line in storage.read_text(f"{workdir}/metrics.jsonl").splitlines()]
    assert [r["step"] for r in rows if "train/loss" in r] == [4, 8]


def test_a_lora_run_on_s3_writes_its_frozen_base_once_with_a_marker_and_resumes(
    s3_server, s3_bucket, small_train_config, tmp_path
):
    def lora(steps):
        cfg = small_train_config(train__steps=steps, train__checkpoint_every=2)
        cfg.model.lora_rank, cfg.model.lora_targets, cfg.model.lora_dropout = 4, "q,v,wo", 0.0
        return cfg

    workdir = f"s3://{s3_bucket}/runs/lora"
    train(lora(2), workdir)
    assert "runs/lora/checkpoints/frozen_base/commit_success.txt" in s3_server.keys(s3_bucket)
    assert train(lora(4), workdir).step == 4  # restores adapters + the frozen base from the bucket
