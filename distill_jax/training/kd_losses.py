"""Word-level knowledge-distillation losses: divergences between a teacher's and the student's next-token
distributions, per target token, with temperature, alpha mixing with CE, and schedules.

The teacher comes either dense (the full distribution: online KD) or sparse (its stored top-k log-probs
plus the residual mass 1 - sum(top-k), from ``distill-jax teacher-logits``). A sparse teacher does not
define a distribution over the vocabulary, so a named *missing-mass policy* turns (teacher top-k, student
logits) into two distributions over one common support, and every divergence is then a plain function
of two log-distributions along the last axis:

- ``renormalize`` (MaxText's sparse KD): support = the teacher's top-k; the teacher's top-k and the
  student's probabilities at those ids are each renormalised to sum to 1. A proper divergence on that
  support: 0 when student = teacher whatever k; the student's mass outside the top-k is left to CE.
- ``tail_bucket`` (TRL's ``loss_add_tail``): support = top-k + one bucket holding the rest; the teacher's
  bucket is the stored residual mass, the student's is 1 - its top-k mass. Also 0 when student = teacher.
- ``uniform_rest`` (DistillKit's ``symmetric_uniform``): support = the whole vocabulary; the teacher's
  residual mass is spread uniformly over the V - k ids outside its top-k.

With k = V all three equal the dense divergence (tested). Temperature: the student is ``softmax(z/T)``;
the teacher's stored log-probs (taken at the recorded temperature tau) are rescaled by tau/T as logits,
the tail taken as uniform over the V - k other ids (exact when T = tau, and exact for ``renormalize``
at any T). The KD term is multiplied by T^2 (Hinton et al.: keeps its gradient scale independent of T).

Every loss here is per token ([B, T]); callers weight by a mask (padding, packed-row boundaries and rows
without logits get weight 0) and sum, exactly like the CE sums in ``losses.py``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

# Log-mass floor of a tail (teacher's or student's) that holds (numerically) nothing: exp(-80) is still a
# normal float32, so p * log(p / q) stays finite and ~0 where both tails are empty (k = V).
_LOG_FLOOR = -80.0

Divergence = Callable[[jax.Array, jax.Array], jax.Array]
Policy = Callable[[jax.Array, jax.Array, jax.Array, jax.Array, int], tuple[jax.Array, jax.Array]]


def _xlogy_diff(p: jax.Array, log_p: jax.Array, log_q: jax.Array) -> jax.Array:
    """sum p * (log p - log q) with 0 * log 0 = 0 (a zero-mass teacher tail, k = V)."""
    safe = jnp.where(p > 0, log_p - log_q, 0.0)
    return jnp.sum(jnp.where(p > 0, p * safe, 0.0), axis=-1)


def forward_kl(log_p: jax.Array, log_q: jax.Array) -> jax.Array:
    """KL(teacher || student) per token: mean-seeking, the classic word-level KD."""
    return _xlogy_diff(jnp.exp(log_p), log_p, log_q)


def reverse_kl(log_p: jax.Array, log_q: jax.Array) -> jax.Array:
    """KL(student || teacher) per token: mode-seeking."""
    return _xlogy_diff(jnp.exp(log_q), log_q, log_p)


def generalized_jsd(beta: float) -> Divergence:
    """beta * KL(p || m) + (1 - beta) * KL(q || m), m = beta p + (1 - beta) q (TRL's GKD convention).

    beta -> 0 tends to forward KL scaled by beta, beta = 0.5 is the symmetric Jensen-Shannon divergence;
    the endpoints are exactly forward KL (beta=0) and reverse KL (beta=1), as in TRL.
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"kd.jsd_beta must be in [0, 1], got {beta}")
    if beta == 0.0:
        return forward_kl
    if beta == 1.0:
        return reverse_kl

    def jsd(log_p: jax.Array, log_q: jax.Array) -> jax.Array:
        log_m = jnp.logaddexp(log_p + math.log(beta), log_q + math.log(1.0 - beta))
        return beta * forward_kl(log_p, log_m) + (1.0 - beta) * forward_kl(log_q, log_m)

    return jsd


