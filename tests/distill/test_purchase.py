"""Which teacher responses become training rows, and the reasons for the rest."""

import pytest

from distill_jax.distill.purchase import Dropped, answers_agree, to_training_row
from distill_jax.teachers.base import Example, Request, Response


@pytest.mark.parametrize(
    "answer, gold, agree",
    [
        ("So the answer is (B) Beeswax.", "B", True),
        ("Therefore, the answer is (C) Energy cannot be created.", "E", False),
        ("The answer is: 1,000", "1000", True),
        ("The answer is: 0.5", "1/2", False),  # Not evaluated as arithmetic: a different string.
        ("The answer is \\boxed{42x\\sqrt{5x}}.", "42x\\sqrt{5x}", True),
        ("So the answer is The Eiffel Tower.", "eiffel tower", True),
        ("A", "A", True),
    ],
)
def test_answers_agree(answer, gold, agree):
    assert answers_agree(answer, gold) is agree


def _annotate(gold="4"):
    return Request("annotate", "algebra", example=Example("x1", "algebra", "What is 2+2?", gold))


def test_annotation_kept_with_gold_target_and_score():
    req = _annotate()
    row = to_training_row(
        req,
        Response(req.key, "ok", rationale="2+2=4. The answer is: 4", answer="4"),
        stage=2,
        check_answers=True,
        known_inputs=set(),
        score=1.5,
    )
    assert (
        row["target"] == "4"
        and row["id"] == "x1"
        and row["meta"] == dict(stage=2, kind="annotate", request_key=req.key, ifd=1.5)
    )


def test_mismatch_failed_unavailable_are_dropped_with_reasons():
    req = _annotate()
    cases = {
        "answer_mismatch": Response(req.key, "ok", rationale="The answer is 5", answer="5"),
        "teacher_failed": Response(req.key, "failed", error="HTTP 500 after 5 retries"),
        "unavailable": Response(req.key, "unavailable"),
    }
    for reason, response in cases.items():
        result = to_training_row(req, response, stage=0, check_answers=True, known_inputs=set())
        assert isinstance(result, Dropped) and result.reason == reason
    # Without the check the teacher's rationale is kept (with the gold target).
    kept = to_training_row(req, cases["answer_mismatch"], stage=0, check_answers=False, known_inputs=set())
    assert kept["target"] == "4"


def test_synthetic_checks():
    req = Request("synthesize", "geometry", seeds=(Example("s", "geometry", "seed?", "1"),), index=7)
    known = {"an old question?"}
    ok = to_training_row(
        req,
        Response(req.key, "ok", input="A new question?", rationale="... The answer is: 3", answer="3"),
        stage=1,
        check_answers=True,
        known_inputs=known,
    )
    assert ok["id"] == "synthetic/geometry/000007" and ok["target"] == "3" and "a new question?" not in known
    assert "A new question?" in known
    inconsistent = Response(req.key, "ok", input="Q2?", rationale="The answer is (C) x.", answer="E")
    dup = Response(req.key, "ok", input="an  old question?", rationale="The answer is 3", answer="3")
    empty = Response(req.key, "ok", input="Q3?", rationale="", answer="3")
    for response, reason in ((inconsistent, "inconsistent_answer"), (dup, "duplicate_input"), (empty, "empty_output")):
        result = to_training_row(req, response, stage=1, check_answers=True, known_inputs=known)
        assert isinstance(result, Dropped) and result.reason == reason


def test_a_classification_rationale_is_checked_by_the_label_it_names():
    from distill_jax.distill.purchase import answers_agree

    labels = ("copper", "cotton", "coffee")
    assert answers_agree("Mining output and LME prices point to copper.", "copper", labels)
    assert not answers_agree("Harvest and ginning figures: cotton.", "copper", labels)
    assert not answers_agree("A general market wrap.", "copper", labels)  # No label named: not kept.
