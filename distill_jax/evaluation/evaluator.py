"""Per-domain evaluation of a student on held-out shards: loss/token accuracy, and greedy decoding scored by answer.

Runs identically inside the train loop (periodic eval) and in the `eval` job. Every process
evaluates its own slice; per-domain sums are added across processes, so the numbers do not
depend on how many hosts ran.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from distill_jax.data.pipeline import Batch, host_to_global
from distill_jax.evaluation import metrics
from distill_jax.models.decoding import greedy_decode
from distill_jax.models.family import Model
from distill_jax.training import partitioning


def _sum_over_processes(x: np.ndarray) -> np.ndarray:
    if jax.process_count() == 1:
        return x
    return np.asarray(multihost_utils.process_allgather(x)).sum(axis=0)


@dataclasses.dataclass
class Evaluator:
    """Holds the compiled eval functions and this process's eval batches for one (model, mesh, data) setup."""

    model: Model
    mesh: Mesh
    rules: partitioning.LogicalRules
    eval_step: Callable[[Any, Any], dict[str, jax.Array]]
    batch_shardings: Mapping[str, Any]
    domain_names: Sequence[str]
    loss_batches: Sequence[Batch]
    decode_batches: Sequence[Batch]
    decode_text: Callable[[np.ndarray], str]
    max_decode_len: int

    def __post_init__(self):
        self._decode = jax.jit(functools.partial(greedy_decode, self.model, max_decode_length=self.max_decode_len))

    def _to_device(self, batch: Batch) -> dict[str, jax.Array]:
        return host_to_global(batch, self.batch_shardings)

    def loss_metrics(self, params: Any) -> dict[str, dict[str, float]]:
        """Per-domain mean token loss, token accuracy and example count over the loss batches."""
        totals: dict[str, np.ndarray] | None = None
        for batch in self.loss_batches:
            sums = self.eval_step(params, self._to_device(batch))
            sums = {k: np.asarray(v) for k, v in sums.items()}
            totals = sums if totals is None else {k: totals[k] + sums[k] for k in totals}
        result: dict[str, dict[str, float]] = {}
        if totals is None:
            return result
        for i, d in enumerate(self.domain_names):
            tokens = totals["token_count"][i]
            if tokens > 0:
                result[d] = {
                    "loss": float(totals["ce_sum"][i] / tokens),
                    "token_accuracy": float(totals["correct_sum"][i] / tokens),
                    "count": int(totals["example_count"][i]),
                }
        return result

    def decode_metrics(
        self, params: Any, num_samples_to_log: int = 0
    ) -> tuple[dict[str, dict[str, float]], list[dict[str, str]]]:
        """Greedy-decodes the decode batches; per-domain exact match of the whole output and of the extracted answer."""
        names = ("exact_match", "answer_accuracy", "answer_f1", "count")
        sums = np.zeros((len(self.domain_names), len(names)), np.float64)
        samples: list[dict[str, str]] = []
        batch_spec = partitioning.batch_sharding(self.mesh, self.rules, 2).spec
        for batch in self.decode_batches:
            device_batch = self._to_device(batch)
            with partitioning.mesh_context(self.mesh, self.rules):
                tokens = self._decode(params, device_batch["encoder_input_tokens"])
            local_tokens = np.asarray(multihost_utils.global_array_to_host_local_array(tokens, self.mesh, batch_spec))
            for row in range(local_tokens.shape[0]):
                if batch["decoder_loss_weights"][row].sum() == 0:
                    continue  # Padding row added to fill the last batch.
                prediction = self.decode_text(local_tokens[row])
                reference = self.decode_text(batch["decoder_target_tokens"][row])
                d = int(batch["decoder_domain_ids"][row, 0])
                answer, reference_answer = metrics.extract_answer(prediction), metrics.extract_answer(reference)
                sums[d, 0] += metrics.exact_match(prediction, reference)
                sums[d, 1] += metrics.exact_match(answer, reference_answer)
                sums[d, 2] += metrics.token_f1(answer, reference_answer)  # BalDistill's QA metric.
                sums[d, 3] += 1
                if len(samples) < num_samples_to_log:
                    samples.append(
                        {
                            "domain": self.domain_names[d],
                            "input": self.decode_text(batch["encoder_input_tokens"][row]),
                            "prediction": prediction,
                            "reference": reference,
                        }
                    )
        sums = _sum_over_processes(sums)
        result = {}
        for i, d in enumerate(self.domain_names):
            if sums[i, 3] > 0:
                result[d] = {
                    "exact_match": sums[i, 0] / sums[i, 3],
                    "answer_accuracy": sums[i, 1] / sums[i, 3],
                    "answer_f1": sums[i, 2] / sums[i, 3],
                    "decoded": int(sums[i, 3]),
                }
        return result, samples

    def run(self, params: Any, num_samples_to_log: int = 0) -> tuple[dict[str, dict[str, float]], list[dict[str, str]]]:
        """All metrics per domain, merged: {domain: {loss, token_accuracy, count, exact_match, answer_accuracy, decoded}}."""
        per_domain = self.loss_metrics(params)
        decoded, samples = self.decode_metrics(params, num_samples_to_log) if self.decode_batches else ({}, [])
        for d, values in decoded.items():
            per_domain.setdefault(d, {}).update(values)
        return per_domain, samples


def summary_scalars(
    per_domain: Mapping[str, Mapping[str, float]], head: Sequence[str], tail: Sequence[str], prefix: str = "eval"
) -> dict[str, float]:
    """Flat scalars for TensorBoard: per-domain values plus head/tail/macro/micro aggregates."""
    out: dict[str, float] = {}
    for d, values in per_domain.items():
        for k, v in values.items():
            if k not in ("count", "decoded"):
                out[f"{prefix}/{k}/{d}"] = float(v)
    for group, values in metrics.aggregate(per_domain, head, tail).items():
        for k, v in values.items():
            if k not in ("count", "decoded"):
                out[f"{prefix}/{group}/{k}"] = float(v)
    return out