def divergence(kind: str, jsd_beta: float = 0.5) -> Divergence:
    """The per-token divergence named by ``kd.loss`` (a registry, not an if-chain)."""
    registry: dict[str, Callable[[], Divergence]] = {
        "forward_kl": lambda: forward_kl,
        "reverse_kl": lambda: reverse_kl,
        "jsd": lambda: generalized_jsd(jsd_beta),
    }
    if kind not in registry:
        raise ValueError(f"kd.loss={kind!r}: use one of {sorted(registry)}")
    return registry[kind]()


def teacher_at_temperature(
    topk_logp: jax.Array, residual: jax.Array, vocab: int, stored_temperature: float, temperature: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Stored top-k log-probs and residual (at ``stored_temperature``) -> (top-k log-probs, log residual) at T.

    The V - k tail ids are taken as sharing the residual uniformly; scaling every log-prob by tau/T and
    renormalising is then the teacher at T (identity when T = tau).
    """
    k = topk_logp.shape[-1]
    scale = stored_temperature / temperature
    scaled = topk_logp.astype(jnp.float32) * scale
    if vocab == k:  # No tail ids: the residual is fp16 rounding noise, not mass.
        return jax.nn.log_softmax(scaled, axis=-1), jnp.full(residual.shape, _LOG_FLOOR)
    log_r = jnp.log(jnp.maximum(residual.astype(jnp.float32), 0.0))
    log_tail_each = (log_r - math.log(vocab - k)) * scale
    log_tail = log_tail_each + math.log(vocab - k)
    log_z = jnp.logaddexp(jax.nn.logsumexp(scaled, axis=-1), log_tail)
    # Floored like the student's tail: a zero residual (fp16 underflow) must not make reverse KL infinite.
    return scaled - log_z[..., None], jnp.maximum(log_tail - log_z, _LOG_FLOOR)


def _renormalize(
    student_logp: jax.Array, ids: jax.Array, teacher_logp: jax.Array, teacher_log_tail: jax.Array, vocab: int
) -> tuple[jax.Array, jax.Array]:
    q = jnp.take_along_axis(student_logp, ids, axis=-1)
    return jax.nn.log_softmax(teacher_logp, axis=-1), jax.nn.log_softmax(q, axis=-1)


def _tail_bucket(
    student_logp: jax.Array, ids: jax.Array, teacher_logp: jax.Array, teacher_log_tail: jax.Array, vocab: int
) -> tuple[jax.Array, jax.Array]:
    q = jnp.take_along_axis(student_logp, ids, axis=-1)
    # log(1 - sum q_topk), floored: at k = V the student's tail is 0 and so is the teacher's.
    q_tail = jnp.log(jnp.maximum(1.0 - jnp.sum(jnp.exp(q), axis=-1), math.exp(_LOG_FLOOR)))
    return (
        jnp.concatenate([teacher_logp, teacher_log_tail[..., None]], axis=-1),
        jnp.concatenate([q, q_tail[..., None]], axis=-1),
    )


def _uniform_rest(
    student_logp: jax.Array, ids: jax.Array, teacher_logp: jax.Array, teacher_log_tail: jax.Array, vocab: int
) -> tuple[jax.Array, jax.Array]:
    k = ids.shape[-1]
    # Floored, not -inf: padded rows (ids all 0) leave ids unscattered even at k = V, and an infinite value
    # there would turn the masked-out token's zero cotangent into a NaN gradient.
    each = teacher_log_tail - math.log(vocab - k) if vocab > k else jnp.full(teacher_log_tail.shape, _LOG_FLOOR)
    flat = jnp.broadcast_to(each[..., None], student_logp.shape).reshape(-1, vocab)
    rows = jnp.arange(flat.shape[0])[:, None]
    # A scatter of the k stored values into the uniform tail ([N, V], the logits' size; a one-hot would be k x V).
    dense = flat.at[rows, ids.reshape(-1, k)].set(teacher_logp.reshape(-1, k))
    return dense.reshape(student_logp.shape), student_logp


MISSING_MASS_POLICIES: dict[str, Policy] = {
    "renormalize": _renormalize,
    "tail_bucket": _tail_bucket,
    "uniform_rest": _uniform_rest,
}


def sparse_kd_per_token(
    student_logits: jax.Array,
    topk_ids: jax.Array,
    topk_logp: jax.Array,
    residual: jax.Array,
    *,
    kind: str = "forward_kl",
    policy: str = "renormalize",
    temperature: jax.Array | float = 1.0,
    stored_temperature: float = 1.0,
    jsd_beta: float = 0.5,
) -> jax.Array:
    """[B, T] divergence (times T^2) between the stored sparse teacher and the student at temperature T."""
    if policy not in MISSING_MASS_POLICIES:
        raise ValueError(f"kd.missing_mass={policy!r}: use one of {sorted(MISSING_MASS_POLICIES)}")
    vocab = student_logits.shape[-1]
    temperature = jnp.asarray(temperature, jnp.float32)
    student_logp = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature, axis=-1)
    teacher_logp, teacher_log_tail = teacher_at_temperature(
        jax.lax.stop_gradient(topk_logp), jax.lax.stop_gradient(residual), vocab, stored_temperature, temperature
    )
    log_p, log_q = MISSING_MASS_POLICIES[policy](student_logp, topk_ids, teacher_logp, teacher_log_tail, vocab)
    return divergence(kind, jsd_beta)(log_p, log_q) * jnp.square(temperature)


def dense_kd_per_token(
    student_logits: jax.Array,
    teacher_logits: jax.Array,
    *,
    kind: str = "forward_kl",
    temperature: jax.Array | float = 1.0,
    jsd_beta: float = 0.5,
) -> jax.Array:
    """[B, T] divergence (times T^2) with the teacher's full distribution (online KD)."""
    temperature = jnp.asarray(temperature, jnp.float32)
    log_p = jax.nn.log_softmax(jax.lax.stop_gradient(teacher_logits).astype(jnp.float32) / temperature, axis=-1)
    log_q = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature, axis=-1)
    return divergence(kind, jsd_beta)(log_p, log_q) * jnp.square(temperature)


