"""A teacher behind any OpenAI-compatible chat-completions endpoint, with a persistent response cache.

Each request (annotate, synthesize or paraphrase) becomes one prompt (from the configured
templates) and one POST to `{base_url}/chat/completions`. Calls run `concurrency` at a time;
408/429/5xx replies, timeouts, connection errors and malformed bodies are retried with
exponential backoff and jitter (a `Retry-After` header wins; see teachers.http_json). Other 4xx replies fail the request at once with the server's message,
except 401/403/404, which mean a wrong key, model or URL: no request can succeed, so `complete`
raises.

Every usable answer is written to a SQLite cache the moment it arrives, so an interrupted run
(even kill -9) never pays for it again: a cached request makes no HTTP call and comes back with
`cached=True` and the tokens it was originally billed. Failed answers are not cached, so they are
asked again next time. A paraphrase reply is cached raw and parsed on every read, so an improved
list parser also improves answers bought before it.

The API key lives only in memory: it is never logged, cached, put in a `repr` or in an error.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import math
import os
import random
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence

import ml_collections
from absl import logging

from distill_jax.evaluation.metrics import extract_answer
from distill_jax.teachers.base import Example, Request, Response
from distill_jax.teachers.http_json import FATAL_STATUSES, Rejected, Retryable, backoff, post_json, snippet
from distill_jax.teachers.paraphrase_list import ParsedList, parse_paraphrase_list

_SYNTH_FIELDS = ("question", "rationale", "answer")
_FENCE = re.compile(r"```[\w-]*[ \t]*\n?(.*?)```", re.DOTALL)
# "Question:", "**Answer:**", "## Rationale:" at the start of a line.
_LABEL = re.compile(r"^[ \t*#_]*(question|rationale|answer)[ \t*_]*:[ \t*_]*", re.IGNORECASE | re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class _Outcome:
    """One request's result before parsing: the completion or why there is none."""

    content: str = ""
    tokens: int = 0
    retries: int = 0
    error: str = ""
    fatal: bool = False


class _Cache:
    """Ok responses by cache key in one SQLite file; WAL and a commit per write survive kill -9."""

    def __init__(self, path: str):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        # Worker threads write through this one connection, serialised by the lock.
        self._db = sqlite3.connect(path, timeout=30.0, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS responses "
                "(key TEXT PRIMARY KEY, input TEXT, rationale TEXT, answer TEXT, tokens INTEGER)"
            )

    def get(self, key: str) -> tuple[str, str, str, int] | None:
        with self._lock:
            return self._db.execute(
                "SELECT input, rationale, answer, tokens FROM responses WHERE key = ?", (key,)
            ).fetchone()

    def put(self, key: str, response: Response) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?)",
                (key, response.input, response.rationale, response.answer, response.tokens),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()


