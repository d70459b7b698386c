"""Training progress for people: a tqdm bar on a terminal, one plain line per log interval otherwise.

Both count *finished* steps: the loop dispatches steps ahead of the devices, so counting them as
they are queued overstated the rate at start and the position when a run was killed. The bar moves
at the log interval, right after the host sync that proves those steps are done. In a log file a
tqdm bar is one line rewritten with carriage returns that looks stalled; there each interval prints
`train: step N/T (P%) R steps/s, ETA ..., loss L` instead.
"""

from __future__ import annotations

import datetime
import sys
from typing import IO

from absl import logging
from tqdm import tqdm


def _eta(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(round(seconds))))


class Progress:
    def __init__(
        self,
        total: int,
        initial: int,
        *,
        enabled: bool = True,
        interactive: bool | None = None,
        file: IO[str] | None = None,
    ):
        stream = file if file is not None else sys.stderr
        self.interactive = stream.isatty() if interactive is None else interactive
        self.enabled, self.total = enabled, total
        self.bar = tqdm(
            total=total,
            initial=initial,
            desc="train",
            unit="step",
            file=stream,
            disable=not (enabled and self.interactive),
            dynamic_ncols=True,
        )
        self.step = initial
        self.lines: list[str] = []  # The plain lines printed (kept for tests and callers that report them).

    def finished(
        self, step: int, steps: int, seconds: float, loss: float | None = None, tokens_per_s: float = 0.0
    ) -> str:
        """Records that the loop has *synchronised* at `step`, `steps` steps after the previous sync."""
        self.bar.update(step - self.step)
        self.step = step
        rate = steps / seconds if seconds > 0 else 0.0
        eta = _eta((self.total - step) / rate) if rate > 0 else "?"
        if loss is not None:
            self.bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tokens_per_s:.0f}")
        line = (
            f"train: step {step}/{self.total} ({100.0 * step / max(self.total, 1):.0f}%) {rate:.2f} steps/s, "
            f"ETA {eta}" + (f", loss {loss:.4f}" if loss is not None else "")
        )
        if self.enabled and not self.interactive:
            logging.info("%s", line)
            self.lines.append(line)
        return line

    def close(self) -> None:
        self.bar.close()