def mix_with_ce(kd: jax.Array, ce: jax.Array, kd_mask: jax.Array, alpha: jax.Array | float) -> jax.Array:
    """alpha * KD + (1 - alpha) * CE where the token has teacher logits, plain CE where it has none.

    ``kd`` is zeroed where ``kd_mask`` is 0 before mixing, so a masked token's (arbitrary, padded) KD value
    can never leak in, not even as NaN.
    """
    has = kd_mask > 0
    kd = jnp.where(has, kd, 0.0)
    return jnp.where(has, alpha * kd + (1.0 - alpha) * ce, ce)


def _progress(step: jax.Array, steps: int) -> jax.Array:
    return jnp.clip(jnp.asarray(step, jnp.float32) / max(int(steps), 1), 0.0, 1.0)


SCHEDULES: dict[str, Callable[[jax.Array], jax.Array]] = {
    "constant": lambda t: jnp.zeros_like(t),
    "linear": lambda t: t,
    "cosine": lambda t: 0.5 * (1.0 - jnp.cos(jnp.pi * t)),  # slow start and end, as optax's cosine decay
}


def schedule(kind: str, start: float, end: float, steps: int) -> Callable[[jax.Array], jax.Array]:
    """step -> value moving from ``start`` (step 0) to ``end`` (step ``steps``) by ``kind``, then held."""
    if kind not in SCHEDULES:
        raise ValueError(f"kd schedule {kind!r}: use one of {sorted(SCHEDULES)}")
    shape = SCHEDULES[kind]

    def value(step: jax.Array) -> jax.Array:
        return start + (end - start) * shape(_progress(step, steps))

    return value


