"""`distill-jax prepare`: teacher corpus files -> validated, tokenized per-domain shards + manifest + rejects."""

from __future__ import annotations

from absl import flags

from distill_jax.cli import common

_INPUT = flags.DEFINE_list(
    "input", None, "Teacher corpus files (JSONL/JSON/CSV/TSV/Parquet) or tfds:NAME[:SPLIT], comma separated."
)
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", None, "Directory to create with the shards, manifest.json and rejects.jsonl."
)
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Replace an existing output_dir prepared from different inputs/settings."
)
_CONFIG = common.define_config_flag()
flags.mark_flags_as_required(["input", "output_dir"])


def main() -> None:
    from distill_jax.data.prepare import PrepareOptions, prepare_corpus

    summary = prepare_corpus(
        _INPUT.value, _OUTPUT_DIR.value, PrepareOptions.from_config(_CONFIG.value), overwrite=_OVERWRITE.value
    )
    print(summary.format_table())
    if summary.written == 0:
        raise SystemExit(f"prepare: no row of {_INPUT.value} was usable; see {_OUTPUT_DIR.value}/rejects.jsonl for why")
