"""The student as t5x's EncoderDecoderModel wraps a module: its teacher-forced forward, the cross-entropy of
that forward, per-row scores and greedy prediction, in one place.

The train and eval steps, the online teacher, the teacher-logits job, the train-time evaluator and IFD
scoring all read logits through ``Seq2SeqModel.logits`` and losses through ``cross_entropy_with_z_loss``;
what each then sums (per domain, per row, a top-k) stays with its caller.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from distill_jax.models.decoding import greedy_decode
from distill_jax.models.encoder_decoder import shift_right
from distill_jax.models.family import Model, ModelConfig

# The packing features a batch may carry; an unpacked batch (scoring decoded rows) has none.
PACKING_KEYS = ("encoder_segment_ids", "decoder_segment_ids", "encoder_positions", "decoder_positions")


def cross_entropy_with_z_loss(
    logits: jax.Array, targets: jax.Array, *, label_smoothing: float = 0.0, z_loss: float = 0.0
) -> tuple[jax.Array, jax.Array]:
    """Per-token loss (CE + z_loss * log(Z)^2) and the plain CE, both [B, T] float32.

    Smoothing follows T5X: the target gets (1 - s) and the rest share s, and the constant entropy
    of that distribution is subtracted so a perfect model's loss is 0 whatever s is.
    """
    logits = logits.astype(jnp.float32)
    vocab = logits.shape[-1]
    log_z = jax.nn.logsumexp(logits, axis=-1)
    log_probs = logits - log_z[..., None]
    target_logp = jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    ce = -target_logp
    if label_smoothing > 0:
        confidence = 1.0 - label_smoothing
        low = label_smoothing / (vocab - 1)
        normalizer = -(confidence * jnp.log(confidence) + (vocab - 1) * low * jnp.log(low + 1e-20))
        smoothed = -(confidence * target_logp + low * (jnp.sum(log_probs, axis=-1) - target_logp))
        loss = smoothed - normalizer
    else:
        loss = ce
    if z_loss > 0:
        loss = loss + z_loss * jnp.square(log_z)
    return loss, ce


@dataclasses.dataclass(frozen=True)
class Seq2SeqModel:
    """A student or teacher module with the three things done with it: logits, score, predict."""

    module: Model

    @property
    def config(self) -> ModelConfig:
        return self.module.config

    def logits(
        self,
        params: Any,
        batch: Mapping[str, jax.Array],
        *,
        enable_dropout: bool = False,
        rngs: dict[str, jax.Array] | None = None,
    ) -> jax.Array:
        """Teacher-forced logits [B, T, vocab] (in the model's activation dtype) on ``batch``'s targets.

        A packed batch (with segment ids and positions) starts each segment's decoder input with its own
        start token and keeps attention inside segments; an unpacked one carries only the two token arrays.
        """
        packing = {k: batch.get(k) for k in PACKING_KEYS}
        decoder_inputs = shift_right(
            batch["decoder_target_tokens"], self.config.decoder_start_token_id, packing["decoder_segment_ids"]
        )
        return self.module.apply(
            {"params": params},
            batch["encoder_input_tokens"],
            decoder_inputs,
            **packing,
            enable_dropout=enable_dropout,
            rngs=rngs,
        )

    def score(
        self, params: Any, encoder_tokens: jax.Array, targets: jax.Array, weights: jax.Array
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Per row of unpacked tokens: summed CE of the weighted targets, their weight, every one the argmax."""
        logits = self.logits(params, {"encoder_input_tokens": encoder_tokens, "decoder_target_tokens": targets})
        _, ce = cross_entropy_with_z_loss(logits, targets)
        wrong = (jnp.argmax(logits, axis=-1) != targets) & (weights > 0)
        return jnp.sum(ce * weights, axis=-1), jnp.sum(weights, axis=-1), ~jnp.any(wrong, axis=-1)

    def predict(self, params: Any, encoder_tokens: jax.Array, *, max_decode_length: int) -> jax.Array:
        """Greedy tokens [B, max_decode_length], padded after each row's EOS."""
        return greedy_decode(self.module, params, encoder_tokens, max_decode_length=max_decode_length)
