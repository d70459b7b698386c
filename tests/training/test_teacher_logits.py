"""`teacher-logits`: stored top-k round-trips within fp16, resumes without rewriting rows, and matches the teacher."""

from __future__ import annotations

import json
import os
import shutil

import jax
import numpy as np
import pytest

from distill_jax.data import kd_logits, shards
from distill_jax.training.teacher_logits import load_teacher, teacher_logits

K = 8


def _reference_logp(run, params, example: dict) -> np.ndarray:
    """The teacher's full log-softmax for one example, one row, unjitted, no padding: [len(targets), V]."""
    from distill_jax.models.encoder_decoder import shift_right

    inputs = np.asarray(example["inputs"], np.int32)[None]
    targets = np.asarray(example["targets"], np.int32)[None]
    seg_in, seg_out = np.ones_like(inputs), np.ones_like(targets)
    logits = run.model.apply(
        {"params": params},
        inputs,
        shift_right(targets, run.model.config.decoder_start_token_id, seg_out),
        encoder_segment_ids=seg_in,
        decoder_segment_ids=seg_out,
        encoder_positions=np.arange(inputs.shape[1])[None],
        decoder_positions=np.arange(targets.shape[1])[None],
        enable_dropout=False,
    )
    return np.asarray(jax.nn.log_softmax(np.asarray(logits, np.float32), axis=-1))[0]


def test_round_trip_resume_and_bytes(kd_teacher, demo_prepared, tmp_path):
    data, out = demo_prepared["test"], str(tmp_path / "logits")
    meta = teacher_logits(kd_teacher, data, out, top_k=K, batch_size=16, chunk_size=32)
    sources = shards.open_domain_sources(data)
    n = sum(len(s) for s in sources.values())
    assert meta["num_examples"] == n and meta["num_chunks"] == -(-n // 32)
    assert meta["ids_dtype"] == "uint16" and meta["bytes_per_token"] == K * 4 + 2
    files = sum(
        os.path.getsize(kd_logits.chunk_dir(out, c) / f"{a}.npy")
        for c in range(meta["num_chunks"])
        for a in ("ids", "logp", "residual")
    )
    assert files - meta["payload_bytes"] == 3 * 128 * meta["num_chunks"]  # only .npy headers on top

    store = kd_logits.StoredLogits.open(out)
    assert len(store) == n and store.k == K and store.temperature == 1.0
    # Round trip: the stored top-k equals the teacher's own full distribution, within fp16.
    run, params, _ = load_teacher(kd_teacher, data)
    params = jax.tree.map(np.asarray, params)
    for example in (sources[d][0] for d in sorted(sources)[:3]):
        ids, logp, residual = store.get(example["id"])
        want = _reference_logp(run, params, example)
        assert ids.shape == (len(example["targets"]), K)
        top = np.sort(want, axis=-1)[:, ::-1][:, :K]
        np.testing.assert_allclose(logp, top, rtol=2e-3, atol=2e-3)  # fp16 log-probs: ~3 significant digits
        np.testing.assert_allclose(np.take_along_axis(want, ids, axis=-1), logp, rtol=2e-3, atol=2e-3)
        np.testing.assert_allclose(residual, 1 - np.exp(top).sum(-1), atol=1e-3)

    # Resume: a killed run left chunk 1 missing and a half-written temp dir; only chunk 1 is computed again.
    before = {c: os.stat(kd_logits.chunk_dir(out, c)).st_ino for c in range(meta["num_chunks"])}
    first_ids = json.loads((kd_logits.chunk_dir(out, 1) / "example_ids.json").read_text())
    shutil.rmtree(kd_logits.chunk_dir(out, 1))
    (kd_logits.chunk_dir(out, 0).parent / ".tmp-chunk_000001-dead").mkdir()
    (tmp_path / "logits" / kd_logits.META_FILE).unlink()
    again = teacher_logits(kd_teacher, data, out, top_k=K, batch_size=16, chunk_size=32)
    assert again["run"]["chunks_written"] == 1 and again["run"]["chunks_already_done"] == meta["num_chunks"] - 1
    after = {c: os.stat(kd_logits.chunk_dir(out, c)).st_ino for c in range(meta["num_chunks"])}
    assert all(after[c] == before[c] for c in before if c != 1)
    assert not [p for p in os.listdir(os.path.join(out, "chunks")) if p.startswith(".tmp-")]
    ids_everywhere = [
        i
        for c in range(meta["num_chunks"])
        for i in json.loads((kd_logits.chunk_dir(out, c) / "example_ids.json").read_text())
    ]
    assert len(ids_everywhere) == len(set(ids_everywhere)) == n
    assert json.loads((kd_logits.chunk_dir(out, 1) / "example_ids.json").read_text()) == first_ids

    # Another job's flags in the same directory are refused, not mixed in.
    with pytest.raises(ValueError, match="different job"):
        teacher_logits(kd_teacher, data, out, top_k=K + 1, batch_size=16, chunk_size=32)
