"""The jitted train and eval steps: pure functions of (state, metric sums, batch).

The train step also adds its metrics into an on-device accumulator that is donated and returned,
so the host never waits on the device between logging intervals. The same accumulator counts
non-finite losses, gradient norms and updated parameters (the finiteness guard: the trainer reads
it with the other sums, at the log interval, and before any save). With gradient accumulation it
splits the global batch into microbatches inside the same jitted step (a ``lax.scan``), so one
compiled program still does the whole update.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from distill_jax.models import lora
from distill_jax.models.family import Model
from distill_jax.models.seq2seq import Seq2SeqModel
from distill_jax.training import losses, partitioning
from distill_jax.training.kd_losses import KDSettings
from distill_jax.training.online_teacher import OnlineTeacher
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

# The stored teacher top-k (data.pipeline.KD_FEATURES), in batches only when kd.logits_dir is set.
KD_KEYS = ("kd_ids", "kd_logp", "kd_residual", "kd_mask")
# What the forward pass sums per domain (losses.seq2seq_metric_sums); the step adds run-level scalars.
# The KD sums stay 0 without KD: one accumulator layout for every run.
PER_DOMAIN_SUMS = ("ce_sum", "correct_sum", "token_count", "example_count", "kd_sum", "kd_token_count")
# Steps of the interval whose loss / gradient norm / updated params were not all finite, and steps skipped.
NONFINITE_COUNTS = ("nonfinite_loss", "nonfinite_grad_norm", "nonfinite_params", "skipped_steps")
# The first such step (1-based, as the loop counts); NO_STEP when there was none. int32: float32 loses
# exact integers past 2**24 steps.
FIRST_NONFINITE = "first_nonfinite_step"
NO_STEP = np.iinfo(np.int32).max


def zero_metric_sums(num_domains: int, mesh: Mesh | None = None) -> MetricSums:
    """The accumulator layout: per-domain vectors plus run-level scalars.

    With a mesh, the zeros are placed replicated on it, exactly as the step returns them: an
    uncommitted first argument would make the step compile a second time on its second call.
    """
    host = {k: np.zeros((num_domains,), np.float32) for k in PER_DOMAIN_SUMS}
    host.update({k: np.zeros((), np.float32) for k in ("loss_sum", "grad_norm_sum", "input_token_count", "steps")})
    host.update({k: np.zeros((), np.float32) for k in NONFINITE_COUNTS})
    host[FIRST_NONFINITE] = np.full((), NO_STEP, np.int32)
    if mesh is None:
        return {k: jnp.asarray(v) for k, v in host.items()}
    replicated = partitioning.replicated(mesh)
    return {k: jax.make_array_from_callback(v.shape, replicated, lambda index, v=v: v[index]) for k, v in host.items()}


def _forward_sums(
    model: Model,
    params: Any,
    batch: Batch,
    num_domains: int,
    *,
    enable_dropout: bool,
    rngs: dict[str, jax.Array] | None,
    label_smoothing: float,
    z_loss: float,
    kd: KDSettings | None = None,
    step: jax.Array | None = None,
):
    logits = Seq2SeqModel(model).logits(params, batch, enable_dropout=enable_dropout, rngs=rngs)
    kd_term = None
    if kd is not None:
        kd_term = losses.KDTerm(kd.per_token(logits, batch, step), batch["kd_mask"], kd.alpha_at(step))
    return losses.seq2seq_metric_sums(
        logits,
        batch["decoder_target_tokens"],
        batch["decoder_loss_weights"],
        batch["decoder_domain_ids"],
        num_domains,
        eos_id=model.config.eos_token_id,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        kd=kd_term,
    )


def split_microbatches(batch: Batch, num_microbatches: int) -> Batch:
    """[B, ...] -> [num_microbatches, B / num_microbatches, ...]; microbatch i holds rows i, i + n, i + 2n, ...

    Strided, not contiguous: each device's block of rows is spread evenly over the microbatches, so
    every microbatch stays sharded over all batch shards and the split moves no data between devices.
    """

    def split(x: jax.Array) -> jax.Array:
        stacked = jnp.swapaxes(x.reshape(x.shape[0] // num_microbatches, num_microbatches, *x.shape[1:]), 0, 1)
        return nn.with_logical_constraint(stacked, (None, "batch") + (None,) * (x.ndim - 1))

    return {k: split(v) for k, v in batch.items()}


@dataclasses.dataclass(frozen=True)
class TrainStep:
    """The jitted train step, callable as ``step(state, sums, batch) -> (state, sums)``.

    ``compile`` lowers and compiles it ahead of time for the given input shapes; the returned
    ``jax.stages.Compiled`` is called the same way and exposes XLA's ``memory_analysis()``.
    """

    jitted: Any
    mesh: Mesh
    rules: partitioning.LogicalRules
    num_domains: int
    teacher_params: Any = None  # online KD: the frozen teacher's params, passed to every call, never donated

    def __call__(self, state: TrainState, sums: MetricSums, batch: Batch) -> tuple[TrainState, MetricSums]:
        with partitioning.mesh_context(self.mesh, self.rules):
            return self.jitted(state, sums, batch, self.teacher_params)

    def compile(self, state: Any, batch: Any) -> CompiledStep:
        """Compiles for ``state`` and ``batch`` (arrays or ShapeDtypeStructs carrying their shardings)."""
        replicated = partitioning.replicated(self.mesh)
        sums = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), zero_metric_sums(self.num_domains)
        )
        with partitioning.mesh_context(self.mesh, self.rules):
            return CompiledStep(
                self.jitted.lower(state, sums, batch, self.teacher_params).compile(), self.teacher_params
            )


@dataclasses.dataclass(frozen=True)
class CompiledStep:
    """The compiled step, called like TrainStep; ``memory_analysis()`` etc. are the executable's."""

    compiled: jax.stages.Compiled
    teacher_params: Any

    def __call__(self, state: TrainState, sums: MetricSums, batch: Batch) -> tuple[TrainState, MetricSums]:
        return self.compiled(state, sums, batch, self.teacher_params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.compiled, name)


