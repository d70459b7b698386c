"""Where metrics go: TensorBoard scalars and a JSON-lines log in the workdir (process 0 only)."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping

import jax
from tensorboardX import SummaryWriter


class MetricsWriter:
    """Writes scalars to `workdir/tensorboard` and appends them to `workdir/metrics.jsonl`.

    The JSONL file is the machine-readable record (one object per logging step); TensorBoard is for
    people. Non-finite values are written as null in JSON so the file stays valid.
    """

    def __init__(self, workdir: str):
        self.enabled = jax.process_index() == 0
        self.tensorboard_dir = os.path.join(workdir, "tensorboard")
        self.jsonl_path = os.path.join(workdir, "metrics.jsonl")
        self._tb = SummaryWriter(self.tensorboard_dir) if self.enabled else None
        self._jsonl = open(self.jsonl_path, "a", encoding="utf-8") if self.enabled else None

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        for name, value in scalars.items():
            self._tb.add_scalar(name, float(value), step)
        record = {
            "step": step,
            "time": time.time(),
            **{k: (float(v) if math.isfinite(float(v)) else None) for k, v in scalars.items()},
        }
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()

    def flush(self) -> None:
        if self.enabled:
            self._tb.flush()

    def close(self) -> None:
        if self.enabled:
            self._tb.close()
            self._jsonl.close()
