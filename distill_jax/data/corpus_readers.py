"""Readers of teacher-corpus files: JSON Lines, JSON arrays, CSV/TSV (with or without a header), Parquet, TFDS.

Each reader yields (source, line, record, excerpt) where record is a dict, a Reject (the row could
not be parsed at all), or None for a blank line. Validation of the fields is corpus.py's job.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distill_jax.data.corpus_schema import (
    EXCERPT_CHARS,
    FILE_KEYS,
    TFDS_PREFIX,
    CorpusError,
    FieldMapping,
    Reject,
    _type_name,
)

_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
_WHITESPACE = re.compile(r"[ \t\r\n]*")  # JSON's whitespace

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


def _csv_records(path: str, mapping: FieldMapping, delimiter: str, columns: tuple[str, ...] = ()) -> Iterator[_Record]:
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
