"""Scoring prediction sets per domain, and the side-by-side report with its plots."""

from __future__ import annotations

import json

import pytest

from distill_jax.evaluation.examples import Example
from distill_jax.evaluation.report import (
    build_comparison_report,
    comparison_table,
    head_and_tail,
    write_comparison_report,
)
from distill_jax.evaluation.scoring import ScoringOptions, read_predictions, score_predictions

EXAMPLES = [
    Example("m1", "math", "What is 2 + 2?", "2 + 2 = 4. So the answer is 4."),
    Example("m2", "math", "What is 3 + 5?", "3 + 5 = 8. So the answer is 8."),
    Example("y1", "yesno", "Is 4 even?", "yes"),
    Example("y2", "yesno", "Is 3 even?", "no"),
    Example("y3", "yesno", "Is 6 even?", "yes"),
    Example("y4", "yesno", "Is 7 even?", "no"),
]


def _write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_read_predictions(tmp_path) -> None:
    rows = read_predictions(
        _write_jsonl(
            tmp_path / "p.jsonl",
            [{"id": 1, "prediction": "a"}, {"id": "2", "prediction": "b", "predictions": ["b", "c"]}],
        )
    )
    assert rows["1"]["predictions"] == ["a"] and rows["2"]["predictions"] == ["b", "c"]
    with pytest.raises(ValueError, match="appears twice"):
        read_predictions(_write_jsonl(tmp_path / "d.jsonl", [{"id": "x", "prediction": ""}] * 2))
    with pytest.raises(ValueError, match=r"d2.jsonl:1: each row needs"):
        read_predictions(_write_jsonl(tmp_path / "d2.jsonl", [{"id": "x", "target": "y"}]))


def test_score_predictions_by_hand() -> None:
    predictions = {
        "m1": {"predictions": ["2 + 2 = 4. So the answer is 4."]},  # exact
        "m2": {"predictions": ["3 + 5 = 9. The answer is 8."]},  # right answer, other wording
        "y1": {"predictions": ["yes"]},
        "y2": {"predictions": ["yes"]},
        "y3": {"predictions": ["yes"]},  # y4 is missing: scored as ""
        "zz": {"predictions": ["stray"]},
    }
    per_domain, counts = score_predictions(EXAMPLES, predictions, ScoringOptions())
    assert counts == {"missing": 1, "unknown": 1}
    math_, yesno = per_domain["math"], per_domain["yesno"]
    assert (math_["exact_match"], math_["answer_accuracy"], math_["count"]) == (0.5, 1.0, 2)
    assert yesno["answer_accuracy"] == 0.5
    # yes: 2*2 / (3 predicted + 2 actual) = 0.8; no: 0 -> macro 0.4. math has one label per example: no macro-F1.
    assert yesno["label_macro_f1"] == pytest.approx(0.4)
    assert "label_macro_f1" not in math_
    assert {"bleu", "chrf", "rouge1", "rouge2", "rougeL"} <= set(math_)
    only_answers, _ = score_predictions(EXAMPLES, predictions, ScoringOptions(groups=("answer",)))
    assert "bleu" not in only_answers["math"]
    with pytest.raises(ValueError, match="unknown metric group"):
        ScoringOptions(groups=("answer", "vibes"))


def test_custom_answer_patterns() -> None:
    examples = [Example("a", "d", "q", "result => 7")]
    predictions = {"a": {"predictions": ["thinking... result => 7"]}}
    default, _ = score_predictions(examples, predictions, ScoringOptions(groups=("answer",)))
    custom, _ = score_predictions(examples, predictions, ScoringOptions(groups=("answer",), answer_patterns=("=>",)))
    assert default["d"]["answer_accuracy"] == 0.0 and custom["d"]["answer_accuracy"] == 1.0


def test_head_and_tail() -> None:
    counts = {"big": 80, "mid": 15, "small": 5}
    assert head_and_tail(counts, 0.5, ["big", "new"]) == (["big"], ["mid", "small", "new"])
    assert head_and_tail(counts, 0.5, ["big"], head_domains=["small"]) == (["small"], ["big", "mid"])


def _sets():
    student = {
        "a": {"answer_accuracy": 0.5, "bleu": 10.0, "count": 4},
        "b": {"answer_accuracy": 0.25, "bleu": 5.0, "count": 4},
    }
    teacher = {
        "a": {"answer_accuracy": 1.0, "bleu": 20.0, "count": 4},
        "b": {"answer_accuracy": 0.5, "bleu": 0.0, "count": 4},
    }
    return {
        "student": {"per_domain": student, "source": "s.jsonl", "step": 7, "params": 1_000_000},
        "teacher": {"per_domain": teacher, "source": "t.jsonl", "step": None, "params": 100_000_000},
    }


def test_comparison_report_ratios_table_and_files(tmp_path) -> None:
    report, table = build_comparison_report(_sets(), {"a": 90, "b": 10}, ["a"], ["b"], teacher="teacher")
    ratios = report["ratios"]["student"]
    assert ratios["head"]["answer_accuracy"] == pytest.approx(0.5)
    assert ratios["macro"]["answer_accuracy"] == pytest.approx(0.375 / 0.75)
    assert "bleu" not in ratios["tail"]  # the teacher's tail BLEU is 0: no ratio
    assert ratios["params"] == pytest.approx(0.01)
    assert table == comparison_table(report)
    lines = table.splitlines()
    assert "student/teacher" in lines[0] and lines[1].split()[:5] == ["metric", "head", "tail", "macro", "micro"]
    bleu_row = next(line for line in lines if line.startswith("bleu"))
    assert bleu_row.split()[-4:] == ["0.500", "-", "0.750", "0.750"]  # 10/20 head; 7.5/10 macro and micro

    paths = write_comparison_report(str(tmp_path), report, table, title="t")
    assert json.loads((tmp_path / "report.json").read_text())["sets"]["student"]["step"] == 7
    markdown = (tmp_path / "report.md").read_text()
    assert "## student, per domain" in markdown and "![domain_accuracy.png](plots/domain_accuracy.png)" in markdown
    assert len(paths["plots"]) == 2
    for path in paths["plots"]:
        assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="not one of the prediction sets"):
        build_comparison_report(_sets(), {"a": 1}, ["a"], [], teacher="oracle")
