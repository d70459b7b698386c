"""Jobs that only run the model restore the params alone: equal to a full restore's, optimizer never read."""

import jax
import numpy as np
import pytest

from distill_jax.training.checkpoints import Checkpointer
from distill_jax.training.resume import checkpointer_dir, restore_params
from distill_jax.training.run_setup import setup_run
from distill_jax.training.trainer import train


def test_params_only_restore_equals_the_full_restore_and_ignores_the_optimizer(small_train_config, tmp_path):
    cfg = small_train_config(train__steps=4, train__checkpoint_every=2)
    workdir = str(tmp_path / "run")
    train(cfg, workdir)
    run = setup_run(cfg)
    checkpointer = Checkpointer(checkpointer_dir(workdir))
    full, _, _ = checkpointer.restore(4, run.abstract_state)
    only, data, _ = checkpointer.restore(4, run.abstract_state, params_only=True)
    checkpointer.close()
    assert only.opt_state is None and data == {}
    jax.tree.map(np.testing.assert_array_equal, full.params, only.params)
    assert jax.tree.map(lambda a: a.sharding, only.params) == jax.tree.map(lambda a: a.sharding, full.params)

    params, step = restore_params(run, workdir)
    assert step == 4
    jax.tree.map(np.testing.assert_array_equal, full.params, params)
    params, step = restore_params(run, workdir, step=2)
    assert step == 2

    # The optimizer state is never read: an eval/generate config naming another optimizer (whose state has
    # another structure, which a full restore refuses) still restores the same params.
    other = cfg.copy_and_resolve_references()
    other.optimizer.name = "adafactor"
    other_run = setup_run(other)
    with pytest.raises(ValueError, match="tree structures do not match"):
        Checkpointer(checkpointer_dir(workdir)).restore(4, other_run.abstract_state)
    params, _ = restore_params(other_run, workdir)
    jax.tree.map(np.testing.assert_array_equal, full.params, params)
