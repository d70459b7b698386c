"""`distill-jax distill --config=configs/baldistill_*.py --workdir=DIR`: all stages of every configured method.

Re-running the same command resumes where it stopped (after a kill or a SIGTERM), without
re-planning or re-buying anything; the report compares the methods at the same budget.
`--dry_run` prints the planned teacher calls, tokens and cost per stage and method, spending nothing.
A wrong teacher setting (key, model, URL, price) or an exhausted budget ends the run with one
message and a non-zero exit; what was bought before is in the ledger and the response cache.
"""

from __future__ import annotations

from absl import flags, logging

from distill_jax import storage
from distill_jax.cli import common

_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for the pool split, stages, ledger, checkpoints, report.")
_CONFIG = common.define_config_flag("default")
_DRY_RUN = flags.DEFINE_bool(
    "dry_run", False, "Print the planned teacher calls, tokens and cost per stage and method; send nothing."
)
common.define_distributed_flags()
flags.mark_flags_as_required(["workdir"])


def main() -> None:
    from distill_jax.distill import report, scheduler
    from distill_jax.training.trainer import STOP_ERRORS

    config = _CONFIG.value
    workdir = _WORKDIR.value
    try:
        if _DRY_RUN.value:
            from distill_jax.distill import dry_run

            print(dry_run.format_plan(dry_run.plan(config)))
            return
        result = scheduler.run_distillation(config, workdir)
    except scheduler.Preempted as stop:
        logging.warning("%s; re-run the same command to resume.", stop)
        return
    except STOP_ERRORS as err:
        # Non-finite values, a failed save: one line, exit 1 (a setting to change is common.run's exit 2).
        raise SystemExit(f"distill: {err}") from None
    if result:
        print(report.markdown(result))
        print(f"Report: {storage.join(workdir, 'report.md')}   Plot: {storage.join(workdir, 'distill_curves.png')}")
