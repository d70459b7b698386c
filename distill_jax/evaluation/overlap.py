"""Overlap of generations with their references: sacrebleu BLEU and chrF, rouge-score ROUGE-1/2/L.

All scores are on sacrebleu's 0-100 scale (ROUGE F-measures are multiplied by 100) so that one
report never mixes fractions and points for the same kind of number. BLEU and chrF are corpus
scores over the texts given (sacrebleu defaults: 13a tokenization, exponential smoothing); ROUGE
is the mean per-example F-measure with the Porter stemmer, as in the rouge-score package's CLI.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import sacrebleu

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU of ``hypotheses`` against one reference each."""
    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)


def chrf(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus chrF (character 6-grams, beta 2) of ``hypotheses`` against one reference each."""
    return float(sacrebleu.corpus_chrf(list(hypotheses), [list(references)]).score)


@functools.cache
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


def rouge(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measure (x100) over the pairs."""
    if not hypotheses:
        raise ValueError("rouge needs at least one hypothesis")
    scorer = _rouge_scorer()
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for hypothesis, reference in zip(hypotheses, references):
        # rouge-score's argument order is (target, prediction).
        for name, score in scorer.score(reference, hypothesis).items():
            totals[name] += score.fmeasure
    return {name: 100.0 * total / len(hypotheses) for name, total in totals.items()}


def overlap_metrics(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """BLEU, chrF and ROUGE-1/2/L of one set of pairs."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    return {"bleu": bleu(hypotheses, references), "chrf": chrf(hypotheses, references), **rouge(hypotheses, references)}
