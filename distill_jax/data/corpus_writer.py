"""Writes one prepared corpus into a temp directory: reads rows, checks and tokenizes them, spills the
examples per domain into TFDS shards, and returns the manifest (prepare.py owns publishing it).

Every row read is either written or in rejects.jsonl with a reason, and counted either way.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import hashlib
import itertools
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from absl import logging
from tqdm import tqdm

from distill_jax.data import shards
from distill_jax.data.corpus import (
    EXCERPT_CHARS,
    REJECT_REASONS,
    TFDS_PREFIX,
    ReadStats,
    Reject,
    TeacherRow,
    read_rows,
)
from distill_jax.data.prepare_options import (
    PrepareOptions,
)
from distill_jax.data.tokenizers import Tokenizer

_CHUNK_ROWS = 512  # rows tokenized per batch: amortizes HF tokenizer calls, bounds memory


def source_labels(inputs: Sequence[str]) -> list[str]:
    """Shortest unique path suffix per input, used as the prefix of derived ids.

    ``a/train.json`` and ``b/train.json`` become ``a/train.json`` and ``b/train.json``;
    a lone ``/data/x/train.json`` becomes ``train.json``, so ids do not depend on where the
    corpus lives.
    """
    parts = [Path(p).parts if not p.startswith(TFDS_PREFIX) else (p,) for p in inputs]

    def label(i: int) -> str:
        for depth in range(1, len(parts[i]) + 1):
            mine = parts[i][-depth:]
            if all(other[-depth:] != mine for j, other in enumerate(parts) if j != i):
                return "/".join(mine)
        return "/".join(parts[i])

    return [label(i) for i in range(len(parts))]


def _renamed_source(rows: Iterable[Any], copy: str, url: str) -> Iterator[Any]:
    """Rows and rejects read from a staged copy, naming the input's URL instead."""
    for row in rows:
        yield dataclasses.replace(row, source=url) if getattr(row, "source", None) == copy else row


def _json_line(obj: dict[str, Any]) -> str:
    """One JSON line, readable (non-ASCII kept) yet safe for readers that split on any Unicode
    line break (str.splitlines): those characters are escaped."""
    text = json.dumps(obj, ensure_ascii=False)
    for char in "\x85\u2028\u2029":
        text = text.replace(char, f"\\u{ord(char):04x}")
    return text + "\n"


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


