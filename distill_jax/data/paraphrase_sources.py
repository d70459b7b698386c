"""Paraphrase data as (source, paraphrase) candidates: APTY, MRPC, PAWS-Wiki and generic tables.

Every row of an input comes back as one or more `Candidate`s or as one `ReadProblem` naming the
file, the line and what is wrong, so the corpus step can account for every row. A data set's human
judgement ("is this a paraphrase?") travels as `judged_paraphrase`; the filter stage decides what
to do with it, so MRPC's and PAWS's negative pairs are counted, not silently skipped.

  APTY base   semicolon CSV of ChatGPT paraphrases: `original` -> `paraphrase_fixed` (the reply with
              artifacts such as "Altered:" removed), judged by `paraphrase`; the other columns go to meta.
  MRPC        msr_paraphrase_{train,test}.txt: tab-separated with a header, `#1 String` -> `#2 String`,
              judged by `Quality`.
  PAWS-Wiki   {dev,test,train}.tsv: id, sentence1, sentence2, label (header line optional).
  table       JSONL/JSON/CSV/TSV/Parquet with configurable fields; a paraphrase cell holds one
              paraphrase or a list of them (a JSON list in JSON, or a JSON-encoded list in a CSV cell).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from distill_jax.data.corpus import CorpusError, FieldMapping, Reject, _open_records

FORMATS = ("apty", "mrpc", "paws", "table")
_MRPC_COLUMNS = ("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String")
_PAWS_COLUMNS = ("id", "sentence1", "sentence2", "label")
_APTY_TEXT_COLUMNS = ("original", "paraphrase_fixed", "paraphrase-text", "marked_text")
_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no")


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One (source, paraphrase) pair before filtering; `origin` is where it came from (file:line)."""

    source: str
    paraphrase: str
    origin: str
    judged_paraphrase: bool | None = None  # a human's verdict, when the data has one
    meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def source_id(self) -> str:
        return source_id(self.source)


@dataclasses.dataclass(frozen=True)
class ReadProblem:
    """A row that yields no candidate: `detail` says what is wrong and what to do."""

    origin: str
    detail: str


def source_id(text: str) -> str:
    """Stable id of a source sentence (whitespace-normalised content hash): groups its paraphrases
    across files and reruns, whatever ids the data set uses."""
    return "s" + hashlib.sha256(" ".join(text.split()).encode()).hexdigest()[:16]


def load(fmt: str, path: str, fields: Mapping[str, str] | None = None) -> Iterator[Candidate | ReadProblem]:
    """The candidates of `path` read as `fmt` (one of FORMATS); CorpusError if the file is unusable."""
    if not os.path.isfile(path):
        raise CorpusError(f"{path}: no such file; check --input")
    if fmt == "apty":
        return load_apty(path)
    if fmt == "mrpc":
        return load_mrpc(path)
    if fmt == "paws":
        return load_paws(path)
    if fmt == "table":
        return load_table(path, fields or {})
    raise CorpusError(f"unknown paraphrase data format {fmt!r}; use one of {', '.join(FORMATS)}")


@dataclasses.dataclass(frozen=True)
class _JudgedTable:
    """A delimited file with a header whose rows are (source, paraphrase, a human's verdict, meta)."""

    separator: str
    columns: tuple[str, ...]  # what the header must name
    source: str
    paraphrase: str
    verdict: str
    verdict_values: str  # the verdicts the message names
    width_fix: str  # what a row with the wrong number of fields tells the user
    meta: Callable[[dict[str, str]], dict[str, Any]]


