"""Training with stored teacher logits: KD sums agree packed vs padded, rows without logits fall back to CE,
and a few steps lower the KD loss."""

from __future__ import annotations

import itertools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_jax.data import kd_logits, pipeline, shards
from distill_jax.training import partitioning, step, trainer
from distill_jax.training.kd_losses import KDSettings
from distill_jax.training.run_setup import setup_run
from distill_jax.training.train_state import create_train_state
from tests.training.conftest import KD_TOP_K

K = KD_TOP_K


def unpack(batch, max_input_len, max_target_len):
    """Every segment of a packed batch as its own padded row, its KD features with it (plus empty rows to 8k)."""
    rows = []
    for r in range(batch["encoder_input_tokens"].shape[0]):
        enc_seg, dec_seg = batch["encoder_segment_ids"][r], batch["decoder_segment_ids"][r]
        for seg in sorted(set(dec_seg[dec_seg > 0].tolist())):
            example = {
                "inputs": batch["encoder_input_tokens"][r][enc_seg == seg],
                "targets": batch["decoder_target_tokens"][r][dec_seg == seg],
                "target_domains": batch["decoder_domain_ids"][r][dec_seg == seg],
                **{k: batch[k][r][dec_seg == seg] for k in pipeline.KD_FEATURES},
            }
            rows.append(pipeline.PadToModelFeatures(max_input_len, max_target_len).map(example))
    rows += [{k: np.zeros_like(v) for k, v in rows[0].items()}] * (-len(rows) % 8)
    return {k: np.stack([row[k] for row in rows]) for k in rows[0]}


