"""Two processes x 4 CPU devices (jax.distributed on localhost) train like one process x 8 devices."""

import os
import socket
import subprocess
import sys

import pytest
from helpers import REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def train_args(workdir, train_dir):
    overrides = {
        "data.train_dir": train_dir,
        "data.max_input_len": 64,
        "data.max_target_len": 96,
        "train.batch_size": 16,
        "train.steps": 6,
        "train.log_every": 3,
        "train.checkpoint_every": 3,
        "eval.every": 0,
    }
    return [
        sys.executable,
        "-m",
        "distill_jax.cli.main",
        "train",
        "--config=distill_jax/presets.py:demo",
        f"--workdir={workdir}",
        *[f"--config.{k}={v}" for k, v in overrides.items()],
    ]


COMPARE = """
import sys, jax, numpy as np
from distill_jax.presets import demo_config
from distill_jax.training.checkpoints import Checkpointer
from distill_jax.training.run_setup import setup_run
cfg = demo_config()
cfg.data.train_dir = sys.argv[3]
run = setup_run(cfg)  # One process, 8 devices: the two-process checkpoint restores onto this mesh.
def params(d):
    c = Checkpointer(d + "/checkpoints")
    state, _, _ = c.restore(c.latest_step(), run.abstract_state)
    c.close()
    assert int(state.step) == 6
    return jax.tree.map(np.asarray, state.params)
a, b = params(sys.argv[1]), params(sys.argv[2])
jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5), a, b)
"""


@pytest.mark.slow
def test_two_processes_reach_the_parameters_of_one(demo_prepared, tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    out = subprocess.run(train_args(one, demo_prepared["train"]), cwd=REPO, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    launch = [os.path.join(REPO, "launch", "local.sh"), "-n", "2", "-d", "4", "-p", str(free_port()), "--"]
    out = subprocess.run(
        launch + train_args(two, demo_prepared["train"]), cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "process 1 of 2" in out.stderr
    # The data positions of both processes were gathered into the one checkpoint.
    step_dir = os.path.join(two, "checkpoints", "6")
    assert {"data", "state", "meta"} <= set(os.listdir(step_dir))
    out = subprocess.run(
        [sys.executable, "-c", COMPARE, one, two, demo_prepared["train"]],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-3000:]


def _truncate_largest_array(step_dir):
    files = [os.path.join(r, f) for r, _, fs in os.walk(os.path.join(step_dir, "state")) for f in fs]
    biggest = max((f for f in files if f"{os.sep}d{os.sep}" in f), key=os.path.getsize)
    with open(biggest, "r+b") as f:
        f.truncate(os.path.getsize(biggest) // 2)


@pytest.mark.slow
def test_two_processes_rotate_checkpoints_and_fall_back_from_a_damaged_one_together(demo_prepared, tmp_path):
    # Deleting old steps and choosing the step to restore are collective: both processes must agree.
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    workdir = str(tmp_path / "two")

    def launch(steps):
        args = train_args(workdir, demo_prepared["train"])
        args = [a for a in args if not a.startswith("--config.train.steps=")]
        args += [f"--config.train.steps={steps}", "--config.train.keep_last=1", "--config.train.keep_best=0"]
        cmd = [os.path.join(REPO, "launch", "local.sh"), "-n", "2", "-d", "4", "-p", str(free_port()), "--", *args]
        return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)

    out = launch(9)
    assert out.returncode == 0, out.stderr[-3000:]
    ckpt = os.path.join(workdir, "checkpoints")
    assert sorted(n for n in os.listdir(ckpt) if n.isdigit()) == ["9"]  # keep_last=1 rotated 3 and 6 out.
    _truncate_largest_array(os.path.join(ckpt, "9"))
    out = launch(12)
    # Both processes found step 9 unreadable; with nothing older they start over, and finish.
    assert out.returncode == 0, out.stderr[-3000:]
    assert "checkpoint step 9" in out.stderr and "unreadable" in out.stderr
    assert sorted(n for n in os.listdir(ckpt) if n.isdigit()) == ["12"]
    assert os.path.isdir(os.path.join(ckpt, "corrupt", "9"))
