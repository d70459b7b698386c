"""A teacher behind any OpenAI-compatible chat-completions endpoint, metered per attempt, with a response cache.

Each request (annotate, synthesize or paraphrase) becomes one prompt (from the configured
templates) and one POST to `{base_url}/chat/completions`, `concurrency` at a time. With a
`distill.spend.Budget`, every attempt is opened in the ledger (on disk) before it is sent, with
`max_tokens` set to the cap that fits, and settled to the provider's `usage` (or to its bound when
the reply may have been billed but was not read; teachers/openai_endpoint.py). Failures are classified by teachers.http_json:
transient ones are retried with backoff and `Retry-After`; a wrong setting (key, model, URL,
parameter) stops the run before the next request with one message naming the setting; an
endpoint that never accepted a connection stops it too (nothing was sent, nothing charged).

Usable answers go to a SQLite cache keyed by what the model is asked (teachers.response_cache):
identical requests in a run are asked once (`dedup`), and an interrupted run never pays for an
answer twice. A request already paid for and failed in an earlier run (same ledger) is not
bought again. A paraphrase reply is cached raw and parsed on every read.

With `top_logprobs=k` (distill.loss=kd without distill.kd_teacher), annotate requests also ask for
`logprobs`/`top_logprobs`; the reply's tokens are mapped to the student's ids (teachers.logprobs) and come
back as `Response.topk`, and the cache keeps the raw entries. The first reply with log-probs (a cached one,
or the first purchase, sent alone before the rest) must round-trip through the student's tokenizer and carry
k alternatives; otherwise the run stops with TeacherTokenizerError before anything else is bought.

The API key lives only in memory: it is never logged, cached, put in a `repr` or in an error.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Sequence

import ml_collections
from absl import logging

from distill_jax import storage
from distill_jax.metrics import extract_answer
from distill_jax.teachers import logprobs as lp
from distill_jax.teachers.base import Request, Response, TeacherConfigError, TeacherTokenizerError, api_key_from_env
from distill_jax.teachers.chat_format import check_template, render_prompt
from distill_jax.teachers.http_json import snippet
from distill_jax.teachers.openai_endpoint import Endpoint, Outcome
from distill_jax.teachers.paraphrase_list import ParsedList, parse_paraphrase_list
from distill_jax.teachers.response_cache import CachedAnswer, ResponseCache
from distill_jax.teachers.spend import Usage
from distill_jax.teachers.synthesis_reply import parse_synthesis

__all__ = ["OpenAITeacher", "from_config", "parse_synthesis", "render_prompt"]


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
        api_key_env: str = "",
        sleep: Callable[[float], None] = time.sleep,
        top_logprobs: int = 0,
        tokenizer=None,
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
        check_template("annotate_prompt", annotate_prompt, input="", answer="", domain="")
        check_template("synthesize_prompt", synthesize_prompt, domain="", examples="")
        check_template("paraphrase_prompt", paraphrase_prompt, input="", k="", domain="")
        if top_logprobs < 0 or (top_logprobs and tokenizer is None):
            raise ValueError(f"top_logprobs={top_logprobs} needs to be >= 0, and > 0 only with the student's tokenizer")
        self.name = f"openai:{model}"
        self.top_logprobs = int(top_logprobs)  # 0: no log-probs asked for
        self._tokenizer = tokenizer
        self._tokmap: lp.TokenMap | None = None
        self._verified = False  # a reply's log-probs have round-tripped through the student's tokenizer
        self.metered = True  # complete() takes a distill.spend.Budget and meters every attempt.
        self.model = model
        self.max_tokens = int(max_tokens)
        self._endpoint = Endpoint(
            base_url.rstrip("/"),
            model,
            api_key,
            api_key_env=api_key_env,
            temperature=float(temperature),
            max_tokens=self.max_tokens,
            timeout_s=float(timeout_s),
            max_retries=int(max_retries),
            backoff_s=float(backoff_s),
            top_logprobs=self.top_logprobs,
            sleep=sleep,
        )
        self._concurrency = int(concurrency)
        self._templates = dict(annotate=annotate_prompt, synthesize=synthesize_prompt, paraphrase=paraphrase_prompt)
        self._cache = ResponseCache(os.fspath(cache_path))

    def __repr__(self) -> str:
        return f"OpenAITeacher(url={self._endpoint.url!r}, model={self.model!r})"

    # -------------------------------------------------------------------------------- complete

    def complete(self, requests: Sequence[Request], budget=None) -> list[Response]:
        """Answers `requests` in order. With a `distill.spend.Budget` every attempt is metered; a request
        the budget has no room for comes back `skipped`.

        Raises TeacherConfigError (after the calls in flight finish) when a setting is wrong or the
        endpoint is unreachable; answers that arrived before are cached and recorded in the ledger.
        """
        responses: list[Response | None] = [None] * len(requests)
        prompts = [self.prompt(r) for r in requests]
        keys = [self._content_key(r, p) for r, p in zip(requests, prompts)]
        groups: dict[str, list[int]] = {}
        source = ["paid"] * len(requests)
        for i, request in enumerate(requests):
            if (
                budget is not None
                and budget.ledger.status(request.key) == "failed"
                and budget.ledger.key_charged(request.key)
            ):
                # Paid for in an earlier run and unusable: buying it again would pay twice for the same prompt.
                responses[i] = Response(
                    request.key, "failed", error="paid for and unusable in an earlier run (see the ledger)"
                )
                source[i] = "ledger"
                continue
            row = self._cache.get(keys[i], self._legacy_key(request, prompts[i]))
            if row is None:
                groups.setdefault(keys[i], []).append(i)
                continue
            source[i] = "cache"
            if budget is not None and not budget.charge_cached(request, _usage_of(row)):
                responses[i] = Response(request.key, "skipped", error="budget exhausted")
                continue
            responses[i] = self._cached_response(request, row)

        stop, exhausted = threading.Event(), threading.Event()
        outcomes: dict[int, Outcome] = {}
        firsts = [idxs[0] for idxs in groups.values()]
        fatal_probe = ""
        if self.top_logprobs and not self._verified:
            for i, response in enumerate(responses):  # a cached reply with log-probs checks for free
                row = response is not None and source[i] == "cache" and self._cache.get(keys[i])
                if row and row.logprobs and requests[i].kind == "annotate":
                    fatal_probe = self._verify(lp.loads(row.logprobs), row.rationale)
                    break
            probe = next((i for i in firsts if requests[i].kind == "annotate"), None)
            if not self._verified and not fatal_probe and probe is not None:
                # The first purchase goes alone: a teacher whose tokens are not the student's costs one request.
                responses[probe], outcomes[probe] = self._answer(
                    requests[probe], prompts[probe], keys[probe], budget, stop, exhausted
                )
                firsts.remove(probe)
                o = outcomes[probe]
                if not o.fatal and not o.error and not o.skipped:
                    fatal_probe = self._verify(o.logprobs, o.content)
            if fatal_probe:
                stop.set()  # the rest are not asked
        if firsts:
            with concurrent.futures.ThreadPoolExecutor(min(self._concurrency, len(firsts))) as pool:
                futures = {
                    pool.submit(self._answer, requests[i], prompts[i], keys[i], budget, stop, exhausted): i
                    for i in firsts
                }
                for future in concurrent.futures.as_completed(futures):
                    i = futures[future]
                    responses[i], outcomes[i] = future.result()
        for idxs in groups.values():
            for j in idxs[1:]:  # The same request content: one purchase, reused.
                responses[j] = dataclasses.replace(responses[idxs[0]], request_key=requests[j].key)
                source[j] = "dedup"
        if budget is not None:
            for request, response, src in zip(requests, responses, source):
                if response.status != "skipped" and src != "ledger":
                    budget.finish(request, response, src)
        self._log(requests, responses, source, outcomes)
        if fatal_probe:
            raise TeacherTokenizerError(fatal_probe)
        fatal = next((o.fatal for o in outcomes.values() if o.fatal), "")
        if fatal:
            raise TeacherConfigError(fatal)
        return responses

    def _verify(self, entries: list | None, content: str) -> str:
        """ "" when a reply's log-probs can teach the student (and marks the teacher verified), else the refusal."""
        fix = (
            "set distill.kd_teacher to a local teacher over the student's tokenizer, or distill.loss=ce; "
            "nothing else was bought"
        )
        if not entries:
            return (
                f"teacher {self.name} at {self._endpoint.base} returned no logprobs for logprobs=true, "
                f"top_logprobs={self.top_logprobs}: this server does not give them; {fix}"
            )
        most = max(len(alts) for _, _, alts in entries)
        if most < self.top_logprobs:
            return (
                f"teacher {self.name} at {self._endpoint.base} returned at most {most} top_logprobs per token of the "
                f"{self.top_logprobs} asked: set teacher.top_logprobs={most} (or raise the server's max_logprobs)"
            )
        why = lp.round_trip(entries, content, self._token_map())
        if why:
            return (
                f"teacher {self.name}'s tokenizer is not the student's ({why}): its logprobs cannot teach this "
                f"student; {fix}"
            )
        self._verified = True
        logging.info("teacher %s: logprobs round-trip through the student's tokenizer", self.name)
        return ""

    def _token_map(self) -> lp.TokenMap:
        if self._tokmap is None:
            self._tokmap = lp.TokenMap(self._tokenizer)
        return self._tokmap

    def _topk(self, request: Request, entries: list | None):
        if not (self.top_logprobs and entries and request.kind == "annotate"):
            return None
        return lp.to_student(entries, self._token_map(), self.top_logprobs)

    def _log(self, requests, responses, source, outcomes) -> None:
        reasons = collections.Counter(r for o in outcomes.values() for r in o.reasons)
        logging.info(
            "teacher %s: %d requests, %d cache hits, %d deduplicated, %d asked, %d retries, failed attempts %s, "
            "%d failed, %d skipped, %d tokens billed now",
            self.name,
            len(requests),
            source.count("cache"),
            source.count("dedup"),
            len(outcomes),
            sum(max(0, o.attempts - 1) for o in outcomes.values()),
            dict(sorted(reasons.items())),
            sum(r.status == "failed" for r in responses),
            sum(r.status == "skipped" for r in responses),
            sum(o.input_tokens + o.output_tokens for o in outcomes.values()),
        )

    def close(self) -> None:
        self._cache.close()

    def preflight(self) -> list[str]:
        """Checks key, URL and model before anything is bought (`GET /models`); the served model ids."""
        return self._endpoint.preflight()

    # ---------------------------------------------------------------------------------- one request

    def prompt(self, request: Request) -> str:
        return render_prompt(self._templates, request)

    def _content_key(self, request: Request, prompt: str) -> str:
        """What the model is asked; sampled answers (temperature > 0) stay one per request."""
        payload = ["v2", request.kind, self.model, prompt, self._endpoint.temperature, self.max_tokens]
        if self._endpoint.temperature > 0:
            payload.append(request.key)
        return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode()).hexdigest()

    def _legacy_key(self, request: Request, prompt: str) -> str:
        # The key caches were written under before content keys; still read so nothing is paid again.
        payload = [request.key, self.model, prompt, self._endpoint.temperature, self.max_tokens]
        return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode()).hexdigest()

    def _cached_response(self, request: Request, row: CachedAnswer) -> Response:
        response = Response(
            request.key,
            "ok",
            row.input,
            row.rationale,
            row.answer,
            row.tokens,
            cached=True,
            input_tokens=row.input_tokens,
            output_tokens=row.output_tokens,
            topk=self._topk(request, lp.loads(row.logprobs)),
        )
        return _with_list(response, parse_paraphrase_list(row.rationale)) if request.kind == "paraphrase" else response

    def _answer(self, request, prompt, key, budget, stop, exhausted) -> tuple[Response, Outcome]:
        """Asks for and parses one request's answer, caching it if usable; runs in a worker thread."""
        outcome = self._endpoint.ask(request, prompt, budget, stop, exhausted)
        usage = dict(input_tokens=outcome.input_tokens, output_tokens=outcome.output_tokens)
        tokens = outcome.input_tokens + outcome.output_tokens
        if outcome.skipped:
            return Response(request.key, "skipped", error=outcome.error, tokens=tokens, **usage), outcome
        if outcome.error:
            return Response(request.key, "failed", tokens=tokens, error=outcome.error, **usage), outcome
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
            return Response(request.key, "failed", tokens=tokens, error=str(e), **usage), outcome
        topk = self._topk(request, outcome.logprobs)
        response = Response(request.key, "ok", input_, rationale, answer, tokens, topk=topk, **usage)
        self._cache.put(
            key,
            CachedAnswer(
                input_,
                rationale,
                answer,
                tokens,
                outcome.input_tokens,
                outcome.output_tokens,
                lp.dumps(outcome.logprobs) if outcome.logprobs else "",
            ),
        )
        return (_with_list(response, parsed) if parsed else response), outcome


