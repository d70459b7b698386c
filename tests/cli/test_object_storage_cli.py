"""The command line on object storage (real servers: moto for s3://, fake-gcs-server for gs://): refused schemes,
and a run's whole life on each (prepare, train, resume, eval, generate, export-hf)."""

import json
import os

import jax
import numpy as np
import pytest
import safetensors.numpy
from helpers import REPO, cli

from distill_jax import storage
from distill_jax.training.checkpoints import Checkpointer
from distill_jax.training.run_setup import setup_run

CONFIG = os.path.join(REPO, "distill_jax", "presets.py") + ":demo"  # absolute: the CLI runs in tmp_path


@pytest.mark.parametrize("subcommand", ["train", "prepare"])
def test_an_unsupported_scheme_is_a_one_line_usage_error_and_writes_nothing(subcommand, demo_prepared, tmp_path):
    if subcommand == "train":
        args = [f"--config={CONFIG}", f"--config.data.train_dir={demo_prepared['train']}"]
        args.append("--workdir=hdfs://namenode/runs/r1")
    else:
        args = [f"--input={tmp_path / 'x.jsonl'}", "--output_dir=hdfs://namenode/data"]
        (tmp_path / "x.jsonl").write_text(json.dumps({"id": "1", "domain": "d", "input": "a", "target": "b"}) + "\n")
    out = cli(subcommand, *args, cwd=str(tmp_path))
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert "unsupported storage scheme hdfs://" in out.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "hdfs:").exists()


def _overrides(train_dir, eval_dir, steps):
    return [
        f"--config={CONFIG}",
        f"--config.data.train_dir={train_dir}",
        f"--config.data.eval_dir={eval_dir}",
        "--config.data.max_input_len=64",
        "--config.data.max_target_len=96",
        "--config.train.batch_size=16",
        f"--config.train.steps={steps}",
        "--config.train.log_every=4",
        "--config.train.checkpoint_every=4",
        "--config.eval.every=0",
        "--config.eval.max_examples_per_domain=8",
        "--config.eval.decode_examples_per_domain=2",
        "--config.eval.max_decode_len=16",
    ]


def _params(cfg, checkpoints):
    ckpt = Checkpointer(checkpoints)
    state, _, _ = ckpt.restore(ckpt.latest_step(), setup_run(cfg).abstract_state)
    ckpt.close()
    return jax.tree.map(np.asarray, state.params)


@pytest.mark.slow  # ~2-3 min on 2 cores each: prepare x2, train x3, eval, generate, export-hf as processes
@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_prepare_train_resume_eval_generate_export_all_on_object_storage_equal_a_local_run(scheme, request, tmp_path):
    from distill_jax.data.demo_corpus import write_demo_corpus

    server = request.getfixturevalue("s3_server" if scheme == "s3" else "gcs_emulator")
    bucket = request.getfixturevalue("s3_bucket" if scheme == "s3" else "gcs_bucket")
    env = {**server.env, "DISTILL_JAX_STAGING_DIR": str(tmp_path / "staging")}
    files = write_demo_corpus(str(tmp_path / "corpus"), seed=0, num_train=800, num_test_per_domain=8)
    data = f"{scheme}://{bucket}/data"
    for split, path in files.items():
        out = cli("prepare", f"--input={path}", f"--output_dir={data}/{split}", f"--config={CONFIG}", env=env)
        assert out.returncode == 0, out.stderr[-3000:]
    assert "data/train/manifest.json" in server.keys(bucket)

    run = f"{scheme}://{bucket}/runs/r1"
    first = cli(
        "train", f"--workdir={run}", *_overrides(f"{data}/train", f"{data}/test", 8), env=env, cwd=str(tmp_path)
    )
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = cli(
        "train", f"--workdir={run}", *_overrides(f"{data}/train", f"{data}/test", 12), env=env, cwd=str(tmp_path)
    )
    assert resumed.returncode == 0 and "Resumed from" in resumed.stderr, resumed.stderr[-3000:]

    # The same run from local copies of the shards, uninterrupted: bit-for-bit the same parameters.
    local = tmp_path / "local"
    for split in files:
        storage.download_tree(f"{data}/{split}", local / "data" / split)
    straight = cli(
        "train",
        f"--workdir={local / 'run'}",
        *_overrides(local / "data" / "train", local / "data" / "test", 12),
        env=env,
    )
    assert straight.returncode == 0, straight.stderr[-3000:]
    cfg = __import__("ml_collections").ConfigDict(json.loads(storage.read_text(f"{run}/config.json")))
    jax.tree.map(
        np.testing.assert_array_equal,
        _params(cfg, f"{run}/checkpoints"),
        _params(cfg, str(local / "run" / "checkpoints")),
    )
    rows = [json.loads(line) for line in storage.read_text(f"{run}/metrics.jsonl").splitlines()]
    assert [r["step"] for r in rows if "train/loss" in r] == [4, 8, 12]

    evaluated = cli("eval", f"--workdir={run}", env=env, cwd=str(tmp_path))
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    report = json.loads(storage.read_text(f"{run}/eval/step_12/report.json"))
    assert report["step"] == 12 and report["workdir"] == run
    assert storage.exists(f"{run}/eval/step_12/predictions.jsonl")

    gen = f"{scheme}://{bucket}/generate/r1"
    generated = cli(
        "generate", f"--checkpoint={run}", f"--data={data}/test", f"--output_dir={gen}", env=env, cwd=str(tmp_path)
    )
    assert generated.returncode == 0, generated.stderr[-3000:]
    predictions = [json.loads(line) for line in storage.read_text(f"{gen}/predictions.jsonl").splitlines()]
    assert len(predictions) == 80 and json.loads(storage.read_text(f"{gen}/summary.json"))["output_dir"] == gen

    export = f"{scheme}://{bucket}/export/r1"
    exported = cli("export-hf", f"--workdir={run}", f"--out={export}", env=env, cwd=str(tmp_path))
    assert exported.returncode == 0, exported.stderr[-3000:]
    keys = server.keys(bucket, "export/r1/")
    assert {"export/r1/config.json", "export/r1/model.safetensors"} <= set(keys)
    storage.download_tree(export, tmp_path / "hf")
    assert safetensors.numpy.load_file(str(tmp_path / "hf" / "model.safetensors"))
    assert os.listdir(tmp_path) and not (tmp_path / f"{scheme}:").exists()
