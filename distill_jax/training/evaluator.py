"""Per-domain evaluation of a student on held-out shards: loss/token accuracy, and greedy decoding scored by answer.

Runs identically inside the train loop (periodic eval), the distill scheduler's stage evals and the
`eval` job. Every process evaluates its own slice; per-domain sums are added across processes, so the
numbers do not depend on how many hosts ran.

The decoded rows are also scored teacher-forced, so accuracy and loss are read on the *same* rows:
`loss_on_decoded` and `forced_exact` (the share of rows whose every reference token is the model's
argmax given the reference prefix). Greedy decoding must then reproduce at least those rows
(`evaluation.consistency` proves the decoder computes what scoring computes); a low loss with a low
`forced_exact` means the loss is carried by easy continuation tokens, not by right answers.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from distill_jax import metrics, multihost
from distill_jax.data.pipeline import Batch, host_to_global
from distill_jax.models.family import Model
from distill_jax.models.seq2seq import Seq2SeqModel
from distill_jax.training import partitioning
from distill_jax.training.inference import InferenceRunner


def _decode_and_score(
    model: Seq2SeqModel,
    max_decode_len: int,
    params: Any,
    encoder_tokens: jax.Array,
    targets: jax.Array,
    weights: jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Greedy tokens of each row, and the row's reference scored teacher-forced (Seq2SeqModel.score)."""
    return model.predict(params, encoder_tokens, max_decode_length=max_decode_len), *model.score(
        params, encoder_tokens, targets, weights
    )


def _text_id(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


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
    # Example ids of this process's decode-batch rows (row-major, padding rows excluded), when known.
    decode_ids: Sequence[Sequence[str]] = ()

    def __post_init__(self):
        rows = len(self.decode_batches[0]["encoder_input_tokens"]) if self.decode_batches else 0
        self._runner = InferenceRunner(self.mesh, self.rules, rows)
        self._decode_and_score = self._runner.jit(
            functools.partial(_decode_and_score, Seq2SeqModel(self.model), self.max_decode_len)
        )

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

    def decode_metrics(self, params: Any) -> tuple[dict[str, dict[str, float]], list[dict[str, Any]]]:
        """Greedy-decodes the decode batches and scores the same rows teacher-forced.

        Returns per-domain metrics (exact match of the whole output and of the extracted answer,
        answer token-F1, loss and forced exactness on these rows) and one record per decoded row of
        this process (id, domain, input, prediction, reference, answers, correct).
        """
        names = (*metrics.ANSWER_METRICS, "count", "ce", "tokens", "forced_exact")
        column = {name: i for i, name in enumerate(names)}
        sums = np.zeros((len(self.domain_names), len(names)), np.float64)
        records: list[dict[str, Any]] = []
        for b, batch in enumerate(self.decode_batches):
            local_tokens, ce, count, forced = self._decode_and_score(
                params, batch["encoder_input_tokens"], batch["decoder_target_tokens"], batch["decoder_loss_weights"]
            )
            ids = self.decode_ids[b] if b < len(self.decode_ids) else ()
            for row in range(local_tokens.shape[0]):
                if batch["decoder_loss_weights"][row].sum() == 0:
                    continue  # Padding row added to fill the last batch.
                prediction = self.decode_text(local_tokens[row])
                reference = self.decode_text(batch["decoder_target_tokens"][row])
                d = int(batch["decoder_domain_ids"][row, 0])
                scored, values = metrics.score_answer(prediction, reference)
                sums[d] += (*values.values(), 1, ce[row], count[row], float(forced[row]))
                records.append(
                    {
                        "id": ids[row] if row < len(ids) else None,
                        "domain": self.domain_names[d],
                        "input": self.decode_text(batch["encoder_input_tokens"][row]),
                        "prediction": prediction,
                        "reference": reference,
                        "answer": scored.answer,
                        "reference_answer": scored.reference_answer,
                        "correct": bool(values["answer_accuracy"]),
                        "loss": float(ce[row] / max(count[row], 1.0)),
                    }
                )
        sums = multihost.sum_over_processes(sums)
        result = {}
        for i, d in enumerate(self.domain_names):
            n = sums[i, column["count"]]
            if n > 0:
                result[d] = {name: sums[i, column[name]] / n for name in metrics.ANSWER_METRICS}
                result[d].update(
                    decoded=int(n),
                    loss_on_decoded=sums[i, column["ce"]] / max(sums[i, column["tokens"]], 1.0),
                    forced_exact=sums[i, column["forced_exact"]] / n,
                )
        return result, records

    def run_with_records(self, params: Any) -> tuple[dict[str, dict[str, float]], list[dict[str, Any]]]:
        """All metrics per domain, merged, and this process's per-example decode records."""
        per_domain = self.loss_metrics(params)
        decoded, records = self.decode_metrics(params) if self.decode_batches else ({}, [])
        for d, values in decoded.items():
            per_domain.setdefault(d, {}).update(values)
        return per_domain, records

    def run(self, params: Any, num_samples_to_log: int = 0) -> tuple[dict[str, dict[str, float]], list[dict[str, str]]]:
        """All metrics per domain, merged: {domain: {loss, token_accuracy, count, exact_match, answer_accuracy, decoded}}."""
        per_domain, records = self.run_with_records(params)
        keys = ("domain", "input", "prediction", "reference")
        return per_domain, [{k: r[k] for k in keys} for r in records[:num_samples_to_log]]


def decode_row_ids(
    sources: Mapping[str, Sequence[Any]],
    *,
    batch_size: int,
    max_per_domain: int,
    shard_index: int = 0,
    shard_count: int = 1,
) -> list[list[str]]:
    """Example ids of `pipeline.build_eval_batches`' rows, batch by batch (same order, same slice)."""
    ids: list[str] = []
    for d in sorted(sources):
        n = len(sources[d]) if not max_per_domain else min(len(sources[d]), max_per_domain)
        ids.extend(_text_id(sources[d][i].get("id", "")) for i in range(shard_index, n, shard_count))
    return [ids[b : b + batch_size] for b in range(0, len(ids), batch_size)]


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
