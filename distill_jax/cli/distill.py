"""`distill-jax distill --config=configs/baldistill_*.py --workdir=DIR`: all stages of every configured method.

Re-running the same command resumes where it stopped (after a kill or a SIGTERM), without
re-planning or re-buying anything; the report compares the methods at the same budget.
"""

from __future__ import annotations

import os

from absl import app, flags, logging

from distill_jax.cli import common

_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for the pool split, stages, ledger, checkpoints, report.")
_CONFIG = common.define_config_flag("default")
common.define_distributed_flags()
flags.mark_flags_as_required(["workdir"])


def main(argv):
    del argv
    common.configure_logging()
    common.initialize_distributed()
    from distill_jax.distill import report, scheduler

    config = _CONFIG.value
    workdir = _WORKDIR.value
    try:
        result = scheduler.run_distillation(config, workdir)
    except scheduler.Preempted as stop:
        logging.warning("%s; re-run the same command to resume.", stop)
        return
    if result:
        print(report.markdown(result))
        print(f"Report: {os.path.join(workdir, 'report.md')}   Plot: {os.path.join(workdir, 'distill_curves.png')}")


def run(argv):
    app.run(main, argv=argv)
