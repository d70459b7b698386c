"""Tests for answer extraction, EM/F1, per-domain accumulation and head/tail reports."""

from __future__ import annotations

import pytest

from distill_jax import metrics
from distill_jax.metrics import (
    aggregate,
    exact_match,
    extract_answer,
    format_domain_table,
    normalize_answer,
    split_head_tail,
    token_f1,
)

# A long-tailed training set: halving sizes, the shape the demo corpus has.
POWER_LAW_COUNTS = {
    "addition": 500,
    "subtraction": 250,
    "compare_numbers": 125,
    "multiplication": 60,
    "parity": 30,
    "reverse_word": 20,
    "count_vowels": 15,
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("37 + 48: 7 + 8 = 15, write 5 carry 1; 3 + 4 + 1 = 8. 85. So the answer is 85.", "85"),
        ("g-o-a-t reversed is t-a-o-g. So the answer is taog.", "taog"),
        ("So the answer is 85. Wait, 7 + 9 = 16. So the answer is 86.", "86"),
        ("The answer is 12, not 13. Double-checking... the final answer is 13.", "13"),
        (r"Halve it: $\boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),
        (r"So x = \boxed{\frac{\sqrt{2}}{2}} exactly", r"\frac{\sqrt{2}}{2}"),
        (r"The answer is $\boxed{5}$.", "5"),
        ("Natalia sold 48 + 24 = 72 clips.\n#### 72", "72"),
        ("Reasoning here.\nAnswer: B", "B"),
        ("Answer:\n42", "42"),
        ("The ANSWER IS 3.5. I hope that helps.", "3.5"),
        ("So the answer is 'tenalp'.", "tenalp"),
        ('the answer is "$1,000".', "1,000"),
        ("The answer is 7. Then \\boxed{12", "7"),  # an unclosed box is not an answer
        ("  just the value 85.  ", "just the value 85"),  # no marker: the whole text
        ("So the answer is", "So the answer is"),  # a marker with nothing after it is no answer
        ("", ""),
    ],
)
def test_extract_answer(text: str, expected: str) -> None:
    assert extract_answer(text) == expected


def test_extract_answer_with_custom_patterns() -> None:
    assert extract_answer("total => 9. So the answer is 8.", patterns=[r"=>"]) == "9"
    assert extract_answer("#### 72", patterns=[r"answer\s+is"]) == "#### 72"


def test_normalize_answer_is_squad_style() -> None:
    assert normalize_answer("  The  Quick, brown FOX! ") == "quick brown fox"
    assert normalize_answer("an apple a day") == "apple day"
    assert normalize_answer("theory") == "theory"  # articles only as whole words
    assert normalize_answer("3.5") == "35"  # punctuation is deleted, as in SQuAD


def test_exact_match() -> None:
    assert exact_match("The Answer.", "answer") == 1.0
    assert exact_match("85", "85") == 1.0
    assert exact_match("85", "86") == 0.0
    assert exact_match("tenalp", "planet") == 0.0


def test_token_f1_known_values() -> None:
    assert token_f1("the cat sat on the mat", "cat on mat") == pytest.approx(6 / 7)  # P=3/4, R=1
    assert token_f1("x x y", "x y y") == pytest.approx(2 / 3)  # overlap counts multiplicity
    assert token_f1("Paris", "paris.") == 1.0
    assert token_f1("red", "blue") == 0.0
    assert token_f1("", "") == 1.0
    assert token_f1("the", "") == 1.0  # both normalise to nothing
    assert token_f1("", "blue") == 0.0


@pytest.mark.parametrize(
    ("head_fraction", "head"),
    [
        (0.5, ["addition"]),  # 500 of 1000 is already half
        (0.7, ["addition", "subtraction"]),
        (0.8, ["addition", "subtraction", "compare_numbers"]),
        (1.0, list(POWER_LAW_COUNTS)),
    ],
)
def test_split_head_tail_on_power_law(head_fraction: float, head: list[str]) -> None:
    got_head, got_tail = split_head_tail(POWER_LAW_COUNTS, head_fraction)
    assert got_head == head
    assert got_tail == [d for d in POWER_LAW_COUNTS if d not in head]


def test_split_head_tail_breaks_ties_by_name() -> None:
    assert split_head_tail({"b": 10, "a": 10, "c": 5}, 0.4) == (["a"], ["b", "c"])
    assert split_head_tail({"b": 10, "a": 10, "c": 5}, 0.5) == (["a", "b"], ["c"])
    assert split_head_tail({"a": 3, "z": 0}, 1.0) == (["a"], ["z"])


@pytest.mark.parametrize(
    ("counts", "head_fraction"),
    [({"a": 1}, 0.0), ({"a": 1}, 1.5), ({"a": -1, "b": 2}, 0.5), ({"a": 0}, 0.5), ({}, 0.5)],
)
def test_split_head_tail_rejects_bad_input(counts: dict[str, int], head_fraction: float) -> None:
    with pytest.raises(ValueError):
        split_head_tail(counts, head_fraction)


