"""A checkpoint saved on 8 devices (fsdp=8) resumes on 4 (data=2 x tensor=2), data position included."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from helpers import REPO

from distill_jax.training.checkpoints import Checkpointer
from distill_jax.training.run_setup import setup_run
from distill_jax.training.trainer import train


def losses(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return {r["step"]: r["train/loss"] for r in map(json.loads, f) if "train/loss" in r}


def latest(cfg, workdir):
    """(params, data state) of the latest checkpoint, restored onto `cfg`'s mesh (this process's 8 devices)."""
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"))
    state, data, _ = checkpointer.restore(checkpointer.latest_step(), setup_run(cfg).abstract_state)
    checkpointer.close()
    assert int(state.step) == cfg.train.steps
    return jax.tree.map(np.asarray, state.params), data


@pytest.mark.slow
def test_eight_device_checkpoint_resumes_on_four_devices_like_an_uninterrupted_run(small_train_config, tmp_path):
    straight, moved = str(tmp_path / "straight"), str(tmp_path / "moved")
    cfg = small_train_config(train__steps=12, mesh__data=1, mesh__fsdp=8)
    train(cfg, straight)
    train(small_train_config(train__steps=8, mesh__data=1, mesh__fsdp=8), moved)

    # The same run continues in a process that has only 4 devices, on a mesh of another shape.
    overrides = {
        "data.train_dir": cfg.data.train_dir,
        "data.max_input_len": 64,
        "data.max_target_len": 96,
        "train.batch_size": 16,
        "train.steps": 12,
        "train.log_every": 4,
        "train.checkpoint_every": 4,
        "eval.every": 0,
        "mesh.data": 2,
        "mesh.fsdp": 1,
        "mesh.tensor": 2,
    }
    command = [sys.executable, "-m", "distill_jax.cli.main", "train", "--config=distill_jax/presets.py:demo"]
    command += [f"--workdir={moved}", *[f"--config.{k}={v}" for k, v in overrides.items()]]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    resumed = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "at step 8." in resumed.stderr and "over 4 devices" in resumed.stderr
    assert "data order restarts" not in resumed.stderr
    assert "train step memory per device (XLA memory analysis): total " in resumed.stderr  # The start-up line.

    # Steps 9-12 saw the same batches and reached the same loss and parameters (reductions differ: tolerance).
    np.testing.assert_allclose(losses(moved)[12], losses(straight)[12], rtol=1e-5)
    params, data = latest(cfg, moved)  # 4 devices -> back onto 8.
    ref_params, ref_data = latest(cfg, straight)
    assert data == ref_data
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), params, ref_params)