def from_config(config: ml_collections.ConfigDict, workdir: str, purpose: str = "distill") -> OpenAITeacher:
    """An OpenAITeacher from the `config.teacher` knobs; the key comes from the `api_key_env` variable."""
    cfg_teacher = config.teacher  # One endpoint annotates, synthesizes and paraphrases.
    same_named = ("temperature", "max_tokens", "concurrency", "timeout_s", "max_retries", "backoff_s", "api_key_env")
    same_named += ("annotate_prompt", "synthesize_prompt", "paraphrase_prompt")
    return OpenAITeacher(
        cfg_teacher.base_url,
        cfg_teacher.model,
        api_key_from_env(cfg_teacher.api_key_env, "teacher.kind=openai"),
        cache_path=cfg_teacher.cache_path or storage.join(workdir, "teacher_cache.sqlite"),
        **{name: cfg_teacher[name] for name in same_named},
        **_kd_settings(config, purpose),
    )


def _kd_settings(config: ml_collections.ConfigDict, purpose: str) -> dict:
    """top_logprobs and the student's tokenizer when BalDistill stages learn from this teacher's log-probs."""
    if purpose != "distill" or config.distill.loss != "kd" or config.distill.kd_teacher:
        return {}
    k = int(config.teacher.top_logprobs)
    if k < 1:
        raise TeacherConfigError(
            f"teacher.top_logprobs={k}: distill.loss=kd with teacher.kind=openai needs 1..{lp.SERVER_CAP} "
            "(more only where the server's max_logprobs allows), or set distill.kd_teacher"
        )
    from distill_jax.data.tokenizers import load_tokenizer

    return {"top_logprobs": k, "tokenizer": load_tokenizer(config.tokenizer.kind, config.tokenizer.path)}


def _usage_of(row: CachedAnswer) -> Usage:
    return Usage(row.input_tokens, row.output_tokens)


def _with_list(response: Response, parsed: ParsedList) -> Response:
    dropped = tuple((d.text, d.reason) for d in parsed.dropped)
    return dataclasses.replace(response, paraphrases=parsed.items, dropped=dropped)
