"""`distill-jax paraphrase-demo --workdir=DIR`: paraphrase distillation end to end on APTY (flags only).

The chain is distill_jax.paraphrase.demo.run_paraphrase_demo: APTY's ChatGPT paraphrases ->
filtered corpus -> prepare -> train --config's student (configs/paraphrase_apty_demo.py by default:
a tiny byte-level T5, CPU minutes) -> decoding presets vs the teacher -> report and frontier plot.
"""

from __future__ import annotations

from absl import flags

from distill_jax.cli import common

DEFAULT_APTY = "../shared/data/apty_chatgpt_paraphrase_types/apty_base.csv"

_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for the corpus, shards, checkpoints and report.")
_APTY = flags.DEFINE_string("apty", DEFAULT_APTY, "APTY's apty_base.csv (semicolon CSV).")
_TEACHER_PARAMS = flags.DEFINE_float(
    "teacher_params", 0.0, "The teacher's parameter count for the size ratio (unknown for API models: 0 leaves it out)."
)
_TEACHER_SPEED = flags.DEFINE_float(
    "teacher_examples_per_s", 0.0, "The teacher's measured paraphrases/s for the speed ratio (0 leaves it out)."
)
_CONFIG = common.define_config_flag("paraphrase_demo")
flags.mark_flags_as_required(["workdir"])


def main() -> None:
    from distill_jax.paraphrase.demo import run_paraphrase_demo

    try:
        _, text = run_paraphrase_demo(
            _WORKDIR.value, _CONFIG.value, _APTY.value, _TEACHER_PARAMS.value, _TEACHER_SPEED.value
        )
    except FileNotFoundError as e:
        raise SystemExit(f"paraphrase-demo: {e}") from None
    print(text)
