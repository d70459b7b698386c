"""One JSON request to an OpenAI-compatible endpoint, with its failure classified for billing and retry.

Shared by the chat-completions teacher and the moderation client, so both treat the same replies
the same way. Every failure says whether another attempt may succeed and whether this one may
have been billed:

- `Rejected(config=True)`: a setting is wrong and every request would fail alike -- 401/403 (the
  key), 404 (URL or model), 422 (a parameter), and 400 whose message names an invalid model,
  parameter or key (LiteLLM answers "Invalid model name" and, for a bad key without a database,
  "No connected db." with 400). The caller stops before its next request. Never billed.
- `Rejected(config=False)`: this request is refused (another 4xx, e.g. a prompt over the context
  length). Not retried, never billed.
- `Retryable(billing="free")`: nothing reached a model -- connection refused or reset before the
  request was sent, 409, 429, 500, 503. Retried with backoff (a `Retry-After` wins).
- `Retryable(billing="unread")`: the request was sent and a reply may have been billed but could not
  be read -- read timeouts, resets after sending, truncated/malformed/empty bodies, 408 and the
  gateway errors 502/504 (the upstream may have finished). Retried; charged at the attempt's bound.

The API key is sent in the Authorization header and redacted from every message.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import random
import re
import time
import urllib.error
import urllib.request
from typing import Literal

# Longest computed backoff; a server's Retry-After is honoured even when longer.
MAX_BACKOFF_S = 60.0
FREE_RETRY_STATUSES = (409, 429, 500, 503)
UNREAD_RETRY_STATUSES = (408, 502, 504)
CONFIG_STATUSES = {401: "key", 403: "key", 404: "url_or_model", 422: "parameter"}
# 400 bodies that mean a setting is wrong, not this request (OpenAI, LiteLLM, vLLM wordings).
_CONFIG_400 = [
    (
        "model",
        re.compile(r"invalid model|model .*(not found|does not exist|not supported)|unknown model|no such model", re.I),
    ),
    ("key", re.compile(r"no connected db|api[ _-]?key|unauthori[sz]ed|authentication|invalid.*token", re.I)),
    (
        "parameter",
        re.compile(r"invalid.*param|unrecognized request argument|unsupported (parameter|value)|extra inputs", re.I),
    ),
]
# Statuses as the retry/billing logic names them: what the ledger's `reason` field says.
Billing = Literal["free", "unread"]


class Retryable(Exception):
    """An attempt failed in a way another attempt may not (rate limit, server error, bad body)."""

    def __init__(self, reason: str, detail: str, *, billing: Billing, retry_after: float | None = None):
        super().__init__(detail or reason)
        self.reason = reason  # Short class for counting: http_429, timeout, reset, malformed, ...
        self.billing = billing
        self.retry_after = retry_after


class Rejected(Exception):
    """The server refused the request; asking again would get the same answer."""

    def __init__(self, message: str, status: int, setting: str = ""):
        super().__init__(message)
        self.status = status
        self.setting = setting  # "" = this request only; key | model | url_or_model | parameter = a setting.

    @property
    def config(self) -> bool:
        return bool(self.setting)


def request_json(url: str, payload: dict | None, api_key: str, timeout_s: float) -> dict:
    """One HTTP attempt (POST with `payload`, GET without): the JSON object replied, or Retryable / Rejected."""
    data = None if payload is None else json.dumps(payload).encode()
    headers = {"Authorization": f"Bearer {api_key}"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, headers=headers, method="GET" if data is None else "POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as reply:
            raw = reply.read()
    except urllib.error.HTTPError as e:
        message = f"HTTP {e.code}: {redact(_error_message(e), api_key)}"
        retry = retry_after(e.headers.get("Retry-After"))
        if e.code in UNREAD_RETRY_STATUSES:
            raise Retryable(f"http_{e.code}", message, billing="unread", retry_after=retry) from None
        if e.code in FREE_RETRY_STATUSES or e.code >= 500:
            raise Retryable(f"http_{e.code}", message, billing="free", retry_after=retry) from None
        setting = CONFIG_STATUSES.get(e.code, "")
        if e.code == 400:
            setting = next((name for name, pattern in _CONFIG_400 if pattern.search(message)), "")
        raise Rejected(message, e.code, setting) from None
    except urllib.error.URLError as e:
        # urllib wraps only errors of connecting and sending: the request never reached a model.
        raise Retryable("connect", redact(f"{type(e.reason).__name__}: {e.reason}", api_key), billing="free") from None
    except (TimeoutError, ConnectionResetError, http.client.RemoteDisconnected) as e:
        raise Retryable(_read_reason(e), redact(f"{type(e).__name__}: {e}", api_key), billing="unread") from None
    except (http.client.HTTPException, OSError) as e:
        # Sent, then the reply broke off (IncompleteRead: a truncated body) or failed to read.
        reason = "truncated" if isinstance(e, http.client.IncompleteRead) else "read_error"
        raise Retryable(reason, redact(f"{type(e).__name__}: {e}", api_key), billing="unread") from None
    if not raw.strip():
        raise Retryable("empty_body", "the response body is empty", billing="unread")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise Retryable(
            "malformed", f"response body is not JSON: {redact(snippet(raw), api_key)}", billing="unread"
        ) from None
    if not isinstance(body, dict):
        raise Retryable(
            "malformed", f"response body is not a JSON object: {redact(snippet(raw), api_key)}", billing="unread"
        )
    return body


def post_json(url: str, payload: dict, api_key: str, timeout_s: float) -> dict:
    return request_json(url, payload, api_key, timeout_s)


def _read_reason(error: Exception) -> str:
    if isinstance(error, TimeoutError):
        return "timeout"
    return "reset"


def backoff(base_s: float, attempt: int, rng: random.Random) -> float:
    """Exponential backoff for retry `attempt` (0-based), capped, with jitter.

    Jitter keeps concurrent workers that failed together from retrying together.
    """
    return min(MAX_BACKOFF_S, base_s * 2**attempt) * rng.uniform(0.5, 1.0)


def redact(text: str, api_key: str) -> str:
    # Some servers echo the key they rejected; it must not reach logs or responses.
    return text.replace(api_key, "[redacted]") if api_key else text


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def snippet(raw: bytes | str, limit: int = 200) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def _error_message(error: urllib.error.HTTPError) -> str:
    """The server's `error.message` (OpenAI's error shape), else the start of its body."""
    try:
        raw = error.read()
    except (OSError, http.client.HTTPException):
        return error.reason or ""
    try:
        message = json.loads(raw)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return snippet(raw) or str(error.reason or "")
    return str(message)
