"""`distill-jax import-hf --hf_dir=DIR --workdir=OUT --config=...`: a step-0 run checkpoint from an HF T5 directory.

The workdir it writes is an ordinary run: `distill-jax eval --workdir=OUT` evaluates the pretrained
model as is, and `distill-jax train --workdir=OUT` with the same config continues from it. The config
must name the prepared training data (the run's domains and tokenizer are part of the checkpoint),
and `model.hf_dir` is set to --hf_dir, so the run takes the HF model's architecture.
"""

from __future__ import annotations

import os

import ml_collections
from absl import app, flags

from distill_jax.cli import common

_HF_DIR = flags.DEFINE_string("hf_dir", None, "Local transformers T5 directory: config.json + *.safetensors.")
_WORKDIR = flags.DEFINE_string("workdir", None, "New run directory; the checkpoint goes to WORKDIR/checkpoints/0.")
_CONFIG = common.define_config_flag()
common.define_distributed_flags()
flags.mark_flags_as_required(["hf_dir", "workdir"])


def import_hf(hf_dir: str, workdir: str, config: ml_collections.ConfigDict) -> None:
    """Writes `workdir`'s config.json and a step-0 checkpoint holding `hf_dir`'s weights.

    The optimizer state is freshly initialised from `config.optimizer`, exactly as `train` would
    initialise it from `model.hf_dir`. Refuses a workdir that already holds checkpoints.
    """
    import dataclasses
    import json

    import jax

    from distill_jax.models.hf_t5 import hf_t5_config
    from distill_jax.training.checkpoints import Checkpointer
    from distill_jax.training.run_setup import setup_run
    from distill_jax.training.trainer import checkpointer_dir, hf_initial_state

    hf_dir = os.path.abspath(hf_dir)
    hf_t5_config(hf_dir)  # An unsupported architecture fails here, before any data is read.
    cfg = config.copy_and_resolve_references()
    cfg.model.hf_dir = hf_dir
    checkpointer = Checkpointer(checkpointer_dir(workdir))
    try:
        if checkpointer.latest_step() is not None:
            raise FileExistsError(
                f"{checkpointer_dir(workdir)} already holds checkpoints; import into a fresh --workdir"
            )
        run = setup_run(cfg)
        state = hf_initial_state(run)
        meta = {
            "config": json.loads(cfg.to_json_best_effort()),
            "domain_names": run.domain_names,
            # No data consumed yet: None never equals the run's weights, so training starts a fresh data order.
            "mixture_weights": None,
            "model": dataclasses.asdict(run.model_config),
            "tokenizer": run.manifest["tokenizer"],
            "train_content_hash": run.manifest.get("content_hash"),
            "imported_from": hf_dir,
        }
        checkpointer.save(0, state, {}, meta)
    finally:
        checkpointer.close()
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(cfg.to_json_best_effort(indent=2))


def main(argv):
    del argv
    common.configure_logging()
    common.initialize_distributed()
    import_hf(_HF_DIR.value, _WORKDIR.value, _CONFIG.value)
    workdir, hf_dir = _WORKDIR.value, os.path.abspath(_HF_DIR.value)
    print(
        f"Imported {hf_dir} into {workdir} at step 0.\n"
        f"Evaluate:  distill-jax eval --workdir={workdir} --data=PREPARED_EVAL_DIR\n"
        f"Train on:  distill-jax train --workdir={workdir} (the same --config flags) --config.model.hf_dir={hf_dir}"
    )


def run(argv):
    app.run(main, argv=argv)
