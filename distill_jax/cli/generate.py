"""`distill-jax generate --checkpoint=RUN --data=FILE_OR_PREPARED_DIR --output_dir=OUT`: decode a dataset, resumably."""

from __future__ import annotations

from absl import flags

from distill_jax.cli import common

_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None, "Training workdir (its latest checkpoint, or --step) or WORKDIR/checkpoints/STEP."
)
_DATA = flags.DEFINE_string(
    "data", None, "JSONL/CSV/TSV/Parquet/JSON file (read like `prepare` reads it) or a prepared directory."
)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where chunks/, predictions.jsonl and summary.json go.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step; default: the latest.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 0, "Global batch; 0 = the run's eval.batch_size.")
_CHUNK_SIZE = flags.DEFINE_integer(
    "chunk_size", 512, "Examples per chunk file (rounded up to a multiple of the batch): the unit of resumption."
)
_FIELDS = flags.DEFINE_string(
    "fields", "", "Field mapping for a data file over the run's prepare.fields, e.g. input=text,target=label,id="
)
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Delete an earlier job's output in --output_dir instead of resuming it."
)
common.define_decoding_flags()
common.define_distributed_flags()
flags.mark_flags_as_required(["checkpoint", "data", "output_dir"])


def main() -> None:
    import jax

    from distill_jax.evaluation.generate import format_summary, generate

    summary = generate(
        _CHECKPOINT.value,
        _DATA.value,
        _OUTPUT_DIR.value,
        common.decode_settings(),
        fields=common.parse_pairs(_FIELDS.value, "fields"),
        **common.flag_values(_STEP, _BATCH_SIZE, _CHUNK_SIZE, _OVERWRITE),
    )
    if jax.process_index() == 0:
        print(format_summary(summary))
