"""A prepare-ready paraphrase corpus from a teacher or a paraphrase data set (Jayawardena & Yapa 2024).

gather (data set rows, or k paraphrases per sentence from a teacher, parsed from its list reply)
-> filters (paraphrase_filters) -> train/validation split by source -> OUT/train.jsonl,
OUT/validation.jsonl, OUT/rejects.jsonl and, last, OUT/filter_counts.json, each written atomically.

Every unit of input ends up kept or in rejects.jsonl under the stage or filter that removed it:
`read` (an unusable input row), `duplicate_source` (a sentence given twice to a teacher: asked
once), `teacher` (no answer for a sentence), `parse` (a part of a teacher's reply that is not a
paraphrase: preamble, notes, headings), then the filters. Kept rows are {id, domain, input=source,
target=paraphrase, meta} with meta.source_id, so `distill-jax prepare` reads them with its default
fields. With a teacher, reruns are free: its responses are cached by request. Teacher (and
moderation) calls spend through the same ledger and budget as `distill` (distill.spend): OUT/ledger.jsonl,
`distill.budget` in `distill.budget_unit`; sentences the budget has no room for are rejected as
`teacher` ("not asked: budget exhausted") and the summary says so.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from typing import Any

import ml_collections
from absl import logging

from distill_jax import atomic
from distill_jax.data.paraphrase_filters import (
    Blocklist,
    FilterResult,
    FilterSettings,
    Moderator,
    apply_filters,
    normalize,
)
from distill_jax.data.paraphrase_sources import Candidate, ReadProblem, load, read_sentences, source_id
from distill_jax.teachers import spend
from distill_jax.teachers.base import Example, Request, Teacher
from distill_jax.teachers.ledger import Ledger
from distill_jax.teachers.paraphrase_list import DROP_REASONS

TRAIN_FILE = "train.jsonl"
VALIDATION_FILE = "validation.jsonl"
REJECTS_FILE = "rejects.jsonl"
COUNTS_FILE = "filter_counts.json"
LEDGER_FILE = "ledger.jsonl"
STAGES = ("read", "duplicate_source", "teacher", "parse")  # what is removed before the filters


@dataclasses.dataclass
class Gathered:
    """Candidates for the filters, what was removed on the way (reject rows), and the teacher's bill."""

    candidates: list[Candidate]
    rejects: list[dict[str, Any]]
    teacher: dict[str, Any] | None = None
    # The ledger the teacher spent through: read again when the counts are written, so they include moderation.
    ledger: Ledger | None = None


@dataclasses.dataclass
class CorpusSummary:
    output_dir: str
    counts: dict[str, Any]

    def format_table(self) -> str:
        c = self.counts
        removed = {**c["removed_before_filters"], **c["removed_by_filter"]}
        lines = [
            f"{self.output_dir}: paraphrase corpus",
            f"  units in {c['input']} = kept {c['kept']} + removed {sum(removed.values())}   (details: {REJECTS_FILE})",
            f"  {'stage / filter':<24}{'removed':>8}",
        ]
        lines += [f"  {name:<24}{n:>8}" for name, n in removed.items()]
        for split in ("train", "validation"):
            lines.append(f"  {split:<24}{c[split]['rows']:>8} rows from {c[split]['sources']} sources")
        teacher = c.get("teacher")
        if teacher:
            lines.append(
                f"  teacher {teacher['name']}: {teacher['requests']} requests, {teacher['cached']} from cache, "
                f"{teacher['tokens_billed_now']} tokens billed now"
            )
            if "spend" in teacher:
                lines.append(f"  {teacher['spend']}")
        return "\n".join(lines)


def gather_dataset(fmt: str, paths: Sequence[str], fields: dict[str, str]) -> Gathered:
    """Candidates of paraphrase data files read as `fmt` (paraphrase_sources.FORMATS)."""
    candidates, rejects = [], []
    for path in paths:
        for row in load(fmt, path, fields):
            if isinstance(row, ReadProblem):
                rejects.append(dict(filter="read", detail=row.detail, origin=row.origin))
            else:
                candidates.append(row)
    return Gathered(candidates, rejects)


