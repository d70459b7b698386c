"""Cached greedy decoding computes what teacher-forced scoring computes, on trained checkpoints.

Trained by the product's trainer (so the parameters have met packed or padded batches, segment ids
and positions), restored as `eval` restores them, then decoded and scored on held-out inputs: every
greedy token is the teacher-forced argmax given the decoded prefix, and the cached decoder's
log-probs equal teacher-forced ones within 1e-4 (fp32). Also: the evaluator's accuracy and loss are
read on the same rows, and `eval --check_decoding` reports the check.
"""

import numpy as np
import pytest

from distill_jax.distill.evaluate_runs import CONSISTENCY_ATOL, evaluate_workdir
from distill_jax.evaluation.consistency import check_decode_consistency
from distill_jax.training.run_dir import RunDir
from distill_jax.training.run_setup import build_evaluator, setup_run
from distill_jax.training.trainer import train


def _trained(workdir, demo_prepared, size, pack):
    from distill_jax.presets import demo_config

    cfg = demo_config()
    cfg.data.train_dir, cfg.data.eval_dir = demo_prepared["train"], demo_prepared["test"]
    cfg.model.size, cfg.data.pack = size, pack
    cfg.data.max_input_len, cfg.data.max_target_len, cfg.eval.max_decode_len = 48, 8, 8
    cfg.train.batch_size, cfg.train.steps, cfg.train.log_every, cfg.train.checkpoint_every = 16, 40, 20, 40
    cfg.optimizer.warmup_steps = 5
    cfg.eval.every, cfg.eval.batch_size = 0, 16
    cfg.eval.max_examples_per_domain, cfg.eval.decode_examples_per_domain = 8, 4
    train(cfg, str(workdir))
    run = setup_run(cfg)
    params, _ = RunDir(str(workdir)).restore_params(run)
    return cfg, run, params


@pytest.fixture(scope="module")
def t5_unpacked(demo_prepared, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("t5_unpacked")
    return (workdir, *_trained(workdir, demo_prepared, "tiny", False))


def _held_out_inputs(run, cfg):
    evaluator = build_evaluator(run, cfg.data.eval_dir)
    return np.concatenate([np.asarray(b["encoder_input_tokens"]) for b in evaluator.decode_batches]), evaluator


@pytest.mark.parametrize(
    "size,pack",
    [
        ("tiny", True),
        pytest.param("bart-tiny", False, marks=pytest.mark.slow),
        pytest.param("bart-tiny", True, marks=pytest.mark.slow),
    ],
)
def test_greedy_decoding_agrees_with_teacher_forced_scoring(demo_prepared, tmp_path, size, pack):
    cfg, run, params = _trained(tmp_path / "run", demo_prepared, size, pack)
    _assert_consistent(cfg, run, params)


def test_greedy_decoding_agrees_with_teacher_forced_scoring_unpacked_t5(t5_unpacked):
    _assert_consistent(*t5_unpacked[1:])


def _assert_consistent(cfg, run, params):
    inputs, _ = _held_out_inputs(run, cfg)
    report = check_decode_consistency(run.model, params, inputs, max_decode_length=8)
    assert report.rows == len(inputs) and report.steps >= report.rows  # At least one step (EOS) per row.
    assert report.token_mismatches == 0, report
    assert report.max_logprob_diff <= CONSISTENCY_ATOL, report


def test_the_check_catches_a_decoder_that_ignores_its_position(t5_unpacked, monkeypatch):
    """A broken cache (every step's query decoded as if at position 0) must fail the check."""
    import jax.numpy as jnp

    from distill_jax.evaluation import consistency
    from distill_jax.models import t5
    from distill_jax.models.attention import default_positions, mask_bias
    from distill_jax.models.layers import RelativePositionBias

    def stuck_at_zero(self, cache_index, max_decode_length):
        keys = default_positions(max_decode_length)
        relpos = RelativePositionBias(self.config, bidirectional=False, name="relpos_bias")(
            jnp.zeros((1, 1), jnp.int32), keys
        )
        return relpos, mask_bias((keys <= cache_index)[:, None, None, :])

    _, cfg, run, params = t5_unpacked
    inputs, _ = _held_out_inputs(run, cfg)
    monkeypatch.setattr(t5.Decoder, "_step_biases", stuck_at_zero)
    consistency._compiled.cache_clear()
    try:
        report = check_decode_consistency(run.model, params, inputs, max_decode_length=8)
    finally:
        consistency._compiled.cache_clear()
    assert report.token_mismatches > 0 or report.max_logprob_diff > CONSISTENCY_ATOL, report


def test_accuracy_and_loss_are_read_on_the_same_rows_and_eval_checks_decoding(t5_unpacked):
    workdir, cfg, run, params = t5_unpacked
    _, evaluator = _held_out_inputs(run, cfg)
    per_domain, records = evaluator.run_with_records(params)
    assert records and all(r["id"] for r in records)  # Every decoded row names its example.
    for domain, values in per_domain.items():
        rows = [r for r in records if r["domain"] == domain]
        assert values["decoded"] == len(rows)
        assert values["answer_accuracy"] == pytest.approx(np.mean([r["correct"] for r in rows]))
        # Greedy decoding reproduces every row the model gets right teacher-forced.
        assert values["exact_match"] >= values["forced_exact"] - 1e-9, values
        assert values["loss_on_decoded"] > 0
    report, table = evaluate_workdir(str(workdir), cfg.data.eval_dir, check_decoding=True)
    assert report["decoding_consistency"]["ok"] and "consistent" in table
    assert (workdir / "eval" / "step_40" / "predictions.jsonl").exists()
