"""The real long-tailed mix (CommonsenseQA + PaLM head, BBH + Codex tails) built from ../shared, served by the pool teacher."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from distill_jax.teachers.base import Example, Request
from distill_jax.teachers.pool import PoolTeacher

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@pytest.fixture
def builder(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))
    return importlib.import_module("build_cqa_bbh_mix")


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.open()]


def test_split_final_answer(builder):
    assert builder.split_final_answer("A and B. So the answer is (d) math problem.\n\nQ: more") == (
        "A and B.",
        "(d) math problem",
    )
    assert builder.split_final_answer("Z = False. So the answer is False.") == ("Z = False.", "False")
    assert builder.split_final_answer("no final sentence") is None


def test_mix_from_shared_data(builder, shared_data, tmp_path):
    summary = builder.build(
        str(shared_data.parent), str(tmp_path), head_pool=300, tail_pool=20, eval_head=30, eval_per_task=10,
        tails=["sports_understanding", "object_counting"], seed=1,
    )  # fmt: skip
    pool, evaluation = _jsonl(tmp_path / "pool.jsonl"), _jsonl(tmp_path / "eval.jsonl")
    outputs, synthetic = _jsonl(tmp_path / "outputs.jsonl"), _jsonl(tmp_path / "synthetic.jsonl")
    assert summary["per_domain"]["pool.jsonl"] == {
        "commonsense_qa": 300,
        "object_counting": 20,
        "sports_understanding": 20,
    }
    assert len(evaluation) == 30 + 2 * 10
    # 250 rows per task: the rest of each task (minus CoTs without a final answer) is the synthesis reserve.
    assert 2 * (250 - 30) - 10 <= len(synthetic) <= 2 * (250 - 30)
    held_out = {r["input"] for r in pool} | {r["input"] for r in evaluation}
    assert not held_out & {r["input"] for r in synthetic}

    # The PaLM join is by index: the first training question's rationale is the first list entry's, cut.
    cqa = builder.load_cqa(str(shared_data.parent), "train")
    raw = json.loads((shared_data / "distill_step_by_step_palm_rationales/cqa/llm/train_CoT_0.json").read_text())[0]
    assert raw.startswith(cqa[0]["rationale"]) and "\nQ:" not in cqa[0]["rationale"]
    assert cqa[0]["teacher_answer"] == cqa[0]["answer"] == "(d)"  # "...So the answer is (d) math problem."
    assert all(r["answer"] in {"(a)", "(b)", "(c)", "(d)", "(e)"} for r in pool if r["domain"] == "commonsense_qa")
    # Eval references carry the teacher's rationale only where the teacher was right.
    assert any(r["rationale"] for r in evaluation) and any(not r["rationale"] for r in evaluation)
    assert 0.6 < summary["teacher_agrees_with_gold"]["commonsense_qa"] < 0.9  # PaLM on CQA: real noise

    teacher = PoolTeacher(
        str(tmp_path / "outputs.jsonl"), str(tmp_path / "synthetic.jsonl"),
        fields=dict(input="input", rationale="rationale", answer="answer", domain="domain"),
        synthetic_answer="gt_choice",
    )  # fmt: skip
    stored = {r["input"]: r for r in outputs}
    row = next(r for r in pool if r["input"] in stored)
    (annotated,) = teacher.complete(
        [Request("annotate", row["domain"], Example(row["id"], row["domain"], row["input"], row["answer"]))]
    )
    assert (annotated.status, annotated.rationale, annotated.answer) == (
        "ok", stored[row["input"]]["rationale"], stored[row["input"]]["answer"],
    )  # fmt: skip
    (new,) = teacher.complete([Request("synthesize", "object_counting", index=0)])
    assert new.status == "ok" and new.input not in held_out and new.answer.isdigit()
