"""A packed batch gives the same per-domain loss sums as the same examples padded one per row."""

import jax
import numpy as np

from distill_jax.data import pipeline, shards
from distill_jax.training import step
from distill_jax.training.run_setup import setup_run
from distill_jax.training.train_state import create_train_state


def unpack(batch, max_input_len, max_target_len):
    """Every segment of a packed batch as its own padded row (plus empty rows up to a multiple of 8 devices)."""
    rows = []
    for r in range(batch["encoder_input_tokens"].shape[0]):
        enc_seg, dec_seg = batch["encoder_segment_ids"][r], batch["decoder_segment_ids"][r]
        for seg in sorted(set(dec_seg[dec_seg > 0].tolist())):
            example = {
                "inputs": batch["encoder_input_tokens"][r][enc_seg == seg],
                "targets": batch["decoder_target_tokens"][r][dec_seg == seg],
                "target_domains": batch["decoder_domain_ids"][r][dec_seg == seg],
            }
            rows.append(pipeline.PadToModelFeatures(max_input_len, max_target_len).map(example))
    rows += [{k: np.zeros_like(v) for k, v in rows[0].items()}] * (-len(rows) % 8)
    return {k: np.stack([row[k] for row in rows]) for k in rows[0]}


def test_packed_and_padded_batches_agree(small_train_config):
    cfg = small_train_config()
    run = setup_run(cfg)
    sources = shards.open_domain_sources(cfg.data.train_dir)
    weights = pipeline.mixture_weights(run.train_domain_counts, "natural")
    packed = next(
        iter(
            pipeline.build_train_dataset(
                sources,
                weights,
                run.domain_index,
                seed=0,
                batch_size=8,
                max_input_len=128,
                max_target_len=192,
                pack=True,
            )
        )
    )
    padded = unpack(packed, 128, 192)
    assert padded["encoder_input_tokens"].shape[0] > 8  # More examples than rows: packing happened.
    state = create_train_state(run.model_config, run.tx, run.mesh, run.rules, seed=0)
    eval_step = step.make_eval_step(
        run.model,
        mesh=run.mesh,
        rules=run.rules,
        param_shardings=run.shardings.params,
        batch_shardings=run.batch_shardings,
        num_domains=len(run.domain_names),
    )
    a = jax.tree.map(np.asarray, eval_step(state.params, pipeline.host_to_global(packed, run.batch_shardings)))
    b = jax.tree.map(np.asarray, eval_step(state.params, pipeline.host_to_global(padded, run.batch_shardings)))
    np.testing.assert_array_equal(a["token_count"], b["token_count"])
    np.testing.assert_array_equal(a["example_count"], b["example_count"])
    np.testing.assert_allclose(a["ce_sum"], b["ce_sum"], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(a["correct_sum"], b["correct_sum"], atol=0.5)
