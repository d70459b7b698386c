"""Two processes x 4 CPU devices (jax.distributed on localhost) train like one process x 8 devices."""

import os
import socket
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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
        "--config=distill_jax/config.py:demo",
        f"--workdir={workdir}",
        *[f"--config.{k}={v}" for k, v in overrides.items()],
    ]


COMPARE = """
import sys, jax, numpy as np
from distill_jax.config import demo_config
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
