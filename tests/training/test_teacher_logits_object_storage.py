"""`teacher-logits` with its data and output on s3:// and gs:// (moto's S3 server, the GCS emulator; tests/conftest.py): chunks land in the
bucket with example_ids.json as each chunk's completion marker, a rerun after a killed upload computes only the
unfinished chunk, and the stored top-k read back from the bucket equal a local job's."""

from __future__ import annotations

import numpy as np
import pytest

from distill_jax import storage
from distill_jax.data import kd_logits, shards
from distill_jax.training.teacher_logits import teacher_logits

K = 8


@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_chunks_on_object_storage_resume_and_equal_a_local_job(scheme, kd_teacher, demo_prepared, request, tmp_path):
    bucket = request.getfixturevalue({"s3": "s3_bucket", "gs": "gcs_bucket"}[scheme])
    data = f"{scheme}://{bucket}/data/test"
    storage.upload_tree(demo_prepared["test"], data, last=shards.MANIFEST_FILE)
    out = f"{scheme}://{bucket}/logits"
    meta = teacher_logits(kd_teacher, data, out, top_k=K, batch_size=16, chunk_size=32)
    assert meta["data"] == data and meta["num_chunks"] > 1
    assert storage.isfile(f"{out}/plan.json") and storage.isfile(f"{out}/meta.json")
    for c in range(meta["num_chunks"]):
        for name in (*(f"{a}.npy" for a in kd_logits.ARRAYS), kd_logits.IDS_FILE):
            assert storage.isfile(f"{out}/chunks/chunk_{c:06d}/{name}"), (c, name)
    assert not (tmp_path / "s3:").exists()

    # A killed upload of chunk 1: its arrays are there, its marker (written last) is not; meta.json neither.
    storage.path(f"{out}/chunks/chunk_000001/{kd_logits.IDS_FILE}").unlink()
    storage.path(f"{out}/{kd_logits.META_FILE}").unlink()
    assert kd_logits.finished_chunks(out) == set(range(meta["num_chunks"])) - {1}
    again = teacher_logits(kd_teacher, data, out, top_k=K, batch_size=16, chunk_size=32)
    assert again["run"]["chunks_written"] == 1 and again["run"]["chunks_already_done"] == meta["num_chunks"] - 1

    local = str(tmp_path / "local")
    teacher_logits(kd_teacher, demo_prepared["test"], local, top_k=K, batch_size=16, chunk_size=32)
    remote_store, local_store = kd_logits.StoredLogits.open(out), kd_logits.StoredLogits.open(local)
    assert remote_store.root.startswith(str(tmp_path / "staging"))  # memory-mapped from the host's staged copy
    assert sorted(remote_store.index) == sorted(local_store.index) and len(remote_store) == meta["num_examples"]
    for example_id in local_store.index:
        for got, want in zip(remote_store.get(example_id), local_store.get(example_id)):
            np.testing.assert_array_equal(got, want)
