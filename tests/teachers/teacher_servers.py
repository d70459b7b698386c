"""Real OpenAI-compatible servers for the spend tests, all on 127.0.0.1, each stopped by its own PID/handle.

- `MockOpenAI`: a small in-process chat-completions + /v1/models server with `usage` (fast tests).
- `FaultProxy`: forwards to an upstream (MockOpenAI or the LiteLLM proxy) and injects what LiteLLM
  cannot: truncated, malformed, empty and choice-less bodies, resets after the upstream served the
  request, 429 with Retry-After, 502, slow replies. It counts what the upstream saw (`forwarded`).
- `litellm_binary()` / `LiteLLM`: the LiteLLM proxy (pinned in .ci/run) with mock_response models,
  found through $DISTILL_LITELLM or ../litellm_venv/bin/litellm; tests skip with the reason when absent.
"""

from __future__ import annotations

import json
import os
import random
import socket
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LITELLM_CANDIDATES = [os.environ.get("DISTILL_LITELLM", ""), str(REPO.parent / "litellm_venv" / "bin" / "litellm")]
FAULTS = ("truncated", "malformed", "empty", "no_choices", "reset", "retry_after", "http_502", "slow")
# Faults answered after the upstream served (and would have billed) the request.
SERVED_FAULTS = ("truncated", "malformed", "empty", "no_choices", "reset", "http_502", "slow")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # A client that timed out or was killed leaves a handler writing to a closed socket.


def _send(handler, code: int, data: bytes, headers=()) -> None:
    handler.send_response(code)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    for name, value in headers:
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(data)


def _start(handler_cls, **attrs) -> _Server:
    server = _Server(("127.0.0.1", 0), handler_cls)
    for k, v in attrs.items():
        setattr(server, k, v)
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    return server


class _MockHandler(BaseHTTPRequestHandler):
    def do_GET(self):
        s = self.server
        if self.headers.get("Authorization") != f"Bearer {s.key}":
            return _send(self, 401, b'{"error": {"message": "Incorrect API key"}}')
        _send(self, 200, json.dumps({"data": [{"id": m} for m in s.models]}).encode())

    def do_POST(self):
        s = self.server
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with s.lock:
            s.calls.append(payload)
        if self.headers.get("Authorization") != f"Bearer {s.key}":
            return _send(self, 401, b'{"error": {"message": "Incorrect API key"}}')
        if payload.get("model") not in s.models:
            message = f"Invalid model name passed in model={payload.get('model')}"
            return _send(self, 400, json.dumps({"error": {"message": message}}).encode())
        prompt = payload["messages"][0]["content"]
        content = s.reply(prompt)
        out = min(payload.get("max_tokens") or 10**6, max(1, len(content) // 4))
        body = {
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": len(prompt) // 4 + 7, "completion_tokens": out, "total_tokens": 0},
        }
        body["usage"]["total_tokens"] = body["usage"]["prompt_tokens"] + out
        if payload.get("logprobs") and s.logprobs is not None:  # OpenAI's format: choices[0].logprobs.content
            body["choices"][0]["logprobs"] = {"content": s.logprobs(content, int(payload.get("top_logprobs") or 0))}
        _send(self, 200, json.dumps(body).encode())

    def log_message(self, *args):
        pass


def default_reply(prompt: str) -> str:
    if prompt.startswith("Like these"):  # The tests' synthesize template.
        return json.dumps({"question": "What is 2+5?", "rationale": "Add.", "answer": "7"})
    if "paraphrase" in prompt.lower():
        sentence = prompt.rsplit(": ", 1)[-1]
        return f"1. {sentence} -- in other words.\n2. Put differently: {sentence}"
    if "Question:" in prompt:
        return "Add them up step by step. So the answer is 4."
    return json.dumps({"question": "What is 2+5?", "rationale": "Add.", "answer": "7"})


class MockOpenAI:
    def __init__(self, key: str, models=("mock-teacher",), reply=default_reply, logprobs=None):
        # logprobs(content, top_logprobs) -> the reply's choices[0].logprobs.content list, when asked for.
        self.server = _start(
            _MockHandler, key=key, models=list(models), reply=reply, logprobs=logprobs, calls=[], lock=threading.Lock()
        )
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    @property
    def calls(self) -> list:
        return self.server.calls

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _forward(self, data: bytes | None) -> tuple[int, bytes]:
        s = self.server
        request = urllib.request.Request(
            s.upstream + self.path,
            data=data,
            method=self.command,
            headers={k: v for k, v in self.headers.items() if k.lower() in ("authorization", "content-type")},
        )
        with s.lock:
            s.forwarded += self.command == "POST"
        try:
            with urllib.request.urlopen(request, timeout=60) as reply:
                return reply.status, reply.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def do_GET(self):
        code, body = self._forward(None)
        _send(self, code, body)

    def do_POST(self):
        s = self.server
        data = self.rfile.read(int(self.headers["Content-Length"]))
        with s.lock:
            s.received += 1
            fault = s.script.pop(0) if s.script else (s.rng.choice(FAULTS) if s.rng.random() < s.rate else "pass")
            s.faults[fault] = s.faults.get(fault, 0) + 1
        if fault == "retry_after":
            return _send(self, 429, b'{"error": {"message": "slow down"}}', [("Retry-After", "0.05")])
        code, body = self._forward(data)
        if fault == "pass" or code != 200:
            return _send(self, code, body)
        if fault == "truncated":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body) + 100))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
        elif fault == "malformed":
            _send(self, 200, b'{"choices": [{"message": ' + body[:10])
        elif fault == "empty":
            _send(self, 200, b"")
        elif fault == "no_choices":
            usage = json.loads(body).get("usage", {})
            _send(self, 200, json.dumps({"choices": [], "usage": usage}).encode())
        elif fault == "reset":
            # RST instead of FIN: the client sees a connection reset with the request already served.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
        elif fault == "http_502":
            _send(self, 502, b'{"error": {"message": "bad gateway"}}')
        elif fault == "slow":
            time.sleep(s.slow_s)
            _send(self, 200, body)

    def log_message(self, *args):
        pass


