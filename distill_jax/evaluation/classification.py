"""Macro-F1 over labels, for domains whose answers are a small closed set (yes/no, A-E, entailment...).

A generative student can answer anything, so the labels are the ones the references use: a
prediction outside them is a false negative for the true label and a false positive for none.
This is scikit-learn's ``f1_score(y_true, y_pred, labels=sorted(set(y_true)), average="macro",
zero_division=0)``; counting it here saves a scikit-learn (and SciPy) dependency for six lines.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence


def macro_f1(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Unweighted mean over the reference labels of each label's F1 (0 for a label never predicted right)."""
    if len(predictions) != len(references) or not references:
        raise ValueError(f"need equally many predictions and references, got {len(predictions)} and {len(references)}")
    true_positive = Counter(r for p, r in zip(predictions, references) if p == r)
    predicted, actual = Counter(predictions), Counter(references)
    scores = [2 * true_positive[label] / (predicted[label] + actual[label]) for label in actual]
    return sum(scores) / len(scores)


def is_classification(references: Sequence[str], max_labels: int) -> bool:
    """Whether a domain's (normalised, extracted) reference answers form a label set worth a macro-F1.

    At most ``max_labels`` distinct labels, and each seen at least twice on average: a free-form
    domain (arithmetic results, reversed words) has nearly one label per example.
    """
    labels = len(set(references))
    return 0 < labels <= max_labels and len(references) >= 2 * labels