def test_aggregate_macro_micro_head_tail_by_hand() -> None:
    per_domain = {
        "a": {"exact_match": 1.0, "loss": 1.0, "count": 30},
        "b": {"exact_match": 0.5, "loss": 3.0, "count": 10},
        "c": {"exact_match": 0.0, "count": 10},
    }
    result = aggregate(per_domain, head=["a"], tail=["b", "c", "never_evaluated"])
    assert result["macro"] == {"exact_match": pytest.approx(0.5), "loss": pytest.approx(2.0), "count": 50}
    # micro: (30 * 1 + 10 * 0.5 + 10 * 0) / 50 and (30 * 1 + 10 * 3) / 40
    assert result["micro"] == {"exact_match": pytest.approx(0.7), "loss": pytest.approx(1.5), "count": 50}
    assert result["head"] == {"exact_match": 1.0, "loss": 1.0, "count": 30}
    assert result["tail"] == {"exact_match": pytest.approx(0.25), "loss": pytest.approx(3.0), "count": 20}
    assert aggregate(per_domain, head=[], tail=["a", "b", "c"])["head"] == {"count": 0}


def test_aggregate_domain_without_count_counts_only_in_macro() -> None:
    per_domain = {"a": {"exact_match": 1.0, "count": 4}, "b": {"exact_match": 0.0}}
    result = aggregate(per_domain, head=["a"], tail=["b"])
    assert result["macro"] == {"exact_match": 0.5, "count": 4}
    assert result["micro"] == {"exact_match": 1.0, "count": 4}


def test_format_domain_table() -> None:
    per_domain = {
        domain: {"exact_match": em, "token_f1": em, "count": 8}
        for domain, em in [("addition", 0.9), ("subtraction", 0.6), ("parity", 0.25), ("count_vowels", 0.125)]
    }
    head, tail = split_head_tail(POWER_LAW_COUNTS, 0.7)
    aggregates = aggregate(per_domain, head, tail)
    table = format_domain_table(per_domain, aggregates, POWER_LAW_COUNTS, head, ["exact_match", "token_f1"])
    lines = table.splitlines()

    assert len({len(line) for line in lines}) == 1  # fixed width
    header = lines[0]
    assert header.split() == ["domain", "group", "train", "eval", "exact_match", "token_f1"]
    rows = {line.split()[0]: line for line in lines[2:] if not line.startswith("-")}
    assert list(rows) == list(POWER_LAW_COUNTS) + ["head", "tail", "macro", "micro"]  # by train count
    assert rows["addition"].split() == ["addition", "head", "500", "8", "0.9000", "0.9000"]
    assert rows["parity"].split() == ["parity", "tail", "30", "8", "0.2500", "0.2500"]
    assert rows["multiplication"].split() == ["multiplication", "tail", "60", "-", "-", "-"]  # not evaluated
    assert rows["head"].split() == ["head", "750", "16", "0.7500", "0.7500"]
    assert rows["macro"].split()[1:4] == ["1000", "32", "0.4688"]
    # Numbers are right-aligned under their headers.
    for name in ("train", "exact_match", "token_f1"):
        right_edge = header.index(name) + len(name)
        for line in rows.values():
            assert line[right_edge - 1] != " " and (right_edge == len(line) or line[right_edge] == " ")


def test_named_label_reads_the_label_a_classification_rationale_concludes_with():
    from distill_jax.metrics import named_label

    labels = ["money-fx", "money-supply", "interest", "trade", "crude"]
    assert named_label("The dollar fell against the yen; this is about money-fx.", labels) == "money-fx"
    # Mentioned last wins: the conclusion comes after the considered alternatives.
    assert named_label("Not about crude prices but about trade balances", labels) == "trade"
    assert named_label("So the answer is interest.", labels) == "interest"  # A stated answer wins.
    assert named_label("Nothing here names a label.", labels) is None
    assert named_label("the money supply grew", ["money", "money supply"]) == "money supply"  # Longest at the same end.


def test_a_metric_registered_once_is_scored_by_every_answer_path(monkeypatch):
    from distill_jax.evaluation.scoring import ScoringOptions, score_domain

    # Adding a metric is one entry in metrics.ANSWER_METRICS (see BUILD_NOTES "Adding a teacher or a metric").
    monkeypatch.setitem(metrics.ANSWER_METRICS, "answer_is_short", lambda s: float(len(s.answer) <= 2))
    scored, values = metrics.score_answer("So the answer is 42.", "The answer is 42")
    assert (scored.answer, scored.reference_answer) == ("42", "42")
    assert values == {"exact_match": 0.0, "answer_accuracy": 1.0, "answer_f1": 1.0, "answer_is_short": 1.0}
    out = score_domain(["q1", "q2"], [["The answer is 42."], ["The answer is 1234."]], ["42", "1234"], ScoringOptions())
    assert out["answer_is_short"] == 0.5 and out["answer_accuracy"] == 1.0
