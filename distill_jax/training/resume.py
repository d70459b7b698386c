"""Where a run's state comes from: the newest readable checkpoint, an HF model, or a fresh init.

Split from trainer.py (the loop); also used by eval, generate, export-hf and the stage scheduler
through `restore_params`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from distill_jax import storage
from distill_jax.models import family, lora
from distill_jax.training.checkpoints import Checkpointer, Restored, local_data_state
from distill_jax.training.run_setup import RunSetup
from distill_jax.training.train_state import TrainState


def checkpointer_dir(workdir: str) -> str:
    return storage.join(workdir, "checkpoints")


def _meta_checker(run: RunSetup, workdir: str):
    """Refuses a checkpoint of another architecture or other domains (a config mistake, not damage)."""

    def check(step: int, meta: dict[str, Any]) -> None:
        changed = family.architecture_changes(meta["model"], run.model_config)
        if changed:
            raise ValueError(
                f"{workdir}: the checkpoint's model differs from the config's (checkpoint, config): {changed}; "
                "use the config it was trained with (e.g. the same --config.model.size or --config.model.hf_dir) "
                "or a fresh --workdir"
            )
        # An import-hf checkpoint made without data has seen no domains yet: the first data decides them.
        adopts = meta.get("imported_from") and not meta["domain_names"] and step == 0
        if meta["domain_names"] != run.domain_names and not adopts:
            raise ValueError(
                f"{workdir}: the checkpoint's domains {meta['domain_names']} differ from the data's "
                f"{run.domain_names}; use a fresh --workdir for different data"
            )

    return check


def resume(
    checkpointer: Checkpointer, run: RunSetup, weights: dict[str, float], data_iter: Any, workdir: str
) -> Restored | None:
    """Restores the newest readable checkpoint and, where it still applies, the data position; None if none."""
    restored = checkpointer.restore_latest(
        run.abstract_state,
        on_corrupt=run.config.train.get("on_corrupt_checkpoint", "fallback"),
        check_meta=_meta_checker(run, workdir),
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
    logging.info("Resumed from %s at step %d.", checkpointer_dir(workdir), step)
    return restored


def restore_params(run: RunSetup, workdir: str, step: int | None = None) -> tuple[Any, int]:
    """The params of a workdir's checkpoint (the newest readable one by default), sharded for `run`'s mesh.

    Only the params are read: jobs that run the model (eval, generate, IFD, teachers, export-hf) never
    load the optimizer's moments (issue 19: load time and host memory).
    """
    directory = checkpointer_dir(workdir)
    if not storage.isdir(directory):
        raise FileNotFoundError(f"no checkpoint in {directory}: train first (distill-jax train --workdir=...)")
    checkpointer = Checkpointer(directory)
    try:
        if step is not None:
            state, _, _ = checkpointer.restore(step, run.abstract_state, params_only=True)
            return state.params, step
        # A reader never moves damaged steps (a training job may own the directory); it just skips them.
        restored = checkpointer.restore_latest(
            run.abstract_state, check_meta=_meta_checker(run, workdir), params_only=True
        )
        if restored is None:
            raise FileNotFoundError(
                f"no readable checkpoint in {directory}: train first (distill-jax train --workdir=...)"
            )
        return restored.state.params, restored.step
    finally:
        checkpointer.close()


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
