"""Multi-host helpers every package may use: who writes, waiting for the others, gathering rows.

Every process runs the same program; process 0 alone writes shared files. These are collectives:
every process must call them in the same order.
"""

from __future__ import annotations

import json
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils


def is_main() -> bool:
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Waits until every process reached `name` (no-op on one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def gather_rows(rows: list[Any]) -> list[Any]:
    """Every process's JSON-serialisable rows, concatenated in process order."""
    if jax.process_count() == 1:
        return rows
    encoded = np.frombuffer(json.dumps(rows).encode("utf-8"), np.uint8)
    lengths = np.asarray(multihost_utils.process_allgather(np.array([encoded.size], np.int64))).reshape(-1)
    padded = np.zeros((max(int(lengths.max()), 1),), np.uint8)
    padded[: encoded.size] = encoded
    gathered = np.asarray(multihost_utils.process_allgather(padded))
    return [row for part, n in zip(gathered, lengths) for row in json.loads(bytes(part[:n]).decode("utf-8"))]


def sum_over_processes(x: np.ndarray) -> np.ndarray:
    """Element-wise sum of `x` over processes."""
    if jax.process_count() == 1:
        return x
    return np.asarray(multihost_utils.process_allgather(x)).sum(axis=0)
