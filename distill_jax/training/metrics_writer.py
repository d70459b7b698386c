"""Where metrics go: TensorBoard scalars and a JSON-lines log in the workdir (process 0 only).

On object storage (which cannot append) both are written to a local working copy and uploaded
whole after each logged row, one PUT per file: a preempted run loses at most the row in flight.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from collections.abc import Iterable, Mapping

import jax
from tensorboardX import SummaryWriter

from distill_jax import atomic, storage


def _kind(names: Iterable[str]) -> frozenset[str]:
    """What a row is ("train"+"perf", "eval"): the names' first components. Per-domain names vary by interval."""
    return frozenset(name.split("/", 1)[0] for name in names)


class MetricsWriter:
    """Writes scalars to `workdir/tensorboard` and appends them to `workdir/metrics.jsonl`.

    The JSONL file is the machine-readable record (one object per logging step); TensorBoard is for
    people. Non-finite values are written as null in JSON so the file stays valid, and are left out
    of TensorBoard (which warns once per value).

    ``resume_step``: the step the run continues from. Rows after it describe steps the resumed run
    will redo (they were logged after the checkpoint it restores), so they are dropped from the
    file; a row of the same step and the same metric names as one already in the file (the final
    eval of a run that was already complete) is not written again. So every (step, kind) appears once,
    kind being the names' first components (train/perf, eval).
    """

    def __init__(self, workdir: str, resume_step: int | None = None):
        self.enabled = jax.process_index() == 0
        self.tensorboard_dir = storage.join(workdir, "tensorboard")
        self.jsonl_path = storage.join(workdir, "metrics.jsonl")
        self._written: set[tuple[int, frozenset[str]]] = set()
        self._tb = self._jsonl = self._mirror = None
        if not self.enabled:
            return
        self._mirror = storage.LocalMirror(self.jsonl_path, "metrics")
        self._load(resume_step)
        # TensorBoard appends to event files: on object storage they are built locally and uploaded.
        self._tb_local = (
            tempfile.mkdtemp(dir=storage.staging_dir(workdir, "tensorboard"))
            if storage.is_remote(workdir)
            else self.tensorboard_dir
        )
        self._tb = SummaryWriter(self._tb_local)
        self._jsonl = open(self._mirror.local, "a", encoding="utf-8")

    def _load(self, resume_step: int | None) -> None:
        try:
            with open(self._mirror.local, encoding="utf-8") as f:
                lines = f.readlines()
        except FileNotFoundError:
            return
        kept = []
        for line in lines:
            try:
                row = json.loads(line)
                step = int(row["step"])
            except (ValueError, KeyError, TypeError):
                continue  # A line cut by a kill -9 mid-write: drop it.
            if resume_step is not None and step > resume_step:
                continue
            kept.append(line if line.endswith("\n") else line + "\n")
            self._written.add((step, _kind(k for k in row if k not in ("step", "time"))))
        if len(kept) != len(lines):
            atomic.write_text(self._mirror.local, "".join(kept))
            self._mirror.sync()

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        kind = (step, _kind(scalars))
        if kind in self._written:
            return
        self._written.add(kind)
        for name, value in scalars.items():
            if math.isfinite(float(value)):
                self._tb.add_scalar(name, float(value), step)
        record = {
            "step": step,
            "time": time.time(),
            **{k: (float(v) if math.isfinite(float(v)) else None) for k, v in scalars.items()},
        }
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        self._sync()

    def _sync(self) -> None:
        """Uploads both working copies (no-op for a local workdir, where they are the files)."""
        self._mirror.sync()
        if self._tb_local != self.tensorboard_dir:
            self._tb.flush()
            storage.upload_tree(self._tb_local, self.tensorboard_dir)

    def flush(self) -> None:
        if self.enabled:
            self._tb.flush()
            self._sync()

    def close(self) -> None:
        if self.enabled:
            self._tb.close()
            self._jsonl.close()
            self._sync()
            self._mirror.discard()
            if self._tb_local != self.tensorboard_dir:
                shutil.rmtree(self._tb_local, ignore_errors=True)
