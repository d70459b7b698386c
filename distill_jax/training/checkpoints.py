"""Orbax checkpoints of everything a run needs to continue exactly: train state, data-iterator state, metadata.

A checkpoint directory per step holds three items:
  state/  the TrainState (params, optimizer state, step), written by every process for its shards;
  data/   every process's grain iterator state after the last consumed batch (JSON, gathered to
          process 0, which alone writes JSON items);
  meta/   JSON: config, domain list, mixture weights, metrics at save time.
With LoRA adapters in the params, the frozen base weights never change, so they are written once
(``frozen_base/`` beside the step directories) and each step's ``state/`` holds the adapters, their
optimizer state and the step only: a step of a LoRA run costs the size of its adapters, not of the
model. Restoring reassembles the full params from both.
Saves are asynchronous (the step loop continues while bytes go to disk) and atomic (Orbax writes
to a temporary directory and renames it when complete), so a kill -9 at any moment leaves the last
finished checkpoint intact.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from orbax.checkpoint import checkpoint_managers

from distill_jax.models import lora

FROZEN_BASE = "frozen_base"


def _gather_json(value: Any) -> list[Any]:
    """`value` from every process, in process order (collective: every process must call it)."""
    if jax.process_count() == 1:
        return [value]
    encoded = np.frombuffer(json.dumps(value).encode("utf-8"), np.uint8)
    lengths = multihost_utils.process_allgather(np.array([encoded.size], np.int32)).reshape(-1)
    padded = np.zeros((int(lengths.max()),), np.uint8)
    padded[: encoded.size] = encoded
    gathered = multihost_utils.process_allgather(padded)
    return [json.loads(bytes(row[:n]).decode("utf-8")) for row, n in zip(gathered, lengths)]


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


def _split_frozen_base(state: Any) -> tuple[Any, Any | None]:
    """(the state with only the adapter params, the frozen base params) for a LoRA state; (state, None) otherwise."""
    adapters = lora.adapters_only(state.params)
    if not adapters:
        return state, None
    return state.replace(params=adapters), lora.strip_adapters(state.params)


class Checkpointer:
    """Keep-last-N plus keep-best-N checkpoints of a training run."""

    def __init__(
        self,
        directory: str,
        *,
        keep_last: int = 3,
        keep_best: int = 0,
        best_metric: str = "eval/loss",
        async_save: bool = True,
    ):
        self.best_metric = best_metric
        policies: list[Any] = [checkpoint_managers.LatestN(n=max(keep_last, 1))]
        if keep_best > 0:
            # BestN sorts ascending and keeps the end of the list: reverse for "lower is better".
            lower_is_better = "loss" in best_metric
            policies.append(
                checkpoint_managers.BestN(
                    get_metric_fn=lambda metrics: metrics[best_metric],
                    reverse=lower_is_better,
                    n=keep_best,
                    keep_checkpoints_without_metrics=False,
                )
            )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=checkpoint_managers.AnyPreservationPolicy(policies),
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,
        )
        self._manager = ocp.CheckpointManager(os.path.abspath(directory), options=options)
        # Orbax writes it to a temporary name and renames it when complete: present means whole.
        self._frozen_base_dir = os.path.join(os.path.abspath(directory), FROZEN_BASE)
        self._frozen_base_written = os.path.isdir(self._frozen_base_dir)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(
        self,
        step: int,
        state: Any,
        data_state: dict[str, Any],
        meta: dict[str, Any],
        metrics: dict[str, float] | None = None,
    ) -> None:
        """Starts an asynchronous save; returns once the arrays are copied off the devices."""
        if step in self._manager.all_steps():
            return
        state, frozen_base = _split_frozen_base(state)
        if frozen_base is not None and not self._frozen_base_written:
            with ocp.StandardCheckpointer() as writer:
                writer.save(self._frozen_base_dir, frozen_base)
            self._frozen_base_written = True
        usable = None
        if metrics is not None and self.best_metric in metrics:
            usable = {self.best_metric: float(metrics[self.best_metric])}
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=ocp.args.JsonSave({"per_process": _gather_json(data_state)}),
                meta=ocp.args.JsonSave(meta),
            ),
            metrics=usable,
        )

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        """Restores onto the shardings carried by `abstract_state` (ShapeDtypeStructs), resharding if needed."""
        abstract_state, abstract_base = _split_frozen_base(abstract_state)
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                data=ocp.args.JsonRestore(),
                meta=ocp.args.JsonRestore(),
            ),
        )
        state = restored["state"]
        if abstract_base is not None:
            if not self._frozen_base_written:
                raise FileNotFoundError(
                    f"{self._frozen_base_dir} is missing: the LoRA checkpoint of step {step} holds only the "
                    "adapters and needs the frozen base weights written beside it at the run's first save"
                )
            with ocp.StandardCheckpointer() as reader:
                base = reader.restore(self._frozen_base_dir, abstract_base)
            state = state.replace(params=lora.with_adapters(base, state.params))
        return state, restored["data"], restored["meta"]

    def restore_meta(self, step: int) -> dict[str, Any]:
        return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
