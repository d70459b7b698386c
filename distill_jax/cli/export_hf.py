"""`distill-jax export-hf --workdir=RUN [--step=N] --out=DIR`: a run's checkpoint as a transformers T5 directory.

DIR gets config.json, model.safetensors, generation_config.json and the run's tokenizer (the one
its training data was prepared with), so `T5ForConditionalGeneration.from_pretrained(DIR)` and
`AutoTokenizer.from_pretrained(DIR)` load the student with no missing or unexpected weights.
"""

from __future__ import annotations

import os

from absl import app, flags

from distill_jax.cli import common

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir holding config.json and checkpoints/.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step to export; default: the latest.")
_OUT = flags.DEFINE_string("out", None, "Output directory for the transformers model.")
_OVERWRITE = flags.DEFINE_boolean("overwrite", False, "Replace a non-empty --out directory.")
common.define_distributed_flags()
flags.mark_flags_as_required(["workdir", "out"])


def export_hf(workdir: str, out_dir: str, step: int | None = None, overwrite: bool = False) -> int:
    """Writes checkpoint `step` (default: the latest) of `workdir` to `out_dir`; returns the step exported."""
    import json

    import jax
    import ml_collections
    from jax.experimental import multihost_utils

    from distill_jax.models.hf_t5 import save_hf_t5
    from distill_jax.training.run_setup import setup_run
    from distill_jax.training.trainer import restore_params

    config_path = os.path.join(workdir, "config.json")
    if not os.path.exists(config_path):
        raise FileNotFoundError(
            f"{config_path} not found: --workdir must be a directory written by `distill-jax train` or `import-hf`"
        )
    with open(config_path, encoding="utf-8") as f:
        cfg = ml_collections.ConfigDict(json.load(f))
    # The training manifest gives the tokenizer (checked against its fingerprint); eval data is not needed.
    run = setup_run(cfg, eval_dir="")
    params, step = restore_params(run, workdir, step)
    host_params = multihost_utils.process_allgather(params, tiled=True)
    if jax.process_index() == 0:
        tokenizer_dir = run.tokenizer.path if run.tokenizer.kind == "hf" else None
        save_hf_t5(out_dir, run.model_config, host_params, tokenizer_dir, overwrite=overwrite)
    return step


def main(argv):
    del argv
    common.configure_logging()
    common.initialize_distributed()
    step = export_hf(_WORKDIR.value, _OUT.value, _STEP.value, _OVERWRITE.value)
    print(f"Exported step {step} of {_WORKDIR.value} to {_OUT.value}")


def run(argv):
    app.run(main, argv=argv)
