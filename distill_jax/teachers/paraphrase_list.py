"""Parses a teacher's "give me k paraphrases" reply into the paraphrases and everything else.

Chat models answer in many shapes: a numbered list ("1." "1)" "(1)"), bullets (- * •), labelled
lines ("Paraphrase 1: ..."), a JSON array (bare or in a ```json fence) or one sentence per line,
usually with a preamble ("Sure! Here are 5 paraphrases:") and sometimes an epilogue or notes.
`parse_paraphrase_list` keeps the sentences, stripped of markers, labels, emphasis and wrapping
quotes, and returns every other non-blank part of the reply with a reason code (see
`DROP_REASONS`): a caller writes those to its rejects, so nothing a teacher said vanishes unseen.
Blank lines are layout and are only counted.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence

DROP_REASONS: dict[str, str] = {
    "preamble": "chatter or a heading before the list",
    "epilogue": "chatter after the list",
    "commentary": "unmarked text between list items (explanations, notes)",
    "heading": "ends with ':' -- a heading or a label with nothing after it",
    "not_a_sentence": "no word of two letters or more (separators, code fences, bare numbers)",
    "not_text": "a JSON element that is not a string",
}

# A list marker at the start of a line: a bullet, or a number as "1." "1)" "(1)" "1:" "#1" "1]".
# `(?!\d)` keeps a sentence that starts with a decimal ("3.5 million ...") whole.
_MARKER = re.compile(r"^(?:[-*•·‣◦–—+](?=\s)|\(\d{1,3}\)|#?\d{1,3}\s*[.):\]](?!\d))\s*")
# A label the model puts before a sentence: "Paraphrase 1:", "Rephrased version -", "Option 2)".
_LABEL = re.compile(
    r"^(?:paraphrase[sd]?|paraphrased (?:version|sentence)|rephrased(?: (?:version|sentence))?|rephrasing"
    r"|rewritten(?: (?:version|sentence))?|rewrite|version|option|variant|variation|alternative|sentence)"
    r"\b\s*#?(\d{1,3})?\s*[:.)\-–—](?=\s|$)\s*",
    re.IGNORECASE,
)
# How chat models open, close or interrupt a list; matched on a line with markers and labels removed.
_CHATTER = re.compile(
    r"^(?:sure|certainly|of course|okay|ok|absolutely|great|no problem|here(?:'s|’s| is| are)|below (?:are|is)"
    r"|the following|i(?:'ve|’ve| have| can|'ll|’ll| will| hope)|hope (?:this|these|that)|let me know"
    r"|feel free|these (?:are|paraphrases|sentences|versions|alternatives|options)|each (?:of these|paraphrase)"
    r"|all (?:of )?these|(?:please )?note\b)",
    re.IGNORECASE,
)
_QUOTES = (('"""', '"""'), ("'''", "'''"), ('"', '"'), ("'", "'"), ("“", "”"), ("‘", "’"), ("«", "»"), ("`", "`"))
_FENCE = re.compile(r"```[\w-]*[ \t]*\n(.*?)```", re.DOTALL)
_WORD = re.compile(r"[^\W\d_]{2,}")
_JSON_KEYS = ("paraphrase", "text", "sentence")


@dataclasses.dataclass(frozen=True)
class Dropped:
    """A non-blank part of the reply that is not a paraphrase; `line` is 1-based (0: not line-based)."""

    text: str
    reason: str
    line: int = 0


@dataclasses.dataclass(frozen=True)
class ParsedList:
    items: tuple[str, ...]
    dropped: tuple[Dropped, ...]
    blank: int = 0  # blank lines skipped


def parse_paraphrase_list(reply: str) -> ParsedList:
    """The paraphrases in `reply`, in order, and the rest with reasons; never raises."""
    lines = reply.splitlines()
    blank = sum(not line.strip() for line in lines)
    found = _json_array(reply)
    if found is not None:
        values, first, last = found
        items, dropped = _clean_values(values)
        before = [Dropped(line.strip(), "preamble", i + 1) for i, line in enumerate(lines[:first]) if line.strip()]
        after = [Dropped(line.strip(), "epilogue", i + 1) for i, line in enumerate(lines) if i > last and line.strip()]
        return ParsedList(items, (*before, *dropped, *after), blank)
    items, dropped = _parse_lines(lines)
    return ParsedList(items, dropped, blank)


def clean_items(values: Sequence[object]) -> ParsedList:
    """Stored paraphrase lists (e.g. a pool file's JSON list) through the same per-item cleaning."""
    items, dropped = _clean_values(values)
    return ParsedList(items, dropped)


def clean_item(text: str) -> str:
    """One item without its list marker, label, emphasis and wrapping quotes; "" if nothing is left."""
    text = text.replace("**", "").replace("__", "").strip()
    for _ in range(3):  # "1. Paraphrase 1: "..."" carries a marker, a label and quotes.
        before = text
        text = _MARKER.sub("", text, count=1)
        text = _LABEL.sub("", text, count=1)
        text = _unquote(text.strip())
        if text == before:
            break
    return text


def _problem(item: str) -> str | None:
    """Why a cleaned item is not a sentence, or None."""
    if not _WORD.search(item):
        return "not_a_sentence"
    if item.endswith(":"):
        return "heading"
    return None


def _unquote(text: str) -> str:
    """`"A sentence."` -> `A sentence.`, also with the full stop outside (`"A sentence".`).

    Only when the quote does not occur inside as well: `"Go," she said, "now."` keeps its quotes.
    """
    for opening, closing in _QUOTES:
        body, tail = text, ""
        if body[-1:] in ".!?" and body[:-1].endswith(closing):
            body, tail = body[:-1], body[-1]
        if len(body) > len(opening) + len(closing) and body.startswith(opening) and body.endswith(closing):
            inner = body[len(opening) : -len(closing)]
            if opening not in inner and closing not in inner:
                inner = inner.strip()
                return inner + (tail if tail and inner[-1:] not in ".!?" else "")
    return text


def _marked(line: str) -> bool:
    line = line.replace("**", "").strip()
    return bool(_MARKER.match(line) or _LABEL.match(line))


def _parse_lines(lines: list[str]) -> tuple[tuple[str, ...], tuple[Dropped, ...]]:
    stripped = [line.strip() for line in lines]
    marked = [bool(s) and _marked(s) for s in stripped]
    listed = any(marked)
    first = marked.index(True) if listed else -1
    last = len(marked) - 1 - marked[::-1].index(True) if listed else -1
    items: list[str] = []
    dropped: list[Dropped] = []
    consumed = set()
    for i, text in enumerate(stripped):
        if not text or i in consumed:
            continue
        if listed and not marked[i]:
            where = "preamble" if i < first else "epilogue" if i > last else "commentary"
            dropped.append(Dropped(text, "not_a_sentence" if not _WORD.search(text) else where, i + 1))
            continue
        item = clean_item(text)
        if not item and listed:
            # "Paraphrase 1:" on its own line: the sentence is on the next one.
            following = next((j for j in range(i + 1, len(stripped)) if stripped[j]), None)
            if following is not None and not marked[following]:
                consumed.add(following)
                item = clean_item(stripped[following])
                if item and not _problem(item):
                    items.append(item)
                    continue
                dropped.append(Dropped(text, "heading", i + 1))
                dropped.append(Dropped(stripped[following], _problem(item) or "not_a_sentence", following + 1))
                continue
        problem = _problem(item)
        if problem is None and not listed and _CHATTER.match(item):
            problem = "epilogue" if items else "preamble"
        elif problem == "heading" and not listed:
            problem = "epilogue" if items else "preamble"
        if problem:
            dropped.append(Dropped(text, problem, i + 1))
        else:
            items.append(item)
    return tuple(items), tuple(dropped)


def _clean_values(values: Sequence[object]) -> tuple[tuple[str, ...], tuple[Dropped, ...]]:
    items: list[str] = []
    dropped: list[Dropped] = []
    for value in values:
        if isinstance(value, dict):
            strings = [v for v in value.values() if isinstance(v, str)]
            keyed = [value[k] for k in _JSON_KEYS if isinstance(value.get(k), str)]
            value = keyed[0] if keyed else strings[0] if len(strings) == 1 else value
        if not isinstance(value, str):
            dropped.append(Dropped(json.dumps(value, ensure_ascii=False)[:200], "not_text"))
            continue
        item = clean_item(" ".join(value.split()))
        problem = _problem(item)
        if problem:
            dropped.append(Dropped(value, problem))
        else:
            items.append(item)
    return tuple(items), tuple(dropped)


def _json_array(reply: str) -> tuple[list, int, int] | None:
    """(elements, first line, last line) of the JSON array the reply holds, if any; lines 0-based.

    Looks in ```json fences first, then at a `[` that starts a line (so a bracket inside a plain
    sentence is never taken for JSON). The array must hold a string or an object.
    """
    found = []
    for fence in _FENCE.finditer(reply):
        try:
            found.append((json.loads(fence.group(1)), fence.start(), fence.end() - 1))
        except (json.JSONDecodeError, RecursionError):
            continue
    decoder = json.JSONDecoder()
    for bracket in re.finditer(r"(?m)^[ \t]*\[", reply):
        try:
            value, end = decoder.raw_decode(reply, bracket.end() - 1)
        except (json.JSONDecodeError, RecursionError):
            continue
        found.append((value, bracket.start(), end - 1))
    for value, start, end in found:
        if isinstance(value, list) and any(isinstance(v, (str, dict)) for v in value):
            return value, reply.count("\n", 0, start), reply.count("\n", 0, end)
    return None