class FaultProxy:
    """`rate` of requests get a random fault (seeded); `script` (a list) overrides, in order."""

    def __init__(self, upstream: str, *, rate: float = 0.0, seed: int = 0, slow_s: float = 3.0):
        self.server = _start(
            _ProxyHandler,
            upstream=upstream.rstrip("/").removesuffix("/v1"),
            rate=rate,
            rng=random.Random(seed),
            script=[],
            faults={},
            forwarded=0,
            received=0,
            slow_s=slow_s,
            lock=threading.Lock(),
        )
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __getattr__(self, name):
        return getattr(self.server, name)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def litellm_binary() -> str | None:
    return next((p for p in LITELLM_CANDIDATES if p and os.access(p, os.X_OK)), None)


class LiteLLM:
    """The LiteLLM proxy on 127.0.0.1 with mock_response models; started and stopped by PID."""

    def __init__(self, binary: str, workdir: Path, key: str, models: dict[str, str], start_timeout_s: float = 180):
        lines = ["model_list:"]
        for name, response in models.items():
            lines += [
                f"  - model_name: {name}",
                f"    litellm_params: {{model: openai/{name}, api_key: anything, mock_response: {json.dumps(response)}}}",
            ]
        lines += [
            "litellm_settings: {num_retries: 0}",
            "router_settings: {num_retries: 0}",
            f"general_settings: {{master_key: {key}}}",
        ]
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "litellm.yaml"
        config.write_text("\n".join(lines) + "\n")
        self.port = free_port()
        self.log = open(workdir / "litellm.log", "wb")  # noqa: SIM115 -- closed in stop().
        env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", no_proxy="*")
        self.proc = subprocess.Popen(
            [binary, "--config", str(config), "--host", "127.0.0.1", "--port", str(self.port)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,
        )
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        deadline = time.time() + start_timeout_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"litellm exited with {self.proc.returncode}; see {workdir / 'litellm.log'}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health/liveliness", timeout=2).read()
                return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"litellm did not start within {start_timeout_s}s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self.log.close()
