"""`distill-jax import-hf --hf_dir=DIR --workdir=OUT --config=...`: a step-0 run checkpoint from an HF T5 or BART directory.

`distill-jax eval --workdir=OUT` then evaluates the pretrained model as is, and `distill-jax train
--workdir=OUT` with the same config (plus --config.model.hf_dir=DIR) continues from it. Converting
needs no data; with --config.data.train_dir the run records that data's domains and tokenizer and
checks that the tokenizer fits the model.
"""

from __future__ import annotations

import os

from absl import flags

from distill_jax.cli import common

_HF_DIR = flags.DEFINE_string(
    "hf_dir", None, "transformers T5-family or BART directory (local, gs:// or s3://): config.json + *.safetensors."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "New run directory; the checkpoint goes to WORKDIR/checkpoints/0.")
_CONFIG = common.define_config_flag()
common.define_distributed_flags()
flags.mark_flags_as_required(["hf_dir", "workdir"])


def main() -> None:
    from distill_jax.training.hf_interop import import_hf

    import_hf(_HF_DIR.value, _WORKDIR.value, _CONFIG.value)
    workdir, hf_dir = _WORKDIR.value, os.path.abspath(_HF_DIR.value)
    print(
        f"Imported {hf_dir} into {workdir} at step 0.\n"
        f"Evaluate:  distill-jax eval --workdir={workdir} --data=PREPARED_EVAL_DIR\n"
        f"Train on:  distill-jax train --workdir={workdir} (the same --config flags) --config.model.hf_dir={hf_dir}"
    )
