"""OpenAITeacher against a real HTTP server on 127.0.0.1 that plays a scriptable chat-completions endpoint."""

import dataclasses
import json
import logging
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from distill_jax.config import default_config
from distill_jax.teachers.base import Example, Request, TeacherConfigError
from distill_jax.teachers.openai import OpenAITeacher, from_config, parse_synthesis

KEY = "sk-test-SECRET-0123456789abcdef"
ANNOTATE = "[{domain}] Gold: {answer}. Question: {input}"
SYNTHESIZE = "Write a {domain} problem like these:\n\n{examples}"
PARAPHRASE = "Give {k} paraphrases ({domain}) of: {input}"
TOKENS = 42


def _default_reply(prompt: str) -> str:
    if prompt.startswith("Give"):
        sentence = prompt.rsplit("of: ", 1)[1]
        return (
            f'Sure! Here are the paraphrases:\n\n1. {sentence} again.\n2) "Once more, {sentence}"\n\nHope this helps!'
        )
    if prompt.startswith("["):
        question = prompt.rsplit("Question: ", 1)[1]
        return f"Working on {question}. So the answer is {question.upper()}."
    return json.dumps({"question": "New?", "rationale": "Because.", "answer": "7"})


def _send(handler, code, data: bytes, headers=()):
    handler.send_response(code)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    for name, value in headers:
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(data)


# Behaviours: what the server does with one call, given its handler and the prompt it received.
def reply(content=None, *, tokens=TOKENS, finish_reason="stop", delay=0.0):
    def act(handler, prompt):
        time.sleep(delay)
        message = {"role": "assistant", "content": _default_reply(prompt) if content is None else content}
        body = {"choices": [{"index": 0, "message": message, "finish_reason": finish_reason}]}
        if tokens is not None:
            body["usage"] = {"prompt_tokens": 1, "completion_tokens": tokens - 1, "total_tokens": tokens}
        _send(handler, 200, json.dumps(body).encode())

    return act


def status(code, message="boom", headers=()):
    return lambda handler, prompt: _send(
        handler, code, json.dumps({"error": {"message": message, "type": "test"}}).encode(), headers
    )


def raw(data: bytes):
    return lambda handler, prompt: _send(handler, 200, data)


def truncated(handler, prompt):
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", "1000")
    handler.end_headers()
    handler.wfile.write(b'{"choices": [{"message": ')
    handler.close_connection = True


class Endpoint:
    """Runs `script` behaviours for the next calls in order, then `default`; records every call."""

    def __init__(self):
        self.script = []
        self.default = reply()
        self.calls = []  # (headers, payload)
        self.lock = threading.Lock()
        self.base_url = ""


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        endpoint = self.server.endpoint
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with endpoint.lock:
            endpoint.calls.append((dict(self.headers), payload))
            behaviour = endpoint.script.pop(0) if endpoint.script else endpoint.default
        if self.path != "/v1/chat/completions":
            status(404, f"no route {self.path}")(self, "")
        else:
            behaviour(self, payload["messages"][0]["content"])

    def log_message(self, *args):
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # A client that timed out leaves a slow handler writing to a closed socket.


@pytest.fixture
def endpoint(monkeypatch):
    # A proxy from the environment must not intercept calls to the local server.
    monkeypatch.setenv("no_proxy", "*")
    server = _Server(("127.0.0.1", 0), _Handler)
    server.endpoint = Endpoint()
    server.endpoint.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield server.endpoint
    server.shutdown()
    server.server_close()


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def make_teacher(endpoint, tmp_path, sleeps):
    teachers = []

    def make(**overrides):
        kwargs = dict(
            temperature=0.0,
            max_tokens=64,
            concurrency=4,
            timeout_s=5.0,
            max_retries=2,
            backoff_s=1.0,
            cache_path=tmp_path / "cache.sqlite",
            annotate_prompt=ANNOTATE,
            synthesize_prompt=SYNTHESIZE,
            paraphrase_prompt=PARAPHRASE,
            sleep=sleeps.append,
        )
        kwargs.update(overrides)
        teachers.append(OpenAITeacher(endpoint.base_url, "tiny-model", KEY, **kwargs))
        return teachers[-1]

    yield make
    for teacher in teachers:
        teacher.close()


def annotate(i, answer="4", domain="math"):
    return Request("annotate", domain, Example(f"id{i}", domain, f"q{i}", answer))