_APTY = _JudgedTable(
    ";",
    ("original", "paraphrase_fixed", "paraphrase"),
    source="original",
    paraphrase="paraphrase_fixed",
    verdict="paraphrase",
    verdict_values="True or False",
    width_fix="fix the quoting",
    meta=lambda record: {k: _cell(v) for k, v in record.items() if k not in _APTY_TEXT_COLUMNS},
)
_MRPC = _JudgedTable(
    "\t",
    _MRPC_COLUMNS,
    source="#1 String",
    paraphrase="#2 String",
    verdict="Quality",
    verdict_values="0 or 1",
    width_fix="fields are tab-separated",
    meta=lambda record: {"mrpc_id1": record["#1 ID"], "mrpc_id2": record["#2 ID"]},
)


def load_apty(path: str) -> Iterator[Candidate | ReadProblem]:
    return _load_judged(path, _APTY)


def load_mrpc(path: str) -> Iterator[Candidate | ReadProblem]:
    return _load_judged(path, _MRPC)


def _load_judged(path: str, table: _JudgedTable) -> Iterator[Candidate | ReadProblem]:
    name = os.path.basename(path)
    header = _require(path, table.separator, table.columns)
    for line, row in _rows(path, table.separator, skip_header=True):
        origin = f"{name}:{line}"
        if len(row) != len(header):
            yield ReadProblem(origin, f"row has {len(row)} fields, the header {len(header)}; {table.width_fix}")
            continue
        record = dict(zip(header, row))
        judged = _judgement(record[table.verdict])
        if judged is None:
            yield ReadProblem(
                origin, f"column {table.verdict!r} is {record[table.verdict]!r}; expected {table.verdict_values}"
            )
            continue
        yield from _pair(origin, record[table.source], record[table.paraphrase], judged, table.meta(record))


def load_paws(path: str) -> Iterator[Candidate | ReadProblem]:
    name = os.path.basename(path)
    for line, row in _rows(path, "\t", skip_header=False):
        origin = f"{name}:{line}"
        if line == 1 and tuple(row) == _PAWS_COLUMNS:  # PAWS files come with and without their header line.
            continue
        if len(row) != 4:
            yield ReadProblem(
                origin, f"row has {len(row)} tab-separated fields; PAWS rows are {', '.join(_PAWS_COLUMNS)}"
            )
            continue
        pair_id, sentence1, sentence2, label = row
        judged = _judgement(label)
        if judged is None:
            yield ReadProblem(origin, f"label is {label!r}; expected 0 or 1")
            continue
        yield from _pair(origin, sentence1, sentence2, judged, {"paws_id": pair_id})


def load_table(path: str, fields: Mapping[str, str]) -> Iterator[Candidate | ReadProblem]:
    """Rows with a source field and a paraphrases field (one paraphrase, or a list of them)."""
    source_key = fields.get("source") or "source"
    paraphrases_key = fields.get("paraphrases") or "paraphrases"
    id_key, label_key = fields.get("id") or None, fields.get("label") or None
    mapping = FieldMapping(input=source_key, target=paraphrases_key, id=id_key, domain=None, rationale=None, meta=None)
    name = os.path.basename(path)
    for _, line, record, _ in _open_records(path, mapping):
        origin = f"{name}:{line}"
        if record is None:
            continue
        if isinstance(record, Reject):
            yield ReadProblem(origin, f"{record.reason}: {record.detail}")
            continue
        source = record.get(source_key)
        if not isinstance(source, str) or not source.strip():
            yield ReadProblem(origin, f"field {source_key!r} is missing, empty or not text; give the source sentence")
            continue
        judged = None
        if label_key is not None:
            judged = _judgement(str(record.get(label_key, "")))
            if judged is None:
                yield ReadProblem(
                    origin, f"field {label_key!r} is {record.get(label_key)!r}; expected 1/0 or true/false"
                )
                continue
        meta = {"id": str(record[id_key])} if id_key is not None and id_key in record else {}
        values = _paraphrase_values(record.get(paraphrases_key))
        if values is None:
            yield ReadProblem(
                origin, f"field {paraphrases_key!r} is missing or neither text nor a list of text; fix the row"
            )
            continue
        for i, value in enumerate(values):
            where = origin if len(values) == 1 else f"{origin}#{i + 1}"
            yield from _pair(where, source, value, judged, meta)