def gather_teacher(
    teacher: Teacher,
    paths: Sequence[str],
    fields: dict[str, str],
    *,
    k: int,
    domain: str,
    chunk: int,
    max_sentences: int = 0,
    budget: spend.Budget | None = None,
) -> Gathered:
    """Asks `teacher` for `k` paraphrases of each distinct sentence of `paths` (the first `max_sentences`, 0 = all).

    With `budget`, every call is metered (distill.spend.buy) and asking stops where the budget does."""
    sentences: list[tuple[str, str]] = []
    rejects: list[dict[str, Any]] = []
    first_seen: dict[str, str] = {}
    for path in paths:
        for item in read_sentences(path, fields):
            if isinstance(item, ReadProblem):
                rejects.append(dict(filter="read", detail=item.detail, origin=item.origin))
                continue
            origin, text = item
            if source_id(text) in first_seen:
                detail = f"the same sentence as {first_seen[source_id(text)]}, asked once"
                rejects.append(dict(filter="duplicate_source", detail=detail, origin=origin, source=text))
            elif not max_sentences or len(sentences) < max_sentences:
                first_seen[source_id(text)] = origin
                sentences.append((origin, text))
    requests = [Request("paraphrase", domain, Example(source_id(text), domain, text), k=k) for _, text in sentences]
    candidates: list[Candidate] = []
    bill = collections.Counter()
    asked: set[str] = set()
    for start in range(0, len(requests), chunk):
        batch, batch_sentences = requests[start : start + chunk], sentences[start : start + chunk]
        if budget is None:
            responses = teacher.complete(batch)
        else:
            allowed, responses = spend.buy(teacher, batch, budget)  # Stops where the budget does.
            keep = {q.key for q in allowed}
            batch_sentences = [s for s, q in zip(batch_sentences, batch) if q.key in keep]
            batch = allowed
        asked |= {q.key for q in batch}
        for (origin, text), request, response in zip(batch_sentences, batch, responses):
            bill["requests"] += 1
            bill["cached"] += response.cached
            bill["tokens_billed_now"] += 0 if response.cached else response.tokens
            bill["tokens_total"] += response.tokens
            base = dict(origin=origin, source=text, source_id=source_id(text))
            if response.status != "ok" or not response.paraphrases:
                detail = f"{response.status}: {response.error or 'the reply holds no paraphrase'}"
                rejects.append(dict(filter="teacher", detail=detail, **base))
            for line, reason in response.dropped:
                rejects.append(
                    dict(filter="parse", detail=f"{reason}: {DROP_REASONS[reason]}", paraphrase=line, **base)
                )
            meta = {"teacher": teacher.name, "request_key": request.key}
            candidates += [
                Candidate(text, p, f"{origin}#{i}", None, meta) for i, p in enumerate(response.paraphrases, start=1)
            ]
        logging.info("paraphrase-corpus: asked %d of %d sentences", len(asked), len(requests))
        if len(batch) < chunk and start + chunk < len(requests):
            break  # The budget ran out.
    unasked = [s for s, q in zip(sentences, requests) if q.key not in asked]
    for origin, text in unasked:
        detail = "not asked: the teacher budget (distill.budget) has no room left"
        rejects.append(dict(filter="teacher", detail=detail, origin=origin, source=text, source_id=source_id(text)))
    info = {"name": teacher.name, **{k: bill[k] for k in ("requests", "cached", "tokens_billed_now", "tokens_total")}}
    if budget is not None:
        info.update(not_asked=len(unasked), ledger=budget.ledger.summary(), spend=spend.stage_line(budget.ledger, 0))
    return Gathered(candidates, rejects, info, budget.ledger if budget is not None else None)


def split_by_source(
    candidates: Sequence[Candidate], validation_fraction: float, seed: int
) -> tuple[list[Candidate], list[Candidate]]:
    """(train, validation): all paraphrases of a source (same normalised text) on one side.

    Sources are ranked by a seeded hash and the first round(n * fraction) go to validation (at
    least one when the fraction is positive and there are two sources or more, never all), so the
    split depends on the seed and the sources alone, not on input order. Rows keep input order.
    """
    if not 0 <= validation_fraction < 1:
        raise ValueError(f"paraphrase.validation_fraction={validation_fraction}: must be in [0, 1)")
    groups = sorted({normalize(c.source) for c in candidates}, key=lambda g: _rank(seed, g))
    n_validation = round(len(groups) * validation_fraction)
    if validation_fraction > 0 and len(groups) >= 2:
        n_validation = min(max(n_validation, 1), len(groups) - 1)
    held_out = set(groups[:n_validation])
    train = [c for c in candidates if normalize(c.source) not in held_out]
    validation = [c for c in candidates if normalize(c.source) in held_out]
    return train, validation


def build_corpus(
    gathered: Gathered,
    output_dir: str,
    settings: FilterSettings,
    *,
    domain: str,
    validation_fraction: float,
    seed: int,
    blocklist: Blocklist | None = None,
    moderator: Moderator | None = None,
) -> CorpusSummary:
    """Filters, splits and writes the corpus (see the module docstring); returns its counts."""
    result = apply_filters(gathered.candidates, settings, blocklist, moderator)
    train, validation = split_by_source(result.kept, validation_fraction, seed)
    os.makedirs(output_dir, exist_ok=True)
    atomic.write_jsonl(os.path.join(output_dir, TRAIN_FILE), (_row(c, domain) for c in train))
    atomic.write_jsonl(os.path.join(output_dir, VALIDATION_FILE), (_row(c, domain) for c in validation))
    atomic.write_jsonl(os.path.join(output_dir, REJECTS_FILE), [*gathered.rejects, *_filter_rejects(result)])
    counts = _counts(gathered, result, train, validation, settings)
    # Written last: its presence says the other files are complete.
    atomic.write_text(os.path.join(output_dir, COUNTS_FILE), json.dumps(counts, indent=1, ensure_ascii=False) + "\n")
    return CorpusSummary(output_dir, counts)