def synthesize(index=0):
    seeds = (Example("s1", "geo", "a", "1"), Example("s2", "geo", "b", "2"))
    return Request("synthesize", "geo", seeds=seeds, index=index)


def test_annotate_sends_the_prompt_and_parses_the_rationale(endpoint, make_teacher):
    known, unknown = make_teacher().complete([annotate(1), annotate(2, answer=None)])
    assert (known.status, known.input, known.answer, known.tokens, known.cached) == ("ok", "q1", "Q1", TOKENS, False)
    assert known.rationale == "Working on q1. So the answer is Q1."
    assert known.request_key == annotate(1).key
    assert unknown.status == "ok"
    assert all(headers["Authorization"] == f"Bearer {KEY}" for headers, _ in endpoint.calls)
    payloads = sorted((payload for _, payload in endpoint.calls), key=lambda p: p["messages"][0]["content"])
    assert payloads[0] == {
        "model": "tiny-model",
        "messages": [{"role": "user", "content": "[math] Gold: 4. Question: q1"}],
        "temperature": 0.0,
        "max_tokens": 64,
    }
    assert payloads[1]["messages"][0]["content"] == "[math] Gold: unknown. Question: q2"


def test_synthesize_renders_seeds_and_parses_fenced_json(endpoint, make_teacher):
    fields = {"question": "What is 3+4?", "rationale": "Add them.", "answer": 7}
    endpoint.script = [reply(f"Sure! Here it is:\n```json\n{json.dumps(fields)}\n```\nHope it helps.")]
    (response,) = make_teacher().complete([synthesize()])
    assert (response.status, response.input, response.rationale, response.answer) == (
        "ok",
        "What is 3+4?",
        "Add them.",
        "7",
    )
    prompt = endpoint.calls[0][1]["messages"][0]["content"]
    assert prompt == "Write a geo problem like these:\n\nQuestion: a\nAnswer: 1\n\nQuestion: b\nAnswer: 2"


@pytest.mark.parametrize(
    "content",
    [
        '{"question": "Q?", "rationale": "R.", "answer": "A"}',
        'Here you go: {"question": "Q?", "rationale": "R.", "answer": "A"} -- enjoy',
        '```\n{"question": "Q?", "rationale": "R.", "answer": "A"}\n```',
        "Question: Q?\nRationale: R.\nAnswer: A",
        "**Question:** Q?\n\n**Rationale:** R.\n\n**Answer:** A\n",
    ],
)
def test_parse_synthesis_accepts_json_and_labelled_text(content):
    assert parse_synthesis(content) == ("Q?", "R.", "A")


@pytest.mark.parametrize(
    "content, reason",
    [
        ("I'd rather not.", "neither a JSON object"),
        ('{"question": "Q?", "answer": "A"}', "'rationale'"),
        ('{"question": "Q?", "rationale": " ", "answer": "A"}', "'rationale'"),
        ('{"question": ["Q?"], "rationale": "R.", "answer": "A"}', "'question'"),
        ("Question: Q?\nRationale: R.", "'answer'"),
    ],
)
def test_parse_synthesis_says_what_is_wrong(content, reason):
    with pytest.raises(ValueError, match=reason):
        parse_synthesis(content)


def test_malformed_synthesis_fails_without_retry_and_is_not_cached(endpoint, make_teacher, sleeps):
    endpoint.script = [reply("Here is a problem: what is 2+2? The answer is 4.")]
    teacher = make_teacher()
    (response,) = teacher.complete([synthesize()])
    assert response.status == "failed" and "neither a JSON object" in response.error
    assert response.tokens == TOKENS  # Billed all the same.
    assert len(endpoint.calls) == 1 and sleeps == []
    (again,) = teacher.complete([synthesize()])
    assert again.status == "ok" and not again.cached and len(endpoint.calls) == 2


def test_tokens_are_bounded_when_usage_is_absent(endpoint, make_teacher):
    # No `usage`: what was billed is unknown, so count an upper bound (a token is at least one byte).
    endpoint.default = reply("So the answer is 4.", tokens=None)
    (response,) = make_teacher().complete([annotate(1)])
    prompt = "[math] Gold: 4. Question: q1"
    assert (response.input_tokens, response.output_tokens) == (len(prompt), len("So the answer is 4."))


