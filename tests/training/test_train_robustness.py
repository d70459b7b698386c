"""The train loop under failure (issue 15): non-finite values, damaged or full checkpoints, resumes, bad configs."""

import json
import logging
import os
import subprocess

import jax
import numpy as np
import pytest

from distill_jax.training import step as step_lib
from distill_jax.training.checkpoints import Checkpointer, CheckpointSaveError
from distill_jax.training.config_checks import ConfigError
from distill_jax.training.guard import NonFiniteError
from distill_jax.training.run_setup import setup_run
from distill_jax.training.train_state import create_train_state
from distill_jax.training.trainer import train


def read_metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def steps_on_disk(workdir):
    return Checkpointer(os.path.join(workdir, "checkpoints")).all_steps()


def all_finite(cfg, workdir, step):
    run = setup_run(cfg)
    state, _, _ = Checkpointer(os.path.join(workdir, "checkpoints")).restore(step, run.abstract_state)
    return all(bool(np.isfinite(np.asarray(x)).all()) for x in jax.tree.leaves(state))


@pytest.mark.slow  # ~35 s: two compiles (the learning rate is part of the program). The CLI test of the same
# stop (tests/cli/test_cli.py) runs in the default suite.
def test_a_diverging_run_stops_in_one_line_and_keeps_every_good_checkpoint(small_train_config, tmp_path):
    # Before: lr=1e30 ran to the end with loss=nan, exit 0, and keep_last=3 rotated every good checkpoint out.
    workdir = str(tmp_path / "w")
    good = small_train_config(train__steps=8, train__keep_last=2, train__keep_best=1, train__best_metric="train/loss")
    train(good, workdir)
    assert steps_on_disk(workdir) == [4, 8]
    diverging = small_train_config(
        train__steps=24, train__keep_last=2, train__keep_best=1, train__best_metric="train/loss"
    )
    diverging.optimizer.learning_rate = 1e30
    with pytest.raises(NonFiniteError) as err:
        train(diverging, workdir)
    message = str(err.value)
    assert "\n" not in message and "non-finite" in message and "at step 1" in message
    assert "train/loss" in message or "params" in message or "train/grad_norm" in message
    assert f"Last finite checkpoint: step 8 in {os.path.join(workdir, 'checkpoints')}" in message
    assert steps_on_disk(workdir) == [4, 8] and all_finite(good, workdir, 8)
    # No metrics row was written from non-finite sums.
    assert all(r["step"] <= 8 for r in read_metrics(workdir) if "train/loss" in r)


def test_skipped_batches_leave_params_and_optimizer_state_unchanged(small_train_config):
    cfg = small_train_config()
    run = setup_run(cfg)
    batch = {k: np.ones(v.shape, v.dtype) for k, v in step_lib.batch_spec(16, 64, 96, run.batch_shardings).items()}
    batch = jax.device_put(batch, {k: run.batch_shardings[k] for k in batch})
    results = {}
    for skip in (True, False):
        state = create_train_state(run.model_config, run.tx, run.mesh, run.rules, cfg.seed)
        # One infinite weight: the loss, the gradients and the update all become non-finite.
        params = jax.tree.map(np.array, state.params)
        first = jax.tree.leaves(params)[0]
        first.flat[0] = np.inf
        state = state.replace(params=jax.device_put(params, run.shardings.params))
        before = jax.tree.map(np.asarray, (state.params, state.opt_state))
        step = step_lib.make_train_step(
            run.model,
            run.tx,
            mesh=run.mesh,
            rules=run.rules,
            state_shardings=run.shardings,
            batch_shardings=run.batch_shardings,
            num_domains=len(run.domain_names),
            dropout_seed=1,
            skip_nonfinite=skip,
        )
        new_state, sums = step(state, step_lib.zero_metric_sums(len(run.domain_names), run.mesh), batch)
        results[skip] = (before, jax.tree.map(np.asarray, (new_state.params, new_state.opt_state)), sums, new_state)
    before, after, sums, new_state = results[True]
    jax.tree.map(np.testing.assert_array_equal, after, before)
    assert int(new_state.step) == 1  # The batch is consumed: the step counter still moves on.
    assert float(sums["skipped_steps"]) == 1 and int(sums[step_lib.FIRST_NONFINITE]) == 1
    assert float(sums["steps"]) == 0 and float(sums["loss_sum"]) == 0  # Averages stay finite.
    _, after, sums, _ = results[False]
    assert float(sums["nonfinite_loss"]) == 1 and float(sums["skipped_steps"]) == 0
    assert not all(np.isfinite(x).all() for x in jax.tree.leaves(after))


