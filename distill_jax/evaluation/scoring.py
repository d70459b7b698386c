"""Per-domain scores of one prediction set against its references: answers, overlap, paraphrase quality.

A prediction set is a JSONL file of ``{"id", "prediction"}`` rows (``"predictions"``: all n returned
texts, best first, when there are several), as `generate` writes or as a teacher's outputs can be
put. It is joined by id with the examples of the data: an example without a prediction scores as
an empty prediction (and is counted as missing), so sets are always compared on the same examples.

Metric groups (``ScoringOptions.groups``):
- ``answer``: exact_match (whole output), answer_accuracy / answer_f1 (extracted answers, EM and
  token F1 as in BalDistill), label_macro_f1 for classification-like domains;
- ``overlap``: bleu, chrf, rouge1/2/L against the reference (overlap.py);
- ``paraphrase``: similarity to and diversity from the *input*, iBLEU (paraphrase.py).
"""

from __future__ import annotations

import collections
import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from distill_jax import metrics
from distill_jax.evaluation import classification, overlap, paraphrase
from distill_jax.evaluation.examples import Example

if TYPE_CHECKING:
    from distill_jax.evaluation.embeddings import SentenceEncoder

METRIC_GROUPS = ("answer", "overlap", "paraphrase")


@dataclasses.dataclass(frozen=True)
class ScoringOptions:
    groups: tuple[str, ...] = ("answer", "overlap")
    answer_patterns: tuple[str, ...] = metrics.DEFAULT_ANSWER_PATTERNS
    max_labels: int = 20  # label_macro_f1 only where the references use at most this many answers (0 = never)
    ibleu_alpha: float = paraphrase.DEFAULT_IBLEU_ALPHA

    def __post_init__(self) -> None:
        unknown = sorted(set(self.groups) - set(METRIC_GROUPS))
        if unknown:
            raise ValueError(f"unknown metric group(s) {unknown}; choose from {METRIC_GROUPS}")


def read_predictions(path: str) -> dict[str, dict[str, Any]]:
    """id -> row of a predictions JSONL file; each row gets ``"predictions"`` (a list, best first)."""
    rows: dict[str, dict[str, Any]] = {}
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            row = json.loads(line)
            if not isinstance(row, dict) or "id" not in row or not isinstance(row.get("prediction"), str):
                raise ValueError(f'{path}:{line_number}: each row needs an "id" and a string "prediction"')
            row_id = str(row["id"])
            if row_id in rows:
                raise ValueError(f"{path}:{line_number}: id {row_id!r} appears twice")
            row["predictions"] = [str(p) for p in row.get("predictions") or [row["prediction"]]]
            rows[row_id] = row
    return rows


def examples_from_predictions(rows: Mapping[str, Mapping[str, Any]], path: str) -> list[Example]:
    """The examples recorded in a predictions file itself (generate writes domain, input and reference)."""
    lacking = [i for i, r in rows.items() if "reference" not in r]
    if lacking:
        raise ValueError(f'{path}: rows without a "reference" (e.g. id {lacking[0]!r}); pass --data to join references')
    return [
        Example(i, str(r.get("domain", "default")), str(r.get("input", "")), str(r["reference"]))
        for i, r in rows.items()
    ]


def score_domain(
    sources: Sequence[str],
    predictions: Sequence[Sequence[str]],
    references: Sequence[str],
    options: ScoringOptions,
    encoder: SentenceEncoder | None = None,
) -> dict[str, float]:
    """The chosen metric groups over one domain's examples; ``predictions[i]`` are example i's texts, best first."""
    best = [p[0] if p else "" for p in predictions]
    out: dict[str, float] = {}
    if "answer" in options.groups:
        scored = [metrics.score_answer(p, r, options.answer_patterns) for p, r in zip(best, references)]
        for name in metrics.ANSWER_METRICS:
            out[name] = float(np.mean([values[name] for _, values in scored]))
        labels = [metrics.normalize_answer(s.reference_answer) for s, _ in scored]
        if classification.is_classification(labels, options.max_labels):
            out["label_macro_f1"] = classification.macro_f1(
                [metrics.normalize_answer(s.answer) for s, _ in scored], labels
            )
    if "overlap" in options.groups:
        out.update(overlap.overlap_metrics(best, references))
    if "paraphrase" in options.groups:
        out.update(paraphrase.paraphrase_metrics(sources, predictions, references, encoder, options.ibleu_alpha))
    return out


def score_predictions(
    examples: Sequence[Example],
    predictions: Mapping[str, Mapping[str, Any]],
    options: ScoringOptions,
    encoder: SentenceEncoder | None = None,
) -> tuple[dict[str, dict[str, float]], dict[str, int]]:
    """({domain: {metric: value, "count": n}}, {"missing": m, "unknown": u}) for one prediction set.

    ``missing`` counts examples without a prediction (scored as empty), ``unknown`` predictions whose
    id is not among ``examples`` (ignored).
    """
    by_domain: dict[str, list[Example]] = collections.defaultdict(list)
    for e in examples:
        by_domain[e.domain].append(e)
    per_domain: dict[str, dict[str, float]] = {}
    for domain, members in sorted(by_domain.items()):
        texts = [predictions[e.id]["predictions"] if e.id in predictions else [""] for e in members]
        values = score_domain([e.input for e in members], texts, [e.reference for e in members], options, encoder)
        values["count"] = len(members)
        per_domain[domain] = values
    known = {e.id for e in examples}
    counts = {
        "missing": sum(e.id not in predictions for e in examples),
        "unknown": sum(i not in known for i in predictions),
    }
    return per_domain, counts
