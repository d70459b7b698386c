"""Reading a teacher's synthesize reply: a JSON object (fenced, or among prose) or labelled text."""

from __future__ import annotations

import json
import re

from distill_jax.teachers.http_json import snippet

_SYNTH_FIELDS = ("question", "rationale", "answer")
_FENCE = re.compile(r"```[\w-]*[ \t]*\n?(.*?)```", re.DOTALL)
# "Question:", "**Answer:**", "## Rationale:" at the start of a line.
_LABEL = re.compile(r"^[ \t*#_]*(question|rationale|answer)[ \t*_]*:[ \t*_]*", re.IGNORECASE | re.MULTILINE)


def parse_synthesis(content: str) -> tuple[str, str, str]:
    """(question, rationale, answer) from a synthesize reply; ValueError saying what is wrong.

    The reply is a JSON object with those fields (possibly in a ```json fence or among prose), or
    text labelled "Question:", "Rationale:" and "Answer:" at line starts.
    """
    fields = _json_object(content)
    if fields is None:
        fields = _labelled(content)
    if fields is None:
        raise ValueError(
            "synthesize reply holds neither a JSON object nor Question:/Rationale:/Answer: text: " + snippet(content)
        )
    values = []
    for name in _SYNTH_FIELDS:
        value = fields.get(name)
        # Models often write a numeric answer as a JSON number.
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"synthesize reply has no usable {name!r} (missing, empty or not text)")
        values.append(value.strip())
    return values[0], values[1], values[2]


def _json_object(content: str) -> dict | None:
    """The first JSON object naming a synthesize field, in code fences first, then anywhere."""
    decoder = json.JSONDecoder()
    for text in [*_FENCE.findall(content), content]:
        for start in (m.start() for m in re.finditer(r"\{", text)):
            try:
                value, _ = decoder.raw_decode(text, start)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict) and any(name in value for name in _SYNTH_FIELDS):
                return value
    return None


def _labelled(content: str) -> dict | None:
    """{label: text} from "Question: ... Rationale: ... Answer: ..." text; the first of each label wins."""
    matches = list(_LABEL.finditer(content))
    if not matches:
        return None
    fields: dict[str, str] = {}
    for match, following in zip(matches, [*matches[1:], None]):
        end = following.start() if following else len(content)
        fields.setdefault(match.group(1).lower(), content[match.end() : end])
    return fields
