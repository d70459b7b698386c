"""The SQLite teacher cache with an s3:// path (a real moto server): a local working copy, synced whole."""

import sqlite3

from distill_jax import storage
from distill_jax.teachers import response_cache
from distill_jax.teachers.response_cache import CachedAnswer, ResponseCache

ANSWER = CachedAnswer("q", "because", "42", 7, 3, 4)


def test_a_cache_on_s3_is_uploaded_at_close_and_read_back_by_the_next_run(s3_server, s3_bucket, tmp_path):
    url = f"s3://{s3_bucket}/runs/r1/teacher_cache.sqlite"
    cache = ResponseCache(url)
    cache.put("k1", ANSWER)
    assert not storage.exists(url)  # Within SYNC_SECONDS of opening: nothing uploaded yet.
    cache.close()
    assert s3_server.keys(s3_bucket) == ["runs/r1/teacher_cache.sqlite"]  # One object: WAL folded in.

    local = tmp_path / "copy.sqlite"
    local.write_bytes(storage.path(url).read_bytes())
    assert sqlite3.connect(local).execute("SELECT answer FROM responses WHERE key='k1'").fetchone() == ("42",)

    again = ResponseCache(url)
    assert again.get("k1") == ANSWER
    again.close()


def test_a_long_running_cache_uploads_every_sync_interval(s3_bucket, monkeypatch):
    url = f"s3://{s3_bucket}/cache.sqlite"
    monkeypatch.setattr(response_cache, "SYNC_SECONDS", 0.0)
    cache = ResponseCache(url)
    cache.put("k1", ANSWER)  # Past the interval: uploaded now, before close (what a kill -9 keeps).
    copy = ResponseCache(url)
    assert copy.get("k1") == ANSWER
    copy.close()
    cache.close()