# One policy in the default suite (each is its own compile); the other two run with the slow tests.
@pytest.mark.parametrize(
    "policy",
    [
        "tail_bucket",
        pytest.param("renormalize", marks=pytest.mark.slow),
        pytest.param("uniform_rest", marks=pytest.mark.slow),
    ],
)
def test_kd_sums_packed_equal_padded_and_rows_without_logits_use_ce(kd_stored, small_train_config, policy):
    cfg = small_train_config()
    run = setup_run(cfg)
    store = kd_logits.StoredLogits.open(kd_stored)
    # Half the examples lose their logits: those rows must train on CE alone.
    for example_id in sorted(store.index)[::2]:
        del store.index[example_id]
    sources = shards.open_domain_sources(cfg.data.train_dir)
    weights = pipeline.mixture_weights(run.train_domain_counts, "natural")
    common = dict(seed=0, batch_size=8, max_input_len=64, max_target_len=48, kd=store, kd_k=K)
    packed = next(iter(pipeline.build_train_dataset(sources, weights, run.domain_index, pack=True, **common)))
    padded = unpack(packed, 64, 48)
    assert padded["encoder_input_tokens"].shape[0] > 8  # more examples than rows: packing happened
    assert packed["kd_ids"].shape == (8, 48, K) and packed["kd_ids"].dtype == np.int32
    # Packing never moves a distribution off its token: KD features sit exactly on the real target tokens.
    assert np.all(packed["kd_mask"] <= packed["decoder_loss_weights"])
    state = create_train_state(run.model_config, run.tx, run.mesh, run.rules, seed=0)

    def sums(batch, alpha):
        kd = KDSettings(policy=policy, top_k=K, alpha=("constant", alpha, alpha), temperature=("constant", 2.0, 2.0))
        fn = jax.jit(
            lambda p, b: step._forward_sums(
                run.model,
                p,
                b,
                len(run.domain_names),
                enable_dropout=False,
                rngs=None,
                label_smoothing=0.0,
                z_loss=0.0,
                kd=kd,
                step=jnp.zeros((), jnp.int32),
            )
        )
        with partitioning.mesh_context(run.mesh, run.rules):
            loss, s = fn(state.params, pipeline.host_to_global(batch, run.batch_shardings))
        return float(loss), jax.tree.map(np.asarray, s)

    (loss_a, a), (loss_b, b) = sums(packed, 0.5), sums(padded, 0.5)
    np.testing.assert_array_equal(a["kd_token_count"], b["kd_token_count"])
    np.testing.assert_allclose(a["kd_sum"], b["kd_sum"], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(a["ce_sum"], b["ce_sum"], rtol=1e-5, atol=1e-4)
    assert loss_a == pytest.approx(loss_b, rel=1e-5)
    assert 0 < a["kd_token_count"].sum() < a["token_count"].sum()  # some rows have logits, some fall back
    loss_ce_only, c = sums(packed, 0.0)
    assert loss_ce_only == pytest.approx(float(c["ce_sum"].sum()), rel=1e-5)  # alpha 0: exactly CE
    assert loss_a != pytest.approx(loss_ce_only, rel=1e-3)


@pytest.mark.slow  # a second training compile (~20 s on 2 CPU cores)
def test_training_with_stored_logits_lowers_kd(kd_stored, small_train_config, tmp_path):
    cfg = small_train_config(train__steps=16, train__log_every=4, train__checkpoint_every=16, optimizer__warmup_steps=0)
    cfg.seed = 1  # the student starts away from the teacher's initialisation
    cfg.optimizer.learning_rate = 3e-3
    cfg.kd.logits_dir = kd_stored
    cfg.kd.alpha = 0.9
    cfg.kd.missing_mass = "tail_bucket"
    result_dir = str(tmp_path / "student")
    trainer.train(cfg, result_dir)
    rows = [json.loads(line) for line in open(os.path.join(result_dir, "metrics.jsonl")) if '"train/kd"' in line]
    kd = [r["train/kd"] for r in rows]
    assert len(kd) == 4 and all(np.isfinite(kd))
    assert kd[-1] < 0.8 * kd[0], kd
    assert rows[-1]["train/kd_token_fraction"] == pytest.approx(1.0)


def test_packing_never_mixes_rows(kd_stored, small_train_config):
    """Each packed segment carries exactly its own example's stored top-k, token for token, none of a neighbour's."""
    cfg = small_train_config()
    run = setup_run(cfg)
    store = kd_logits.StoredLogits.open(kd_stored)
    sources = shards.open_domain_sources(cfg.data.train_dir)
    # prepare refuses duplicate (input, target) pairs, so a segment's tokens name its example.
    by_tokens = {
        (tuple(r["inputs"]), tuple(r["targets"])): r["id"]
        for s in sources.values()
        for r in (s[i] for i in range(len(s)))
    }
    weights = pipeline.mixture_weights(run.train_domain_counts, "natural")
    dataset = pipeline.build_train_dataset(
        sources,
        weights,
        run.domain_index,
        seed=0,
        batch_size=8,
        max_input_len=64,
        max_target_len=48,
        pack=True,
        kd=store,
        kd_k=K,
    )
    segments = 0
    for batch in itertools.islice(iter(dataset), 3):
        for r in range(batch["encoder_input_tokens"].shape[0]):
            enc_seg, dec_seg = batch["encoder_segment_ids"][r], batch["decoder_segment_ids"][r]
            for seg in sorted(set(dec_seg[dec_seg > 0].tolist())):
                tokens = (
                    tuple(batch["encoder_input_tokens"][r][enc_seg == seg]),
                    tuple(batch["decoder_target_tokens"][r][dec_seg == seg]),
                )
                ids, logp, residual = store.get(by_tokens[tokens])
                here = dec_seg == seg
                np.testing.assert_array_equal(batch["kd_ids"][r][here], ids[:, :K])
                np.testing.assert_array_equal(batch["kd_logp"][r][here], logp[:, :K])
                np.testing.assert_array_equal(batch["kd_residual"][r][here], residual)
                assert np.all(batch["kd_mask"][r][here] == 1)
                segments += 1
            # Positions outside every segment (the row's padding) carry nothing at all.
            assert not batch["kd_mask"][r][dec_seg == 0].any() and not batch["kd_ids"][r][dec_seg == 0].any()
    assert segments > 3 * 8  # rows held several examples each
