"""`distill-jax teacher-logits --teacher=RUN_OR_HF_DIR --data=PREPARED_DIR --output_dir=OUT`: stored top-k for KD."""

from __future__ import annotations

import json

from absl import flags

from distill_jax.cli import common

_TEACHER = flags.DEFINE_string(
    "teacher", None, "The teacher: a training workdir (its latest checkpoint, or --step) or a Hugging Face T5/BART dir."
)
_DATA = flags.DEFINE_string("data", None, "A `distill-jax prepare` output directory (the student's training data).")
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", None, "Where chunks/, plan.json and meta.json go; train with --config.kd.logits_dir=OUT."
)
_TOP_K = flags.DEFINE_integer("top_k", 128, "Teacher log-probs kept per target token (k).")
_TEMPERATURE = flags.DEFINE_float("temperature", 1.0, "Softmax temperature of the stored log-probs (recorded).")
_STEP = flags.DEFINE_integer("step", None, "Teacher checkpoint step; default: the latest.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Global batch of teacher-forced rows.")
_CHUNK_SIZE = flags.DEFINE_integer(
    "chunk_size", 1024, "Examples per chunk (rounded up to a multiple of the batch): the unit of resumption."
)
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Delete an earlier job's output in --output_dir instead of resuming."
)
common.define_distributed_flags()
flags.mark_flags_as_required(["teacher", "data", "output_dir"])


def main() -> None:
    import jax

    from distill_jax.training.teacher_logits import teacher_logits

    meta = teacher_logits(
        _TEACHER.value,
        _DATA.value,
        _OUTPUT_DIR.value,
        **common.flag_values(_TOP_K, _TEMPERATURE, _STEP, _BATCH_SIZE, _CHUNK_SIZE, _OVERWRITE),
    )
    if jax.process_index() == 0:
        keys = ("num_examples", "num_tokens", "top_k", "temperature", "ids_dtype", "bytes_per_token", "payload_bytes")
        print(json.dumps({**{k: meta[k] for k in keys}, "run": meta["run"]}, indent=2))
