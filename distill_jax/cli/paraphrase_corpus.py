"""`distill-jax paraphrase-corpus`: a filtered, source-split paraphrase corpus from a teacher or a data set.

  --from=teacher   ask config.teacher (openai or pool) for paraphrase.k paraphrases of each sentence
                   of --input (.txt one per line, or a table with the paraphrase.fields.source column);
                   answers are cached, so a rerun after a crash pays only for what was not answered.
  --from=apty|mrpc|paws|table   read an existing paraphrase data set.

Writes OUTPUT_DIR/{train,validation,rejects}.jsonl and filter_counts.json and prints the counts;
the train/validation files are inputs for `distill-jax prepare`.
"""

from __future__ import annotations

import os

from absl import flags

from distill_jax.cli import common

_FROM = flags.DEFINE_enum(
    "from", None, ["teacher", "apty", "mrpc", "paws", "table"], "Where the paraphrases come from (see --help)."
)
_INPUT = flags.DEFINE_list(
    "input", None, "Input files, comma separated: sentences (--from=teacher) or paraphrase data."
)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Directory for the corpus files (created if needed).")
_MAX_SENTENCES = flags.DEFINE_integer(
    "max_sentences", 0, "--from=teacher: ask about the first N distinct sentences only (0 = all)."
)
_CONFIG = common.define_config_flag()
flags.mark_flags_as_required(["from", "input", "output_dir"])


def main() -> None:
    from distill_jax.config import ConfigError
    from distill_jax.data.corpus import CorpusError

    try:
        summary = _build(_CONFIG.value)
    except (ConfigError, CorpusError):
        raise  # A setting or input to fix: common.run prints it in one line, exit 2.
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        # Bad input or settings, or a teacher/moderation endpoint that cannot work: the message says what to do.
        raise SystemExit(f"paraphrase-corpus: {err}") from None
    print(summary.format_table())
    if summary.counts["kept"] == 0:
        raise SystemExit(
            f"paraphrase-corpus: no pair of {_INPUT.value} was kept; see {_OUTPUT_DIR.value}/rejects.jsonl for why"
        )


def _build(cfg):
    from distill_jax.paraphrase import corpus as paraphrase_corpus

    os.makedirs(_OUTPUT_DIR.value, exist_ok=True)
    if _FROM.value == "teacher":
        from distill_jax.teachers import registry

        teacher = registry.from_config(cfg, _OUTPUT_DIR.value, purpose="paraphrase")
    else:
        teacher = None
    try:
        return paraphrase_corpus.build_from_config(
            cfg, _FROM.value, _INPUT.value, _OUTPUT_DIR.value, teacher=teacher, max_sentences=_MAX_SENTENCES.value
        )
    finally:
        if teacher is not None:
            teacher.close()
