"""The budget ledger on object storage (moto's S3 server and the GCS emulator): every append is a write-once
segment object in the bucket before the request it records is sent, a reopened ledger sees everything, and
opening/closing compacts the segments into ledger.jsonl."""

import json

import fsspec
import pytest

from distill_jax import storage
from distill_jax.teachers.ledger import Ledger


@pytest.fixture(params=["s3", "gs"])
def bucket_url(request):
    fixture = {"s3": "s3_bucket", "gs": "gcs_bucket"}[request.param]
    return f"{request.param}://{request.getfixturevalue(fixture)}"


def _segments(url):
    fs, root = fsspec.core.url_to_fs(url + ".d")
    return sorted(fs.find(root)) if fs.exists(root) else []


def test_appends_are_segments_in_the_bucket_and_a_reopen_sees_them(bucket_url):
    url = f"{bucket_url}/run/random/ledger.jsonl"
    ledger = Ledger(url, budget=3, unit="calls")
    assert ledger.open("k1", 0, kind="annotate", domain="d", stage=0, estimate=1, bound=1, wait=False)
    # The `sent` record is in the bucket before the caller may send the request.
    assert len(_segments(url)) == 1 and '"op": "sent"' in storage.path(_segments_url(url)[0]).read_text()
    ledger.settle("k1", 0, "billed", 1.0)
    ledger.finish("k1", "ok", "paid", kind="annotate", domain="d", stage=0)
    assert ledger.open("k2", 0, kind="annotate", domain="d", stage=0, estimate=1, bound=1, wait=False)
    # Killed here (no close): k2 is in flight. A new process reopens from the bucket alone.
    again = Ledger(url, budget=3, unit="calls")
    assert again.spent == 2 and again.is_done("k1") and again.unknown_at_open == 1
    assert again.key_charged("k2")  # charged at its bound, never asked for free
    assert len(_segments(url)) == 1  # compacted at open; then the `unknown` settle, one new segment
    again.close()
    assert _segments(url) == []
    records = [json.loads(line) for line in storage.read_text(url).splitlines()]
    assert [r["op"] for r in records] == ["sent", "settle", "done", "sent", "settle"]
    assert records[-1]["outcome"] == "unknown"
    third = Ledger(url, budget=3, unit="calls")
    assert third.spent == 2 and third.unknown_at_open == 0
    third.close()


def test_a_segment_replayed_after_compaction_changes_nothing(bucket_url):
    """A kill between compaction's base write and its segment deletes leaves both: replaying is a no-op."""
    url = f"{bucket_url}/ledger.jsonl"
    ledger = Ledger(url, budget=5, unit="calls")
    for key in ("a", "b"):
        assert ledger.open(key, 0, kind="annotate", domain="d", stage=0, estimate=1, bound=1, wait=False)
        ledger.settle(key, 0, "billed", 1.0)
    segments = {k: storage.path(u).read_bytes() for k, u in zip(_segments(url), _segments_url(url))}
    ledger.close()
    for key, data in segments.items():  # put the compacted segments back, as a kill would have left them
        storage.put_bytes(_url_of(url, key), data)
    again = Ledger(url, budget=5, unit="calls")
    assert again.spent == 2 and len(again.attempts) == 2
    again.close()


def _url_of(url, key):
    return f"{storage.scheme(url)}://{key}"


def _segments_url(url):
    return [_url_of(url, k) for k in _segments(url)]


def test_a_batch_is_one_segment_written_when_the_block_ends(bucket_url):
    url = f"{bucket_url}/batched/ledger.jsonl"
    ledger = Ledger(url, budget=10, unit="calls")
    with ledger.batch():
        for key in ("a", "b", "c"):
            assert ledger.open(key, 0, kind="annotate", domain="d", stage=0, estimate=1, bound=1, wait=False)
        assert ledger.spent == 3 and _segments(url) == []  # counted at once, written at the end
    assert len(_segments(url)) == 1
    assert Ledger(url, budget=10, unit="calls").unknown_at_open == 3  # a reopen (a kill here) sees all three
