"""Online KD: a frozen teacher next to the student on the same mesh, its forward inside the student's train step
(loaded by kd_setup.load_online_teacher).

The teacher is a training workdir (its latest checkpoint) or a Hugging Face T5/BART directory over the
student's vocabulary. Its params are sharded over the student's devices by its own logical rules
(``kd.teacher_logical_axis_rules``, default the student's), e.g. FSDP-sharded over the data axis while the small
student stays replicated; it has no optimizer state, no dropout and is never checkpointed: the step receives
its params as a separate, undonated argument and uses only its logits, under ``stop_gradient``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from distill_jax.models import family
from distill_jax.models.family import Model, ModelConfig
from distill_jax.models.seq2seq import Seq2SeqModel
from distill_jax.training import partitioning
from distill_jax.training.memory import per_device_bytes


@dataclasses.dataclass(frozen=True)
class OnlineTeacher:
    """A frozen teacher: its model, its params on the student's mesh and the rules that sharded them."""

    model: Model
    model_config: ModelConfig
    params: Any
    shardings: Any  # NamedShardings of ``params`` (the jitted step's in_shardings for them)
    rules: partitioning.LogicalRules
    description: dict[str, Any]

    def with_logits(self, params: Any, batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
        """``batch`` plus the teacher's logits on its targets (teacher-forced, no dropout) and the KD mask.

        Traced inside the student's step: the teacher's activation constraints follow its own rules. Every real
        target token has a teacher distribution, so kd_mask is the loss weights' support (padding and the gaps of
        packed rows get none).
        """
        with nn.logical_axis_rules(list(self.rules)):
            logits = Seq2SeqModel(self.model).logits(params, batch)
        kd_mask = (batch["decoder_loss_weights"] > 0).astype(jnp.float32)
        return {**batch, "teacher_logits": jax.lax.stop_gradient(logits), "kd_mask": kd_mask}

    def forward_flops_per_example(self, input_len: int, target_len: int) -> float:
        """The teacher's forward FLOPs for one padded example: a third of family.flops_per_token's training count."""
        return family.flops_per_token(self.model_config, input_len, target_len) * target_len / 3.0

    def bytes_per_device(self) -> int:
        """Bytes of teacher params one device holds (its shards; replicated leaves count whole)."""
        return per_device_bytes(self.params)