def test_cut_off_completion_fails(endpoint, make_teacher):
    endpoint.script = [reply("Let me think about this very long", finish_reason="length")]
    (response,) = make_teacher().complete([annotate(1)])
    assert response.status == "failed" and "cut off at 64 tokens" in response.error
    assert response.tokens == TOKENS


def test_order_is_kept_and_concurrency_bounded(endpoint, make_teacher, monkeypatch):
    n = 12
    # Counted where the bound is kept, in the client: the server's own count lags (its handler thread
    # is still finishing when the client already has the reply and sends the next request).
    from distill_jax.teachers import openai_endpoint as openai_module

    sent, lock, send = {"now": 0, "max": 0}, threading.Lock(), openai_module.request_json

    def counted(*args, **kwargs):
        with lock:
            sent["now"] += 1
            sent["max"] = max(sent["max"], sent["now"])
        try:
            return send(*args, **kwargs)
        finally:
            with lock:
                sent["now"] -= 1

    monkeypatch.setattr(openai_module, "request_json", counted)

    def later_first(handler, prompt):
        # Earlier requests answer later, so completion order differs from request order.
        i = int(prompt.rsplit("q", 1)[1])
        reply(delay=0.02 + 0.01 * (n - i))(handler, prompt)

    endpoint.default = later_first
    responses = make_teacher(concurrency=3).complete([annotate(i) for i in range(n)])
    assert [r.answer for r in responses] == [f"Q{i}" for i in range(n)]
    assert [r.request_key for r in responses] == [annotate(i).key for i in range(n)]
    assert len(endpoint.calls) == n
    assert sent["max"] == 3


def test_429_honours_retry_after(endpoint, make_teacher, sleeps):
    endpoint.script = [status(429, "slow down", headers=[("Retry-After", "7")])]
    (response,) = make_teacher().complete([annotate(1)])
    assert response.status == "ok" and response.answer == "Q1"
    assert sleeps == [7.0] and len(endpoint.calls) == 2


@pytest.mark.parametrize(
    "behaviour",
    [
        status(500),
        status(503),
        status(408),
        raw(b"<html>Bad gateway</html>"),
        raw(b'{"choices": []}'),
        reply("   "),
        truncated,
    ],
    ids=["500", "503", "408", "not-json", "no-choices", "empty-content", "truncated"],
)
def test_transient_failures_are_retried_with_backoff(endpoint, make_teacher, sleeps, behaviour):
    endpoint.script = [behaviour]
    (response,) = make_teacher(backoff_s=2.0).complete([annotate(1)])
    assert response.status == "ok" and response.answer == "Q1"
    assert len(endpoint.calls) == 2
    assert len(sleeps) == 1 and 1.0 <= sleeps[0] <= 2.0  # The first backoff, with jitter.


def test_slow_response_times_out_and_is_retried(endpoint, make_teacher, sleeps):
    endpoint.script = [reply(delay=2.0)]
    start = time.monotonic()
    (response,) = make_teacher(timeout_s=0.2).complete([annotate(1)])
    assert response.status == "ok" and len(endpoint.calls) == 2 and len(sleeps) == 1
    assert time.monotonic() - start < 1.5  # Did not wait for the slow reply.


def test_retries_exhausted_fail_with_the_reason(endpoint, make_teacher, sleeps):
    endpoint.default = status(500, "overloaded")
    bad, worse = make_teacher(max_retries=3).complete([annotate(1), annotate(2)])
    for response in (bad, worse):
        assert response.status == "failed"
        assert response.error == "gave up after 4 attempts: HTTP 500: overloaded"
    assert len(endpoint.calls) == 8
    # Exponential backoff with jitter in [0.5, 1] of 1, 2, 4 s, for each request.
    for attempt, expected in enumerate([1.0, 2.0, 4.0]):
        delays = sorted(sleeps)[2 * attempt : 2 * attempt + 2]
        assert all(expected / 2 <= d <= expected for d in delays)


def test_malformed_bodies_exhausted_fail_with_the_reason(endpoint, make_teacher):
    endpoint.default = raw(b"not json at all")
    (response,) = make_teacher().complete([annotate(1)])
    assert response.status == "failed" and "not JSON: not json at all" in response.error


