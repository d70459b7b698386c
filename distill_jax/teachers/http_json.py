"""One JSON POST to an OpenAI-compatible endpoint, with its failure classified for the caller's retry loop.

Shared by the chat-completions teacher and the moderation client so both treat the same replies
the same way: 408/429/5xx, timeouts, connection errors and bodies that are not a JSON object may
succeed on another attempt (`Retryable`, carrying a `Retry-After` when the server sent one); other
4xx will not (`Rejected`), and 401/403/404 mean a wrong key, model or URL (`FATAL_STATUSES`).
The API key is sent in the Authorization header and redacted from every message.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import random
import time
import urllib.error
import urllib.request

# Longest computed backoff; a server's Retry-After is honoured even when longer.
MAX_BACKOFF_S = 60.0
# These mean the key, model or URL is wrong, so every request would fail the same way.
FATAL_STATUSES = (401, 403, 404)


class Retryable(Exception):
    """An attempt failed in a way another attempt may not (rate limit, server error, bad body)."""

    def __init__(self, reason: str, retry_after: float | None = None, tokens: int = 0):
        super().__init__(reason)
        self.retry_after = retry_after
        self.tokens = tokens


class Rejected(Exception):
    """The server refused the request; asking again would get the same answer."""

    def __init__(self, reason: str, status: int):
        super().__init__(reason)
        self.status = status


def post_json(url: str, payload: dict, api_key: str, timeout_s: float) -> dict:
    """One HTTP attempt: the decoded JSON object the server replied with, or Retryable / Rejected."""
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as reply:
            raw = reply.read()
    except urllib.error.HTTPError as e:
        message = redact(_error_message(e), api_key)
        if e.code in (408, 429) or e.code >= 500:
            raise Retryable(f"HTTP {e.code}: {message}", retry_after(e.headers.get("Retry-After"))) from None
        raise Rejected(f"HTTP {e.code}: {message}", e.code) from None
    except (http.client.HTTPException, OSError) as e:
        # URLError (refused, DNS, connect timeout), read timeouts, resets, truncated bodies.
        raise Retryable(redact(f"{type(e).__name__}: {e}", api_key)) from None
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise Retryable(f"response body is not JSON: {redact(snippet(raw), api_key)}") from None
    if not isinstance(body, dict):
        raise Retryable(f"response body is not a JSON object: {redact(snippet(raw), api_key)}")
    return body


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
