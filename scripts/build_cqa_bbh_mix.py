"""A real long-tailed mix for BalDistill from public teacher outputs: CommonsenseQA (PaLM) head, BBH (Codex) tails.

    python scripts/build_cqa_bbh_mix.py --shared=../shared --out=runs/cqa_bbh_mix
    distill-jax distill --config=configs/baldistill_cqa_bbh.py --workdir=runs/cqa_bbh

Head domain: CommonsenseQA train questions (Talmor et al. 2019) with PaLM-540B chain-of-thought
rationales (Hsieh et al. 2023, "Distilling step-by-step"); the rationales are JSON lists aligned
*by index* with cqa_train.json, each ending "So the answer is (x) ..." and often followed by a
hallucinated "Q: ..." continuation that is cut here, as upstream's data_utils does. Tail domains:
BIG-Bench Hard tasks with short chains of thought and their code-davinci-002 (Codex) outputs, of
which some are wrong: real teacher noise, which the scheduler's answer check drops (still paid).

Writes to --out (atomically, each file):
  pool.jsonl        the candidates: id, domain, input, answer (gold); --head_pool of CQA, --tail_pool per task
  eval.jsonl        held out: CQA test questions and --eval_per_task BBH rows per task, with the teacher's
                    rationale as reference (rows whose teacher answer is wrong carry no rationale)
  outputs.jsonl     stored teacher annotations of every pool and eval input: input, rationale, answer
  synthetic.jsonl   per tail task, the task's remaining rows with their Codex outputs: what the pool teacher
                    hands out as "teacher-synthesized" new examples of that domain (real teacher output for
                    questions the pool never had). As with real synthesis nothing checks them against a gold
                    label: gt_choice (the example's label) is the teacher's own answer, wrong ones included
  summary.json      counts per domain and file

Rationales are stored without their final "So the answer is ..." sentence: the training target appends
it in one format for every domain (prepare.target_template), and `answer` keeps the teacher's own answer,
so a wrong teacher answer is still detected against the gold label.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from distill_jax import atomic

# Short-CoT BBH tasks (median Codex CoT 107-257 characters, all under 340 with the answer): yes/no, a
# choice letter, a count. Short targets keep a byte-level student's steps cheap on a CPU.
DEFAULT_TAILS = ("sports_understanding", "date_understanding", "object_counting")
_FINAL = re.compile(r"\s*So the answer is\s+(.+?)\.?\s*$", re.DOTALL)
_CQA_LETTERS = "abcde"


def _read_jsonl(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def split_final_answer(cot: str) -> tuple[str, str] | None:
    """(rationale without its last "So the answer is X" sentence, X) or None when the CoT states no answer."""
    cot = cot.split("\n\nQ:", 1)[0].strip()
    marker = cot.rfind("So the answer is")
    if marker < 0:
        return None
    match = _FINAL.match(cot[marker:])
    if match is None:
        return None
    answer = match.group(1).strip().split("\n", 1)[0].strip()
    return cot[:marker].strip(), answer


def cqa_input(row: dict[str, Any]) -> str:
    choices = "\n".join(f"({letter}) {text}" for letter, text in zip(_CQA_LETTERS, row["choices"]))
    return f"Q: {row['question']}\nAnswer Choices:\n{choices}"


def cqa_gold(row: dict[str, Any]) -> str:
    return f"({_CQA_LETTERS[row['choices'].index(row['answer'])]})"


def cqa_teacher_answer(answer: str) -> str:
    """PaLM writes "(d) math problem": the choice letter is the answer."""
    match = re.match(r"\(([a-eA-E])\)", answer)
    return f"({match.group(1).lower()})" if match else answer


def load_cqa(shared: str, split: str) -> list[dict[str, Any]]:
    """CommonsenseQA rows joined with their PaLM rationale lists (index-aligned, several files in order)."""
    base = os.path.join(shared, "data", "distill_step_by_step_palm_rationales", "cqa")
    rows = _read_jsonl(os.path.join(base, f"cqa_{split}.json"))
    prefix = "train_CoT_" if split == "train" else "test_CoT_"
    files = sorted(
        (f for f in os.listdir(os.path.join(base, "llm")) if f.startswith(prefix)),
        key=lambda f: int(f[len(prefix) : -len(".json")]),
    )
    rationales: list[str] = []
    for name in files:
        with open(os.path.join(base, "llm", name), encoding="utf-8") as f:
            rationales.extend(json.load(f))
    if len(rationales) < len(rows):
        raise SystemExit(f"{base}: {len(rows)} {split} questions but {len(rationales)} PaLM rationales in {files}")
    out = []
    for row, cot in zip(rows, rationales):
        split_cot = split_final_answer(cot)
        out.append(
            dict(
                id=f"cqa-{row['id']}",
                domain="commonsense_qa",
                input=cqa_input(row),
                answer=cqa_gold(row),
                rationale=split_cot[0] if split_cot else "",
                teacher_answer=cqa_teacher_answer(split_cot[1]) if split_cot else "",
            )
        )
    return out


def load_bbh(shared: str, tasks: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    path = os.path.join(shared, "data", "bbh", "derived_codex_cot_all27_compact.jsonl")
    by_task: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for row in _read_jsonl(path):
        if row["task"] not in tasks:
            continue
        split_cot = split_final_answer(row["codex_cot"])
        by_task[row["task"]].append(
            dict(
                id=f"bbh-{row['task']}-{row['idx']}",
                domain=row["task"],
                input=row["question"],
                answer=row["target"],
                rationale=split_cot[0] if split_cot else "",
                teacher_answer=split_cot[1] if split_cot else "",
            )
        )
    missing = [t for t in tasks if t not in by_task]
    if missing:
        raise SystemExit(f"{path}: no rows for tasks {missing}")
    return by_task


def _agrees(row: dict[str, Any]) -> bool:
    return row["teacher_answer"].strip().lower().strip("().") == row["answer"].strip().lower().strip("().")


def build(shared: str, out: str, *, head_pool: int, tail_pool: int, eval_head: int, eval_per_task: int,
          tails: Sequence[str], seed: int) -> dict[str, Any]:  # fmt: skip
    rng = random.Random(seed)
    cqa_train, cqa_test = load_cqa(shared, "train"), load_cqa(shared, "test")
    rng.shuffle(cqa_train)
    rng.shuffle(cqa_test)
    pool, evaluation, synthetic = cqa_train[:head_pool], cqa_test[:eval_head], []
    for rows in load_bbh(shared, tails).values():
        rng.shuffle(rows)
        if len(rows) < tail_pool + eval_per_task:
            raise SystemExit(f"task {rows[0]['domain']}: {len(rows)} rows < tail_pool + eval_per_task")
        pool += rows[:tail_pool]
        evaluation += rows[tail_pool : tail_pool + eval_per_task]
        synthetic += rows[tail_pool + eval_per_task :]

    def public(row: dict[str, Any], with_rationale: bool) -> dict[str, Any]:
        keep = dict(id=row["id"], domain=row["domain"], input=row["input"], answer=row["answer"])
        if with_rationale:
            keep["rationale"] = row["rationale"] if _agrees(row) else ""
        return keep

    files = {
        "pool.jsonl": [public(r, False) for r in pool],
        "eval.jsonl": [public(r, True) for r in evaluation],
        "outputs.jsonl": [
            dict(input=r["input"], rationale=r["rationale"], answer=r["teacher_answer"], domain=r["domain"])
            for r in pool + evaluation
            if r["rationale"]
        ],
        "synthetic.jsonl": [
            dict(
                input=r["input"],
                rationale=r["rationale"],
                answer=r["teacher_answer"],
                gt_choice=r["answer"],
                domain=r["domain"],
            )  # fmt: skip
            for r in synthetic
            if r["rationale"]
        ],
    }
    os.makedirs(out, exist_ok=True)
    for name, rows in files.items():
        atomic.write_jsonl(os.path.join(out, name), rows)
    summary = dict(
        sources=dict(shared=os.path.abspath(shared), seed=seed, tails=list(tails)),
        files={name: len(rows) for name, rows in files.items()},
        per_domain={
            name: dict(sorted(collections.Counter(r["domain"] for r in rows).items())) for name, rows in files.items()
        },
        teacher_agrees_with_gold={
            domain: round(sum(map(_agrees, rows)) / len(rows), 3)
            for domain, rows in _by_domain(pool + evaluation + synthetic).items()
        },
    )
    atomic.write_text(os.path.join(out, "summary.json"), json.dumps(summary, indent=2) + "\n")
    return summary


def _by_domain(rows: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for row in rows:
        out[row["domain"]].append(row)
    return dict(sorted(out.items()))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", default="../shared", help="the folder holding data/ (see ../shared/README.md)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--head_pool", type=int, default=2000, help="CommonsenseQA train questions in the pool")
    parser.add_argument("--tail_pool", type=int, default=40, help="rows of each BBH task in the pool")
    parser.add_argument("--eval_head", type=int, default=100, help="CommonsenseQA test questions held out")
    parser.add_argument("--eval_per_task", type=int, default=50, help="rows of each BBH task held out")
    parser.add_argument("--tails", default=",".join(DEFAULT_TAILS), help="comma-separated BBH task names")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    summary = build(
        args.shared,
        args.out,
        head_pool=args.head_pool,
        tail_pool=args.tail_pool,
        eval_head=args.eval_head,
        eval_per_task=args.eval_per_task,
        tails=[t for t in args.tails.split(",") if t],
        seed=args.seed,
    )
    json.dump(summary, sys.stdout, indent=2)
    print()
    return summary


if __name__ == "__main__":
    main()
