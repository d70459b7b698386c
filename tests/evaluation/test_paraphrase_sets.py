"""Leave-one-out student/teacher paraphrase sets from a multi-reference split."""

from __future__ import annotations

import json

import pytest

from distill_jax.evaluation.paraphrase_sets import leave_one_out_sets
from distill_jax.evaluation.scoring import read_predictions


def _row(source_id: str, source: str, paraphrase: str) -> dict:
    return dict(id=f"{source_id}-{paraphrase[:3]}", domain="paraphrase", input=source, target=paraphrase,
                meta={"source_id": source_id})  # fmt: skip


def test_first_paraphrase_is_the_reference_the_rest_the_teacher(tmp_path):
    split = tmp_path / "validation.jsonl"
    rows = [
        _row("s1", "The cat sat.", "A cat was sitting."),
        _row("s2", "It rained.", "There was rain."),
        _row("s1", "The cat sat.", "The cat was seated."),
        _row("s1", "The cat sat.", "Sitting, the cat was."),
    ]
    split.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = leave_one_out_sets(str(split), str(tmp_path / "sets"))
    assert (out["sources"], out["single_paraphrase_sources_skipped"], out["teacher_paraphrases"]) == (1, 1, 2)
    (eval_row,) = [json.loads(line) for line in open(out["paths"]["eval"])]
    assert eval_row == dict(id="s1", domain="paraphrase", input="The cat sat.", target="A cat was sitting.")
    teacher = read_predictions(out["paths"]["teacher"])
    assert teacher["s1"]["predictions"] == ["The cat was seated.", "Sitting, the cat was."]


def test_rejects_rows_that_are_not_corpus_rows(tmp_path):
    split = tmp_path / "bad.jsonl"
    split.write_text(json.dumps({"target": "no input"}) + "\n")
    with pytest.raises(ValueError, match="bad.jsonl:1: not a paraphrase corpus row"):
        leave_one_out_sets(str(split), str(tmp_path / "sets"))