def read_sentences(path: str, fields: Mapping[str, str]) -> Iterator[tuple[str, str] | ReadProblem]:
    """(origin, sentence) per source sentence of a teacher run: a .txt file (one per line) or a table."""
    if not os.path.isfile(path):
        raise CorpusError(f"{path}: no such file; check --input")
    name = os.path.basename(path)
    if path.endswith(".txt"):
        with open(path, encoding="utf-8-sig", errors="surrogateescape") as f:
            for line, text in enumerate(f, start=1):
                if text.strip():
                    yield _sentence(f"{name}:{line}", text.strip())
        return
    source_key = fields.get("source") or "source"
    mapping = FieldMapping(input=source_key, target=source_key, id=None, domain=None, rationale=None, meta=None)
    for _, line, record, _ in _open_records(path, mapping):
        if record is None:
            continue
        origin = f"{name}:{line}"
        if isinstance(record, Reject):
            yield ReadProblem(origin, f"{record.reason}: {record.detail}")
        elif not isinstance(record.get(source_key), str) or not record[source_key].strip():
            yield ReadProblem(origin, f"field {source_key!r} is missing, empty or not text; give the sentence")
        else:
            yield _sentence(origin, record[source_key].strip())


def _sentence(origin: str, text: str) -> tuple[str, str] | ReadProblem:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return ReadProblem(origin, "the line is not valid UTF-8; re-encode the file as UTF-8")
    return origin, " ".join(text.split())


def _pair(
    origin: str, source: str, paraphrase: str, judged: bool | None, meta: dict[str, Any]
) -> Iterator[Candidate | ReadProblem]:
    source, paraphrase = " ".join(source.split()), " ".join(paraphrase.split())
    if not source or not paraphrase:
        yield ReadProblem(
            origin, f"the {'source' if not source else 'paraphrase'} is empty; fill it in or drop the row"
        )
        return
    try:
        (source + paraphrase).encode("utf-8")
    except UnicodeEncodeError:
        yield ReadProblem(origin, "the row is not valid UTF-8; re-encode the file as UTF-8")
        return
    yield Candidate(source, paraphrase, origin, judged, meta)


def _paraphrase_values(value: Any) -> list[str] | None:
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            value = json.loads(value)
        except ValueError:
            return [value]
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    return None


def _rows(path: str, delimiter: str, skip_header: bool) -> Iterator[tuple[int, list[str]]]:
    """(first line, cells) per non-blank row of a delimited file, quoted as its format is."""
    csv.field_size_limit(sys.maxsize)
    # MRPC and PAWS quote nothing (their sentences hold bare " characters); APTY uses CSV quoting.
    quoting = csv.QUOTE_MINIMAL if delimiter == ";" else csv.QUOTE_NONE
    with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
        reader = csv.reader(f, delimiter=delimiter, quoting=quoting)
        start = 1
        for cells in reader:
            if "".join(cells).strip() and not (skip_header and start == 1):
                yield start, cells
            start = reader.line_num + 1


def _require(path: str, delimiter: str, columns: tuple[str, ...]) -> list[str]:
    """The header row of `path`; CorpusError naming what is missing if it lacks `columns`."""
    header = next((cells for _, cells in _rows(path, delimiter, skip_header=False)), None)
    if header is None:
        raise CorpusError(f"{path}: the file is empty")
    missing = [c for c in columns if c not in header]
    if missing:
        raise CorpusError(f"{path}:1: no column(s) {missing} in the header {header}; is this the right --from format?")
    return header


def _judgement(value: str) -> bool | None:
    value = value.strip().lower()
    return True if value in _TRUE else False if value in _FALSE else None


def _cell(value: str) -> Any:
    judged = _judgement(value) if value.strip().lower() in ("true", "false") else None
    return judged if judged is not None else (value if value != "" else None)