def test_client_error_fails_at_once(endpoint, make_teacher, sleeps):
    endpoint.script = [status(400, "This model's maximum context length is 8 tokens")]
    teacher = make_teacher(concurrency=1)  # So the scripted 400 goes to the first request.
    failed, fine = teacher.complete([annotate(1), annotate(2)])
    assert failed.status == "failed" and failed.error == "HTTP 400: This model's maximum context length is 8 tokens"
    assert fine.status == "ok"
    assert len(endpoint.calls) == 2 and sleeps == []
    # Failures are not cached: asking again calls the server again.
    again, cached = teacher.complete([annotate(1), annotate(2)])
    assert again.status == "ok" and not again.cached and cached.cached and len(endpoint.calls) == 3


def test_cache_answers_without_http_across_restarts(endpoint, make_teacher, tmp_path):
    requests = [annotate(1), annotate(2, answer=None), synthesize()]
    teacher = make_teacher()
    first = teacher.complete(requests)
    assert all(r.status == "ok" and not r.cached for r in first)
    assert len(endpoint.calls) == 3

    again = teacher.complete(requests)
    teacher.close()
    after_restart = make_teacher().complete(requests)
    assert len(endpoint.calls) == 3
    for responses in (again, after_restart):
        assert all(r.cached for r in responses)
        assert [dataclasses.replace(r, cached=False) for r in responses] == first

    # Anything that changes what the model is asked misses the cache.
    make_teacher(temperature=0.7).complete(requests[:1])
    make_teacher(annotate_prompt="Q: {input}").complete(requests[:1])
    assert len(endpoint.calls) == 5


def test_cache_survives_kill_9(endpoint, make_teacher, tmp_path):
    child = f"""
import os, signal
from distill_jax.teachers.base import Example, Request
from distill_jax.teachers.openai import OpenAITeacher
teacher = OpenAITeacher({endpoint.base_url!r}, "tiny-model", "k", temperature=0.0, max_tokens=64, concurrency=1,
    timeout_s=5.0, max_retries=0, backoff_s=0.0, cache_path={str(tmp_path / "cache.sqlite")!r},
    annotate_prompt={ANNOTATE!r}, synthesize_prompt={SYNTHESIZE!r}, paraphrase_prompt={PARAPHRASE!r})
teacher.complete([Request("annotate", "math", Example("id1", "math", "q1", "4"))])
os.kill(os.getpid(), signal.SIGKILL)
"""
    assert subprocess.run([sys.executable, "-c", child]).returncode == -signal.SIGKILL
    (response,) = make_teacher().complete([annotate(1)])
    assert response.cached and response.answer == "Q1" and len(endpoint.calls) == 1


