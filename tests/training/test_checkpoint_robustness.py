"""Checkpoints that are never lost: retention by a persisted record, damaged-newest fallback, failed saves (issue 15).

These use the real Checkpointer (Orbax on disk) with a small TrainState: seconds each.
"""

import json
import os
import shutil
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax.training.checkpoints import (
    CORRUPT_DIR,
    Checkpointer,
    CheckpointSaveError,
    CorruptCheckpointError,
)
from distill_jax.training.retention import RECORD_FILE, steps_to_keep
from distill_jax.training.train_state import TrainState

META = {"model": {}, "domain_names": ["a"], "mixture_weights": {"a": 1.0}}


def state_at(step, n=50_000):
    params = {"w": jax.random.normal(jax.random.key(step), (n,)), "b": jnp.full((3,), float(step))}
    return TrainState(step=jnp.asarray(step, jnp.int32), params=params, opt_state=())


def abstract(n=50_000):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state_at(0, n))


def save_steps(directory, steps, metrics=None, **kwargs):
    c = Checkpointer(str(directory), **kwargs)
    for s in steps:
        c.save(s, state_at(s), {"next_index": s}, META, metrics=(metrics or {}).get(s))
    c.close()
    return Checkpointer(str(directory)).all_steps()


# ----------------------------------------------------------------------------------- retention


def test_keep_best_survives_a_resume(tmp_path):
    # Before: Orbax's BestN only knew the metrics of its own process's saves; after reopening, the
    # next save kept nothing but the newest steps.
    loss = {10: 3.0, 20: 1.0, 30: 2.0, 40: 2.5, 50: 2.6, 60: 2.7}
    kw = dict(keep_last=2, keep_best=1, best_metric="eval/loss")
    assert save_steps(tmp_path, [10, 20, 30], {s: {"eval/loss": loss[s]} for s in loss}, **kw) == [20, 30]
    # A second process (the resumed run) saves more, without eval metrics at those steps.
    assert save_steps(tmp_path, [40, 50, 60], **kw) == [20, 50, 60]
    record = json.loads((tmp_path / RECORD_FILE).read_text())
    assert record["steps"]["20"] == {"metric": 1.0}


def test_unrecorded_steps_never_push_out_the_newest_recorded_one():
    # Steps without a record (written before it existed, or copied in) are not known to be finite.
    assert steps_to_keep([1, 2, 3, 4], {1: None}, keep_last=2, keep_best=0, best_metric="eval/loss") == {1, 3, 4}
    # Higher is better for non-loss metrics; ties go to the newer step.
    record = {1: 0.5, 2: 0.9, 3: 0.9, 4: 0.1}
    assert steps_to_keep([1, 2, 3, 4], record, keep_last=1, keep_best=1, best_metric="eval/accuracy") == {3, 4}


def test_opening_for_reading_deletes_nothing(tmp_path):
    assert save_steps(tmp_path, [1, 2, 3, 4], keep_last=4) == [1, 2, 3, 4]
    c = Checkpointer(str(tmp_path), keep_last=1)  # A reader (eval, export) with the default policy.
    c.restore_latest(abstract())
    c.close()
    assert Checkpointer(str(tmp_path)).all_steps() == [1, 2, 3, 4]


# ----------------------------------------------------------------------------- damaged newest step


def _largest_array_file(step_dir):
    files = [os.path.join(r, f) for r, _, fs in os.walk(os.path.join(step_dir, "state")) for f in fs]
    data = [f for f in files if f"{os.sep}d{os.sep}" in f]
    return max(data, key=os.path.getsize)


def _truncate(path, keep=0.5):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(int(size * keep))


DAMAGES = {
    "truncated_array_file": lambda d: _truncate(_largest_array_file(d)),
    "deleted_state_metadata": lambda d: os.remove(os.path.join(d, "state", "_METADATA")),
    "missing_meta_item": lambda d: shutil.rmtree(os.path.join(d, "meta")),
    "truncated_meta_item": lambda d: _truncate(os.path.join(d, "meta", "metadata")),
    "missing_data_item": lambda d: shutil.rmtree(os.path.join(d, "data")),
    # A partial copy (cp -r interrupted): the step directory exists but only part of it arrived.
    "partially_copied_step_dir": lambda d: [shutil.rmtree(os.path.join(d, x)) for x in ("state", "data")],
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, damage, caplog):
    save_steps(tmp_path, [10, 20], keep_last=3)
    DAMAGES[damage](str(tmp_path / "20"))
    c = Checkpointer(str(tmp_path), keep_last=3)
    with caplog.at_level("WARNING"):
        restored = c.restore_latest(abstract(), quarantine=True)
    assert restored.step == 10
    np.testing.assert_array_equal(restored.state.params["w"], state_at(10).params["w"])
    assert restored.data == {"per_process": [{"next_index": 10}]}
    warnings = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(warnings) == 1 and "step 20" in warnings[0] and "falling back to step 10" in warnings[0]
    assert "\n" not in warnings[0]
    # Moved aside (kept for inspection), so the resumed run can save step 20 again.
    assert os.path.isdir(tmp_path / CORRUPT_DIR / "20") and c.all_steps() == [10]
    c.save(20, state_at(20), {"next_index": 20}, META)
    c.close()
    again = Checkpointer(str(tmp_path)).restore_latest(abstract())
    assert again.step == 20


def test_on_corrupt_fail_refuses_in_one_line(tmp_path):
    save_steps(tmp_path, [10, 20], keep_last=3)
    DAMAGES["truncated_array_file"](str(tmp_path / "20"))
    with pytest.raises(CorruptCheckpointError) as err:
        Checkpointer(str(tmp_path)).restore_latest(abstract(), on_corrupt="fail")
    message = str(err.value)
    assert "step 20" in message and "on_corrupt_checkpoint" in message and "\n" not in message
    assert Checkpointer(str(tmp_path)).all_steps() == [10, 20]  # Refusing touches nothing.


def test_a_config_mismatch_is_not_mistaken_for_damage(tmp_path):
    save_steps(tmp_path, [10, 20], keep_last=3)

    def check(step, meta):
        raise ValueError("different architecture")

    with pytest.raises(ValueError, match="different architecture"):
        Checkpointer(str(tmp_path)).restore_latest(abstract(), check_meta=check, quarantine=True)
    assert Checkpointer(str(tmp_path)).all_steps() == [10, 20]


# ---------------------------------------------------------------------------------- failed saves


@pytest.fixture
def small_disk(tmp_path):
    """A 400 KiB tmpfs: a real 'No space left on device' (needs root; skipped elsewhere)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.parametrize("async_save", [True, False])
def test_a_save_that_fills_the_disk_raises_one_line_and_keeps_the_good_checkpoints(small_disk, async_save):
    c = Checkpointer(str(small_disk / "ckpt"), keep_last=3, async_save=async_save)
    c.save(1, state_at(1, n=64), {"next_index": 1}, META)
    c.poll()
    with pytest.raises(CheckpointSaveError) as err:
        c.save(2, state_at(2, n=200_000), {"next_index": 2}, META)  # 800 KB of random floats: does not fit.
        for _ in range(1000):  # The trainer polls once per step; the failure shows within a few.
            c.poll()
            time.sleep(0.01)
    message = str(err.value)
    assert "step 2" in message and str(small_disk / "ckpt" / "2") in message
    assert "No space left on device" in message or "RESOURCE_EXHAUSTED" in message
    assert "\n" not in message and "intact: [1]" in message
    c.close()  # Closing after the reported failure does not raise it again.
    restored = Checkpointer(str(small_disk / "ckpt")).restore_latest(abstract(64))
    assert restored.step == 1
