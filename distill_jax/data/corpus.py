"""Teacher-corpus schema, field mapping, readers and per-row validation.

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

import csv
import dataclasses
import hashlib
import json
import math
import os
import re
import string
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Stable reason codes written to rejects.jsonl; the CLI and tests rely on these names.
REJECT_REASONS: dict[str, str] = {
    "bad_json": "the line is not valid JSON",
    "not_an_object": "the JSON value is not an object ({...})",
    "missing_field": "a required field (input, target, or id unless derived) is absent",
    "empty_field": "a text field is empty or only whitespace",
    "wrong_type": "a field has a type that cannot be text (bool, null, list, object, NaN)",
    "invalid_utf8": "the line or a field is not valid UTF-8",
    "bad_row": "a CSV/TSV row does not match the header (field count, quoting)",
    "duplicate_id": "the id was already used by an earlier row (first occurrence wins)",
    "input_too_long": "the tokenized input exceeds max_input_len (and prepare.truncate does not cut inputs)",
    "target_too_long": "the tokenized formatted target exceeds max_target_len (prepare.truncate does not cut targets)",
    "duplicate_example": "same domain, input and formatted target as an earlier row",
    "control_character": "the id or domain holds a control character (NUL, newline, tab, escape, ...)",
    "duplicate_after_truncation": "same domain and tokens as an earlier row once truncated to max_*_len",
}

# Pseudo-columns every row has, for mapping templates: fields.domain='{_file_stem}' makes each input file a
# domain (a subject-per-file multiple-choice set), '{_file_name}' keeps the extension.
FILE_KEYS = ("_file_stem", "_file_name")
# C0 and C1 control characters and DEL. Ids and domains are labels: printed to consoles, written to JSON
# and TFDS text features. A NUL or escape there is a corrupt row, not a name. (Input and target text may
# hold newlines and tabs: they are content.)
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")

EXCERPT_CHARS = 200
TFDS_PREFIX = "tfds:"
_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
_WHITESPACE = re.compile(r"[ \t\r\n]*")  # JSON's whitespace


class CorpusError(ValueError):
    """A file- or configuration-level problem; the message names the file and what to do."""


@dataclasses.dataclass(frozen=True)
class FieldMapping:
    """Which source key (JSON) or column (CSV/TSV/Parquet/TFDS) feeds each canonical field.

    ``id=None`` derives a stable id ``<source name>:<line>``; ``domain=None`` (or a row without
    the domain key) puts the row in the reader's ``default_domain``. ``rationale``/``meta`` set
    to None are never read. ``input`` and ``target`` may also be templates over several source
    keys, e.g. ``"{Body} {Question}"`` (SVAMP) or ``"Premise: {premise} Hypothesis: {hypothesis}"``
    (ANLI): every key named in braces must be present and non-empty.
    """

    input: str = "input"
    target: str = "target"
    id: str | None = "id"
    domain: str | None = "domain"
    rationale: str | None = "rationale"
    meta: str | None = "meta"

    def __post_init__(self) -> None:
        for name, key in (("input", self.input), ("target", self.target)):
            if not isinstance(key, str) or not key:
                raise CorpusError(f"FieldMapping.{name} must name a source key, got {key!r}")
            template_keys(key, f"FieldMapping.{name}")
        for name, key in (("id", self.id), ("domain", self.domain)):
            if key is not None:
                template_keys(key, f"FieldMapping.{name}")

    def source_keys(self, field: str) -> list[str]:
        """The source keys a field reads: its template's keys, or its one key ([] when unmapped)."""
        key = getattr(self, field)
        if key is None:
            return []
        return template_keys(key) or [key]


