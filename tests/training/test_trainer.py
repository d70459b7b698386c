"""The train loop end to end on the generated corpus: learning, logging, checkpoints, resume, preemption."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from helpers import REPO

from distill_jax.training.checkpoints import Checkpointer
from distill_jax.training.run_setup import setup_run
from distill_jax.training.trainer import train


def read_metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def final_params(cfg, workdir):
    run = setup_run(cfg)
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
    state, data_state, meta = ckpt.restore(ckpt.latest_step(), run.abstract_state)
    ckpt.close()
    return jax.tree.map(np.asarray, state.params), data_state


def test_training_reduces_loss_and_writes_logs_and_checkpoints(small_train_config, tmp_path):
    cfg = small_train_config(with_eval=True, train__steps=40, train__log_every=10, train__checkpoint_every=20)
    result = train(cfg, str(tmp_path))
    assert result.step == 40 and not result.preempted
    rows = [r for r in read_metrics(str(tmp_path)) if "train/loss" in r]
    assert [r["step"] for r in rows] == [10, 20, 30, 40]
    assert rows[-1]["train/loss"] < 0.7 * rows[0]["train/loss"]
    assert rows[-1]["perf/tokens_per_s"] > 0
    assert any(k.startswith("train/ce/") for k in rows[-1])  # Per-domain training loss is logged.
    assert os.listdir(tmp_path / "tensorboard")
    assert Checkpointer(str(tmp_path / "checkpoints")).all_steps() == [20, 40]
    # The final eval reports every eval domain, head and tail aggregates included.
    assert set(result.eval_per_domain) == set(setup_run(cfg).eval_manifest["domains"])
    assert {"eval/head/loss", "eval/tail/loss", "eval/macro/answer_accuracy"} <= set(result.final_metrics)


def test_resume_continues_to_the_same_parameters_as_an_uninterrupted_run(small_train_config, tmp_path):
    straight = small_train_config(train__steps=12)
    train(straight, str(tmp_path / "straight"))

    # Same run, but stopped after 8 steps (last checkpoint at 8) and restarted with steps=12.
    first = small_train_config(train__steps=8)
    train(first, str(tmp_path / "resumed"))
    train(straight, str(tmp_path / "resumed"))

    a, data_a = final_params(straight, str(tmp_path / "straight"))
    b, data_b = final_params(straight, str(tmp_path / "resumed"))
    assert data_a == data_b
    jax.tree.map(np.testing.assert_array_equal, a, b)


def _train_cmd(workdir, cfg_overrides):
    return [
        sys.executable,
        "-m",
        "distill_jax.cli.main",
        "train",
        "--config=distill_jax/presets.py:demo",
        f"--workdir={workdir}",
        *[f"--config.{k}={v}" for k, v in cfg_overrides.items()],
    ]


def _overrides(demo_prepared, steps):
    return {
        "data.train_dir": demo_prepared["train"],
        "data.max_input_len": 64,
        "data.max_target_len": 96,
        "train.batch_size": 16,
        "train.steps": steps,
        "train.log_every": 4,
        "train.checkpoint_every": 4,
        "eval.every": 0,
    }


def _wait_for_checkpoint(workdir, step, proc, timeout=240):
    ckpt_dir = os.path.join(workdir, "checkpoints")
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"training exited early with {proc.returncode}")
        if os.path.isdir(ckpt_dir) and any(n == str(step) for n in os.listdir(ckpt_dir)):
            return
        time.sleep(0.2)
    pytest.fail(f"no checkpoint {step} within {timeout}s")


@pytest.mark.slow
def test_kill_dash_nine_mid_run_then_resume_equals_uninterrupted(demo_prepared, tmp_path):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    steps = 24
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    subprocess.run(
        _train_cmd(straight, _overrides(demo_prepared, steps)), check=True, env=env, cwd=REPO, capture_output=True
    )
    proc = subprocess.Popen(
        _train_cmd(killed, _overrides(demo_prepared, steps)),
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_for_checkpoint(killed, 8, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    subprocess.run(
        _train_cmd(killed, _overrides(demo_prepared, steps)), check=True, env=env, cwd=REPO, capture_output=True
    )
    # Compare in a fresh process with one device (the runs used one).
    code = (
        "import jax, numpy as np, sys\n"
        "from distill_jax.training.checkpoints import Checkpointer\n"
        "def load(d):\n"
        "  c = Checkpointer(d + '/checkpoints'); s = c._manager.restore(c.latest_step()); c.close(); return s\n"
        "a, b = load(sys.argv[1]), load(sys.argv[2])\n"
        "jax.tree.map(np.testing.assert_array_equal, a['state']['params'], b['state']['params'])\n"
        f"assert int(a['state']['step']) == int(b['state']['step']) == {steps}\n"
    )
    subprocess.run([sys.executable, "-c", code, straight, killed], check=True, env=env, cwd=REPO)


@pytest.mark.slow
def test_sigterm_saves_and_exits_cleanly_then_resumes(demo_prepared, tmp_path):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    workdir = str(tmp_path / "w")
    proc = subprocess.Popen(
        _train_cmd(workdir, _overrides(demo_prepared, 400)),
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for_checkpoint(workdir, 4, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert "SIGTERM received" in err
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"))
    preempted_at = checkpointer.latest_step()
    checkpointer.close()
    assert 4 <= preempted_at < 400  # Saved at the step it was stopped, long before the end.
    # The same command (with a nearer end) resumes from exactly there.
    resumed = subprocess.run(
        _train_cmd(workdir, _overrides(demo_prepared, preempted_at + 2)),
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"at step {preempted_at}." in resumed.stderr
    rows = [r for r in read_metrics(workdir) if "train/loss" in r]
    assert rows[-1]["step"] == preempted_at + 2


def test_resuming_with_a_different_architecture_is_a_clear_error(small_train_config, tmp_path):
    train(small_train_config(train__steps=4), str(tmp_path))
    other = small_train_config(train__steps=8)
    other.model.size = "t5-small-v1.0"
    with pytest.raises(ValueError, match="checkpoint's model differs"):
        train(other, str(tmp_path))


def test_an_eval_batch_that_does_not_split_over_the_mesh_is_rounded_up_with_the_same_metrics(small_train_config):
    from distill_jax.training.run_setup import build_evaluator, forward_batch_size
    from distill_jax.training.train_state import create_train_state

    cfg = small_train_config(with_eval=True)
    cfg.eval.max_examples_per_domain = 6
    run = setup_run(cfg)
    assert jax.device_count() == 8
    assert forward_batch_size(100, run, "eval.batch_size") == 104
    assert forward_batch_size(16, run, "eval.batch_size") == 16
    params = create_train_state(run.model_config, run.tx, run.mesh, run.rules, seed=0).params

    metrics = {}
    for batch_size in (8, 100):
        cfg.eval.batch_size = batch_size
        evaluator = build_evaluator(setup_run(cfg), cfg.data.eval_dir)
        metrics[batch_size] = evaluator.loss_metrics(params)
    assert metrics[8].keys() == metrics[100].keys() and len(metrics[8]) > 1
    for domain, values in metrics[8].items():
        assert values["count"] == metrics[100][domain]["count"]
        np.testing.assert_allclose(values["loss"], metrics[100][domain]["loss"], rtol=1e-5)
