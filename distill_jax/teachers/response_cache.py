"""Usable teacher answers by request content, in one SQLite file (WAL, a commit per write: survives kill -9).

On object storage (a gs:// or s3:// path) SQLite still needs a local file: the cache is a local
working copy of the object (storage.LocalMirror), checkpointed and uploaded whole at most every
SYNC_SECONDS after a write and at close, so a kill loses at most that window's answers (they are
bought again, not wrongly reused). One writer per cache object: two hosts syncing the same one would
overwrite each other's answers (the trainer's teacher calls run on one process).

The key is a hash of what the model is asked (model, prompt, sampling settings), so identical
requests share one answer across runs. Rows written before content keys (keyed by request key +
prompt) are still found through `legacy_key`. The billed usage is kept with each answer: a cache
hit is charged at what the answer originally cost, never paid again.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from typing import NamedTuple

from distill_jax import storage

SYNC_SECONDS = 60.0


class CachedAnswer(NamedTuple):
    input: str
    rationale: str
    answer: str
    tokens: int
    input_tokens: int
    output_tokens: int
    logprobs: str = ""  # teachers.logprobs.dumps of the reply's per-token log-probs, when they were asked for


class ResponseCache:
    def __init__(self, path: str):
        self._mirror = storage.LocalMirror(path, "response_cache")
        self._synced_at = time.monotonic()
        os.makedirs(os.path.dirname(self._mirror.local), exist_ok=True)
        # Worker threads write through this one connection, serialised by the lock.
        self._db = sqlite3.connect(self._mirror.local, timeout=30.0, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS responses "
                "(key TEXT PRIMARY KEY, input TEXT, rationale TEXT, answer TEXT, tokens INTEGER)"
            )
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(responses)")}
            for column in ("input_tokens", "output_tokens"):
                if column not in columns:  # A cache from before usage was split: old rows read as output.
                    self._db.execute(f"ALTER TABLE responses ADD COLUMN {column} INTEGER")
            if "logprobs" not in columns:  # A cache from before KD logprobs: its rows have none.
                self._db.execute("ALTER TABLE responses ADD COLUMN logprobs TEXT")

    def get(self, *keys: str) -> CachedAnswer | None:
        """The answer under the first of `keys` that has one."""
        with self._lock:
            for key in keys:
                row = self._db.execute(
                    "SELECT input, rationale, answer, tokens, input_tokens, output_tokens, logprobs FROM responses "
                    "WHERE key = ?",
                    (key,),
                ).fetchone()
                if row is not None:
                    input_, rationale, answer, tokens, tin, tout, logprobs = row
                    if tin is None or tout is None:
                        tin, tout = 0, int(tokens or 0)
                    return CachedAnswer(
                        input_, rationale, answer, int(tokens or 0), int(tin), int(tout), logprobs or ""
                    )
        return None

    def put(self, key: str, answer: CachedAnswer) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO responses "
                "(key, input, rationale, answer, tokens, input_tokens, output_tokens, logprobs) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (key, *answer),
            )
            if self._mirror.remote and time.monotonic() - self._synced_at > SYNC_SECONDS:
                self._sync()

    def _sync(self) -> None:
        """Uploads the database (WAL folded in first, so the one file is the whole cache). Under the lock."""
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._mirror.sync()
        self._synced_at = time.monotonic()

    def close(self) -> None:
        with self._lock:
            if self._mirror.remote:
                self._sync()
            self._db.close()
        self._mirror.discard()
