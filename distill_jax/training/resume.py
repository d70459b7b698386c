"""Where a run's state comes from: the newest readable checkpoint, an HF model, or a fresh init.

Split from trainer.py (the loop); what readers of a finished run restore is in run_dir.py.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from distill_jax.models import family, lora
from distill_jax.training.checkpoints import Checkpointer, Restored
from distill_jax.training.run_dir import RunDir, meta_checker
from distill_jax.training.run_setup import RunSetup
from distill_jax.training.train_state import TrainState


def local_data_state(saved: dict[str, Any]) -> dict[str, Any] | None:
    """This process's iterator state from a checkpoint's data item, or None if it cannot be used.

    Unpacked streams are identical on every process (process i reads elements i, i+P, ... of one
    global stream, and all count the same batches), so they move to any process count. Packed
    streams depend on which examples each process packed: only the same process count resumes them.
    """
    states = saved["per_process"]
    if len(states) == jax.process_count():
        return states[jax.process_index()]
    if all(s == states[0] for s in states) and set(states[0]) == {"next_index"}:
        return states[0]
    return None


def resume(
    checkpointer: Checkpointer, run: RunSetup, weights: dict[str, float], data_iter: Any, workdir: str
) -> Restored | None:
    """Restores the newest readable checkpoint and, where it still applies, the data position; None if none."""
    restored = checkpointer.restore_latest(
        run.abstract_state,
        on_corrupt=run.config.train.on_corrupt_checkpoint,
        check_meta=meta_checker(run, workdir),
        quarantine=True,
    )
    if restored is None:
        return None
    step, meta, saved_data = restored.step, restored.meta, restored.data
    data_state = local_data_state(saved_data)
    if meta["mixture_weights"] is None:
        logging.info("The checkpoint of step %d holds no data position (e.g. import-hf): fresh data order.", step)
    elif meta["mixture_weights"] != weights:
        # A new phase with new weights (e.g. the next distillation stage) starts a fresh data order.
        logging.info("Mixture weights changed since step %d: data order restarts for the new mixture.", step)
    elif data_state is None:
        logging.warning(
            "The packed data stream of step %d was saved by %d processes, not %d: data order restarts.",
            step,
            len(saved_data["per_process"]),
            jax.process_count(),
        )
    else:
        data_iter.set_state(data_state)
    logging.info("Resumed from %s at step %d.", RunDir(workdir).checkpoints, step)
    return restored


def hf_initial_state(run: RunSetup) -> TrainState:
    """Step-0 state holding the weights of `model.hf_dir` and a fresh optimizer state, already sharded.

    Every process reads the checkpoint on its host; each device receives only its own slices.
    """
    base_config = dataclasses.replace(run.model_config, lora_rank=0)
    host = family.load_hf_params(run.config.model.hf_dir, base_config)
    if run.model_config.lora_rank:
        fresh = nn.unbox(family.init_params(run.model_config, jax.random.key(run.config.seed)))
        host = lora.with_adapters(host, jax.tree.map(np.asarray, fresh))
    params = jax.tree.map(
        lambda x, sharding: jax.make_array_from_callback(x.shape, sharding, lambda index: x[index]),
        host,
        run.shardings.params,
    )

    def init(params: Any) -> TrainState:
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=run.tx.init(params))

    return jax.jit(init, out_shardings=run.shardings)(params)
