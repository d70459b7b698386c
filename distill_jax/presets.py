"""Named configs built on `config.default_config()`: the demos, and T5 v1.1 shapes for accelerators.

`--config=distill_jax/presets.py:NAME` (each subcommand's default `--config` is one of these); the
files in configs/ call them too. Every knob and its meaning stays in config.py.
"""

from __future__ import annotations

import ml_collections

from distill_jax.config import default_config


def demo_config() -> ml_collections.ConfigDict:
    """The embedded demo: tiny byte-level student on the generated long-tailed corpus, a few CPU minutes."""
    c = default_config()
    # Generated inputs are <= 40 bytes and answers <= 4 (+ EOS): tight shapes save CPU time.
    c.prepare.max_input_len = 48
    c.prepare.max_target_len = 8
    # The tiny student learns the answers; the generated rationales (< 64 bytes) would need
    # position-wise copying, which a 0.9M-parameter student does not learn from a few dozen examples.
    c.prepare.target_template = "{target}"
    c.model.size = "tiny"
    c.model.dropout_rate = 0.0
    c.train.steps = 1000
    c.train.batch_size = 32
    c.train.log_every = 50
    c.train.checkpoint_every = 400
    c.optimizer.learning_rate = 2e-3  # Measured best of 1e-3/2e-3/3e-3 for the tiny student (BUILD_NOTES "The demo").
    c.optimizer.warmup_steps = 50
    c.eval.every = 500
    c.eval.batch_size = 100
    c.eval.max_examples_per_domain = 50
    c.eval.decode_examples_per_domain = 50
    c.eval.head_fraction = 0.8  # The generated corpus's top 2 domains hold ~81%: those are the head.
    return c


def baldistill_demo_config() -> ml_collections.ConfigDict:
    """`distill-jax demo`: random vs BalDistill-N vs BalDistill-A on the generated pool, same budget and student."""
    c = demo_config()
    c.distill.pool_fields.update(dict(id="id", domain="domain", input="input", answer="target", rationale="rationale"))
    c.distill.budget = 1000.0  # 1/3 of the 3000-row pool: random sampling buys ~4 rows of each far-tail domain.
    # Adaptive's quotas move from natural to 3/4 uniform; with 3 stages its tail got +0.18 over random, with 4
    # +0.24 (BUILD_NOTES "The demo"); the paper uses 5.
    c.distill.stages = 4
    c.distill.methods = "random,naive,adaptive"
    c.distill.epochs_per_stage = 10.0  # Over each stage's cumulative data: ~780 steps per method in all.
    c.distill.min_steps_per_stage = 50
    c.distill.ifd_max_candidates = 100  # Per head domain and stage: keeps scoring to seconds on a CPU.
    c.distill.ifd_max_new_tokens = 8  # The demo's answers are <= 4 bytes + EOS (data.max_target_len).
    c.distill.ifd_batch_size = 100
    c.teacher.kind = "program"
    c.train.checkpoint_every = 1000
    c.eval.max_examples_per_domain = 50
    c.eval.decode_examples_per_domain = 50
    return c


def paraphrase_demo_config() -> ml_collections.ConfigDict:
    """`distill-jax paraphrase-demo`: a tiny byte-level student on APTY's ChatGPT paraphrases, CPU minutes."""
    c = demo_config()
    c.prepare.max_input_len = 200  # APTY's longest source is 187 bytes and paraphrase 215 (+ EOS).
    c.prepare.max_target_len = 224
    c.model.dropout_rate = 0.1  # ~300 pairs: the student would otherwise memorise them.
    c.optimizer.learning_rate = 3e-3  # The paraphrase demo's measured recipe (BUILD_NOTES, issue 9).
    c.optimizer.warmup_steps = 100
    c.eval.head_fraction = 1.0  # One domain.
    c.train.steps = 600
    c.train.checkpoint_every = 300
    c.eval.every = 300
    c.eval.decode_examples_per_domain = 10
    c.paraphrase.validation_fraction = 0.2  # ~13 of APTY's 65 sources held out.
    return c


def accelerator_config(size: str, batch_size: int) -> ml_collections.ConfigDict:
    """A T5 v1.1-shaped student on GPU/TPU: bf16 compute, Adafactor with T5's rsqrt schedule."""
    c = default_config()
    c.model.size = size
    c.model.dtype = "bfloat16"
    c.model.dropout_rate = 0.1
    c.train.dropout_prng = "rbg"  # The accelerator's RNG instead of threefry's integer hashing.
    c.prepare.max_target_len = 256  # Inputs keep the default 512.
    c.train.steps = 20_000
    c.train.batch_size = batch_size
    c.train.log_every = 100
    c.train.checkpoint_every = 1000
    c.optimizer.name = "adafactor"  # T5's optimizer; factored moments keep optimizer memory small.
    c.optimizer.learning_rate = 1e-3
    c.optimizer.warmup_steps = 1000
    c.optimizer.decay = "rsqrt"
    c.optimizer.weight_decay = 0.0
    c.eval.every = 2000
    return c


def get_config(preset: str = "default") -> ml_collections.ConfigDict:
    """Entry point for `--config=.../distill_jax/presets.py[:NAME]`."""
    presets = {
        "default": default_config,
        "demo": demo_config,
        "baldistill_demo": baldistill_demo_config,
        "paraphrase_demo": paraphrase_demo_config,
    }
    if preset not in presets:
        raise ValueError(f"unknown config preset {preset!r}; choose from {sorted(presets)}")
    return presets[preset]()