def template_keys(key: str, what: str = "field mapping") -> list[str] | None:
    """The source keys a ``"{a} {b}"`` mapping template reads, or None for a plain key."""
    if "{" not in key and "}" not in key:
        return None
    try:
        parts = list(string.Formatter().parse(key))
    except ValueError as err:
        raise CorpusError(f"{what} {key!r} is not a valid template ({err}); write keys as {{name}}") from err
    names = [name for _, name, spec, conversion in parts if name is not None]
    bad = [name for _, name, spec, conversion in parts if name is not None and (not name or spec or conversion)]
    if not names or bad:
        raise CorpusError(f"{what} {key!r}: name each source key in braces, e.g. '{{Body}} {{Question}}'")
    return names


@dataclasses.dataclass(frozen=True)
class TeacherRow:
    """One validated teacher example; ``source``/``line`` point back into the input file."""

    id: str
    domain: str
    input: str
    target: str
    rationale: str | None
    meta: dict[str, Any] | None
    source: str
    line: int


@dataclasses.dataclass(frozen=True)
class Reject:
    """A row that cannot be used; ``reason`` is a key of :data:`REJECT_REASONS`."""

    source: str
    line: int
    reason: str
    detail: str
    excerpt: str


@dataclasses.dataclass
class ReadStats:
    """Filled in by :func:`read_rows`: rows yielded (rows or rejects) and blank lines skipped."""

    rows: int = 0
    blank: int = 0
    defaulted_domain: int = 0


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


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


# -------------------------------------------------------------------------------------- readers
# Each reader yields (source, line, record, excerpt) where record is a dict, a Reject, or None
# for a blank line.

_Record = tuple[str, int, "dict[str, Any] | Reject | None", str]


def _rejected(path: str, line: int, reason: str, detail: str, excerpt: str) -> _Record:
    """A reader's record for a row that is rejected before validation."""
    return path, line, Reject(path, line, reason, detail, excerpt), excerpt


def input_format(path: str) -> str:
    """ "tfds", "jsonl", "json", "csv", "tsv" or "parquet"; CorpusError for anything else."""
    if path.startswith(TFDS_PREFIX):
        return "tfds"
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIXES:
        raise CorpusError(
            f"{path}: unknown input format {suffix or '(no extension)'!r}; use .jsonl, "
            ".json, .csv, .tsv, .parquet or tfds:NAME[/CONFIG][:SPLIT]"
        )
    return suffix[1:]


def _open_records(path: str, mapping: FieldMapping, columns: tuple[str, ...] = ()) -> Iterator[_Record]:
    fmt = input_format(path)
    if fmt == "tfds":
        return _tfds_records(path)
    if fmt == "parquet":
        return _parquet_records(path, mapping)
    if fmt in ("csv", "tsv"):
        return _csv_records(path, mapping, delimiter="," if fmt == "csv" else "\t", columns=columns)
    with _open_binary(path) as f:
        head = f.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
    if fmt == "json" and head.startswith(b"["):
        array = _json_array_records(path)
        if array is not None:
            return array
    return _jsonl_records(path)


def _open_binary(path: str):
    try:
        return open(path, "rb")
    except OSError as err:
        raise CorpusError(f"{path}: cannot open input ({err.strerror}); check the path and permissions") from err


def _excerpt(raw: bytes | str) -> str:
    if isinstance(raw, bytes):
        raw = raw[: EXCERPT_CHARS * 4].decode("utf-8", errors="replace")
    return raw.rstrip("\r\n")[:EXCERPT_CHARS]


def _row_excerpt(row: dict[str, Any]) -> str:
    return _excerpt(json.dumps(row, default=str, ensure_ascii=False).encode("utf-8", "surrogateescape"))


def _jsonl_records(path: str) -> Iterator[_Record]:
    with _open_binary(path) as f:
        for line, raw in enumerate(f, start=1):
            if line == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            excerpt = _excerpt(raw)
            if not raw.strip():
                yield path, line, None, excerpt
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                yield _rejected(
                    path,
                    line,
                    "invalid_utf8",
                    f"byte {raw[err.start]:#04x} at "
                    f"column {err.start + 1} is not valid UTF-8; re-encode the "
                    "file as UTF-8",
                    excerpt,
                )
                continue
            try:
                value = json.loads(text)
            except (ValueError, RecursionError) as err:
                where = f" at column {err.colno}" if isinstance(err, json.JSONDecodeError) else ""
                msg = err.msg if isinstance(err, json.JSONDecodeError) else str(err)[:100]
                yield _rejected(
                    path,
                    line,
                    "bad_json",
                    f"not valid JSON{where}: {msg}; each line must hold one JSON object",
                    excerpt,
                )
                continue
            yield path, line, _object_or_reject(value, path, line, excerpt), excerpt


