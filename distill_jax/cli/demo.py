"""`distill-jax demo --workdir=DIR`: random sampling vs BalDistill at the same teacher budget, in CPU minutes.

Generates the embedded long-tailed pool, runs `distill` for random, BalDistill-N and BalDistill-A
with the exact program teacher, and prints per-domain answer accuracy per method
(distill_jax.distill.demo). --single_student trains one student on the natural mix instead.
"""

from __future__ import annotations

from absl import flags

from distill_jax.cli import common

_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for the corpus, shards, checkpoints, logs and report.")
_NUM_TRAIN = flags.DEFINE_integer("num_train", 3000, "Rows in the generated long-tailed pool (split by a power law).")
_SINGLE = flags.DEFINE_bool(
    "single_student", False, "Train one student on the pool's natural mix (the pre-BalDistill demo) instead."
)
_CONFIG = common.define_config_flag("baldistill_demo")
flags.mark_flags_as_required(["workdir"])


def main() -> None:
    from distill_jax.distill import demo
    from distill_jax.training.trainer import STOP_ERRORS

    run = demo.run_training_demo if _SINGLE.value else demo.run_baldistill_demo
    try:
        _, text = run(_WORKDIR.value, _CONFIG.value, _NUM_TRAIN.value)
    except STOP_ERRORS as err:  # One line, no traceback: non-finite values, a failed save.
        raise SystemExit(f"distill-jax demo: {err}") from None
    print(text)
