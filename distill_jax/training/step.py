"""The jitted train and eval steps: pure functions of (state, metric sums, batch).

The train step also adds its metrics into an on-device accumulator that is donated and returned,
so the host never waits on the device between logging intervals.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from distill_jax.models import lora
from distill_jax.models.t5 import T5Transformer, shift_right
from distill_jax.training import losses, partitioning
from distill_jax.training.train_state import TrainState

Batch = Mapping[str, jax.Array]
MetricSums = dict[str, jax.Array]

BATCH_KEYS = (
    "encoder_input_tokens",
    "encoder_segment_ids",
    "encoder_positions",
    "decoder_target_tokens",
    "decoder_segment_ids",
    "decoder_positions",
    "decoder_loss_weights",
    "decoder_domain_ids",
)


def zero_metric_sums(num_domains: int, mesh: Mesh | None = None) -> MetricSums:
    """The accumulator layout: per-domain vectors plus run-level scalars.

    With a mesh, the zeros are placed replicated on it, exactly as the step returns them: an
    uncommitted first argument would make the step compile a second time on its second call.
    """
    shapes = {k: (num_domains,) for k in ("ce_sum", "correct_sum", "token_count", "example_count")}
    shapes.update({k: () for k in ("loss_sum", "grad_norm_sum", "input_token_count", "steps")})
    if mesh is None:
        return {k: jnp.zeros(shape, jnp.float32) for k, shape in shapes.items()}
    replicated = partitioning.replicated(mesh)
    return {
        k: jax.make_array_from_callback(shape, replicated, lambda index, s=shape: np.zeros(s, np.float32)[index])
        for k, shape in shapes.items()
    }


def _forward_sums(
    model: T5Transformer,
    params: Any,
    batch: Batch,
    num_domains: int,
    *,
    enable_dropout: bool,
    rngs: dict[str, jax.Array] | None,
    label_smoothing: float,
    z_loss: float,
):
    targets = batch["decoder_target_tokens"]
    # Per segment: each packed example's decoder input starts with its own start token.
    decoder_inputs = shift_right(targets, model.config.decoder_start_token_id, batch["decoder_segment_ids"])
    logits = model.apply(
        {"params": params},
        batch["encoder_input_tokens"],
        decoder_inputs,
        encoder_segment_ids=batch["encoder_segment_ids"],
        decoder_segment_ids=batch["decoder_segment_ids"],
        encoder_positions=batch["encoder_positions"],
        decoder_positions=batch["decoder_positions"],
        enable_dropout=enable_dropout,
        rngs=rngs,
    )
    return losses.seq2seq_metric_sums(
        logits,
        targets,
        batch["decoder_loss_weights"],
        batch["decoder_domain_ids"],
        num_domains,
        eos_id=model.config.eos_token_id,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
    )


def make_train_step(
    model: T5Transformer,
    tx: optax.GradientTransformation,
    *,
    mesh: Mesh,
    rules: partitioning.LogicalRules,
    state_shardings: TrainState,
    batch_shardings: Mapping[str, Any],
    num_domains: int,
    dropout_seed: int,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
) -> Callable[[TrainState, MetricSums, Batch], tuple[TrainState, MetricSums]]:
    """Returns the jitted step. State and metric sums are donated: updated in place, no copies."""
    dropout_key = jax.random.key(dropout_seed)
    # With LoRA only adapters train: frozen weights get no gradient computation at all.
    trainable = lora.trainable_mask(state_shardings.params)

    def train_step(state: TrainState, sums: MetricSums, batch: Batch) -> tuple[TrainState, MetricSums]:
        # Dropout randomness is a function of the step alone, so a resumed run draws the same masks.
        rngs = {"dropout": jax.random.fold_in(dropout_key, state.step)}

        def loss_fn(params):
            params = jax.tree.map(lambda p, t: p if t else jax.lax.stop_gradient(p), params, trainable)
            loss_sum, step_sums = _forward_sums(
                model,
                params,
                batch,
                num_domains,
                enable_dropout=True,
                rngs=rngs,
                label_smoothing=label_smoothing,
                z_loss=z_loss,
            )
            # Mean over the global batch's real tokens: every token weighs the same whatever its row length.
            num_tokens = jnp.maximum(jnp.sum(batch["decoder_loss_weights"]), 1.0)
            return loss_sum / num_tokens, step_sums

        (loss, step_sums), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        step_sums = {
            **step_sums,
            "loss_sum": loss,
            "grad_norm_sum": optax.tree.norm(grads),
            "input_token_count": jnp.sum(batch["encoder_input_tokens"] != 0).astype(jnp.float32),
            "steps": jnp.ones((), jnp.float32),
        }
        new_sums = jax.tree.map(jnp.add, sums, step_sums)
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), new_sums

    replicated = partitioning.replicated(mesh)
    sums_shardings = jax.tree.map(lambda _: replicated, zero_metric_sums(num_domains))
    jitted = jax.jit(
        train_step,
        in_shardings=(state_shardings, sums_shardings, dict(batch_shardings)),
        out_shardings=(state_shardings, sums_shardings),
        donate_argnums=(0, 1),
    )

    def run(state: TrainState, sums: MetricSums, batch: Batch) -> tuple[TrainState, MetricSums]:
        with partitioning.mesh_context(mesh, rules):
            return jitted(state, sums, batch)

    return run


def make_eval_step(
    model: T5Transformer,
    *,
    mesh: Mesh,
    rules: partitioning.LogicalRules,
    param_shardings: Any,
    batch_shardings: Mapping[str, Any],
    num_domains: int,
) -> Callable[[Any, Batch], dict[str, jax.Array]]:
    """Per-domain sums of loss, correct tokens and counts for one batch (no dropout, no smoothing)."""

    def eval_step(params: Any, batch: Batch) -> dict[str, jax.Array]:
        _, sums = _forward_sums(
            model, params, batch, num_domains, enable_dropout=False, rngs=None, label_smoothing=0.0, z_loss=0.0
        )
        return sums

    replicated = partitioning.replicated(mesh)
    jitted = jax.jit(eval_step, in_shardings=(param_shardings, dict(batch_shardings)), out_shardings=replicated)

    def run(params: Any, batch: Batch) -> dict[str, jax.Array]:
        with partitioning.mesh_context(mesh, rules):
            return jitted(params, batch)

    return run


def batch_shardings(mesh: Mesh, rules: partitioning.LogicalRules) -> dict[str, Any]:
    """Every batch feature is [batch, length], sharded along the batch dimension."""
    sharding = partitioning.batch_sharding(mesh, rules, 2)
    return {k: sharding for k in BATCH_KEYS}
