"""An OpenAI-compatible teacher's per-token log-probs (``logprobs``/``top_logprobs``) as student token ids.

A chat-completions reply asked with ``logprobs: true, top_logprobs: k`` carries
``choices[0].logprobs.content[i] = {token, logprob, bytes, top_logprobs: [{token, logprob, bytes}, ...]}``:
the i-th generated token and the k most likely tokens at that position. They can teach a student only when
the teacher's tokenizer is the student's: each token string must be one id of the student's vocabulary, and
the ids must be the student's own encoding of the completion (``round_trip``; the OpenAI teacher refuses a teacher whose first
reply does not, in one line, before it buys anything else).

Token strings are mapped (``TokenMap``) in this order: ``token_id:N`` (vLLM's ``--return-tokens-as-token-ids``:
exact, recommended); at the completion's start, the text's own single-id encoding (a sentencepiece student
adds its word-start mark there); elsewhere the text the id adds after another token (``decode([a, id])`` less
``decode([a])``, the way servers detokenise incrementally). Raw entries are kept as compact JSON (``dumps`` /
``loads``) so the response cache keeps them without committing to one student's vocabulary.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from typing import Any

import numpy as np

from distill_jax.data.tokenizers import Tokenizer

# The floor for a log-prob (servers write -9999.0 or -inf for "never"); fp16 holds it.
MIN_LOGPROB = -1.0e4
# OpenAI's documented cap, and vLLM's default --max-logprobs.
SERVER_CAP = 20

Entry = tuple[str, float, list[tuple[str, float]]]  # (token, logprob, [(alternative, logprob), ...])


def parse(body: dict) -> list[Entry] | None:
    """The first choice's per-token entries; None when the reply carries no log-probs at all."""
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    logprobs = choices[0].get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not isinstance(content, list) or not content:
        return None
    out: list[Entry] = []
    for item in content:
        if not isinstance(item, dict) or not isinstance(item.get("token"), str):
            return out  # what came before is usable; the rest is not
        alts = [
            (a["token"], _logprob(a.get("logprob")))
            for a in item.get("top_logprobs") or ()
            if isinstance(a, dict) and isinstance(a.get("token"), str)
        ]
        out.append((item["token"], _logprob(item.get("logprob")), alts))
    return out


def _logprob(value: Any) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return MIN_LOGPROB
    return max(value, MIN_LOGPROB) if not math.isnan(value) else MIN_LOGPROB


def dumps(entries: list[Entry]) -> str:
    return json.dumps([[t, lp, [[a, alp] for a, alp in alts]] for t, lp, alts in entries], ensure_ascii=False)


def loads(text: str) -> list[Entry] | None:
    if not text:
        return None
    return [(t, float(lp), [(a, float(alp)) for a, alp in alts]) for t, lp, alts in json.loads(text)]


class TokenMap:
    """Token strings of a teacher that shares the student's tokenizer -> the student's ids (None: not one id)."""

    def __init__(self, tokenizer: Tokenizer):
        self.tok = tokenizer
        self.vocab_size = int(tokenizer.vocab_size)
        plain = lambda text: [int(i) for i in tokenizer.encode(text)[len(tokenizer.prefix_ids) : -1]]  # noqa: E731
        self.encode = plain  # the student's ids of a text, without its frame (prefix, EOS)
        anchor = plain("a")[:1] or [0]
        base = tokenizer.decode(anchor)
        mid: dict[str, int] = {}
        specials = {int(tokenizer.pad_id), int(tokenizer.eos_id), *map(int, tokenizer.prefix_ids)}
        for i in range(self.vocab_size):
            if i in specials:
                continue
            text = tokenizer.decode(anchor + [i])
            if text.startswith(base) and len(text) > len(base):
                mid.setdefault(text[len(base) :], i)  # the lowest id wins a tie
        self._mid = mid

    @functools.lru_cache(maxsize=65536)  # noqa: B019 (one map per run)
    def _start(self, text: str) -> int | None:
        ids = self.encode(text) if text else []
        return ids[0] if len(ids) == 1 else None

    def id_of(self, token: str, position: int) -> int | None:
        if token.startswith("token_id:"):
            try:
                i = int(token[len("token_id:") :])
            except ValueError:
                return None
            return i if 0 <= i < self.vocab_size else None
        if position == 0:
            if not token.strip():  # a lone word-start piece (sentencepiece's "▁") shows as "" or " " there
                return self._mid.get(" ")
            found = self._start(token.lstrip())
            return found if found is not None else self._mid.get(token)
        return self._mid.get(token)


@dataclasses.dataclass(frozen=True)
class TeacherTopK:
    """A completion's tokens as student ids: ``chosen`` [n], the top-k ``ids`` / ``logp`` [n, k]; ``valid``:
    the leading positions whose token and all k alternatives map (KD uses at most those)."""

    chosen: np.ndarray
    ids: np.ndarray
    logp: np.ndarray
    valid: int

    @property
    def k(self) -> int:
        return int(self.ids.shape[1])


def to_student(entries: list[Entry], tokmap: TokenMap, k: int) -> TeacherTopK:
    """Maps ``entries`` to the student's ids, sorted by log-prob per position."""
    n = len(entries)
    chosen = np.full((n,), -1, np.int32)
    ids = np.zeros((n, k), np.int32)
    logp = np.full((n, k), MIN_LOGPROB, np.float32)
    valid = n
    for pos, (token, _, alts) in enumerate(entries):
        c = tokmap.id_of(token, pos)
        chosen[pos] = -1 if c is None else c
        merged: dict[int, float] = {}
        for alt, alp in alts:
            a = tokmap.id_of(alt, pos)
            if a is None:
                continue
            merged[a] = float(np.logaddexp(merged[a], alp)) if a in merged else alp
        ranked = sorted(merged.items(), key=lambda kv: -kv[1])[:k]
        for j, (a, alp) in enumerate(ranked):
            ids[pos, j], logp[pos, j] = a, alp
        if valid == n and (c is None or len(ranked) < k):
            valid = pos  # from here the stored distribution would be partial: CE only
    return TeacherTopK(chosen, ids, logp, valid)


def round_trip(entries: list[Entry], content: str, tokmap: TokenMap) -> str:
    """ "" when every generated token is one student id, the ids decode to ``content`` and are the student's own
    encoding of it; else what failed."""
    ids = []
    for pos, (token, _, _) in enumerate(entries):
        i = tokmap.id_of(token, pos)
        if i is None:
            return f"token {pos} {token!r} is no single id of the student's tokenizer {tokmap.tok.name!r}"
        ids.append(i)
    decoded = tokmap.tok.decode(ids)
    if decoded.strip() != content.strip():
        return (
            f"its tokens, as the student's ids, decode to {decoded[:60]!r} instead of the completion {content[:60]!r}"
        )
    own = tokmap.encode(content.strip())
    if own != ids:
        at = next((i for i, (a, b) in enumerate(zip(own, ids)) if a != b), min(len(own), len(ids)))
        return (
            f"the student's tokenizer splits the completion into {len(own)} tokens, the teacher into {len(ids)}, "
            f"first differing at token {at} ({entries[at][0] if at < len(entries) else ''!r})"
        )
    return ""


def residual(logp: np.ndarray) -> np.ndarray:
    """1 - sum of the top-k probabilities per position, in float32, never below 0."""
    return np.maximum(1.0 - np.exp(logp.astype(np.float32)).sum(-1), 0.0).astype(np.float32)