# train.dropout_prng's choices: PRNG implementations whose bits do not depend on the sharding.
DROPOUT_PRNGS = ("threefry2x32", "rbg", "unsafe_rbg")


def make_train_step(
    model: Model,
    tx: optax.GradientTransformation,
    *,
    mesh: Mesh,
    rules: partitioning.LogicalRules,
    state_shardings: TrainState,
    batch_shardings: Mapping[str, Any],
    num_domains: int,
    dropout_seed: int,
    dropout_prng: str = "threefry2x32",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    grad_accum_steps: int = 1,
    skip_nonfinite: bool = False,
    kd: KDSettings | None = None,
    teacher: OnlineTeacher | None = None,
) -> TrainStep:
    """Returns the jitted step. State and metric sums are donated: updated in place, no copies.

    With ``grad_accum_steps`` = n > 1 the batch is split into n microbatches (``split_microbatches``)
    whose gradients and metric sums are added up in a ``lax.scan``: every microbatch loss is a sum
    over its tokens divided by the *global* batch's token count, so the summed gradient is the plain
    step's (without dropout; with dropout each microbatch draws its own masks).

    ``skip_nonfinite``: a step whose loss, gradient norm or updated params are not all finite keeps
    the old params and optimizer state (selected on device, no host round trip) and is counted in
    ``skipped_steps``; without it the update is applied as computed and the trainer stops the run.

    ``kd``: batches carry the stored teacher top-k (KD_KEYS) and the loss mixes KD with CE
    (losses.seq2seq_metric_sums); alpha and T follow their schedules in ``state.step``. With ``teacher`` (online
    KD) the batches carry no teacher features: the teacher's forward adds its logits to every (micro)batch.
    """
    if grad_accum_steps < 1:
        raise ValueError(f"train.grad_accum_steps must be >= 1, got {grad_accum_steps}")
    dropout_key = jax.random.key(dropout_seed, impl=dropout_prng)
    # With LoRA only adapters train: frozen weights get no gradient computation at all.
    trainable = lora.trainable_mask(state_shardings.params)
    batch_ways = partitioning.data_parallel_size(mesh, rules)

    def loss_fn(
        params: Any, batch: Batch, key: jax.Array, num_tokens: jax.Array, step: jax.Array, teacher_params: Any
    ) -> tuple[jax.Array, MetricSums]:
        params = jax.tree.map(lambda p, t: p if t else jax.lax.stop_gradient(p), params, trainable)
        if teacher is not None:  # per microbatch: the teacher's [rows, T, V] logits live one microbatch at a time
            batch = teacher.with_logits(teacher_params, batch)
        loss_sum, step_sums = _forward_sums(
            model,
            params,
            batch,
            num_domains,
            enable_dropout=True,
            rngs={"dropout": key},
            label_smoothing=label_smoothing,
            z_loss=z_loss,
            kd=kd,
            step=step,
        )
        zeros = jnp.zeros((num_domains,), jnp.float32)
        return loss_sum / num_tokens, {k: step_sums.get(k, zeros) for k in PER_DOMAIN_SUMS}

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def accumulate(
        params: Any, batch: Batch, key: jax.Array, num_tokens: jax.Array, step: jax.Array, teacher_params: Any
    ) -> tuple:
        rows = batch["decoder_target_tokens"].shape[0]
        if rows % (grad_accum_steps * batch_ways):
            raise ValueError(
                f"train.batch_size={rows} must be divisible by train.grad_accum_steps={grad_accum_steps} times "
                f"the data-parallel size {batch_ways}, so every microbatch splits evenly over the batch shards"
            )
        microbatches = split_microbatches(batch, grad_accum_steps)
        # Frozen (LoRA base) leaves get no accumulator: their gradient is zero by construction.
        zero_grads = jax.tree.map(
            lambda p, t, s: jax.lax.with_sharding_constraint(jnp.zeros_like(p), s) if t else jnp.zeros((), p.dtype),
            params,
            trainable,
            state_shardings.params,
        )
        zero_sums = {k: jnp.zeros((num_domains,), jnp.float32) for k in PER_DOMAIN_SUMS}

        def body(carry: tuple, xs: tuple) -> tuple[tuple, None]:
            grads, loss, sums = carry
            micro, index = xs
            (micro_loss, micro_sums), micro_grads = grad_fn(
                params, micro, jax.random.fold_in(key, index), num_tokens, step, teacher_params
            )
            grads = jax.tree.map(lambda g, m, t: g + m if t else g, grads, micro_grads, trainable)
            return (grads, loss + micro_loss, jax.tree.map(jnp.add, sums, micro_sums)), None

        init = (zero_grads, jnp.zeros((), jnp.float32), zero_sums)
        (grads, loss, step_sums), _ = jax.lax.scan(body, init, (microbatches, jnp.arange(grad_accum_steps)))
        grads = jax.tree.map(lambda g, p, t: g if t else jnp.zeros_like(p), grads, params, trainable)
        return (loss, step_sums), grads

    def train_step(
        state: TrainState, sums: MetricSums, batch: Batch, teacher_params: Any
    ) -> tuple[TrainState, MetricSums]:
        # Dropout randomness is a function of the step alone, so a resumed run draws the same masks.
        key = jax.random.fold_in(dropout_key, state.step)
        # Mean over the global batch's real tokens: every token weighs the same whatever its row length.
        num_tokens = jnp.maximum(jnp.sum(batch["decoder_loss_weights"]), 1.0)
        if grad_accum_steps == 1:
            (loss, step_sums), grads = grad_fn(state.params, batch, key, num_tokens, state.step, teacher_params)
        else:
            (loss, step_sums), grads = accumulate(state.params, batch, key, num_tokens, state.step, teacher_params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        grad_norm = optax.tree.norm(grads)
        # The guard: three scalars reduced on device. The params check catches an update that overflows
        # (a huge learning rate) while this step's loss and gradients were still finite.
        loss_ok, grad_ok = jnp.isfinite(loss), jnp.isfinite(grad_norm)
        params_ok = jnp.all(jnp.stack([jnp.all(jnp.isfinite(p)) for p in jax.tree.leaves(params)]))
        ok = loss_ok & grad_ok & params_ok
        if skip_nonfinite:
            keep_new = lambda new, old: jnp.where(ok, new, old)  # noqa: E731 - one select per leaf
            params = jax.tree.map(keep_new, params, state.params)
            opt_state = jax.tree.map(keep_new, opt_state, state.opt_state)
        # Metrics add only finite steps, so a skipped batch does not turn the interval's averages into NaN.
        okf = ok.astype(jnp.float32)
        step_sums = {k: jnp.where(ok, v, jnp.zeros_like(v)) for k, v in step_sums.items()}
        step_sums.update(
            loss_sum=jnp.where(ok, loss, 0.0),
            grad_norm_sum=jnp.where(ok, grad_norm, 0.0),
            input_token_count=okf * jnp.sum(batch["encoder_input_tokens"] != 0).astype(jnp.float32),
            steps=okf,
            nonfinite_loss=1.0 - loss_ok.astype(jnp.float32),
            nonfinite_grad_norm=1.0 - grad_ok.astype(jnp.float32),
            nonfinite_params=1.0 - params_ok.astype(jnp.float32),
            skipped_steps=(1.0 - okf) if skip_nonfinite else jnp.zeros((), jnp.float32),
        )
        this_step = (state.step + 1).astype(jnp.int32)
        new_sums = {k: sums[k] + v for k, v in step_sums.items()}
        new_sums[FIRST_NONFINITE] = jnp.minimum(sums[FIRST_NONFINITE], jnp.where(ok, NO_STEP, this_step))
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), new_sums

    replicated = partitioning.replicated(mesh)
    sums_shardings = jax.tree.map(lambda _: replicated, zero_metric_sums(num_domains))
    keys = BATCH_KEYS + (KD_KEYS if kd is not None and teacher is None else ())
    batch_in = {k: batch_shardings[k] for k in keys}
    jitted = jax.jit(
        train_step,
        in_shardings=(state_shardings, sums_shardings, batch_in, teacher.shardings if teacher else None),
        out_shardings=(state_shardings, sums_shardings),
        donate_argnums=(0, 1),
    )
    teacher_params = teacher.params if teacher else None
    return TrainStep(jitted=jitted, mesh=mesh, rules=rules, num_domains=num_domains, teacher_params=teacher_params)


