"""The teacher-corpus schema: reason codes, the field mapping, rows and rejects (shared by reader and validator).

Split from corpus.py (which re-exports every name here), so the readers (corpus_readers.py) and the
row validation can both use it without importing each other.
"""

from __future__ import annotations

import dataclasses
import re
import string
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


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", list: "a list", dict: "an object"}.get(type(value), type(value).__name__)