@dataclasses.dataclass(frozen=True)
class KDSettings:
    """What the train step needs to know about KD (from the config's kd section and the stored logits' meta)."""

    kind: str = "forward_kl"
    policy: str = "renormalize"
    jsd_beta: float = 0.5
    top_k: int = 0  # the k the batches carry
    stored_temperature: float = 1.0
    alpha: tuple[str, float, float] = ("constant", 0.5, 0.5)  # (schedule, start, end)
    temperature: tuple[str, float, float] = ("constant", 1.0, 1.0)
    schedule_steps: int = 1

    def __post_init__(self) -> None:
        divergence(self.kind, self.jsd_beta)  # named errors for a wrong kind or beta, before any compile
        if self.policy not in MISSING_MASS_POLICIES:
            raise ValueError(f"kd.missing_mass={self.policy!r}: use one of {sorted(MISSING_MASS_POLICIES)}")
        for name, (kind, start, end) in (("alpha", self.alpha), ("temperature", self.temperature)):
            schedule(kind, start, end, self.schedule_steps)
            low, high = (0.0, 1.0) if name == "alpha" else (1e-6, float("inf"))
            if not (low <= start <= high and low <= end <= high):
                raise ValueError(f"kd.{name} and kd.{name}_end must be in [{low}, {high}], got {start}, {end}")

    def alpha_at(self, step: jax.Array) -> jax.Array:
        return schedule(*self.alpha, self.schedule_steps)(step)

    def temperature_at(self, step: jax.Array) -> jax.Array:
        return schedule(*self.temperature, self.schedule_steps)(step)

    def per_token(self, student_logits: jax.Array, batch: Mapping[str, jax.Array], step: jax.Array) -> jax.Array:
        """[B, T] KD loss of a batch carrying the stored top-k (pipeline.KD_FEATURES)."""
        return sparse_kd_per_token(
            student_logits,
            batch["kd_ids"],
            batch["kd_logp"],
            batch["kd_residual"],
            kind=self.kind,
            policy=self.policy,
            temperature=self.temperature_at(step),
            stored_temperature=self.stored_temperature,
            jsd_beta=self.jsd_beta,
        )

    @classmethod
    def from_config(cls, kd: Any, *, train_steps: int, stored_k: int, stored_temperature: float) -> KDSettings:
        """From ``config.kd`` and the stored logits' k and temperature (kd.top_k may only take fewer)."""
        top_k = int(kd.top_k) or stored_k
        if not 1 <= top_k <= stored_k:
            raise ValueError(
                f"kd.top_k={kd.top_k} but {kd.logits_dir} stores k={stored_k}; use 0 or at most {stored_k}"
            )
        return cls(
            kind=kd.loss,
            policy=kd.missing_mass,
            jsd_beta=float(kd.jsd_beta),
            top_k=top_k,
            stored_temperature=stored_temperature,
            alpha=(kd.alpha_schedule, float(kd.alpha), float(kd.alpha_end)),
            temperature=(kd.temperature_schedule, float(kd.temperature), float(kd.temperature_end)),
            schedule_steps=int(kd.schedule_steps) or int(train_steps),
        )


@dataclasses.dataclass(frozen=True)
class OnlineKDSettings(KDSettings):
    """KD against a teacher computed in the step (batch["teacher_logits"], [B, T, V]) instead of stored top-k.

    ``top_k`` = 0 uses the teacher's whole distribution (dense); k > 0 takes its top-k on device and applies the
    missing-mass policy, i.e. the stored mode's loss without the files (at the current T, so no tau/T rescaling).
    """

    def per_token(self, student_logits: jax.Array, batch: Mapping[str, jax.Array], step: jax.Array) -> jax.Array:
        temperature = self.temperature_at(step)
        teacher = batch["teacher_logits"]
        if not self.top_k:
            return dense_kd_per_token(
                student_logits, teacher, kind=self.kind, temperature=temperature, jsd_beta=self.jsd_beta
            )
        logp = jax.nn.log_softmax(jax.lax.stop_gradient(teacher).astype(jnp.float32) / temperature, axis=-1)
        values, ids = jax.lax.top_k(logp, self.top_k)
        residual = jnp.maximum(1.0 - jnp.sum(jnp.exp(values), axis=-1), 0.0)
        return sparse_kd_per_token(
            student_logits,
            ids,
            values,
            residual,
            kind=self.kind,
            policy=self.policy,
            temperature=temperature,
            stored_temperature=temperature,
            jsd_beta=self.jsd_beta,
        )

    @classmethod
    def online_from_config(cls, kd: Any, *, train_steps: int, vocab_size: int) -> OnlineKDSettings:
        """From ``config.kd`` with a teacher in the loop (``kd.top_k`` 0 = dense, else at most the vocabulary)."""
        if not 0 <= int(kd.top_k) <= vocab_size:
            raise ValueError(f"kd.top_k={kd.top_k}: use 0 (dense KD) or at most the vocabulary size {vocab_size}")
        return cls(
            kind=kd.loss,
            policy=kd.missing_mass,
            jsd_beta=float(kd.jsd_beta),
            top_k=int(kd.top_k),
            alpha=(kd.alpha_schedule, float(kd.alpha), float(kd.alpha_end)),
            temperature=(kd.temperature_schedule, float(kd.temperature), float(kd.temperature_end)),
            schedule_steps=int(kd.schedule_steps) or int(train_steps),
        )
