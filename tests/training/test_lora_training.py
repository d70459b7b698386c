"""LoRA training: only adapters move, the optimizer and each checkpoint hold the adapters alone, resume is exact."""

import os

import jax
import numpy as np
import orbax.checkpoint as ocp

from distill_jax.models import lora
from distill_jax.training.checkpoints import Checkpointer
from distill_jax.training.run_dir import RunDir
from distill_jax.training.run_setup import setup_run
from distill_jax.training.train_state import create_train_state
from distill_jax.training.trainer import train


def _lora_config(small_train_config, steps):
    cfg = small_train_config(train__steps=steps, train__checkpoint_every=2, train__keep_last=5)
    cfg.model.lora_rank = 4
    cfg.model.lora_targets = "q,v,wo"
    cfg.model.lora_dropout = 0.0
    cfg.optimizer.warmup_steps = 0
    cfg.optimizer.schedule_steps = 6  # one LR schedule whether the run stops at 4 or goes on to 6
    return cfg


def _restore(cfg, workdir, step):
    run = setup_run(cfg)
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
    state, _, _ = ckpt.restore(step, run.abstract_state)
    ckpt.close()
    return jax.tree.map(np.asarray, state)


def test_lora_trains_adapters_alone_checkpoints_them_alone_and_resumes_exactly(small_train_config, tmp_path):
    straight = _lora_config(small_train_config, 6)
    run = setup_run(straight)
    initial = jax.tree.map(np.asarray, create_train_state(run.model_config, run.tx, run.mesh, run.rules, straight.seed))
    train(straight, str(tmp_path / "straight"))
    # The same run stopped after 4 steps (last checkpoint at 4) and restarted with steps=6.
    train(_lora_config(small_train_config, 4), str(tmp_path / "resumed"))
    train(straight, str(tmp_path / "resumed"))
    final = _restore(straight, str(tmp_path / "straight"), 6)
    jax.tree.map(np.testing.assert_array_equal, final, _restore(straight, str(tmp_path / "resumed"), 6))
    # Params alone (as eval/generate read them): the frozen base and the adapters, reassembled.
    params, _ = RunDir(str(tmp_path / "straight")).restore_params(setup_run(straight))
    jax.tree.map(np.testing.assert_array_equal, final.params, jax.tree.map(np.asarray, params))

    mask = lora.trainable_mask(initial.params)
    moved = jax.tree.map(lambda a, b: not np.array_equal(a, b), initial.params, final.params)
    flat_mask, flat_moved = jax.tree.leaves(mask), jax.tree.leaves(moved)
    assert any(flat_mask) and not all(flat_mask)
    assert all(m for m, t in zip(flat_moved, flat_mask) if t)  # Every adapter leaf trained ...
    assert not any(m for m, t in zip(flat_moved, flat_mask) if not t)  # ... and no base weight moved.

    adapter_size = sum(x.size for x, t in zip(jax.tree.leaves(initial.params), flat_mask) if t)
    total_size = sum(x.size for x in jax.tree.leaves(initial.params))
    opt_size = sum(x.size for x in jax.tree.leaves(final.opt_state))
    # Adam's two moments for the adapters plus counters: far below two moments for every weight.
    assert 2 * adapter_size <= opt_size < 2 * adapter_size + 16
    assert opt_size < 0.5 * total_size

    ckpt_dir = tmp_path / "resumed" / "checkpoints"
    # retention.json: each step's best_metric value, which keep_best reads after a resume.
    assert sorted(os.listdir(ckpt_dir)) == ["2", "4", "6", "frozen_base", "retention.json"]
    for step in ("2", "4", "6"):
        with ocp.StandardCheckpointer() as reader:
            saved = reader.metadata(str(ckpt_dir / step / "state")).item_metadata
        leaves = jax.tree_util.tree_flatten_with_path(saved)[0]
        paths = [jax.tree_util.keystr(p) for p, _ in leaves]
        assert any("['params']" in p for p in paths)
        # Every array a step stores (params and optimizer moments) belongs to an adapter, bar counters:
        # the adapters three times over (weights, Adam's mu and nu), not the base.
        assert all("['lora']" in p for p in paths if "['params']" in p or "['mu']" in p or "['nu']" in p)
        stored = sum(int(np.prod(m.shape)) for _, m in leaves)
        assert 3 * adapter_size <= stored < 3 * adapter_size + 16
    with ocp.StandardCheckpointer() as reader:
        base = reader.metadata(str(ckpt_dir / "frozen_base")).item_metadata
    assert sum(int(np.prod(m.shape)) for m in jax.tree.leaves(base)) == total_size - adapter_size  # the base, once
