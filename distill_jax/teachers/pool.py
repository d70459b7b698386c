"""A teacher made of stored outputs: annotations and synthetic examples generated ahead of time.

The main offline mode. Users who already paid for a large pool of teacher outputs (BalDistill's
own files are such a pool) let the scheduler spend a smaller budget from it: an annotate "call"
returns the stored rationale for that input, a synthesize "call" hands out the domain's next stored
synthetic example, a paraphrase "call" returns up to k stored paraphrases of that sentence. Inputs
are matched on whitespace-normalised text, so ids need not agree between the pool and the stored
outputs. Rows of the stored files that cannot be used are written, with the
reason, to a rejects file (never dropped silently).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections
from absl import logging

from distill_jax import atomic
from distill_jax.data.corpus import FieldMapping, Reject, read_rows
from distill_jax.data.paraphrase_sources import ReadProblem, load_table
from distill_jax.metrics import extract_answer
from distill_jax.teachers.base import Request, Response, TeacherConfigError
from distill_jax.teachers.paraphrase_list import clean_items


def normalize_input(text: str) -> str:
    return " ".join(text.split())


def estimate_tokens(*texts: str) -> int:
    """~4 characters per token: what a BPE tokenizer bills for English text, for stored outputs."""
    return max(1, sum(len(t) for t in texts) // 4)


def _paths(spec: str | Sequence[str]) -> list[str]:
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    return [p.strip() for p in items if p and p.strip()]


def _read_stored(
    paths: Sequence[str], mapping: FieldMapping, what: str, rejects: list[dict[str, Any]]
) -> list[tuple[str, str, str, str]]:
    """(domain, input, rationale, answer-or-"") per usable row, in file order."""
    rows = []
    for path in paths:
        if not os.path.exists(path):
            raise FileNotFoundError(f"teacher {what} file {path} does not exist; fix --config.teacher.pool_*")
        for row in read_rows(path, mapping, default_domain=""):
            if isinstance(row, Reject):
                rejects.append(dict(file=row.source, line=row.line, reason=row.reason, detail=row.detail))
            elif not row.rationale:
                rejects.append(
                    dict(
                        file=row.source,
                        line=row.line,
                        reason="missing_field",
                        detail=f"no rationale (source key {mapping.rationale!r}): a teacher output needs one",
                    )
                )
            else:
                answer = row.target if mapping.target != mapping.rationale else ""
                rows.append((row.domain, row.input, row.rationale, answer))
    return rows


def _read_paraphrases(
    paths: Sequence[str], fields: Mapping[str, str], rejects: list[dict[str, Any]]
) -> dict[str, list[str]]:
    """Stored paraphrases by normalised source sentence, in file order (rows of one source are joined)."""
    stored: dict[str, list[str]] = {}
    for path in paths:
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"teacher paraphrases file {path} does not exist; fix --config.teacher.pool_paraphrases"
            )
        for row in load_table(path, fields):
            if isinstance(row, ReadProblem):
                rejects.append(dict(file=path, origin=row.origin, reason="bad_row", detail=row.detail))
            else:
                stored.setdefault(normalize_input(row.source), []).append(row.paraphrase)
    return stored


class PoolTeacher:
    """Stored annotations (by input text), synthetic examples (per domain, in order) and paraphrase lists."""

    name = "pool"

    def __init__(
        self,
        outputs: str | Sequence[str],
        synthetic: str | Sequence[str] = (),
        *,
        fields: Mapping[str, str] | None = None,
        synthetic_answer: str = "gt_choice",
        rejects_path: str | None = None,
        paraphrases: str | Sequence[str] = (),
        paraphrase_fields: Mapping[str, str] | None = None,
    ):
        fields = {**dict(input="text", rationale="rationale", answer="", domain="source"), **(fields or {})}
        rejects: list[dict[str, Any]] = []
        annotation_mapping = FieldMapping(
            input=fields["input"],
            target=fields["answer"] or fields["rationale"],
            rationale=fields["rationale"],
            id=None,
            domain=fields["domain"] or None,
            meta=None,
        )
        self._annotations: dict[str, tuple[str, str]] = {}
        for _, text, rationale, answer in _read_stored(_paths(outputs), annotation_mapping, "outputs", rejects):
            self._annotations.setdefault(normalize_input(text), (rationale, answer))
        synthetic_mapping = dataclasses.replace(annotation_mapping, target=synthetic_answer)
        self._synthetic: dict[str, list[tuple[str, str, str]]] = {}
        for domain, text, rationale, answer in _read_stored(_paths(synthetic), synthetic_mapping, "synthetic", rejects):
            self._synthetic.setdefault(domain, []).append((text, rationale, answer))
        self._paraphrases = _read_paraphrases(
            _paths(paraphrases),
            {**dict(source="source", paraphrases="paraphrases"), **(paraphrase_fields or {})},
            rejects,
        )
        if rejects:
            logging.warning(
                "Pool teacher: %d stored rows unusable (first: %s)%s",
                len(rejects),
                rejects[0],
                f"; all listed in {rejects_path}" if rejects_path else "",
            )
            if rejects_path:
                atomic.write_jsonl(rejects_path, rejects)
        logging.info(
            "Pool teacher: %d stored annotations, synthetic examples per domain %s, paraphrases of %d sentences.",
            len(self._annotations),
            {d: len(v) for d, v in sorted(self._synthetic.items())},
            len(self._paraphrases),
        )

    def known_inputs(self) -> set[str]:
        """Whitespace-normalised inputs that have a stored annotation."""
        return set(self._annotations)

    def synthetic_available(self, domain: str) -> int:
        return len(self._synthetic.get(domain, ()))

    def complete(self, requests: Sequence[Request]) -> list[Response]:
        return [self._answer(r) for r in requests]

    def _answer(self, request: Request) -> Response:
        if request.kind == "paraphrase":
            return self._paraphrase(request)
        if request.kind == "annotate":
            stored = self._annotations.get(normalize_input(request.example.input))
            if stored is None:
                return Response(request.key, "unavailable", error="no stored teacher output for this input")
            rationale, answer = stored
            return Response(
                request.key,
                "ok",
                input=request.example.input,
                rationale=rationale,
                answer=answer or extract_answer(rationale),
                tokens=estimate_tokens(request.example.input, rationale),
            )
        stored_examples = self._synthetic.get(request.domain, [])
        if request.index >= len(stored_examples):
            return Response(
                request.key,
                "unavailable",
                error=f"the pool holds {len(stored_examples)} synthetic examples for {request.domain!r}",
            )
        text, rationale, answer = stored_examples[request.index]
        return Response(
            request.key,
            "ok",
            input=text,
            rationale=rationale,
            answer=answer or extract_answer(rationale),
            tokens=estimate_tokens(text, rationale),
        )

    def _paraphrase(self, request: Request) -> Response:
        sentence = request.example.input
        stored = self._paraphrases.get(normalize_input(sentence))
        if not stored:
            return Response(request.key, "unavailable", error="no stored paraphrases for this sentence")
        parsed = clean_items(stored[: request.k])
        dropped = tuple((d.text, d.reason) for d in parsed.dropped)
        if not parsed.items:
            return Response(request.key, "failed", error="no stored paraphrase is a sentence", dropped=dropped)
        return Response(
            request.key,
            "ok",
            input=sentence,
            tokens=estimate_tokens(sentence, *parsed.items),
            paraphrases=parsed.items,
            dropped=dropped,
        )

    def close(self) -> None:
        pass


def from_config(config: ml_collections.ConfigDict, workdir: str, purpose: str = "distill") -> PoolTeacher:
    """The stored teacher outputs `config.teacher.pool_*` name: annotations and synthetic examples, or paraphrases."""
    t = config.teacher
    rejects_path = os.path.join(workdir, "teacher_pool_rejects.jsonl")
    if purpose == "paraphrase":
        if not t.pool_paraphrases:
            raise TeacherConfigError("teacher.kind=pool needs --config.teacher.pool_paraphrases files to paraphrase")
        return PoolTeacher(
            "",
            paraphrases=t.pool_paraphrases,
            paraphrase_fields=dict(t.pool_paraphrase_fields),
            rejects_path=rejects_path,
        )
    if not t.pool_outputs and not t.pool_synthetic:
        raise TeacherConfigError(
            "teacher.kind=pool needs --config.teacher.pool_outputs and/or teacher.pool_synthetic files"
        )
    return PoolTeacher(
        t.pool_outputs,
        t.pool_synthetic,
        fields=dict(t.pool_fields),
        synthetic_answer=t.pool_synthetic_answer,
        rejects_path=rejects_path,
    )
