"""The candidate pool, its rejects and the eval rows on object storage (moto's S3 server and the GCS emulator):
a gs:// / s3:// pool file reads as the same file on local disk would, and rejects name the URL."""

import json

import pytest

from distill_jax import atomic, storage
from distill_jax.data.prepare import PrepareOptions, prepare_corpus
from distill_jax.distill.pool import load_examples, write_eval_rows


@pytest.fixture(params=["s3", "gs"])
def bucket_url(request):
    fixture = {"s3": "s3_bucket", "gs": "gcs_bucket"}[request.param]
    return f"{request.param}://{request.getfixturevalue(fixture)}"


def test_a_remote_pool_reads_like_a_local_one_and_its_eval_rows_prepare(bucket_url, tmp_path):
    rows = [
        {"text": "q1", "label": "1", "source": "A"},
        {"text": "q2", "label": "2", "source": "A"},
        {"text": " q1 ", "label": "1", "source": "A"},  # a duplicate after normalisation
        {"text": "q3", "source": "B"},  # no label
    ]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    (tmp_path / "pool.jsonl").write_text(text)
    url = f"{bucket_url}/in/pool.jsonl"
    storage.put_bytes(url, text.encode())
    fields = dict(id="", domain="source", input="text", answer="label")
    local = load_examples([str(tmp_path / "pool.jsonl")], fields)
    remote = load_examples([url], fields, rejects_path=f"{bucket_url}/run/pool_rejects.jsonl")
    assert remote == local  # same ids (derived from the file name), inputs and answers
    rejects = atomic.read_jsonl(f"{bucket_url}/run/pool_rejects.jsonl")
    assert [(r["file"], r["reason"]) for r in rejects] == [(url, "duplicate_example"), (url, "missing_field")]

    # The eval rows the scheduler writes into its workdir are prepare's input there (read from a staged copy).
    write_eval_rows(f"{bucket_url}/run/eval_rows.jsonl", remote)
    summary = prepare_corpus([f"{bucket_url}/run/eval_rows.jsonl"], f"{bucket_url}/run/eval_data", PrepareOptions())
    assert summary.written == 2
    manifest = json.loads(storage.read_text(f"{bucket_url}/run/eval_data/manifest.json"))
    assert [i["path"] for i in manifest["inputs"]] == [f"{bucket_url}/run/eval_rows.jsonl"]
