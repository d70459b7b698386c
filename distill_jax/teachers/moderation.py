"""An OpenAI-compatible moderation endpoint: which texts are flagged, and for what.

Texts go `batch_size` at a time to `POST {base_url}/moderations` ({"model", "input": [...]});
each reply must hold one result per text with a boolean `flagged` (and, usually, a `categories`
map of booleans). Retries follow the chat teacher's discipline (teachers.http_json): 408/429/5xx,
timeouts, connection errors and malformed bodies are retried with backoff and jitter, a
`Retry-After` wins. A batch that still has no answer, or a refusal, raises: a corpus meant to be
moderated is never written with some rows unchecked. With a `distill.spend.Budget` every attempt
is opened in the ledger before it is sent (kind `moderation`, no completion) and settled like a
chat call: billed (the reply's `usage`, else the input's byte bound), unread, or free.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable, Sequence

import ml_collections
from absl import logging

from distill_jax.teachers.base import TeacherConfigError, api_key_from_env
from distill_jax.teachers.http_json import Rejected, Retryable, backoff, post_json, snippet
from distill_jax.teachers.spend import Usage


class ModerationClient:
    """`flag(texts)`: per text None (not flagged) or the categories it is flagged for."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str,
        *,
        batch_size: int,
        timeout_s: float,
        max_retries: int,
        backoff_s: float,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if not api_key:
            raise ValueError("ModerationClient needs a non-empty API key")
        if batch_size < 1 or timeout_s <= 0 or max_retries < 0 or backoff_s < 0:
            raise ValueError(
                "moderation settings out of range: need batch_size >= 1, timeout_s > 0, max_retries >= 0, "
                f"backoff_s >= 0; got {batch_size}, {timeout_s}, {max_retries}, {backoff_s}"
            )
        self._url = base_url.rstrip("/") + "/moderations"
        self._model = model
        self._api_key = api_key
        self._batch_size = int(batch_size)
        self._timeout_s = float(timeout_s)
        self._max_retries = int(max_retries)
        self._backoff_s = float(backoff_s)
        self._sleep = sleep
        self._rng = random.Random()
        self.calls = 0  # HTTP attempts made, for the run's report
        # A distill.spend.Budget to meter every attempt (paraphrase-corpus sets it); None = unmetered.
        self.budget = None

    def __repr__(self) -> str:
        return f"ModerationClient(url={self._url!r}, model={self._model!r})"

    def flag(self, texts: Sequence[str], budget=None) -> list[tuple[str, ...] | None]:
        """Raises RuntimeError when a batch cannot be moderated (refused, failing after every retry, or no
        budget left); TeacherConfigError when a setting is wrong."""
        if budget is not None:
            self.budget = budget
        verdicts: list[tuple[str, ...] | None] = []
        for start in range(0, len(texts), self._batch_size):
            verdicts += self._batch(list(texts[start : start + self._batch_size]))
        logging.info(
            "moderation %s: %d texts, %d flagged, %d calls",
            self._model,
            len(texts),
            sum(v is not None for v in verdicts),
            self.calls,
        )
        return verdicts

    def _batch(self, texts: list[str]) -> list[tuple[str, ...] | None]:
        budget = self.budget
        key = hashlib.sha256(json.dumps(["moderation", self._model, texts]).encode()).hexdigest()
        text = "\n".join(texts)
        reason = ""
        for attempt in range(self._max_retries + 1):
            ticket = budget.open(key, "moderation", "moderation", text) if budget is not None else None
            if budget is not None and ticket is None:
                raise RuntimeError(
                    "moderation: the teacher budget (distill.budget) has no room for the next batch; nothing was "
                    "written -- raise the budget or set paraphrase.moderation.enabled=False"
                )
            self.calls += 1
            try:
                body = post_json(self._url, {"model": self._model, "input": texts}, self._api_key, self._timeout_s)
                verdicts = _verdicts(body, len(texts))
            except Retryable as e:
                if ticket is not None:
                    budget.settle(ticket, e.billing, reason=e.reason)
                reason = str(e)
                if attempt == self._max_retries:
                    break
                logging.info("moderation: attempt %d: %s (%s); retrying", attempt + 1, e.reason, reason)
                self._sleep(
                    e.retry_after if e.retry_after is not None else backoff(self._backoff_s, attempt, self._rng)
                )
                continue
            except Rejected as e:
                if ticket is not None:
                    budget.settle(ticket, "free", reason=f"http_{e.status}")
                error = TeacherConfigError if e.config else RuntimeError
                raise error(
                    f"moderation at {self._url} refused the request: {e}; check paraphrase.moderation.base_url, "
                    "model and the API key"
                ) from None
            if ticket is not None:
                usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
                tokens = usage.get("prompt_tokens") or usage.get("total_tokens") or ticket.prompt_bound
                budget.settle(ticket, "billed", Usage(int(tokens), 0))
                budget.ledger.finish(key, "ok", "paid", kind="moderation", domain="moderation", stage=budget.stage)
            return verdicts
        raise RuntimeError(
            f"moderation at {self._url} gave up after {self._max_retries + 1} attempts: {reason}; nothing was "
            "written -- rerun later (teacher answers are cached) or set paraphrase.moderation.enabled=False"
        )


def from_config(cfg_moderation: ml_collections.ConfigDict) -> ModerationClient:
    """A client from the `c.paraphrase.moderation` knobs; the key comes from the `api_key_env` variable."""
    return ModerationClient(
        cfg_moderation.base_url,
        cfg_moderation.model,
        api_key_from_env(cfg_moderation.api_key_env, "paraphrase.moderation"),
        **{name: cfg_moderation[name] for name in ("batch_size", "timeout_s", "max_retries", "backoff_s")},
    )


def _verdicts(body: dict, expected: int) -> list[tuple[str, ...] | None]:
    """One verdict per input from a moderation reply; Retryable if the reply is not one."""
    results = body.get("results")
    if not isinstance(results, list) or len(results) != expected:
        got = len(results) if isinstance(results, list) else "no"
        detail = f"moderation reply has {got} results for {expected} inputs: {snippet(str(body))}"
        raise Retryable("malformed", detail, billing="unread")
    verdicts = []
    for result in results:
        flagged = result.get("flagged") if isinstance(result, dict) else None
        if not isinstance(flagged, bool):
            raise Retryable(
                "malformed", f"moderation result without a boolean 'flagged': {snippet(str(result))}", billing="unread"
            )
        categories = result.get("categories")
        names = tuple(sorted(k for k, v in categories.items() if v is True)) if isinstance(categories, dict) else ()
        verdicts.append(names if flagged else None)
    return verdicts
