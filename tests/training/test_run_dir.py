"""A run directory: its saved config over today's defaults, step resolution, params-only restore."""

import json

import jax
import numpy as np
import pytest

from distill_jax.config import ConfigError, default_config
from distill_jax.training.checkpoints import Checkpointer
from distill_jax.training.run_dir import RunDir
from distill_jax.training.run_setup import setup_run
from distill_jax.training.trainer import train


def test_params_only_restore_equals_the_full_restore_and_ignores_the_optimizer(small_train_config, tmp_path):
    cfg = small_train_config(train__steps=4, train__checkpoint_every=2)
    workdir = str(tmp_path / "run")
    train(cfg, workdir)
    run = setup_run(cfg)
    checkpointer = Checkpointer(RunDir(workdir).checkpoints)
    full, _, _ = checkpointer.restore(4, run.abstract_state)
    only, data, _ = checkpointer.restore(4, run.abstract_state, params_only=True)
    checkpointer.close()
    assert only.opt_state is None and data == {}
    jax.tree.map(np.testing.assert_array_equal, full.params, only.params)
    assert jax.tree.map(lambda a: a.sharding, only.params) == jax.tree.map(lambda a: a.sharding, full.params)

    params, step = RunDir(workdir).restore_params(run)
    assert step == 4
    jax.tree.map(np.testing.assert_array_equal, full.params, params)
    params, step = RunDir(workdir).restore_params(run, 2)
    assert step == 2

    # The optimizer state is never read: an eval/generate config naming another optimizer (whose state has
    # another structure, which a full restore refuses) still restores the same params.
    other = cfg.copy_and_resolve_references()
    other.optimizer.name = "adafactor"
    other_run = setup_run(other)
    with pytest.raises(ValueError, match="tree structures do not match"):
        Checkpointer(RunDir(workdir).checkpoints).restore(4, other_run.abstract_state)
    params, _ = RunDir(workdir).restore_params(other_run)
    jax.tree.map(np.testing.assert_array_equal, full.params, params)


def test_a_saved_config_lacking_newer_knobs_loads_over_the_defaults(tmp_path):
    saved = json.loads(default_config().to_json_best_effort())
    del saved["kd"], saved["model"]["scan_layers"], saved["prepare"]["truncate"]  # knobs added after this run
    saved["train"]["steps"], saved["model"]["size"] = 77, "small"
    (tmp_path / "config.json").write_text(json.dumps(saved))
    cfg = RunDir(str(tmp_path)).load_config()
    assert (cfg.train.steps, cfg.model.size) == (77, "small")  # what the run saved wins
    assert cfg.kd.logits_dir == "" and cfg.model.scan_layers is False and cfg.prepare.truncate == "none"


def test_resolve_takes_a_workdir_or_one_of_its_step_directories(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "checkpoints" / "40").mkdir(parents=True)
    assert RunDir.resolve(str(tmp_path)) == (RunDir(str(tmp_path)), None)
    assert RunDir.resolve(str(tmp_path / "checkpoints" / "40")) == (RunDir(str(tmp_path)), 40)
    with pytest.raises(ValueError, match="is step 40 but --step=20"):
        RunDir.resolve(str(tmp_path / "checkpoints" / "40"), 20)
    with pytest.raises(FileNotFoundError, match="not a training workdir"):
        RunDir.resolve(str(tmp_path / "checkpoints"))


def test_a_batch_shorter_than_what_prepare_accepted_is_refused(small_train_config):
    cfg = small_train_config()  # the demo data was prepared with max_input_len=48
    cfg.data.max_input_len = 40
    assert cfg.prepare.max_input_len == 40  # one knob under two names
    with pytest.raises(ConfigError, match=r"prepared with max_input_len=48 .* set --config.prepare.max_input_len=48"):
        setup_run(cfg)
