"""What a teacher is asked and what it answers.

A request is *annotate* (write a rationale and final answer for an existing pool example, given its
gold answer when there is one), *synthesize* (write a new example of a domain, with rationale and
answer, from a few seed examples of that domain) or *paraphrase* (write `k` paraphrases of the
example's input sentence). Every request has a stable key, a
hash of its content: the budget ledger and the response caches are keyed by it, so re-issuing a
request after a crash is recognised as the same purchase and never paid twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from typing import Any, Literal, Protocol

from distill_jax.config import ConfigError

RequestKind = Literal["annotate", "synthesize", "paraphrase"]
# ok: usable output. failed: the teacher was asked but gave nothing usable (after retries; `error`
# says why) -- it may have been paid for. unavailable: there was nothing to ask (e.g. a stored pool
# holds no output for this input, or its synthetic examples for the domain ran out) -- never paid.
# skipped: never asked -- the budget had no room for it, or the run stopped on a config error.
Status = Literal["ok", "failed", "unavailable", "skipped"]


class TeacherConfigError(ConfigError):
    """A setting is wrong (key, model, URL, parameter) or the endpoint is unreachable: no request can
    succeed, so the run stops before its next request. The message names the setting to fix."""


def api_key_from_env(variable: str, knob: str) -> str:
    """The API key in environment variable ``variable`` (named by the config field ``knob``); refused if unset."""
    key = os.environ.get(variable, "")
    if not key:
        raise TeacherConfigError(
            f"{knob} reads its API key from the environment variable {variable!r}, which is unset or empty"
        )
    return key


class TeacherTokenizerError(TeacherConfigError):
    """The teacher's log-probs cannot teach the student: its tokens are not the student's tokenizer's, or it
    gives none (or fewer than asked). Raised on its first reply, before anything else is bought."""


@dataclasses.dataclass(frozen=True)
class Example:
    """A pool example: what the student sees as input, and the gold answer when the data has one."""

    id: str
    domain: str
    input: str
    answer: str | None = None
    # A reference rationale the data already has (eval sets): scored against, never sent to a teacher.
    rationale: str | None = None


@dataclasses.dataclass(frozen=True)
class Request:
    kind: RequestKind
    domain: str
    example: Example | None = None  # annotate: the example to annotate; paraphrase: the sentence.
    seeds: tuple[Example, ...] = ()  # synthesize: examples of the domain to imitate.
    index: int = 0  # synthesize: ordinal of the new example within its domain (keeps keys distinct).
    k: int = 0  # paraphrase: how many paraphrases are wanted.

    def __post_init__(self):
        if self.kind in ("annotate", "paraphrase") and self.example is None:
            raise ValueError(f"a {self.kind} request needs the example to {self.kind}")
        if self.kind == "paraphrase" and self.k < 1:
            raise ValueError(f"a paraphrase request needs k >= 1 paraphrases, got k={self.k}")

    @property
    def key(self) -> str:
        """Stable content hash (hex SHA-256): same request, same key, across processes and runs."""
        ex = self.example
        payload = {
            "kind": self.kind,
            "domain": self.domain,
            "example": None if ex is None else [ex.id, ex.input, ex.answer],
            "seeds": [[s.id, s.input, s.answer] for s in self.seeds],
            "index": self.index,
        }
        if self.kind == "paraphrase":
            # Only here: the keys of annotate/synthesize requests (in existing ledgers and caches) stay as they were.
            payload["k"] = self.k
        return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class Response:
    """A teacher's answer to one request.

    For annotate, `input` repeats the example's input; for synthesize it is the new example's input.
    `answer` is the teacher's own final answer (for synthesize, the new example's label).
    `tokens` is what the provider billed (prompt + completion) when it says so, else an estimate;
    `input_tokens`/`output_tokens` split it when the provider says so.
    `cached`: answered from a response cache, so nothing was spent now; `tokens` is still what the
    original call was billed.
    For paraphrase, `input` repeats the sentence, `rationale` holds the teacher's raw reply (when it
    has one), `paraphrases` the usable items parsed from it and `dropped` the (text, reason) of every
    other non-blank part of the reply (see teachers.paraphrase_list), so nothing vanishes unseen.
    """

    request_key: str
    status: Status
    input: str = ""
    rationale: str = ""
    answer: str = ""
    tokens: int = 0
    error: str = ""
    cached: bool = False
    paraphrases: tuple[str, ...] = ()
    dropped: tuple[tuple[str, str], ...] = ()
    input_tokens: int = 0
    output_tokens: int = 0
    # annotate with an OpenAI teacher asked for log-probs: teachers.logprobs.TeacherTopK over the rationale's tokens.
    topk: Any = None


class Teacher(Protocol):
    """One interface for stored pools, HTTP endpoints and local models.

    `complete` answers every request, in order, and never raises for one request's failure (that is
    a `failed` response with the reason); it raises only when the teacher cannot work at all (e.g. a
    missing API key or unreadable pool file), before anything is spent.
    """

    name: str

    def complete(self, requests: Sequence[Request]) -> list[Response]: ...

    def close(self) -> None: ...
