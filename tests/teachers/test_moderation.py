"""ModerationClient, and the moderation filter, against a real HTTP server on 127.0.0.1 that plays /v1/moderations."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from distill_jax.config import default_config
from distill_jax.data.paraphrase_filters import FilterSettings, apply_filters
from distill_jax.data.paraphrase_sources import Candidate
from distill_jax.teachers import moderation
from distill_jax.teachers.base import TeacherConfigError
from distill_jax.teachers.moderation import ModerationClient

KEY = "sk-moderation-SECRET-42"
BAD_WORD = "grue"  # what this server flags


def verdicts(handler, payload):
    results = [
        {"flagged": BAD_WORD in text, "categories": {"violence": BAD_WORD in text, "hate": False}}
        for text in payload["input"]
    ]
    _send(handler, 200, json.dumps({"id": "modr-1", "model": payload["model"], "results": results}).encode())


def status(code, headers=()):
    return lambda handler, payload: _send(handler, code, b'{"error": {"message": "nope"}}', headers)


def raw(data: bytes):
    return lambda handler, payload: _send(handler, 200, data)


def _send(handler, code, data, headers=()):
    handler.send_response(code)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    for name, value in headers:
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(data)


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        server = self.server
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with server.lock:
            server.calls.append((self.path, dict(self.headers), payload))
            behaviour = server.script.pop(0) if server.script else verdicts
        if self.path != "/v1/moderations":
            status(404)(self, payload)
        else:
            behaviour(self, payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("no_proxy", "*")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.script, httpd.calls, httpd.lock = [], [], threading.Lock()
    httpd.base_url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def sleeps():
    return []


def client(server, sleeps, **overrides):
    kwargs = dict(batch_size=2, timeout_s=5.0, max_retries=2, backoff_s=1.0, sleep=sleeps.append)
    kwargs.update(overrides)
    return ModerationClient(server.base_url, "omni-test", KEY, **kwargs)


def test_flags_in_batches_with_categories(server, sleeps):
    texts = ["a calm sentence", "a grue attacks", "another calm one"]
    assert client(server, sleeps).flag(texts) == [None, ("violence",), None]
    assert [payload["input"] for _, _, payload in server.calls] == [texts[:2], texts[2:]]
    assert all(headers["Authorization"] == f"Bearer {KEY}" for _, headers, _ in server.calls)
    assert server.calls[0][2]["model"] == "omni-test" and sleeps == []


def test_429_then_success_and_malformed_replies_are_retried(server, sleeps):
    server.script = [
        status(429, headers=[("Retry-After", "4")]),
        raw(b"<html>oops"),
        raw(json.dumps({"results": [{"flagged": False}]}).encode()),  # one result for two texts
        raw(json.dumps({"results": [{"flagged": "yes"}, {"flagged": False}]}).encode()),
    ]
    flagged = client(server, sleeps, max_retries=4).flag(["x", "a grue"])
    assert flagged == [None, ("violence",)]
    assert len(server.calls) == 5 and sleeps[0] == 4.0 and len(sleeps) == 4


def test_gives_up_or_refuses_with_a_clear_error_and_never_leaks_the_key(server, sleeps):
    server.script = [status(500)] * 3
    with pytest.raises(RuntimeError, match="gave up after 3 attempts: HTTP 500: nope.*enabled=False"):
        client(server, sleeps).flag(["x"])
    server.script = [raw(f"not json {KEY}".encode())] * 3
    with pytest.raises(RuntimeError) as error:
        client(server, sleeps).flag(["x"])
    assert KEY not in str(error.value) and "[redacted]" in str(error.value)
    server.script = [status(401)]
    with pytest.raises(TeacherConfigError, match="refused the request: HTTP 401"):
        client(server, sleeps).flag(["x"])


def test_moderation_filter_rejects_flagged_sources_and_paraphrases(server, sleeps):
    candidates = [
        Candidate("The grue ate the lamp.", "The lamp was eaten by the grue.", "f:1"),
        Candidate("The dog ate the lamp.", "The lamp was eaten by a grue.", "f:2"),
        Candidate("The dog ate the lamp.", "A dog consumed the lamp.", "f:3"),
    ]
    result = apply_filters(
        candidates, FilterSettings.from_config(default_config().paraphrase), None, client(server, sleeps, batch_size=32)
    )
    assert [c.origin for c in result.kept] == ["f:3"]
    assert [(r.candidate.origin, r.filter) for r in result.rejected] == [("f:1", "moderation"), ("f:2", "moderation")]
    assert "the source is flagged (violence); the paraphrase is flagged (violence)" == result.rejected[0].detail
    # Each distinct text is sent once: 5 texts (the shared source once).
    assert len(server.calls[0][2]["input"]) == 5


def test_from_config_reads_the_key_from_the_environment(server, monkeypatch):
    cfg = default_config().paraphrase.moderation
    cfg.base_url, cfg.api_key_env = server.base_url, "DISTILL_TEST_MODERATION_KEY"
    monkeypatch.delenv("DISTILL_TEST_MODERATION_KEY", raising=False)
    with pytest.raises(ValueError, match="DISTILL_TEST_MODERATION_KEY"):
        moderation.from_config(cfg)
    monkeypatch.setenv("DISTILL_TEST_MODERATION_KEY", KEY)
    assert moderation.from_config(cfg).flag(["fine"]) == [None]
    assert KEY not in repr(moderation.from_config(cfg))
