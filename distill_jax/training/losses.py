"""Per-domain metric sums of the training loss (cross-entropy with label smoothing and z-loss, mixed with KD).

Everything here returns *sums* (not means) so that metrics can be accumulated on device across
steps and hosts and divided once at logging time: means of means would weight domains wrongly.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from distill_jax.models.seq2seq import cross_entropy_with_z_loss
from distill_jax.training.kd_losses import mix_with_ce


def per_domain_sums(values: jax.Array, weights: jax.Array, token_domains: jax.Array, num_domains: int) -> jax.Array:
    """Sums of `values * weights` by the domain of each token: [B, T] arrays -> [num_domains].

    Domains are per token, not per row, because a packed row holds examples of several domains.
    """
    return jax.ops.segment_sum((values * weights).reshape(-1), token_domains.reshape(-1), num_segments=num_domains)


class KDTerm(NamedTuple):
    """A batch's word-level KD term (``kd_losses``): what the student pays on the tokens that have one."""

    per_token: jax.Array  # [B, T] KD loss of each target token
    mask: jax.Array  # [B, T] 1 where the token has a teacher distribution
    alpha: jax.Array | float  # the KD share of those tokens' loss, this step


def seq2seq_metric_sums(
    logits: jax.Array,
    targets: jax.Array,
    weights: jax.Array,
    token_domains: jax.Array,
    num_domains: int,
    *,
    eos_id: int = 1,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    kd: KDTerm | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Total training loss (sum over tokens) and per-domain sums of loss, correct tokens, tokens and examples.

    Every target ends with exactly one EOS, so counting weighted EOS tokens counts examples, packed or not.
    With ``kd``, tokens where ``kd.mask`` is 1 train on alpha * KD + (1 - alpha) * (CE + z-loss), the rest
    on CE alone; ``kd_sum``/``kd_token_count`` are added.
    """
    weights = weights.astype(jnp.float32)
    loss, ce = cross_entropy_with_z_loss(logits, targets, label_smoothing=label_smoothing, z_loss=z_loss)
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    is_eos = (targets == eos_id).astype(jnp.float32)
    sums = {
        "ce_sum": per_domain_sums(ce, weights, token_domains, num_domains),
        "correct_sum": per_domain_sums(correct, weights, token_domains, num_domains),
        "token_count": per_domain_sums(jnp.ones_like(ce), weights, token_domains, num_domains),
        "example_count": per_domain_sums(is_eos, weights, token_domains, num_domains),
    }
    if kd is not None:
        kd_weights = weights * kd.mask.astype(jnp.float32)  # padding and packed-row gaps have weight 0 already
        loss = mix_with_ce(kd.per_token, loss, kd_weights, kd.alpha)
        kd_values = jnp.where(kd_weights > 0, kd.per_token, 0.0)
        sums["kd_sum"] = per_domain_sums(kd_values, kd_weights, token_domains, num_domains)
        sums["kd_token_count"] = per_domain_sums(jnp.ones_like(ce), kd_weights, token_domains, num_domains)
    return jnp.sum(loss * weights), sums