def _object_or_reject(value: Any, path: str, line: int, excerpt: str) -> dict[str, Any] | Reject:
    if isinstance(value, dict):
        return value
    return Reject(
        path,
        line,
        "not_an_object",
        f"the row is {_type_name(value)}, not a JSON object; "
        "each row must be an object of named fields (join lists of strings, such as "
        "index-aligned rationales, with their base rows first)",
        excerpt,
    )


def _json_array_records(path: str) -> Iterator[_Record] | None:
    """Parses a ``.json`` file holding one top-level array, keeping each element's line.

    Returns None when the file is really JSON Lines whose first row is an array. Arrays are
    loaded whole: use JSON Lines for corpora that do not fit in memory.
    """
    with _open_binary(path) as f:
        data = f.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise CorpusError(
            f"{path}:{line}: byte {data[err.start]:#04x} is not valid UTF-8; re-encode the file as UTF-8"
        ) from err
    decoder, items, idx = json.JSONDecoder(), [], text.index("[") + 1
    try:
        while True:
            idx = _WHITESPACE.match(text, idx).end()
            if text.startswith("]", idx):
                break
            value, end = decoder.raw_decode(text, idx)
            items.append((text.count("\n", 0, idx) + 1, value, _excerpt(text[idx:end])))
            idx = _WHITESPACE.match(text, end).end()
            if text.startswith(",", idx):
                idx += 1
            elif not text.startswith("]", idx):
                raise json.JSONDecodeError("Expecting ',' delimiter", text, idx)
        if text[idx + 1 :].strip():
            return None
    except (json.JSONDecodeError, RecursionError) as err:
        pos = err.pos if isinstance(err, json.JSONDecodeError) else idx
        line = text.count("\n", 0, pos) + 1
        raise CorpusError(
            f"{path}:{line}: the file starts a JSON array but is not valid JSON there "
            f"({err}); fix it or convert the file to JSON Lines"
        ) from err
    return ((path, line, _object_or_reject(value, path, line, excerpt), excerpt) for line, value, excerpt in items)


def _check_columns(path: str, columns: list[str], mapping: FieldMapping) -> None:
    required = [
        name
        for field in ("input", "target", "id")
        for name in mapping.source_keys(field)
        if name not in FILE_KEYS  # Every row has these (read_rows adds them).
    ]
    missing = [c for c in required if c not in columns]
    if missing:
        raise CorpusError(
            f"{path}: no column(s) {missing} (the file has {columns}); point the "
            "field mapping at existing columns (map id to None to derive ids)"
        )


def _tabular_record(row: dict[str, Any], mapping: FieldMapping) -> dict[str, Any]:
    """Tabular formats cannot omit a cell, so empty/null optional cells mean "absent"."""
    optional = (mapping.domain, mapping.rationale, mapping.meta)
    record = {k: v for k, v in row.items() if not (k in optional and v in (None, ""))}
    if mapping.meta in record and isinstance(record[mapping.meta], str):
        try:
            record[mapping.meta] = json.loads(record[mapping.meta])
        except ValueError:
            pass  # left as a string: validation rejects it as wrong_type with the field named
    return record


