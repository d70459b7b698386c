"""From teacher responses to training rows: what is kept, what is dropped and why.

BalDistill keeps an annotation only when its final answer agrees with the gold label (the paper
paid for the rest and dropped them); tail synthesis is not verified in the paper. Here a synthetic
example is at least self-consistent -- the answer its rationale reaches must be the label it
states -- and new: an input already in the pool, the eval set or an earlier purchase is dropped.
Every dropped response is recorded with its reason; the ledger has already charged it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from distill_jax.metrics import DEFAULT_ANSWER_PATTERNS, extract_answer, named_label, normalize_answer
from distill_jax.teachers import spend
from distill_jax.teachers.base import Example, Request, Response, Teacher
from distill_jax.teachers.pool import normalize_input
from distill_jax.teachers.spend import Budget

_CHOICE = re.compile(r"^\s*\(?([A-Za-z])\)?(?=[\s.:)]|$)|\(([A-Za-z])\)")
_NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")

DROP_REASONS = {
    "teacher_failed": "the teacher gave no usable output (after retries); paid",
    "unavailable": "nothing to ask: no stored output / synthetic examples ran out; not paid",
    "answer_mismatch": "the annotation's final answer differs from the gold label; paid",
    "inconsistent_answer": "a synthetic example whose rationale states another answer than its label; paid",
    "duplicate_input": "a synthetic input already in the pool, the eval set or an earlier purchase; paid",
    "empty_output": "the synthetic example lacks an input, rationale or answer; paid",
}


def _choice(text: str) -> str | None:
    match = _CHOICE.search(text.strip())
    return (match.group(1) or match.group(2)).upper() if match else None


def _number(text: str) -> float | None:
    cleaned = text.strip().strip("$").replace(",", "").rstrip("%")
    return float(cleaned) if _NUMBER.match(cleaned) else None


def answers_agree(answer: str, gold: str, labels: Sequence[str] = ()) -> bool:
    """Same final answer? With a label set (classification), the label the text names (stated, or
    mentioned last) must be the gold one; otherwise single-letter golds compare as choices ("(B)
    Beeswax" == "B"), numbers as numbers ("1,000" == "1000.0"), anything else after SQuAD normalisation."""
    if labels:
        named = named_label(answer, labels)
        return named is not None and normalize_answer(named) == normalize_answer(gold)
    answer = extract_answer(answer)
    if re.fullmatch(r"\(?[A-Za-z]\)?", gold.strip()):
        return _choice(answer) == _choice(gold)
    a, g = _number(answer), _number(gold)
    if a is not None and g is not None:
        return abs(a - g) <= 1e-6 * max(1.0, abs(g))
    return normalize_answer(answer) == normalize_answer(gold)


def states_answer(text: str) -> bool:
    """Whether a rationale says its final answer ("... the answer is X", "\\boxed{X}"); many end before it."""
    return any(re.search(p, text, flags=re.IGNORECASE) for p in DEFAULT_ANSWER_PATTERNS)


@dataclasses.dataclass(frozen=True)
class Dropped:
    request_key: str
    kind: str
    domain: str
    reason: str
    detail: str = ""


def to_training_row(
    request: Request,
    response: Response,
    *,
    stage: int,
    check_answers: bool,
    known_inputs: set[str],
    score: float | None = None,
    labels: Sequence[str] = (),
) -> dict[str, Any] | Dropped:
    """The canonical corpus row (id, domain, input, rationale, target, meta) or why there is none.

    `known_inputs` (normalised) is updated with an accepted synthetic input.
    """

    def drop(reason: str, detail: str = "") -> Dropped:
        return Dropped(request.key, request.kind, request.domain, reason, detail)

    if response.status == "unavailable":
        return drop("unavailable", response.error)
    if response.status == "failed":
        return drop("teacher_failed", response.error)
    meta = dict(stage=stage, kind=request.kind, request_key=request.key)
    if request.kind == "annotate":
        example = request.example
        gold = example.answer
        # A classification rationale may name its label without "the answer is": read it from there too.
        stated = response.answer if not labels or named_label(response.answer, labels) else response.rationale
        if check_answers and gold is not None and not answers_agree(stated, gold, labels):
            return drop("answer_mismatch", f"teacher {response.answer!r} vs gold {gold!r}")
        if score is not None:
            meta["ifd"] = score
        return dict(
            id=example.id,
            domain=example.domain,
            input=example.input,
            rationale=response.rationale,
            target=gold if gold is not None else response.answer,
            meta=meta,
        )
    if not (response.input.strip() and response.rationale.strip() and response.answer.strip()):
        return drop("empty_output")
    named = bool(labels) and named_label(response.rationale, labels) is not None
    if (
        check_answers
        and (states_answer(response.rationale) or named)
        and not answers_agree(response.rationale, response.answer, labels)
    ):
        return drop(
            "inconsistent_answer",
            f"rationale reaches {extract_answer(response.rationale)!r}, label {response.answer!r}",
        )
    normalized = normalize_input(response.input)
    if normalized in known_inputs:
        return drop("duplicate_input", response.input[:80])
    known_inputs.add(normalized)
    return dict(
        id=f"synthetic/{request.domain}/{request.index:06d}",
        domain=request.domain,
        input=response.input,
        rationale=response.rationale,
        target=response.answer,
        meta=meta,
    )


def stage_requests(
    plan: dict[str, Any], pool: Mapping[str, Sequence[Example]], seed: int, seeds_per_request: int
) -> tuple[list[Request], dict[str, float | None]]:
    """A stage plan's teacher requests, in a fixed order, and each annotation's IFD score by request key.

    Synthesis request i of a domain imitates seed examples drawn with (seed, i, domain): the same
    plan always asks the same questions, so a resumed stage re-sends (and is answered from the ledger
    and caches) exactly what it sent before.
    """
    by_id = {e.id: e for examples in pool.values() for e in examples}
    requests, scores = [], {}
    for dom in sorted(plan["annotate"]):
        for example_id, score in plan["annotate"][dom]:
            request = Request("annotate", dom, example=by_id[example_id])
            requests.append(request)
            scores[request.key] = score
    for dom in sorted(plan["synthesize"]):
        start, count = plan["synthesize"][dom]
        examples = pool[dom]
        for index in range(start, start + count):
            pick = np.random.default_rng([seed, index, len(dom)]).permutation(len(examples))
            seeds = tuple(examples[i] for i in pick[:seeds_per_request])
            requests.append(Request("synthesize", dom, seeds=seeds, index=index))
    return requests, scores


def buy(
    teacher: Teacher,
    requests: Sequence[Request],
    budget: Budget,
    *,
    chunk: int,
    stage: int,
    check_answers: bool,
    known_inputs: set[str],
    scores: Mapping[str, float | None],
    labels: Sequence[str] = (),
    topks: dict[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """Sends `requests` in chunks until the budget stops them: (training rows, dropped records, requests sent).

    Every attempt is opened in the ledger before it is sent (spend.buy), so a stop never overspends.
    ``topks``: filled with the kept rows' teacher top-k (Response.topk) by row id, where the teacher gave one.
    """
    rows: list[dict[str, Any]] = []
    dropped: list[dict[str, Any]] = []
    sent = 0
    for start in range(0, len(requests), chunk):
        batch = list(requests[start : start + chunk])
        allowed, responses = spend.buy(teacher, batch, budget)
        sent += len(allowed)
        for request, response in zip(allowed, responses):
            result = to_training_row(
                request,
                response,
                stage=stage,
                check_answers=check_answers,
                known_inputs=known_inputs,
                score=scores.get(request.key),
                labels=labels,
            )
            if isinstance(result, Dropped):
                dropped.append(dataclasses.asdict(result))
            else:
                rows.append(result)
                if topks is not None and response.topk is not None:
                    topks[result["id"]] = response.topk
        if len(allowed) < len(batch):
            break
    return rows, dropped, sent