class OpenAITeacher:
    """Answers annotate/synthesize/paraphrase requests with an OpenAI-compatible chat-completions endpoint."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str,
        *,
        temperature: float,
        max_tokens: int,
        concurrency: int,
        timeout_s: float,
        max_retries: int,
        backoff_s: float,
        cache_path: str | os.PathLike,
        annotate_prompt: str,
        synthesize_prompt: str,
        paraphrase_prompt: str,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if not api_key:
            raise ValueError("OpenAITeacher needs a non-empty API key")
        if concurrency < 1 or max_tokens < 1 or timeout_s <= 0 or max_retries < 0 or backoff_s < 0:
            raise ValueError(
                "teacher settings out of range: need concurrency >= 1, max_tokens >= 1, timeout_s > 0, "
                f"max_retries >= 0, backoff_s >= 0; got {concurrency}, {max_tokens}, {timeout_s}, "
                f"{max_retries}, {backoff_s}"
            )
        # A bad template would otherwise fail every request; find out before anything is spent.
        _check_template("annotate_prompt", annotate_prompt, input="", answer="", domain="")
        _check_template("synthesize_prompt", synthesize_prompt, domain="", examples="")
        _check_template("paraphrase_prompt", paraphrase_prompt, input="", k="", domain="")
        self.name = f"openai:{model}"
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._model = model
        self._api_key = api_key
        self._temperature = float(temperature)
        self._max_tokens = int(max_tokens)
        self._concurrency = int(concurrency)
        self._timeout_s = float(timeout_s)
        self._max_retries = int(max_retries)
        self._backoff_s = float(backoff_s)
        self._annotate_prompt = annotate_prompt
        self._synthesize_prompt = synthesize_prompt
        self._paraphrase_prompt = paraphrase_prompt
        self._sleep = sleep
        self._rng = random.Random()
        self._cache = _Cache(os.fspath(cache_path))

    def __repr__(self) -> str:
        return f"OpenAITeacher(url={self._url!r}, model={self._model!r})"

    def complete(self, requests: Sequence[Request]) -> list[Response]:
        """Answers `requests` in order; a request that cannot be answered gets a `failed` response.

        Raises RuntimeError only when the endpoint rejects the key, model or URL (401/403/404);
        answers that arrived before are cached, so a rerun does not pay for them again.
        """
        responses: list[Response | None] = [None] * len(requests)
        prompts = [self._prompt(r) for r in requests]
        keys = [self._cache_key(r, p) for r, p in zip(requests, prompts)]
        misses = []
        for i, (request, key) in enumerate(zip(requests, keys)):
            row = self._cache.get(key)
            if row is None:
                misses.append(i)
            else:
                input_, rationale, answer, tokens = row
                response = Response(request.key, "ok", input_, rationale, answer, tokens, cached=True)
                if request.kind == "paraphrase":
                    response = _with_list(response, parse_paraphrase_list(rationale))
                responses[i] = response

        retries = 0
        fatal = ""
        if misses:
            with concurrent.futures.ThreadPoolExecutor(min(self._concurrency, len(misses))) as pool:
                futures = {pool.submit(self._answer, requests[i], prompts[i], keys[i]): i for i in misses}
                for future in concurrent.futures.as_completed(futures):
                    response, outcome = future.result()
                    responses[futures[future]] = response
                    retries += outcome.retries
                    fatal = fatal or (outcome.error if outcome.fatal else "")

        failed = sum(r.status != "ok" for r in responses)
        logging.info(
            "teacher %s: %d requests, %d cache hits, %d retries, %d failed, %d tokens billed now",
            self.name,
            len(requests),
            len(requests) - len(misses),
            retries,
            failed,
            sum(r.tokens for r in responses if not r.cached),
        )
        if fatal:
            raise RuntimeError(f"teacher {self.name} at {self._url} cannot work: {fatal}")
        return responses

    def close(self) -> None:
        self._cache.close()

    def _prompt(self, request: Request) -> str:
        if request.kind == "annotate":
            example = request.example
            return self._annotate_prompt.format(
                input=example.input, answer=example.answer or "unknown", domain=request.domain
            )
        if request.kind == "paraphrase":
            return self._paraphrase_prompt.format(input=request.example.input, k=request.k, domain=request.domain)
        examples = "\n\n".join(_render_seed(s) for s in request.seeds)
        return self._synthesize_prompt.format(domain=request.domain, examples=examples)

    def _cache_key(self, request: Request, prompt: str) -> str:
        # Everything that changes what the model is asked; a new template or model is a new answer.
        payload = [request.key, self._model, prompt, self._temperature, self._max_tokens]
        return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode()).hexdigest()

    def _answer(self, request: Request, prompt: str, key: str) -> tuple[Response, _Outcome]:
        """Asks for and parses one request's answer, caching it if usable; runs in a worker thread."""
        outcome = self._ask(prompt)
        if outcome.error:
            return Response(request.key, "failed", tokens=outcome.tokens, error=outcome.error), outcome
        parsed = None
        try:
            if request.kind == "annotate":
                input_, rationale, answer = request.example.input, outcome.content, extract_answer(outcome.content)
                if not answer:
                    raise ValueError("annotation states no answer")
            elif request.kind == "paraphrase":
                input_, rationale, answer = request.example.input, outcome.content, ""
                parsed = parse_paraphrase_list(outcome.content)
                if not parsed.items:
                    raise ValueError(f"reply holds no paraphrase: {snippet(outcome.content)}")
            else:
                input_, rationale, answer = parse_synthesis(outcome.content)
        except ValueError as e:
            # The reply was well-formed and billed; at a fixed prompt asking again rarely helps.
            return Response(request.key, "failed", tokens=outcome.tokens, error=str(e)), outcome
        response = Response(request.key, "ok", input_, rationale, answer, outcome.tokens)
        self._cache.put(key, response)
        return (_with_list(response, parsed) if parsed else response), outcome

    def _ask(self, prompt: str) -> _Outcome:
        """The stripped completion for `prompt`, retrying what may succeed on another attempt."""
        billed = 0
        reason = ""
        for attempt in range(self._max_retries + 1):
            try:
                body = self._post(prompt)
                usage = _usage_tokens(body)
                billed += usage or 0
                content, finish_reason = _completion(body, usage or 0)
            except Retryable as e:
                billed += e.tokens
                reason = str(e)
                if attempt == self._max_retries:
                    break
                delay = e.retry_after if e.retry_after is not None else backoff(self._backoff_s, attempt, self._rng)
                logging.log_every_n_seconds(logging.WARNING, "teacher %s: %s; retrying", 30, self.name, reason)
                self._sleep(delay)
                continue
            except Rejected as e:
                return _Outcome(tokens=billed, retries=attempt, error=str(e), fatal=e.status in FATAL_STATUSES)
            if usage is None:
                billed += math.ceil(len(prompt + content) / 4)
            if finish_reason == "length":
                return _Outcome(
                    tokens=billed, retries=attempt, error=f"completion cut off at {self._max_tokens} tokens"
                )
            return _Outcome(content=content, tokens=billed, retries=attempt)
        attempts = self._max_retries + 1
        return _Outcome(tokens=billed, retries=self._max_retries, error=f"gave up after {attempts} attempts: {reason}")

    def _post(self, prompt: str) -> dict:
        """One HTTP attempt: the decoded JSON body, or Retryable / Rejected."""
        payload = {
            "model": self._model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": self._temperature,
            "max_tokens": self._max_tokens,
        }
        return post_json(self._url, payload, self._api_key, self._timeout_s)


