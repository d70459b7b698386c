"""`teacher-logits` as a job: two processes write the files one process writes, and a kill -9 mid-run resumes
without writing any row twice (both slow: each starts CLI processes that compile the teacher)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO

from distill_jax.data import kd_logits
from tests.training.test_multiprocess import free_port

ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}


def job_args(teacher: str, data: str, out: str, **flags: object) -> list[str]:
    flags = {"top_k": 8, "batch_size": 16, "chunk_size": 32, **flags}
    return [
        sys.executable,
        "-m",
        "distill_jax.cli.main",
        "teacher-logits",
        f"--teacher={teacher}",
        f"--data={data}",
        f"--output_dir={out}",
        *[f"--{k}={v}" for k, v in flags.items()],
    ]


def listed_chunks(out: str) -> list[int]:
    """Finished chunk numbers, read without touching anything (finished_chunks would delete a live .tmp- dir)."""
    root = Path(out) / kd_logits.CHUNKS_DIR
    names = os.listdir(root) if root.is_dir() else []
    return sorted(int(n.split("_")[1]) for n in names if n.startswith("chunk_"))


def chunk_contents(out: str) -> dict[int, dict[str, object]]:
    """Every finished chunk's example ids and arrays, by chunk number."""
    return {
        c: {
            "example_ids": json.loads((kd_logits.chunk_dir(out, c) / "example_ids.json").read_text()),
            **{a: np.load(kd_logits.chunk_dir(out, c) / f"{a}.npy") for a in kd_logits.ARRAYS},
        }
        for c in listed_chunks(out)
    }


def assert_same_chunks(a: dict[int, dict[str, object]], b: dict[int, dict[str, object]]) -> None:
    assert sorted(a) == sorted(b)
    for c in a:
        assert a[c]["example_ids"] == b[c]["example_ids"], c
        for name in kd_logits.ARRAYS:
            np.testing.assert_array_equal(a[c][name], b[c][name], err_msg=f"chunk {c} {name}")


def without_run(meta_path: Path) -> dict[str, object]:
    """meta.json less its "run" record (timings, process count): what must not depend on how the job ran."""
    meta = json.loads(meta_path.read_text())
    meta.pop("run")
    return meta


@pytest.mark.slow
def test_two_processes_write_the_files_of_one(kd_teacher, demo_prepared, tmp_path):
    data = demo_prepared["test"]
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    out = subprocess.run(job_args(kd_teacher, data, one), cwd=REPO, env=ENV, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    launch = [os.path.join(REPO, "launch", "local.sh"), "-n", "2", "-d", "4", "-p", str(free_port()), "--"]
    out = subprocess.run(
        launch + job_args(kd_teacher, data, two), cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "process 1 of 2" in out.stderr
    assert json.loads((Path(two) / kd_logits.META_FILE).read_text())["run"]["processes"] == 2
    assert_same_chunks(chunk_contents(one), chunk_contents(two))
    assert len(chunk_contents(one)) > 1  # several chunks, so chunking across processes is exercised
    assert without_run(Path(one) / kd_logits.META_FILE) == without_run(Path(two) / kd_logits.META_FILE)
    assert (Path(one) / kd_logits.PLAN_FILE).read_text() == (Path(two) / kd_logits.PLAN_FILE).read_text()


@pytest.mark.slow
def test_resume_after_kill_9_writes_no_row_twice(kd_teacher, demo_prepared, tmp_path):
    data, out = demo_prepared["train"], str(tmp_path / "logits")
    # One batch per chunk: many small atomic writes, so the kill lands mid-job.
    args = job_args(kd_teacher, data, out, chunk_size=16)
    job = subprocess.Popen(args, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while len(listed_chunks(out)) < 2 and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    job.send_signal(signal.SIGKILL)
    job.wait()
    assert job.returncode == -signal.SIGKILL, "the job finished before it could be killed"
    assert not (Path(out) / kd_logits.META_FILE).exists()
    survivors = {c: os.stat(kd_logits.chunk_dir(out, c)).st_ino for c in listed_chunks(out)}
    assert survivors

    again = subprocess.run(args, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    meta = json.loads((Path(out) / kd_logits.META_FILE).read_text())
    assert meta["run"]["chunks_already_done"] == len(survivors)
    assert meta["run"]["chunks_written"] == meta["num_chunks"] - len(survivors)
    # The chunks finished before the kill are the very same directories: nothing was rewritten.
    assert all(os.stat(kd_logits.chunk_dir(out, c)).st_ino == ino for c, ino in survivors.items())
    assert not [p for p in os.listdir(Path(out) / kd_logits.CHUNKS_DIR) if p.startswith(".tmp-")]
    chunks = chunk_contents(out)
    ids = [i for c in chunks.values() for i in c["example_ids"]]
    assert len(ids) == len(set(ids)) == meta["num_examples"]

    # And the result equals an uninterrupted job's, byte for byte.
    fresh = str(tmp_path / "fresh")
    done = subprocess.run(job_args(kd_teacher, data, fresh, chunk_size=16), cwd=REPO, env=ENV, capture_output=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_chunks(chunks, chunk_contents(fresh))
