"""`distill-jax prepare`: teacher corpus files -> validated, tokenized per-domain shards + manifest + rejects."""

from __future__ import annotations

from absl import app, flags

from distill_jax.cli import common

_INPUT = flags.DEFINE_list("input", None, "Teacher corpus files (JSONL/JSON/CSV/TSV/Parquet) or tfds:NAME[:SPLIT], comma separated.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Directory to create with the shards, manifest.json and rejects.jsonl.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing output_dir prepared from different inputs/settings.")
_CONFIG = common.define_config_flag()
flags.mark_flags_as_required(["input", "output_dir"])


def prepare_options_from_config(cfg):
  from distill_jax.data.corpus import FieldMapping
  from distill_jax.data.prepare import PrepareOptions

  fields = {k: (v or None) for k, v in cfg.prepare.fields.items()}
  return PrepareOptions(
      mapping=FieldMapping(**fields), tokenizer_kind=cfg.tokenizer.kind, tokenizer_path=cfg.tokenizer.path,
      max_input_len=cfg.prepare.max_input_len, max_target_len=cfg.prepare.max_target_len,
      target_template=cfg.prepare.target_template, plain_target_template=cfg.prepare.plain_target_template, drop_duplicate_examples=cfg.prepare.drop_duplicate_examples,
      default_domain=cfg.prepare.default_domain)


def main(argv):
  del argv
  from distill_jax.data.prepare import prepare_corpus

  summary = prepare_corpus(_INPUT.value, _OUTPUT_DIR.value, prepare_options_from_config(_CONFIG.value),
                           overwrite=_OVERWRITE.value)
  print(summary.format_table())
  if summary.written == 0:
    raise SystemExit(f"prepare: no row of {_INPUT.value} was usable; see {_OUTPUT_DIR.value}/rejects.jsonl for why")


def run(argv):
  app.run(main, argv=argv)
