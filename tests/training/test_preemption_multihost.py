"""Preemption on a pod: SIGTERM to one of 2 processes x 4 CPU devices, workdir on s3 (a real moto server).

Both processes must save the same step (JAX's preemption sync point), exit 0, and the resumed run must
equal an uninterrupted one bit for bit.
"""

import os
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from helpers import REPO
from object_store import free_port

from distill_jax import storage
from distill_jax.training.checkpoints import Checkpointer
from distill_jax.training.run_setup import setup_run


def _train(workdir, train_dir, steps, port, env):
    overrides = {
        "data.train_dir": train_dir,
        "data.max_input_len": 64,
        "data.max_target_len": 96,
        "train.batch_size": 16,
        "train.steps": steps,
        "train.log_every": 4,
        "train.checkpoint_every": 4,
        "eval.every": 0,
    }
    command = [sys.executable, "-m", "distill_jax.cli.main", "train", "--config=distill_jax/presets.py:demo"]
    command += [f"--workdir={workdir}", *[f"--config.{k}={v}" for k, v in overrides.items()]]
    return [
        subprocess.Popen(
            [*command, f"--coordinator_address=localhost:{port}", "--num_processes=2", f"--process_id={i}"],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]


def _finish(processes, timeout=600):
    errs = [p.communicate(timeout=timeout)[1] for p in processes]
    for p, err in zip(processes, errs):
        assert p.returncode == 0, err[-3000:]
    return errs


def _params(cfg, checkpoints):
    ckpt = Checkpointer(checkpoints)
    state, _, _ = ckpt.restore(ckpt.latest_step(), setup_run(cfg).abstract_state)
    ckpt.close()
    return int(state.step), jax.tree.map(np.asarray, state.params)


@pytest.mark.slow  # three 2-process runs: ~3-5 min on 2 cores
def test_sigterm_on_one_host_saves_the_same_step_on_both_and_resumes_bit_for_bit(
    s3_server, s3_bucket, demo_prepared, small_train_config, tmp_path
):
    env = {
        **os.environ,
        **s3_server.env,
        "DISTILL_JAX_STAGING_DIR": str(tmp_path / "staging"),
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
    }
    run = f"s3://{s3_bucket}/runs/pod"
    processes = _train(run, demo_prepared["train"], 400, free_port(), env)
    try:
        deadline = time.monotonic() + 400
        while "runs/pod/checkpoints/4/commit_success.txt" not in s3_server.keys(s3_bucket):
            assert all(p.poll() is None for p in processes) and time.monotonic() < deadline, "no step 4"
            time.sleep(0.5)
        processes[1].send_signal(signal.SIGTERM)  # one host only, as a TPU maintenance event may do
        errs = _finish(processes, timeout=300)
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
    agreed = [re.findall(r"every process saves at step (\d+)", err) for err in errs]
    assert agreed[0] and agreed[0] == agreed[1], errs[0][-2000:]
    preempted_at = int(agreed[0][0])
    assert 4 < preempted_at < 400
    steps = Checkpointer(f"{run}/checkpoints").all_steps()
    assert steps[-1] == preempted_at

    end = preempted_at + 2
    errs = _finish(_train(run, demo_prepared["train"], end, free_port(), env))
    assert all(f"at step {preempted_at}." in err for err in errs)
    straight = str(tmp_path / "straight")
    _finish(_train(straight, demo_prepared["train"], end, free_port(), env))

    cfg = small_train_config()  # the same architecture and data as the runs (one process, 8 devices here)
    step_a, a = _params(cfg, f"{run}/checkpoints")
    step_b, b = _params(cfg, storage.join(straight, "checkpoints"))
    assert step_a == step_b == end
    jax.tree.map(np.testing.assert_array_equal, a, b)