def test_skip_policy_stops_once_past_its_cap(small_train_config, tmp_path):
    cfg = small_train_config(train__steps=24, train__skip_nonfinite_batches=3)
    cfg.optimizer.learning_rate = 1e30
    with pytest.raises(NonFiniteError, match="over train.skip_nonfinite_batches=3"):
        train(cfg, str(tmp_path / "w"))
    assert all(all_finite(cfg, str(tmp_path / "w"), s) for s in steps_on_disk(str(tmp_path / "w")))


def _truncate_largest_array(step_dir):
    files = [os.path.join(r, f) for r, _, fs in os.walk(os.path.join(step_dir, "state")) for f in fs]
    biggest = max((f for f in files if f"{os.sep}d{os.sep}" in f), key=os.path.getsize)
    with open(biggest, "r+b") as f:
        f.truncate(os.path.getsize(biggest) // 2)


def test_resume_after_a_damaged_checkpoint_has_one_row_per_step_and_plain_progress_lines(
    small_train_config, tmp_path, caplog
):
    workdir = str(tmp_path / "w")
    cfg = small_train_config(with_eval=True, train__steps=12, train__checkpoint_every=8)
    with caplog.at_level(logging.INFO):
        train(cfg, workdir)
    # pytest's stderr is not a terminal: one plain line per log interval instead of a tqdm bar.
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("train: step")]
    assert [line.split()[2] for line in lines] == ["4/12", "8/12", "12/12"]
    assert all("steps/s, ETA" in line for line in lines)
    # The newest checkpoint is damaged (say, a disk error): the next run warns, falls back to 8 and redoes 9-12.
    _truncate_largest_array(os.path.join(workdir, "checkpoints", "12"))
    caplog.clear()
    with caplog.at_level(logging.INFO):
        result = train(cfg, workdir)
    assert result.step == 12
    warnings = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(warnings) == 1 and "step 12" in warnings[0] and "falling back to step 8" in warnings[0]
    train(cfg, workdir)  # Already complete: reports again, but logs nothing twice.
    rows = read_metrics(workdir)
    kinds = [(r["step"], "train/loss" in r) for r in rows]
    assert len(kinds) == len(set(kinds)), kinds  # Before: step 12 appeared again after every resume.
    assert [s for s, is_train in kinds if is_train] == [4, 8, 12]


def test_bad_configs_fail_before_the_workdir_exists(small_train_config, tmp_path):
    cases = {
        "train.steps=-5": dict(train__steps=-5),
        "train.batch_size=16 must be divisible by train.grad_accum_steps=3": dict(train__grad_accum_steps=3),
        "does not exist": dict(data__train_dir=str(tmp_path / "nope")),
        "train.dropout_prng='philox' must be one of": dict(train__dropout_prng="philox"),
    }
    for expected, overrides in cases.items():
        workdir = tmp_path / "w"
        with pytest.raises(ConfigError, match=expected.replace(".", r"\.").replace("(", r"\(")):
            train(small_train_config(**overrides), str(workdir))
        assert not workdir.exists()
    # Found only with the mesh (8 devices): still before anything is created.
    with pytest.raises(ConfigError, match="divisible by the data-parallel size 8"):
        train(small_train_config(train__batch_size=12), str(tmp_path / "w"))
    with pytest.raises(ConfigError, match="grad_accum_steps=4 times the data-parallel size 8"):
        train(small_train_config(train__batch_size=16, train__grad_accum_steps=4), str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()


def test_a_full_disk_stops_the_run_at_the_failed_save_with_its_checkpoints_intact(small_train_config, tmp_path):
    cfg = small_train_config(train__steps=40, train__checkpoint_every=4, train__keep_last=1, train__keep_best=0)
    run = setup_run(cfg)
    state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(run.abstract_state))
    workdir = tmp_path / "w"
    ckpt = workdir / "checkpoints"
    ckpt.mkdir(parents=True)
    # Room for one checkpoint, not two: the second save fills the disk (the first is deleted only after it).
    size_kb = int(state_bytes * 1.5 / 1024) + 64
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(ckpt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        with pytest.raises(CheckpointSaveError) as err:
            train(cfg, str(workdir))
        message = str(err.value)
        assert "\n" not in message and "checkpoint save of step 8" in message and str(ckpt / "8") in message
        assert "No space left on device" in message and "intact: [4]" in message
        assert steps_on_disk(str(workdir)) == [4] and all_finite(cfg, str(workdir), 4)
        # It stopped there: nothing was logged past the next interval.
        assert max(r["step"] for r in read_metrics(str(workdir))) <= 12
    finally:
        subprocess.run(["umount", "-l", str(ckpt)], check=False)
