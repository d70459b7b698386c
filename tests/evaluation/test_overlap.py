"""BLEU, chrF, ROUGE and label macro-F1: hand-computed cases, and agreement with the libraries called directly."""

from __future__ import annotations

import math

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from distill_jax.evaluation import classification, overlap

HYPS = ["the cat sat on the mat", "a quick brown fox", "it rained all day long", ""]
REFS = ["the cat sat on a mat", "the quick brown fox jumps", "it was raining all day", "nothing here"]


def test_bleu_by_hand() -> None:
    # n-gram precisions 5/6, 3/5, 2/4, 1/3 (clipped "the"), equal lengths so no brevity penalty.
    expected = 100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    assert overlap.bleu(["the cat sat on the mat"], ["the cat sat on a mat"]) == pytest.approx(expected, abs=1e-6)
    assert overlap.bleu(["five words are here now"], ["five words are here now"]) == pytest.approx(100.0)


def test_rouge_by_hand() -> None:
    scores = overlap.rouge(["the cat sat"], ["the cat sat on the mat"])
    # ROUGE-1/L: P = 3/3, R = 3/6; ROUGE-2: P = 2/2, R = 2/5.
    assert scores["rouge1"] == pytest.approx(100 * 2 * 0.5 / 1.5)
    assert scores["rougeL"] == pytest.approx(100 * 2 * 0.5 / 1.5)
    assert scores["rouge2"] == pytest.approx(100 * 2 * 0.4 / 1.4)


def test_scores_equal_the_libraries_called_directly() -> None:
    got = overlap.overlap_metrics(HYPS, REFS)
    assert got["bleu"] == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score)
    assert got["chrf"] == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS]).score)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    direct = [scorer.score(r, h) for h, r in zip(HYPS, REFS)]
    for name in overlap.ROUGE_TYPES:
        assert got[name] == pytest.approx(100 * sum(s[name].fmeasure for s in direct) / len(HYPS))
    assert got["chrf"] == pytest.approx(overlap.chrf(HYPS, REFS)) and 0 < got["chrf"] < 100


def test_overlap_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        overlap.overlap_metrics(["a", "b"], ["a"])


def test_macro_f1_by_hand() -> None:
    references = ["yes", "yes", "no", "no"]
    predictions = ["yes", "no", "no", "maybe"]  # "maybe" is no label: a miss for "no", no false positive counted
    # yes: 2*1 / (1 predicted + 2 actual) = 2/3; no: 2*1 / (2 + 2) = 1/2.
    assert classification.macro_f1(predictions, references) == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert classification.macro_f1(references, references) == 1.0
    assert classification.macro_f1(["x"] * 4, references) == 0.0


def test_macro_f1_equals_scikit_learn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    references = ["a", "b", "c", "a", "b", "a", "c", "c"]
    predictions = ["a", "c", "c", "a", "zzz", "b", "c", "a"]
    expected = metrics.f1_score(references, predictions, labels=sorted(set(references)), average="macro")
    assert classification.macro_f1(predictions, references) == pytest.approx(expected)


def test_is_classification() -> None:
    assert classification.is_classification(["yes", "no"] * 5, max_labels=20)
    assert not classification.is_classification([str(i) for i in range(10)], max_labels=20)  # one label per example
    assert not classification.is_classification(["a", "b", "c"] * 4, max_labels=2)
    assert not classification.is_classification(["a"] * 4, max_labels=0)
    assert math.isclose(classification.macro_f1(["a"], ["a"]), 1.0)
