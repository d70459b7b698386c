"""SIGTERM (preemption) as "save at an agreed step and exit 0", on one process or a multi-host pod.

TPU/GKE preemptions and SLURM's `scancel --signal=TERM` may reach some hosts and not others. Saving
is collective, so a host that saved on its own signal would wait forever for the others. On several
processes the decision therefore goes through JAX's preemption sync point: jax.distributed's
coordination service installs a SIGTERM notifier on every process at initialize, and
`multihost_utils.reached_preemption_sync_point(step)` turns true on every process at the same step
once any of them got the signal (no per-step collective: the coordination service propagates the
notice, each process checks a local flag). On one process a Python handler sets a flag.
"""

from __future__ import annotations

import signal

import jax
from absl import logging
from jax.experimental import multihost_utils


class Preemption:
    """`reached(step)` once per step, in step order, on every process: True at the step to save and stop."""

    def __init__(self):
        # A Python handler would replace the coordination service's notifier: only install it alone.
        self._agreed = jax.process_count() > 1
        self._requested = False
        self._previous = None

    def __enter__(self) -> Preemption:
        if not self._agreed:
            try:
                self._previous = signal.signal(signal.SIGTERM, self._handle)
            except ValueError:  # Not the main thread (e.g. a worker thread in tests): no handler.
                self._previous = None
        return self

    def _handle(self, signum, frame) -> None:
        logging.warning("SIGTERM received: saving a checkpoint at the next step and exiting.")
        self._requested = True

    def reached(self, step: int) -> bool:
        if self._agreed:
            if multihost_utils.reached_preemption_sync_point(step):
                logging.warning("Preemption: every process saves at step %d and exits.", step)
                self._requested = True
        return self._requested

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
