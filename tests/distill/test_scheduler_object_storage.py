"""The BalDistill stage scheduler with its workdir on s3:// (moto's S3 server) or gs:// (fake-gcs-server;
tests/conftest.py): state, ledger, purchases, stage shards, checkpoints and the report land in the bucket and
nothing locally, and (s3) a run killed during a stage resumes from the bucket alone without paying for
anything twice."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from distill_jax import atomic, storage
from distill_jax.data.demo_corpus import write_demo_corpus

_RUN = """
import sys
sys.path.insert(0, {testdir!r})
from test_scheduler import _config
from distill_jax.distill.scheduler import run_distillation
run_distillation(_config({corpus!r}, methods="random", budget=60), {workdir!r})
"""


def _start(corpus, workdir, env, cwd):
    env = {**os.environ, **env, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    code = _RUN.format(testdir=os.path.dirname(__file__), corpus=corpus, workdir=workdir)
    return subprocess.Popen(
        [sys.executable, "-c", code], env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def _finish(proc):
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err.decode()[-3000:]


def _sent(ledger_url):
    return [r for r in atomic.read_jsonl(ledger_url) if r["op"] == "sent"]


def _check_a_finished_run(server, bucket: str, prefix: str, cwd) -> dict:
    """Everything of a finished 2-stage random run under bucket/prefix, nothing in cwd; its final state."""
    url = f"{server.scheme}://{bucket}/{prefix}"
    keys = set(server.keys(bucket, f"{prefix}/"))
    for name in (
        "config.json",
        "eval_rows.jsonl",
        "eval_data/manifest.json",
        "report.json",
        "report.md",
        "distill_curves.png",
        "domain_accuracy.png",
        "random/scheduler_state.json",
        "random/ledger.jsonl",
        "random/stage_0/purchased.jsonl",
        "random/stage_1/train_data/manifest.json",
        "random/stage_1/eval_predictions.jsonl",
        "random/train/config.json",
        "random/train/metrics.jsonl",
    ):
        assert f"{prefix}/{name}" in keys, name
    assert any(k.startswith(f"{prefix}/random/train/checkpoints/") for k in keys)
    assert not any(".d/" in k for k in keys)  # the ledger's segments were compacted at close
    assert list(cwd.iterdir()) == []  # nothing written locally (before this, a local "s3:" directory)
    state = json.loads(storage.read_text(f"{url}/random/scheduler_state.json"))
    assert state["phase"] == "done" and state["ledger"]["spent"] == 60
    report = json.loads(storage.read_text(f"{url}/report.json"))
    assert report["methods"]["random"]["ledger"]["spent"] == 60
    return state


@pytest.mark.slow  # ~4 min on 2 cores: three 2-stage runs (one killed in stage 1) against moto
def test_distill_on_s3_lands_in_the_bucket_and_resumes_a_killed_stage_without_paying_twice(
    s3_server, s3_bucket, tmp_path
):
    corpus = write_demo_corpus(str(tmp_path / "corpus"), seed=0, num_train=800, num_test_per_domain=6)
    env = {**s3_server.env, "DISTILL_JAX_STAGING_DIR": str(tmp_path / "staging")}
    cwd = tmp_path / "cwd"
    cwd.mkdir()

    reference = f"s3://{s3_bucket}/reference"
    _finish(_start(corpus, reference, env, cwd))
    want = _check_a_finished_run(s3_server, s3_bucket, "reference", cwd)

    # Killed during stage 1 (after its purchases, while preparing or training on them), then resumed.
    killed = f"s3://{s3_bucket}/killed"
    proc = _start(corpus, killed, env, cwd)
    marker = f"{killed}/random/stage_1/purchased.jsonl"
    deadline = time.time() + 900
    while not storage.exists(marker) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = json.loads(storage.read_text(f"{killed}/random/scheduler_state.json"))
    assert state["phase"] != "done" and state["stage"] == 1
    assert s3_server.keys(s3_bucket, "killed/random/ledger.jsonl.d/")  # uncompacted segments: a real kill
    _finish(_start(corpus, killed, env, cwd))

    got = json.loads(storage.read_text(f"{killed}/random/scheduler_state.json"))
    assert got["phase"] == "done" and got["ledger"]["spent"] == want["ledger"]["spent"] == 60
    sent, sent_want = _sent(f"{killed}/random/ledger.jsonl"), _sent(f"{reference}/random/ledger.jsonl")
    assert len(sent) == len({r["key"] for r in sent}) == len(sent_want)  # one charge per request, as uninterrupted
    assert {r["key"] for r in sent} == {r["key"] for r in sent_want}
    for a, b in zip(got["stages"], want["stages"]):
        assert a["quotas"] == b["quotas"] and a["annotate"] == b["annotate"] and a["synthesize"] == b["synthesize"]
        assert a["eval"]["step"] == b["eval"]["step"]
    for stage in (0, 1):
        path = f"random/stage_{stage}/purchased.jsonl"
        assert atomic.read_jsonl(f"{killed}/{path}") == atomic.read_jsonl(f"{reference}/{path}")
    assert json.loads(storage.read_text(f"{killed}/report.json"))["methods"]["random"]["ledger"]["spent"] == 60
    assert list(cwd.iterdir()) == []


@pytest.mark.slow  # ~30 s: one 2-stage run against fake-gcs-server (Orbax's arrays through tensorstore's gcs driver)
def test_distill_on_gs_lands_in_the_bucket(gcs_emulator, gcs_bucket, tmp_path):
    corpus = write_demo_corpus(str(tmp_path / "corpus"), seed=0, num_train=800, num_test_per_domain=6)
    env = {**gcs_emulator.env, "DISTILL_JAX_STAGING_DIR": str(tmp_path / "staging")}
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    _finish(_start(corpus, f"gs://{gcs_bucket}/run", env, cwd))
    _check_a_finished_run(gcs_emulator, gcs_bucket, "run", cwd)
