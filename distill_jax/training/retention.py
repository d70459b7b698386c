"""Which checkpoints to keep: the newest N, the best N by a metric, and always the newest verified one.

The record of what each saved step scored lives in the checkpoint directory (``retention.json``),
not in memory, so "best" survives resumes: Orbax's own ``BestN`` only knows the metrics of the saves
made by the running process, and after a restart it kept nothing but the newest steps.

Every step this code records was checked finite by the trainer before it was saved (a non-finite
state is never saved), so the newest recorded step is the last *known good* checkpoint; steps found
on disk without a record (written before the record existed, or by hand) count for keep_last but can
never push a recorded step out of the directory.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

from distill_jax import atomic, storage

RECORD_FILE = "retention.json"


def lower_is_better(metric: str) -> bool:
    """Losses go down; accuracies, BLEU and the like go up (the T5X/MaxText naming convention)."""
    return "loss" in metric


class RetentionRecord:
    """The persisted per-step record: {step: {"metric": value or None}} plus the metric's name."""

    def __init__(self, directory: str, best_metric: str):
        self.path = storage.join(directory, RECORD_FILE)
        self.best_metric = best_metric
        self.steps: dict[int, float | None] = {}
        try:
            saved = json.loads(storage.read_text(self.path))
            if saved.get("best_metric") == best_metric:
                self.steps = {int(k): v.get("metric") for k, v in saved.get("steps", {}).items()}
            else:
                # Another metric decides "best" now: the old values do not compare with new ones.
                self.steps = {int(k): None for k in saved.get("steps", {})}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, AttributeError):
            # A damaged record must not stop training; recorded steps just lose their "best" protection.
            self.steps = {}

    def add(self, step: int, metric: float | None) -> None:
        self.steps[step] = metric if metric is not None and math.isfinite(metric) else None

    def forget(self, steps: Iterable[int]) -> None:
        for step in steps:
            self.steps.pop(step, None)

    def write(self) -> None:
        data: dict[str, Any] = {
            "best_metric": self.best_metric,
            "steps": {str(s): {"metric": m} for s, m in sorted(self.steps.items())},
        }
        atomic.write_text(self.path, json.dumps(data, indent=1) + "\n")


def steps_to_keep(
    on_disk: Iterable[int], record: dict[int, float | None], keep_last: int, keep_best: int, best_metric: str
) -> set[int]:
    """keep_last newest ∪ keep_best best (recorded metric) ∪ the newest recorded (known finite) step."""
    steps = sorted(set(on_disk))
    keep = set(steps[-max(keep_last, 1) :])
    recorded = [s for s in steps if s in record]
    if recorded:
        keep.add(recorded[-1])
    scored = [s for s in recorded if record[s] is not None]
    if keep_best > 0 and scored:
        sign = 1.0 if lower_is_better(best_metric) else -1.0
        # Ties go to the newer step (it trained longer for the same score).
        ranked = sorted(scored, key=lambda s: (sign * record[s], -s))
        keep.update(ranked[:keep_best])
    return keep


def best_step(record: dict[int, float | None], best_metric: str) -> int | None:
    scored = [s for s, m in record.items() if m is not None]
    if not scored:
        return None
    sign = 1.0 if lower_is_better(best_metric) else -1.0
    return min(scored, key=lambda s: (sign * record[s], -s))
