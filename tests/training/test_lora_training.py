"""LoRA training: only adapters move, the optimizer holds state for adapters alone, export merges them."""

import os

import jax
import numpy as np

from distill_jax.models import lora
from distill_jax.training.checkpoints import Checkpointer
from distill_jax.training.run_setup import setup_run
from distill_jax.training.train_state import create_train_state
from distill_jax.training.trainer import train


def test_lora_trains_only_adapters_with_optimizer_state_for_adapters_only(small_train_config, tmp_path):
    cfg = small_train_config(train__steps=4, train__checkpoint_every=4)
    cfg.model.lora_rank = 4
    cfg.model.lora_targets = "q,v,wo"
    cfg.model.lora_dropout = 0.0
    cfg.optimizer.warmup_steps = 0
    run = setup_run(cfg)
    initial = jax.tree.map(np.asarray, create_train_state(run.model_config, run.tx, run.mesh, run.rules, cfg.seed))
    train(cfg, str(tmp_path))
    ckpt = Checkpointer(os.path.join(tmp_path, "checkpoints"))
    state, _, _ = ckpt.restore(4, run.abstract_state)
    ckpt.close()
    final = jax.tree.map(np.asarray, state)

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
