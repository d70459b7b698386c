"""prepare into s3:// (a real moto server) and gs:// (fake-gcs-server) and reading the shards back:
staged once per host, manifest last."""

import json

import numpy as np
import pytest

from distill_jax.data import shards
from distill_jax.data.corpus import CorpusError
from distill_jax.data.prepare import PrepareOptions, prepare_corpus
from distill_jax.presets import demo_config


def _corpus(path, n=40):
    rows = [{"id": str(i), "domain": f"d{i % 3}", "input": f"q {i}", "target": f"a {i}"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_prepared_shards_on_s3_read_back_equal_to_local_ones(s3_server, s3_bucket, tmp_path):
    corpus, options = _corpus(tmp_path / "c.jsonl"), PrepareOptions.from_config(demo_config())
    url = f"s3://{s3_bucket}/data/train"
    summary = prepare_corpus([corpus], url, options)
    assert summary.output_dir == url and summary.written == 40
    keys = s3_server.keys(s3_bucket)
    assert "data/train/manifest.json" in keys and any(".array_record" in k for k in keys)
    assert prepare_corpus([corpus], url, options).was_noop  # up to date: read from the bucket, nothing written

    prepare_corpus([corpus], str(tmp_path / "local"), options)
    remote, local = shards.open_domain_sources(url), shards.open_domain_sources(str(tmp_path / "local"))
    assert sorted(remote) == sorted(local) == ["d0", "d1", "d2"]
    for domain in local:
        for a, b in zip(remote[domain], local[domain]):
            assert a["id"] == b["id"] and np.array_equal(a["inputs"], b["inputs"])
    assert not shards.local_copy(url, shards.load_manifest(url)).startswith("s3:")


def test_a_corpus_whose_upload_did_not_finish_is_refused(s3_server, s3_bucket, tmp_path):
    url = f"s3://{s3_bucket}/data/train"
    prepare_corpus([_corpus(tmp_path / "c.jsonl")], url, PrepareOptions.from_config(demo_config()))
    # What a kill during the upload leaves: every shard, no manifest (it is written last).
    s3_server.client().delete_object(Bucket=s3_bucket, Key="data/train/manifest.json")
    with pytest.raises(CorpusError, match="no manifest.json; it is not a prepared corpus"):
        shards.open_domain_sources(url)


def test_prepare_into_gs_and_read_back_through_the_gcs_emulator(gcs_bucket, tmp_path):
    url = f"gs://{gcs_bucket}/data/train"
    assert prepare_corpus([_corpus(tmp_path / "c.jsonl")], url, PrepareOptions.from_config(demo_config())).written == 40
    sources = shards.open_domain_sources(url)
    assert sum(len(s) for s in sources.values()) == 40
