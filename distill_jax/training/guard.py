"""The finiteness guard's host side: read the step's on-device counters at the log interval and stop in one line.

The train step (step.py) counts, per interval, the steps whose loss, gradient norm or updated params
were not all finite, and the first such step. The trainer reads those counters with the other
metric sums (the one host sync of an interval) and once more before any save or eval, so a
non-finite state is never saved and no step pays an extra device round trip.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from absl import logging

from distill_jax.training.step import FIRST_NONFINITE, NO_STEP

# Counter -> the name the user sees (the metric it would have been logged as).
QUANTITIES = {"nonfinite_loss": "train/loss", "nonfinite_grad_norm": "train/grad_norm", "nonfinite_params": "params"}
GUARD_KEYS = (*QUANTITIES, "skipped_steps", FIRST_NONFINITE)


class TrainingStopped(RuntimeError):
    """The run stopped on purpose with a one-line reason; the CLI prints it and exits non-zero."""


class NonFiniteError(TrainingStopped):
    """A non-finite loss, gradient norm or parameter: the run stops before saving anything of it."""


def check_interval(
    counters: Mapping[str, np.ndarray],
    *,
    first_step: int,
    last_step: int,
    skipped_before: int,
    skip_cap: int,
    last_good: str,
) -> int:
    """Raises NonFiniteError if the interval [first_step, last_step] must stop the run; returns skipped total.

    ``skip_cap`` = 0: the first non-finite step stops the run. ``skip_cap`` = N > 0: such steps were
    skipped on device (params and optimizer state unchanged); the run stops once more than N were
    skipped over the whole run (``skipped_before`` carries the count across resumes).
    """
    first_bad = int(counters[FIRST_NONFINITE])
    if first_bad == NO_STEP:
        return skipped_before
    which = " and ".join(name for key, name in QUANTITIES.items() if float(counters[key]) > 0) or "a value"
    span = f"steps {first_step}-{last_step}" if first_step != last_step else f"step {last_step}"
    if skip_cap <= 0:
        raise NonFiniteError(
            f"non-finite {which} at step {first_bad} (first of {int(max(float(counters[k]) for k in QUANTITIES))} "
            f"in {span}); stopped without saving it. Last finite checkpoint: {last_good}. Lower "
            "optimizer.learning_rate or set optimizer.grad_clip_norm, or set train.skip_nonfinite_batches=N to "
            "skip up to N bad batches"
        )
    skipped = skipped_before + int(float(counters["skipped_steps"]))
    if skipped > skip_cap:
        raise NonFiniteError(
            f"{skipped} non-finite batches skipped ({which}; the latest in {span}), over "
            f"train.skip_nonfinite_batches={skip_cap}; stopped. Last finite checkpoint: {last_good}"
        )
    logging.warning(
        "Skipped %d non-finite batch(es) (%s) in %s, first at step %d: params and optimizer state kept (%d of %d).",
        skipped - skipped_before,
        which,
        span,
        first_bad,
        skipped,
        skip_cap,
    )
    return skipped