def build_from_config(
    cfg: ml_collections.ConfigDict,
    source: str,
    inputs: Sequence[str],
    output_dir: str,
    *,
    teacher: Teacher | None = None,
    max_sentences: int = 0,
) -> CorpusSummary:
    """The whole stage as ``config.paraphrase`` describes it: gather (``source`` "teacher" asks ``teacher``;
    apty/mrpc/paws/table read data), filter with the configured blocklist and moderation, split, write."""
    p = cfg.paraphrase
    settings = FilterSettings.from_config(p)
    settings.check()
    ledger = None
    if source == "teacher" or p.moderation.enabled:
        os.makedirs(output_dir, exist_ok=True)
        ledger = Ledger(os.path.join(output_dir, LEDGER_FILE), float(cfg.distill.budget), cfg.distill.budget_unit)
    moderator = None
    if p.moderation.enabled:
        from distill_jax.teachers import moderation

        moderator = moderation.from_config(p.moderation)
        price = spend.price_for(ledger.unit, p.moderation.model, cfg.teacher.prices)
        moderator.budget = spend.Budget(ledger, max_tokens=0, price=price)
    fields = dict(p.fields)
    try:
        if source == "teacher":
            if teacher is None:
                raise ValueError("paraphrases from a teacher need the teacher (config.teacher: openai or pool)")
            spend.preflight(cfg, teacher)  # A wrong key, model, URL or price stops here, before any sentence.
            budget = spend.budget_for(cfg, ledger, 0, teacher)
            asked = dict(k=p.k, domain=p.domain, chunk=p.request_chunk, max_sentences=max_sentences)
            gathered = gather_teacher(teacher, inputs, fields, budget=budget, **asked)
        else:
            gathered = gather_dataset(source, inputs, fields)
        split = dict(domain=p.domain, validation_fraction=p.validation_fraction, seed=p.split_seed)
        return build_corpus(
            gathered, output_dir, settings, blocklist=Blocklist.load(p.blocklist), moderator=moderator, **split
        )
    finally:
        if ledger is not None:
            ledger.close()


def _counts(
    gathered: Gathered,
    result: FilterResult,
    train: list[Candidate],
    validation: list[Candidate],
    settings: FilterSettings,
) -> dict[str, Any]:
    before = collections.Counter(r["filter"] for r in gathered.rejects)
    stages = [s for s in STAGES if before[s] or gathered.teacher or s == "read"]
    removed_before = {s: before[s] for s in stages}
    by_filter = result.counts()
    counts: dict[str, Any] = {
        "input": len(gathered.rejects) + len(gathered.candidates),
        "candidates": len(gathered.candidates),
        "kept": len(result.kept),
        "removed_before_filters": removed_before,
        "removed_by_filter": by_filter,
        "train": {"rows": len(train), "sources": len({normalize(c.source) for c in train})},
        "validation": {"rows": len(validation), "sources": len({normalize(c.source) for c in validation})},
        "settings": dataclasses.asdict(settings),
    }
    if gathered.teacher:
        counts["teacher"] = dict(gathered.teacher)
        if gathered.ledger is not None:  # After moderation: its calls are in the same ledger and budget.
            counts["teacher"].update(ledger=gathered.ledger.summary(), spend=spend.stage_line(gathered.ledger, 0))
        parse = collections.Counter(r["detail"].split(":", 1)[0] for r in gathered.rejects if r["filter"] == "parse")
        counts["parse_reasons"] = dict(sorted(parse.items()))
    if counts["input"] != counts["kept"] + sum(removed_before.values()) + sum(by_filter.values()):
        raise AssertionError(f"paraphrase corpus accounting is off: {counts}")
    return counts


def _row(candidate: Candidate, domain: str) -> dict[str, Any]:
    sid = candidate.source_id
    meta: dict[str, Any] = {**candidate.meta, "source_id": sid, "origin": candidate.origin}
    if candidate.judged_paraphrase is not None:
        meta["judged_paraphrase"] = candidate.judged_paraphrase
    digest = hashlib.sha256(candidate.paraphrase.encode()).hexdigest()[:12]
    return {
        "id": f"{sid}-{digest}",
        "domain": domain,
        "input": candidate.source,
        "target": candidate.paraphrase,
        "meta": meta,
    }


def _filter_rejects(result: FilterResult) -> Iterable[dict[str, Any]]:
    for rejected in result.rejected:
        c = rejected.candidate
        pair = {name: getattr(c, name) for name in ("origin", "source", "paraphrase", "source_id")}
        yield dict(filter=rejected.filter, detail=rejected.detail, **pair)


def _rank(seed: int, group: str) -> str:
    return hashlib.sha256(f"{seed}\0{group}".encode()).hexdigest()
