"""One OpenAI-compatible chat-completions endpoint: the free pre-flight, and one request's metered attempts.

`Endpoint.ask` is what a worker thread of `OpenAITeacher.complete` runs for one prompt: every attempt
is opened in the budget's ledger before it is sent (with `max_tokens` set to the cap that fits) and
settled to the provider's `usage`, or to its bound when the reply may have been billed but was not read.
Failures are classified by teachers.http_json: transient ones are retried with backoff and `Retry-After`;
a wrong setting stops the run (`stop`) with one message naming the setting; an endpoint that never
accepted a connection stops it too. The API key is never put in a `repr`, a log line or an error.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections.abc import Callable

from absl import logging

from distill_jax.teachers import logprobs as lp
from distill_jax.teachers.base import Request, TeacherConfigError
from distill_jax.teachers.chat_format import billed_usage, completion
from distill_jax.teachers.http_json import Rejected, Retryable, backoff, request_json
from distill_jax.teachers.spend import Usage


@dataclasses.dataclass
class Outcome:
    """One request's result before parsing: the completion or why there is none."""

    content: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    attempts: int = 0
    reasons: list[str] = dataclasses.field(default_factory=list)  # Of every failed attempt.
    error: str = ""
    fatal: str = ""  # A TeacherConfigError message: stop the run.
    skipped: bool = False
    logprobs: list | None = None  # teachers.logprobs entries of the completion, when asked for and given


