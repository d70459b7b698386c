"""optax optimizers and learning-rate schedules built from the `optimizer` config block."""

from __future__ import annotations

import jax
import ml_collections
import optax

from distill_jax.models import lora


def learning_rate_schedule(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    """Linear warmup to the peak, then the configured decay down to end_lr_fraction * peak."""
    peak = cfg.learning_rate
    end = peak * cfg.end_lr_fraction
    warmup = max(int(cfg.warmup_steps), 0)
    decay_steps = max(total_steps - warmup, 1)
    if cfg.decay == "cosine":
        decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=cfg.end_lr_fraction)
    elif cfg.decay == "linear":
        decay = optax.linear_schedule(peak, end, decay_steps)
    elif cfg.decay == "rsqrt":
        # T5's inverse-square-root decay, continuous with the warmup peak.
        def decay(step):
            return peak * jax.lax.rsqrt(1.0 + step / max(warmup, 1))
    elif cfg.decay == "constant":
        decay = optax.constant_schedule(peak)
    else:
        raise ValueError(f"optimizer.decay={cfg.decay!r}: use cosine, linear, rsqrt or constant")
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def _decay_mask(params):
    # Norm scales are 1-D; decaying them toward 0 fights the normalisation itself.
    return jax.tree.map(lambda p: p.ndim > 1, params)


def make_optimizer(
    cfg: ml_collections.ConfigDict, total_steps: int, train_only_adapters: bool = False
) -> optax.GradientTransformation:
    """The configured optimizer with global-norm clipping in front.

    train_only_adapters: LoRA; the optimizer (and its state) covers adapter leaves only, every
    other parameter gets a zero update and no optimizer state at all.
    """
    schedule = learning_rate_schedule(cfg, total_steps)
    if cfg.name == "adamw":
        opt = optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay, mask=_decay_mask)
    elif cfg.name == "adafactor":
        opt = optax.adafactor(
            schedule,
            weight_decay_rate=cfg.weight_decay or None,
            weight_decay_mask=_decay_mask if cfg.weight_decay else None,
        )
    else:
        raise ValueError(f"optimizer.name={cfg.name!r}: use adamw or adafactor")
    if cfg.grad_clip_norm and cfg.grad_clip_norm > 0:
        opt = optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm), opt)
    if train_only_adapters:
        labels = lambda params: jax.tree.map(  # noqa: E731
            lambda trainable: "train" if trainable else "frozen", lora.trainable_mask(params)
        )
        opt = optax.multi_transform({"train": opt, "frozen": optax.set_to_zero()}, labels)
    return opt