def test_api_key_never_leaks(endpoint, make_teacher, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    echo = lambda handler, prompt: _send(  # noqa: E731
        handler,
        400,
        json.dumps({"error": {"message": f"bad request from {handler.headers['Authorization']}"}}).encode(),
    )
    endpoint.script = [echo, status(500, f"server saw {KEY}"), raw(f"garbage {KEY}".encode())]
    teacher = make_teacher(max_retries=1, concurrency=1)
    responses = teacher.complete([annotate(1), annotate(2), annotate(3)])
    assert [r.status for r in responses] == ["failed", "failed", "ok"]
    assert "[redacted]" in responses[0].error and "[redacted]" in responses[1].error
    assert "teacher openai:tiny-model: 3 requests, 0 cache hits, 0 deduplicated, 3 asked, 1 retries" in caplog.text
    assert "failed attempts {'http_400': 1, 'http_500': 1, 'malformed': 1}, 2 failed" in caplog.text

    endpoint.default = lambda handler, prompt: status(401, f"Incorrect API key {handler.headers['Authorization']}")(
        handler, prompt
    )
    with pytest.raises(
        TeacherConfigError,
        match="refused the request: HTTP 401: Incorrect API key Bearer \\[redacted\\]. Fix the API key",
    ) as e:
        teacher.complete([annotate(4)])
    teacher.close()

    assert KEY not in repr(teacher) and KEY not in str(e.value)
    assert not any(KEY in r.error for r in responses)
    assert KEY not in caplog.text
    cache_files = list(tmp_path.glob("cache.sqlite*"))
    assert cache_files and not any(KEY.encode() in path.read_bytes() for path in cache_files)


def test_from_config_reads_the_key_from_the_environment(endpoint, tmp_path, monkeypatch):
    cfg = default_config()
    cfg.teacher.base_url = endpoint.base_url
    cfg.teacher.api_key_env = "DISTILL_TEST_TEACHER_KEY"
    monkeypatch.delenv("DISTILL_TEST_TEACHER_KEY", raising=False)
    with pytest.raises(ValueError, match="DISTILL_TEST_TEACHER_KEY"):
        from_config(cfg, str(tmp_path))

    monkeypatch.setenv("DISTILL_TEST_TEACHER_KEY", KEY)
    teacher = from_config(cfg, str(tmp_path / "work"))
    try:
        (response,) = teacher.complete([annotate(1)])
    finally:
        teacher.close()
    assert response.status == "ok" and endpoint.calls[0][0]["Authorization"] == f"Bearer {KEY}"
    assert (tmp_path / "work" / "teacher_cache.sqlite").exists()


def test_bad_template_is_rejected_before_any_call(endpoint, make_teacher):
    with pytest.raises(ValueError, match="annotate_prompt"):
        make_teacher(annotate_prompt="Solve {question}")
    with pytest.raises(ValueError, match="synthesize_prompt"):
        make_teacher(synthesize_prompt='Reply as {"question": ...}')
    with pytest.raises(ValueError, match="paraphrase_prompt"):
        make_teacher(paraphrase_prompt="Paraphrase {sentence}")
    assert endpoint.calls == []


def paraphrase(text="The cat sat on the mat", k=2):
    return Request("paraphrase", "para", Example("s1", "para", text), k=k)


def test_paraphrase_request_renders_k_and_parses_the_list(endpoint, make_teacher):
    (response,) = make_teacher().complete([paraphrase()])
    assert endpoint.calls[0][1]["messages"][0]["content"] == "Give 2 paraphrases (para) of: The cat sat on the mat"
    assert endpoint.calls[0][1]["temperature"] == 0.0
    assert response.status == "ok" and response.input == "The cat sat on the mat" and response.tokens == TOKENS
    assert response.paraphrases == ("The cat sat on the mat again.", "Once more, The cat sat on the mat")
    assert response.dropped == (("Sure! Here are the paraphrases:", "preamble"), ("Hope this helps!", "epilogue"))
    assert response.rationale.startswith("Sure!")  # The raw reply, as cached.


def test_paraphrase_key_depends_on_k_and_other_keys_are_unchanged():
    assert paraphrase(k=2).key != paraphrase(k=3).key
    # A pinned annotate key: adding the paraphrase kind must not re-key existing ledgers and caches.
    assert annotate(1).key == "d195f90f2b32523948d7fedb7b9a93670b1d0537342fad6a2e07c34446d2f325"
    with pytest.raises(ValueError, match="k >= 1"):
        paraphrase(k=0)


def test_paraphrase_429_then_success_and_malformed_json_are_retried(endpoint, make_teacher, sleeps):
    endpoint.script = [status(429, "slow down", headers=[("Retry-After", "3")]), raw(b'{"choices": [{"mess')]
    (response,) = make_teacher(backoff_s=2.0).complete([paraphrase()])
    assert response.status == "ok" and len(response.paraphrases) == 2
    assert len(endpoint.calls) == 3 and sleeps[0] == 3.0 and 2.0 <= sleeps[1] <= 4.0  # 2nd backoff


def test_paraphrase_reply_without_a_list_fails_and_is_asked_again(endpoint, make_teacher):
    endpoint.script = [reply("Sure! Here are the paraphrases:\n\n---")]
    teacher = make_teacher()
    (failed,) = teacher.complete([paraphrase()])
    assert failed.status == "failed" and "holds no paraphrase" in failed.error and failed.tokens == TOKENS
    (again,) = teacher.complete([paraphrase()])
    assert again.status == "ok" and not again.cached and len(endpoint.calls) == 2


def test_paraphrase_cache_keeps_the_raw_reply_and_parses_it_again(endpoint, make_teacher):
    endpoint.script = [reply('```json\n["First version.", "Second version."]\n```')]
    first = make_teacher().complete([paraphrase()])
    again = make_teacher().complete([paraphrase()])
    assert len(endpoint.calls) == 1 and again[0].cached
    assert again[0].paraphrases == first[0].paraphrases == ("First version.", "Second version.")
    assert again[0].dropped == first[0].dropped
