"""Teacher-corpus rows: read a file (corpus_readers.py), validate each row against the schema (corpus_schema.py).

A teacher corpus is a set of rows ``{"id", "domain", "input", "target"}`` plus an optional
``"rationale"`` (the teacher's chain of thought) and ``"meta"`` object. Real corpora rarely use
these names, so a :class:`FieldMapping` says which source key/column feeds each canonical field.

Readers never raise on a bad row: every non-blank row comes back either as a :class:`TeacherRow`
or as a :class:`Reject` naming the file, the line and a stable reason code (see
:data:`REJECT_REASONS`), so a corpus with a few broken lines still prepares and every line is
accounted for. Problems that make a whole file unusable (cannot open, unknown format, missing
required column, broken JSON array) raise :class:`CorpusError` instead: they are configuration
errors the user must fix before anything useful can happen.

Where a row "is" depends on the format: ``line`` is the physical line for JSON Lines and CSV/TSV
(where the record starts), the line where the element starts for a ``.json`` array, and the
1-based row number for Parquet and TFDS.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Re-exported: callers import the schema and the readers' entry points from here.
from distill_jax.data.corpus_readers import _open_binary, _open_records, _tfds_sources, input_format  # noqa: F401
from distill_jax.data.corpus_schema import (  # noqa: F401
    CONTROL_CHARACTERS,
    EXCERPT_CHARS,
    FILE_KEYS,
    REJECT_REASONS,
    TFDS_PREFIX,
    CorpusError,
    FieldMapping,
    ReadStats,
    Reject,
    TeacherRow,
    _type_name,
    template_keys,
)


class _RowError(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def read_rows(
    path: str,
    mapping: FieldMapping,
    *,
    default_domain: str = "default",
    source_name: str | None = None,
    stats: ReadStats | None = None,
    columns: tuple[str, ...] = (),
) -> Iterator[TeacherRow | Reject]:
    """Yields one TeacherRow or Reject per non-blank row of ``path``.

    ``path`` is a ``.jsonl``/``.json`` (JSON Lines, or one top-level array of objects), ``.csv``,
    ``.tsv`` or ``.parquet`` file, or ``tfds:NAME[/CONFIG][:SPLIT]`` for a TFDS dataset already
    prepared under ``$TFDS_DATA_DIR`` (all splits when SPLIT is omitted). ``source_name`` is the
    prefix of derived ids (default: the file name). ``columns`` names the columns of a CSV/TSV file
    that has no header row (the first row is then data); other formats ignore it.
    """
    stats = stats if stats is not None else ReadStats()
    name = source_name or (path if path.startswith(TFDS_PREFIX) else os.path.basename(path))
    if path.startswith(TFDS_PREFIX):
        file_name = path[len(TFDS_PREFIX) :].partition(":")[0]
        file_keys = {"_file_stem": file_name.replace("/", "_"), "_file_name": file_name}
    else:
        file_keys = {"_file_stem": Path(path).stem, "_file_name": Path(path).name}
    for source, line, record, excerpt in _open_records(path, mapping, columns):
        if record is None:
            stats.blank += 1
            continue
        stats.rows += 1
        if isinstance(record, Reject):
            yield record
            continue
        try:
            # For a TFDS spec without a split, source is "<spec>:<split>": keep the split in ids.
            id_prefix = name + source[len(path) :]
            record = {**file_keys, **record}  # A real column of the same name wins.
            yield _validate(record, mapping, default_domain, id_prefix, source, line, stats)
        except _RowError as err:
            yield Reject(source, line, err.reason, err.detail, excerpt)


def input_sha256(path: str) -> str:
    """sha256 of a file's bytes (as ``sha256sum`` prints it), or of a local TFDS dataset's files."""
    digest = hashlib.sha256()
    if input_format(path) == "tfds":
        data_dir = Path(_tfds_sources(path)[0][1].dataset_info.data_dir)
        files = sorted(p for p in data_dir.rglob("*") if p.is_file())
    else:
        data_dir, files = None, [Path(path)]
    for file in files:
        if data_dir is not None:
            digest.update(str(file.relative_to(data_dir)).encode() + b"\0")
        with _open_binary(str(file)) as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------------- validation


def _validate(
    record: dict[str, Any],
    mapping: FieldMapping,
    default_domain: str,
    id_prefix: str,
    source: str,
    line: int,
    stats: ReadStats,
) -> TeacherRow:
    def text(field: str, numeric: bool = False) -> str:
        key = getattr(mapping, field)
        names = template_keys(key) if field in ("input", "target", "id", "domain") else None
        if names is None:
            return _text_field(record, field, key, numeric)
        values = {name: _text_field(record, f"{field}.{name}", name, numeric=True) for name in names}
        return key.format(**values)

    def label(field: str) -> str:
        value = text(field, numeric=True)
        bad = CONTROL_CHARACTERS.search(value)
        if bad:
            raise _RowError(
                "control_character",
                f"field {field} holds control character {bad.group()!r} at position {bad.start()}; ids and "
                "domains are labels: remove it from the source",
            )
        return value

    input_text, target = text("input"), text("target", numeric=True)
    row_id = f"{id_prefix}:{line}" if mapping.id is None else label("id")
    # Keys are str, so an unmapped (None) optional field is never "in" a record.
    domain_keys = mapping.source_keys("domain")
    if domain_keys and all(k in record for k in domain_keys):
        domain = label("domain")
    else:
        domain = default_domain
        if mapping.domain is not None:
            stats.defaulted_domain += 1
    rationale = text("rationale") if mapping.rationale in record else None
    meta = record[mapping.meta] if mapping.meta in record else None
    if mapping.meta in record and not isinstance(meta, dict):
        raise _RowError(
            "wrong_type",
            f"field meta (source key {mapping.meta!r}) is "
            f"{_type_name(meta)}, must be an object; fix the value or remove the key",
        )
    return TeacherRow(row_id, domain, input_text, target, rationale, meta, source, line)


def _text_field(record: dict[str, Any], field: str, key: str | None, numeric: bool) -> str:
    where = f"field {field} (source key {key!r})"
    if key not in record:
        hint = " or map id to None to derive ids from file:line" if field == "id" else ""
        raise _RowError(
            "missing_field",
            f"{where} is missing; add it to the row, or point the mapping's {field} at the right key{hint}",
        )
    value = record[key]
    if numeric and isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            raise _RowError("wrong_type", f"{where} is {value!r}; give a finite number or a string")
        return str(value)
    if not isinstance(value, str):
        allowed = "a string or a number" if numeric else "a string"
        raise _RowError("wrong_type", f"{where} is {_type_name(value)}, must be {allowed}; fix the value in the source")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise _RowError(
            "invalid_utf8",
            f"{where} contains text that is not valid UTF-8 (an "
            "undecodable byte or unpaired surrogate escape); fix the file's encoding",
        ) from err
    if not value.strip():
        raise _RowError("empty_field", f"{where} is empty; give it text or drop the row")
    return value