def make_eval_step(
    model: Model,
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
    eval_shardings = {k: batch_shardings[k] for k in BATCH_KEYS}  # eval batches never carry teacher logits
    jitted = jax.jit(eval_step, in_shardings=(param_shardings, eval_shardings), out_shardings=replicated)

    def run(params: Any, batch: Batch) -> dict[str, jax.Array]:
        with partitioning.mesh_context(mesh, rules):
            return jitted(params, batch)

    return run


def batch_shardings(mesh: Mesh, rules: partitioning.LogicalRules) -> dict[str, Any]:
    """Every batch feature is [batch, length] (the stored top-k [batch, length, k]), sharded along the batch."""
    sharding = partitioning.batch_sharding(mesh, rules, 2)
    out = {k: sharding for k in BATCH_KEYS + KD_KEYS}
    out.update({k: partitioning.batch_sharding(mesh, rules, 3) for k in ("kd_ids", "kd_logp")})
    return out


def batch_spec(
    batch_size: int, max_input_len: int, max_target_len: int, shardings: Mapping[str, Any], kd_k: int = 0
) -> dict[str, jax.ShapeDtypeStruct]:
    """The global batch the input pipeline produces, as shapes, dtypes and shardings (to compile ahead).

    ``kd_k`` > 0 adds the stored teacher top-k features (KD_KEYS) with k entries per token.
    """

    def spec(key: str) -> jax.ShapeDtypeStruct:
        length = max_input_len if key.startswith("encoder") else max_target_len
        shape = (batch_size, length, kd_k) if key in ("kd_ids", "kd_logp") else (batch_size, length)
        dtype = jnp.float32 if key in ("decoder_loss_weights", "kd_logp", "kd_residual", "kd_mask") else jnp.int32
        return jax.ShapeDtypeStruct(shape, dtype, sharding=shardings[key])

    return {k: spec(k) for k in BATCH_KEYS + (KD_KEYS if kd_k else ())}