def _csv_records(
    path: str, mapping: FieldMapping, delimiter: str, columns: tuple[str, ...] = ()
) -> Iterator[_Record]:
    """CSV uses standard quoting; TSV is read unquoted (tabs/newlines cannot occur in fields).

    Undecodable bytes are kept as surrogate escapes so that validation rejects just that row.
    ``columns`` given: the file has no header row and these are its column names.
    """
    csv.field_size_limit(sys.maxsize)
    quoting = csv.QUOTE_MINIMAL if delimiter == "," else csv.QUOTE_NONE
    _open_binary(path).close()  # the same clear error as other formats when unreadable
    with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
        reader = csv.reader(f, delimiter=delimiter, quoting=quoting)
        header = list(columns) if columns else next(reader, None)
        if header is None:
            return
        if len(set(header)) != len(header):
            where = "prepare.columns" if columns else "the header"
            raise CorpusError(f"{path}:1: {where} repeats a column name ({header}); rename them")
        _check_columns(path, header, mapping)
        while True:
            line = reader.line_num + 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                yield _rejected(path, line, "bad_row", f"unreadable row ({err}); fix the quoting", "")
                continue
            excerpt = _excerpt(delimiter.join(cells).encode("utf-8", "surrogateescape"))
            if not "".join(cells).strip():
                yield path, line, None, excerpt
            elif len(cells) != len(header):
                yield _rejected(
                    path,
                    line,
                    "bad_row",
                    f"row has {len(cells)} fields but "
                    f"the {'column list' if columns else 'header'} has {len(header)}; quote fields that contain "
                    "the delimiter" + ("" if columns else " (a file without a header needs prepare.columns)"),
                    excerpt,
                )
            else:
                yield path, line, _tabular_record(dict(zip(header, cells)), mapping), excerpt


def _parquet_records(path: str, mapping: FieldMapping) -> Iterator[_Record]:
    import pyarrow.parquet as pq

    _open_binary(path).close()
    try:
        parquet = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises several types for corrupt files
        raise CorpusError(f"{path}: not a readable Parquet file ({err}); re-export it") from err
    names = parquet.schema_arrow.names
    _check_columns(path, names, mapping)
    # Template fields read several columns: every key named in braces is wanted.
    fields = [f.name for f in dataclasses.fields(mapping)]
    wanted = [k for field in fields for k in mapping.source_keys(field) if k in names]
    line = 0
    for batch in parquet.iter_batches(batch_size=4096, columns=list(dict.fromkeys(wanted))):
        for row in batch.to_pylist():
            line += 1
            row = {k: v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else v for k, v in row.items()}
            yield path, line, _tabular_record(row, mapping), _row_excerpt(row)


def _tfds_sources(spec: str) -> list[tuple[str, Any]]:
    """(per-split spec, random-access source) for the requested split, or for every split."""
    import tensorflow_datasets as tfds

    name, _, split = spec[len(TFDS_PREFIX) :].partition(":")
    data_dir = os.environ.get("TFDS_DATA_DIR") or None  # read now: tfds reads it once at import
    try:
        loaded = tfds.data_source(name, split=split or None, data_dir=data_dir, download=False, try_gcs=False)
    except Exception as err:  # tfds raises many types for "not found" / "no such split"
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CorpusError(
            f"{spec}: cannot open TFDS dataset {name!r} in "
            f"{data_dir or 'the default TFDS data dir'} ({reason}); prepare it "
            "locally first, set TFDS_DATA_DIR, or fix the split"
        ) from err
    if split:
        return [(spec, loaded)]
    return [(f"{spec}:{s}", loaded[s]) for s in sorted(loaded)]


def _tfds_records(spec: str) -> Iterator[_Record]:
    for source, data in _tfds_sources(spec):
        for index in range(len(data)):
            row = {k: _from_tfds(v) for k, v in data[index].items()}
            yield source, index + 1, row, _row_excerpt(row)


def _from_tfds(value: Any) -> Any:
    """Numpy scalars become Python values and bytes become str; arrays stay (→ wrong_type)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    if isinstance(value, dict):
        return {k: _from_tfds(v) for k, v in value.items()}
    if getattr(value, "shape", None) == ():
        return _from_tfds(value.item())
    return value
