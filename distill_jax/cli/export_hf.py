"""`distill-jax export-hf --workdir=RUN [--step=N] --out=DIR`: a checkpoint as a transformers T5 or BART directory.

DIR gets config.json, model.safetensors, generation_config.json and the run's tokenizer (the one
its training data was prepared with), so `AutoModelForSeq2SeqLM.from_pretrained(DIR)` (T5 or BART) and
`AutoTokenizer.from_pretrained(DIR)` load the student with no missing or unexpected weights.
"""

from __future__ import annotations

from absl import flags

from distill_jax.cli import common

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir holding config.json and checkpoints/.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step to export; default: the latest.")
_OUT = flags.DEFINE_string("out", None, "Output directory for the transformers model.")
_OVERWRITE = flags.DEFINE_boolean("overwrite", False, "Replace a non-empty --out directory.")
_LORA_FORMAT = flags.DEFINE_enum(
    "lora_format",
    "merged",
    ["merged", "peft"],
    "LoRA runs: fold adapters into the weights, or write the base model plus a PEFT adapter in OUT/lora_adapter.",
)
common.define_distributed_flags()
flags.mark_flags_as_required(["workdir", "out"])


def main() -> None:
    from distill_jax.training.hf_interop import export_hf

    step = export_hf(_WORKDIR.value, _OUT.value, _STEP.value, _OVERWRITE.value, _LORA_FORMAT.value)
    print(f"Exported step {step} of {_WORKDIR.value} to {_OUT.value}")
