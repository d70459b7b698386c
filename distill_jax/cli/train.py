"""`distill-jax train --config=configs/NAME.py --workdir=DIR`: train or resume a student."""

from __future__ import annotations

from absl import flags

from distill_jax.cli import common

_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, logs and TensorBoard; a run resumes from it."
)
_CONFIG = common.define_config_flag()
common.define_distributed_flags()
flags.mark_flags_as_required(["workdir"])


def main() -> None:
    from distill_jax.training.trainer import STOP_ERRORS, train

    try:
        result = train(_CONFIG.value, _WORKDIR.value)
    except STOP_ERRORS as err:
        # One line, no traceback: non-finite values, a failed save, a refused damaged checkpoint.
        raise SystemExit(f"distill-jax train: {err}") from None
    if result.preempted:
        raise SystemExit(0)