@dataclasses.dataclass
class Endpoint:
    """Where requests go and how they are sent and retried; one per teacher, shared by its threads."""

    base: str  # base_url without a trailing '/'
    model: str
    api_key: str = dataclasses.field(repr=False)
    api_key_env: str = ""  # named in a refused key's message, never the key
    temperature: float = 0.0
    max_tokens: int = 256
    timeout_s: float = 60.0
    max_retries: int = 3
    backoff_s: float = 1.0
    top_logprobs: int = 0  # > 0: annotate requests also ask for logprobs/top_logprobs
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = dataclasses.field(default_factory=random.Random, repr=False)

    @property
    def name(self) -> str:
        return f"openai:{self.model}"

    @property
    def url(self) -> str:
        return self.base + "/chat/completions"

    def preflight(self) -> list[str]:
        """Checks key, URL and model before anything is bought: `GET /models`, free at every provider.

        Returns the served model ids; raises TeacherConfigError naming the setting to fix. A server
        without the route (404/405) is given the benefit of the doubt: the first request will tell.
        """
        url = self.base + "/models"
        for attempt in range(self.max_retries + 1):
            try:
                body = request_json(url, None, self.api_key, self.timeout_s)
                break
            except Rejected as e:
                if e.status in (404, 405):
                    logging.info("teacher %s: %s has no model list (%s); not checked", self.name, url, e)
                    return []
                raise TeacherConfigError(self.config_message(e)) from None
            except Retryable as e:
                if e.reason == "http_501":  # A server that implements no GET at all.
                    return []
                if attempt == self.max_retries:
                    raise TeacherConfigError(
                        f"teacher.base_url={self.base!r} does not answer ({e}) after {attempt + 1} attempts; "
                        "nothing was sent or charged"
                    ) from None
                self.sleep(e.retry_after if e.retry_after is not None else backoff(self.backoff_s, attempt, self.rng))
        data = body.get("data")
        served = [m.get("id") for m in data if isinstance(m, dict)] if isinstance(data, list) else []
        if served and self.model not in served:
            raise TeacherConfigError(
                f"teacher.model={self.model!r} is not served at teacher.base_url={self.base!r}; it serves "
                f"{', '.join(map(str, served[:20]))}"
            )
        logging.info("teacher %s: pre-flight ok (%d models served at %s)", self.name, len(served), self.base)
        return served

    def config_message(self, e: Rejected) -> str:
        fix = {
            "key": f"the API key (environment variable {self.api_key_env or 'teacher.api_key_env'!s})",
            "model": f"teacher.model={self.model!r}",
            "url_or_model": f"teacher.base_url={self.base!r} or teacher.model={self.model!r}",
            "parameter": f"teacher.temperature={self.temperature} / teacher.max_tokens={self.max_tokens}"
            + (
                f" / teacher.top_logprobs={self.top_logprobs} (at most the server's max_logprobs)"
                if self.top_logprobs
                else ""
            ),
        }[e.setting]
        return (
            f"teacher {self.name} at {self.base} refused the request: {e}. Fix {fix}; the run stopped before "
            "its next request and nothing was charged for refused calls"
        )

    def ask(self, request: Request, prompt: str, budget, stop: threading.Event, exhausted: threading.Event) -> Outcome:
        """The stripped completion for `prompt`, retrying what may succeed on another attempt."""
        out = Outcome()
        last = ""
        for attempt in range(self.max_retries + 1):
            if stop.is_set() or exhausted.is_set():
                out.skipped, out.error = (
                    True,
                    "not asked: " + ("the run stopped" if stop.is_set() else "budget exhausted"),
                )
                return out
            ticket = budget.open(request.key, request.kind, request.domain, prompt) if budget is not None else None
            if budget is not None and ticket is None:
                exhausted.set()  # Later requests would not fit either: keep purchases in request order.
                out.skipped, out.error = True, "not asked: budget exhausted"
                return out
            cap = ticket.cap if ticket is not None else self.max_tokens
            out.attempts += 1
            try:
                body = request_json(self.url, self.payload(prompt, cap, request.kind), self.api_key, self.timeout_s)
            except Retryable as e:
                if ticket is not None:
                    budget.settle(ticket, e.billing, reason=e.reason)
                if e.billing == "unread" and ticket is not None:
                    out.input_tokens, out.output_tokens = (
                        out.input_tokens + ticket.prompt_bound,
                        out.output_tokens + cap,
                    )
                out.reasons.append(e.reason)
                last = str(e)
                if attempt == self.max_retries:
                    break
                delay = e.retry_after if e.retry_after is not None else backoff(self.backoff_s, attempt, self.rng)
                logging.info(
                    "teacher %s: attempt %d of %s: %s; retrying in %.1f s",
                    self.name,
                    attempt + 1,
                    request.key[:12],
                    e,
                    delay,
                )
                self.sleep(delay)
                continue
            except Rejected as e:
                if ticket is not None:
                    budget.settle(ticket, "free", reason=f"http_{e.status}")
                out.reasons.append(f"http_{e.status}")
                out.error = str(e)
                if e.config:
                    stop.set()
                    out.fatal = self.config_message(e)
                return out
            content, finish_reason = completion(body)
            tin, tout = billed_usage(body, ticket.prompt_bound if ticket else len(prompt.encode()), content, cap)
            out.input_tokens, out.output_tokens = out.input_tokens + tin, out.output_tokens + tout
            reason = "" if content else ("no_choices" if not body.get("choices") else "empty_completion")
            if ticket is not None:
                budget.settle(ticket, "billed", Usage(tin, tout), reason=reason)
            if not content:
                out.reasons.append(reason)
                last = f"{reason}: the reply has no completion"
                if attempt == self.max_retries:
                    break
                self.sleep(backoff(self.backoff_s, attempt, self.rng))
                continue
            if finish_reason == "length":
                out.error = f"completion cut off at {cap} tokens"
                return out
            out.content = content
            if self.top_logprobs and request.kind == "annotate":
                out.logprobs = lp.parse(body)
            return out
        if out.reasons and all(r == "connect" for r in out.reasons):
            stop.set()  # Nothing was ever sent: no request can succeed, and none was charged.
            out.fatal = f"teacher.base_url={self.base!r} refused every connection ({last}); nothing was sent or charged"
        out.error = f"gave up after {self.max_retries + 1} attempts: {last}"
        return out

    def payload(self, prompt: str, cap: int, kind: str = "annotate") -> dict:
        payload = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": self.temperature,
            "max_tokens": cap,
        }
        if self.top_logprobs and kind == "annotate":  # only annotations become KD targets
            payload.update(logprobs=True, top_logprobs=self.top_logprobs)
        return payload