class CorpusWriter:
    """Checks, tokenizes and spills rows in input order; then writes shards and the manifest."""

    def __init__(self, tmp: Path, options: PrepareOptions, tok: Tokenizer):
        self.tmp, self.options, self.tok = tmp, options, tok
        self.sources: list[str] = []
        self.seen_ids: dict[str, tuple[int, int]] = {}  # id -> (source index, line)
        self.seen_examples: dict[bytes, tuple[int, int]] = {}  # 16-byte digest -> (source, line)
        self.rejected: collections.Counter[str] = collections.Counter()
        self.domains: dict[str, collections.Counter[str]] = {}
        self.written = 0
        self.truncated: collections.Counter[str] = collections.Counter()  # written rows cut, by field
        # With truncation, token-level digests of written rows -> (where, was truncated): two different
        # texts can become the same example once cut.
        self.seen_tokens: dict[bytes, tuple[tuple[int, int], bool]] = {}

    def run(
        self,
        inputs: Sequence[str],
        input_infos: list[dict[str, Any]],
        content_hash: str,
        local: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """`local`: a local copy of each remote input, read in its place (rows and rejects name the URL)."""
        local = local or {}
        spill = shards.ExampleSpill(self.tmp / "spill.bin")
        blank = 0
        try:
            with open(self.tmp / shards.REJECTS_FILE, "w", encoding="utf-8") as rejects:
                for path, label, info in zip(inputs, source_labels(inputs), input_infos):
                    stats = ReadStats()
                    rows = read_rows(
                        local.get(path, path),
                        self.options.mapping,
                        stats=stats,
                        source_name=label,
                        default_domain=self.options.default_domain,
                        columns=self.options.columns,
                    )
                    if path in local:
                        rows = _renamed_source(rows, local[path], path)
                    bar = tqdm(
                        rows,
                        desc=f"prepare {label}",
                        unit=" rows",
                        file=sys.stderr,
                        disable=not self.options.progress,
                        mininterval=0.5,
                    )
                    for chunk in _chunks(bar, _CHUNK_ROWS):
                        self._add_chunk(chunk, spill, rejects)
                    info["rows"], blank = stats.rows, blank + stats.blank
                    if stats.defaulted_domain:
                        logging.warning(
                            "%s: %d rows have no %r field; they went to domain %r",
                            path,
                            stats.defaulted_domain,
                            self.options.mapping.domain,
                            self.options.default_domain,
                        )
            read = sum(info["rows"] for info in input_infos)
            if read != self.written + sum(self.rejected.values()):
                raise AssertionError(
                    f"row accounting is off: read {read}, written {self.written}, rejected {dict(self.rejected)}"
                )
            splits = shards.split_names(self.domains)
            shards.write_shards(self.tmp, spill, splits)
        finally:
            spill.close()
        manifest = self._manifest(splits, input_infos, content_hash, read, blank)
        text = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
        (self.tmp / shards.MANIFEST_FILE).write_text(text, encoding="utf-8")
        return manifest

    def _add_chunk(self, chunk: list[TeacherRow | Reject], spill: shards.ExampleSpill, rejects: Any) -> None:
        rows = [r for r in chunk if isinstance(r, TeacherRow)]
        targets = [self._format_target(r) for r in rows]
        encoded = zip(self.tok.encode_batch([r.input for r in rows]), self.tok.encode_batch(targets))
        checked = iter(zip(rows, targets, encoded))
        for item in chunk:
            if isinstance(item, TeacherRow):
                row, target, (inputs, target_ids) = next(checked)
                item, inputs, target_ids = self._check(row, target, inputs, target_ids)
                if item is None:
                    spill.append(row.id, row.domain, inputs, target_ids)
                    self._count(row.domain, inputs, target_ids)
                    continue
            self.rejected[item.reason] += 1
            rejects.write(_json_line(dataclasses.asdict(item)))

    def _format_target(self, row: TeacherRow) -> str:
        template = self.options.target_template if row.rationale is not None else self.options.plain_target_template
        return template.format(rationale=row.rationale, target=row.target, input=row.input, domain=row.domain)

    def _where(self, row: TeacherRow) -> tuple[int, int]:
        if not self.sources or self.sources[-1] != row.source:
            self.sources.append(row.source)
        return len(self.sources) - 1, row.line

    def _first(self, where: tuple[int, int]) -> str:
        return f"{self.sources[where[0]]}:{where[1]}"

    def _check(
        self, row: TeacherRow, target: str, inputs: np.ndarray, target_ids: np.ndarray
    ) -> tuple[Reject | None, np.ndarray, np.ndarray]:
        """The prepare-level checks, in order: duplicate id, lengths (or truncation), duplicate example.

        Returns (reject or None, the input ids, the target ids): truncated when options.truncate says so.
        """
        opts, where = self.options, self._where(row)

        def reject(reason: str, detail: str) -> tuple[Reject, np.ndarray, np.ndarray]:
            return Reject(row.source, row.line, reason, detail, row.input[:EXCERPT_CHARS]), inputs, target_ids

        if row.id in self.seen_ids:
            return reject(
                "duplicate_id",
                f"id {row.id!r} was already used at "
                f"{self._first(self.seen_ids[row.id])} (first occurrence wins); make ids "
                "unique or map id to None to derive them from file:line",
            )
        self.seen_ids[row.id] = where
        cut: list[str] = []
        for field, name, limit in (
            ("input", "input", opts.max_input_len),
            ("target", "formatted target", opts.max_target_len),
        ):
            ids = inputs if field == "input" else target_ids
            if len(ids) <= limit:
                continue
            if not opts.truncates(field):
                return reject(
                    f"{field}_too_long",
                    f"{name} is {len(ids)} tokens with EOS, over "
                    f"max_{field}_len={limit}; shorten it, raise max_{field}_len, or set "
                    f"prepare.truncate={'both' if opts.truncate != 'none' else field} to cut it",
                )
            # Cut, keeping EOS: the student still learns where an example ends.
            ids = np.concatenate([ids[: limit - 1], np.asarray([self.tok.eos_id], ids.dtype)])
            if field == "input":
                inputs = ids
            else:
                target_ids = ids
            cut.append(field)
        if opts.drop_duplicate_examples:
            digest = hashlib.blake2b(
                "\0".join((row.domain, row.input, target)).encode("utf-8"), digest_size=16
            ).digest()
            if digest in self.seen_examples:
                return reject(
                    "duplicate_example",
                    "same domain, input and formatted target as "
                    f"{self._first(self.seen_examples[digest])}; set "
                    "drop_duplicate_examples=False to keep repeats",
                )
            if opts.truncate != "none":
                tokens = hashlib.blake2b(
                    b"\0".join((row.domain.encode("utf-8"), inputs.tobytes(), b"\xff" * 4, target_ids.tobytes())),
                    digest_size=16,
                ).digest()
                earlier = self.seen_tokens.get(tokens)
                if earlier is not None and (cut or earlier[1]):
                    return reject(
                        "duplicate_after_truncation",
                        f"once cut to max_input_len={opts.max_input_len}/max_target_len={opts.max_target_len} "
                        f"tokens it is the same example as {self._first(earlier[0])}; raise the limits or "
                        "set drop_duplicate_examples=False to keep it",
                    )
                self.seen_tokens.setdefault(tokens, (where, bool(cut)))
            self.seen_examples[digest] = where
        for field in cut:
            self.truncated[field] += 1
        return None, inputs, target_ids

    def _count(self, domain: str, inputs: np.ndarray, targets: np.ndarray) -> None:
        stats = self.domains.setdefault(domain, collections.Counter())
        stats["num_examples"] += 1
        stats["num_input_tokens"] += len(inputs)
        stats["num_target_tokens"] += len(targets)
        self.written += 1

    def _manifest(
        self, splits: dict[str, str], input_infos: list[dict[str, Any]], content_hash: str, read: int, blank: int
    ) -> dict[str, Any]:
        opts = self.options
        domains = {
            d: {
                "split": splits[d],
                "num_examples": s["num_examples"],
                "num_tokens": s["num_input_tokens"] + s["num_target_tokens"],
                "num_input_tokens": s["num_input_tokens"],
                "num_target_tokens": s["num_target_tokens"],
            }
            for d, s in sorted(self.domains.items())
        }
        return {
            "format_version": shards.FORMAT_VERSION,
            "tfds_name": shards.TFDS_NAME,
            "tfds_version": shards.TFDS_VERSION,
            "tokenizer": self.tok.to_dict(),
            "max_input_len": opts.max_input_len,
            "max_target_len": opts.max_target_len,
            "target_template": opts.target_template,
            "plain_target_template": opts.plain_target_template,
            "drop_duplicate_examples": opts.drop_duplicate_examples,
            "default_domain": opts.default_domain,
            "truncate": opts.truncate,
            "columns": list(opts.columns),
            "mapping": dataclasses.asdict(opts.mapping),
            "domains": domains,
            "counts": {
                "read": read,
                "written": self.written,
                "blank": blank,
                "rejected": {r: self.rejected[r] for r in REJECT_REASONS if self.rejected[r]},
                **(
                    {"truncated": {f: self.truncated[f] for f in ("input", "target")}}
                    if opts.truncate != "none"
                    else {}
                ),
            },
            "inputs": input_infos,
            "content_hash": content_hash,
            "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
