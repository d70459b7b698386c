"""Orbax checkpoints of everything a run needs to continue exactly: train state, data-iterator state, metadata.

A checkpoint directory per step holds three items:
  state/  the TrainState (params, optimizer state, step), written by every process for its shards;
  data/   every process's grain iterator state after the last consumed batch (JSON, gathered to
          process 0, which alone writes JSON items);
  meta/   JSON: config, domain list, mixture weights, metrics at save time.
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
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                data=ocp.args.JsonRestore(),
                meta=ocp.args.JsonRestore(),
            ),
        )
        return restored["state"], restored["data"], restored["meta"]

    def restore_meta(self, step: int) -> dict[str, Any]:
        return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