def from_config(cfg_teacher: ml_collections.ConfigDict, workdir: str) -> OpenAITeacher:
    """An OpenAITeacher from the `c.teacher` knobs; the key comes from the `api_key_env` variable."""
    api_key = os.environ.get(cfg_teacher.api_key_env, "")
    if not api_key:
        raise ValueError(
            f"teacher.kind=openai reads its API key from the environment variable {cfg_teacher.api_key_env!r}, "
            "which is unset or empty"
        )
    return OpenAITeacher(
        cfg_teacher.base_url,
        cfg_teacher.model,
        api_key,
        temperature=cfg_teacher.temperature,
        max_tokens=cfg_teacher.max_tokens,
        concurrency=cfg_teacher.concurrency,
        timeout_s=cfg_teacher.timeout_s,
        max_retries=cfg_teacher.max_retries,
        backoff_s=cfg_teacher.backoff_s,
        cache_path=cfg_teacher.cache_path or os.path.join(workdir, "teacher_cache.sqlite"),
        annotate_prompt=cfg_teacher.annotate_prompt,
        synthesize_prompt=cfg_teacher.synthesize_prompt,
        paraphrase_prompt=cfg_teacher.paraphrase_prompt,
    )


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


def _completion(body: dict, usage: int) -> tuple[str, str]:
    """(stripped content, finish_reason) of the first choice; Retryable if there is no content."""
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise Retryable("response has no choices", tokens=usage)
    message = choices[0].get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str) or not content.strip():
        raise Retryable("response has an empty completion", tokens=usage)
    return content.strip(), choices[0].get("finish_reason") or ""


def _usage_tokens(body: dict) -> int | None:
    usage = body.get("usage")
    tokens = usage.get("total_tokens") if isinstance(usage, dict) else None
    return tokens if isinstance(tokens, int) and not isinstance(tokens, bool) else None


def _render_seed(seed: Example) -> str:
    if seed.answer is None:
        return f"Question: {seed.input}"
    return f"Question: {seed.input}\nAnswer: {seed.answer}"


def _check_template(name: str, template: str, **fields: str) -> None:
    try:
        template.format(**fields)
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(
            f"teacher.{name} is not a valid template ({type(e).__name__}: {e}); its fields are {', '.join(fields)} "
            "and literal braces are written {{ }}"
        ) from None


def _with_list(response: Response, parsed: ParsedList) -> Response:
    dropped = tuple((d.text, d.reason) for d in parsed.dropped)
    return dataclasses.replace(response, paraphrases=parsed.items, dropped=dropped)
