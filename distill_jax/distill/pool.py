"""The candidate pool: the examples whose teacher annotations the scheduler may buy.

Read from any corpus file the `prepare` readers take (JSONL/CSV/Parquet/TFDS), with a field mapping
for id, domain, input and (optionally) the gold answer. Unusable rows and repeated inputs go to a
rejects file with a reason, never silently away. A per-domain hold-out can be split off for
evaluation when the data has no test split (BalDistill's multi-choice QA pool).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

from absl import logging

from distill_jax import atomic, storage
from distill_jax.config import ConfigError
from distill_jax.data.corpus import FieldMapping, Reject, read_rows
from distill_jax.teachers.base import Example
from distill_jax.teachers.pool import normalize_input

Pool = dict[str, list[Example]]  # domain -> examples, in file order.


def load_examples(
    paths: Sequence[str],
    fields: Mapping[str, str],
    *,
    default_domain: str = "default",
    rejects_path: str | None = None,
) -> Pool:
    """Examples per domain. `fields` maps id/domain/input/answer/rationale to source keys ("" = absent/derived)."""
    if not paths:
        raise ConfigError("no pool files: set --config.distill.pool to the candidate examples (JSONL/CSV/Parquet)")
    has_answer = bool(fields.get("answer"))
    mapping = FieldMapping(
        input=fields["input"],
        # Without gold answers every row still needs a "target" to validate: the input stands in.
        target=fields["answer"] if has_answer else fields["input"],
        id=fields.get("id") or None,
        domain=fields.get("domain") or None,
        rationale=fields.get("rationale") or None,
        meta=None,
    )
    pool: Pool = {}
    seen_ids: set[str] = set()
    seen_inputs: set[tuple[str, str]] = set()
    rejects: list[dict[str, Any]] = []
    for path in paths:
        # A gs:// / s3:// pool file is read from a local copy (the readers open local files); rejects name the URL.
        local = storage.local_file(path, "pool") if storage.is_remote(path) else path
        rows = read_rows(local, mapping, default_domain=default_domain)
        if local != path:
            try:
                rows = list(rows)
            finally:
                shutil.rmtree(os.path.dirname(local), ignore_errors=True)
        for row in rows:
            source = path if row.source == local else row.source
            if isinstance(row, Reject):
                rejects.append(dict(file=source, line=row.line, reason=row.reason, detail=row.detail))
                continue
            key = (row.domain, normalize_input(row.input))
            if row.id in seen_ids or key in seen_inputs:
                reason = "duplicate_id" if row.id in seen_ids else "duplicate_example"
                rejects.append(dict(file=source, line=row.line, reason=reason, detail=f"id {row.id!r}"))
                continue
            seen_ids.add(row.id)
            seen_inputs.add(key)
            pool.setdefault(row.domain, []).append(
                Example(row.id, row.domain, row.input, row.target if has_answer else None, row.rationale)
            )
    if rejects:
        logging.warning("%d pool rows unusable (first: %s)", len(rejects), rejects[0])
    if rejects_path:
        atomic.write_jsonl(rejects_path, rejects)
    if not pool:
        raise ValueError(f"no usable examples in {', '.join(paths)} (see {rejects_path or 'the log'})")
    return pool


def split_holdout(pool: Pool, per_domain: int, seed: int) -> tuple[Pool, Pool]:
    """(rest, held-out): `per_domain` examples of each domain by a seeded hash of their ids.

    A domain keeps at least half its examples in the pool, so tiny tail domains stay trainable.
    """

    def rank(example: Example) -> str:
        return hashlib.sha256(f"{seed}:{example.id}".encode()).hexdigest()

    rest: Pool = {}
    held: Pool = {}
    for domain, examples in pool.items():
        n = min(per_domain, len(examples) // 2)
        chosen = {e.id for e in sorted(examples, key=rank)[:n]}
        held[domain] = [e for e in examples if e.id in chosen]
        rest[domain] = [e for e in examples if e.id not in chosen]
    return rest, held


def write_eval_rows(path: str, examples: Pool) -> int:
    """Held-out examples as a canonical corpus (target = gold answer) for `prepare`. Returns rows written."""
    # With a reference rationale the target is formatted like the training targets, so the eval loss
    # measures how well the student writes correct reasoning, not just the bare answer.
    rows = [
        dict(
            id=e.id,
            domain=e.domain,
            input=e.input,
            target=e.answer,
            **({"rationale": e.rationale} if e.rationale else {}),
        )
        for d in sorted(examples)
        for e in examples[d]
        if e.answer is not None
    ]
    if not rows:
        raise ValueError("the evaluation examples have no gold answers: map distill.pool_fields.answer")
    atomic.write_jsonl(path, rows)
    return len(rows)
