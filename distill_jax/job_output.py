"""A resumable batch job's output directory: plan.json says which job it holds, chunk files what is done.

`generate` and `teacher-logits` write their results in chunks; a rerun of the same job (same plan)
skips the chunks already written, and a different job in the same directory is refused rather
than mixed in. Process 0 reads the directory and every process gets its verdict, so all agree.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from distill_jax import atomic, storage

PLAN_FILE = "plan.json"


def plan_differences(saved: Mapping[str, Any], plan: Mapping[str, Any]) -> list[str]:
    """`key: saved -> planned` for every field where two job plans differ."""
    return [
        f"{k}: {saved.get(k)!r} -> {plan.get(k)!r}"
        for k in sorted(set(saved) | set(plan))
        if saved.get(k) != plan.get(k)
    ]


def start(
    output_dir: str,
    plan: Mapping[str, Any],
    num_chunks: int,
    *,
    chunks_dir: str,
    finished_chunks: Callable[[], set[int]],
    outputs: Sequence[str],
    overwrite: bool,
    what: str,
) -> list[bool]:
    """Checks or writes OUTPUT_DIR/plan.json; one flag per chunk, True where the chunk is already written.

    `outputs` (names under output_dir besides plan.json and chunks_dir) are removed with ``overwrite``.
    Raises ValueError when the directory holds a different job (unless ``overwrite``).
    """
    status = np.zeros((num_chunks + 1,), np.int32)
    if jax.process_index() == 0:
        plan_path = storage.join(output_dir, PLAN_FILE)
        if overwrite:
            for name in (chunks_dir, PLAN_FILE, *outputs):
                storage.remove_tree(storage.join(output_dir, name))
        storage.makedirs(storage.join(output_dir, chunks_dir))
        if storage.exists(plan_path):
            differences = plan_differences(json.loads(storage.read_text(plan_path)), plan)
            if differences:
                logging.error("%s holds another %s job: %s", output_dir, what, "; ".join(differences))
                status[0] = 1
        else:
            atomic.write_text(plan_path, json.dumps(plan, indent=2, sort_keys=True) + "\n")
        done = finished_chunks()
        status[1:] = [c in done for c in range(num_chunks)]
    if jax.process_count() > 1:
        status = np.asarray(multihost_utils.broadcast_one_to_all(status))
    if status[0]:
        raise ValueError(
            f"{output_dir} holds the {what} of a different job (see {PLAN_FILE} and the error logged on process 0); "
            "use another --output_dir, or --overwrite to start over"
        )
    return [bool(x) for x in status[1:]]
