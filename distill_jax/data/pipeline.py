"""The grain input pipeline: per-domain shards -> weighted mixture -> fixed-shape batches -> device arrays.

Why this shape:
- Each domain is its own random-access source, shuffled and repeated on its own, then mixed with
  explicit weights. Changing the weights between training phases (what the stage scheduler does) is
  building a new dataset; nothing is re-written on disk.
- grain's MapDataset is index-based, so the whole order is a pure function of the seed and the
  iterator state is a small dict: checkpointing it with the model gives exact resume.
- Each process reads only its own interleaved slice of the one global mixture stream and builds
  its share of the global batch (the same examples per global batch for any process count); `make_array_from_process_local_data` assembles the global
  array without any host ever holding all of it.
- Shapes are fixed (padding to data.max_*_len), so the train step compiles once.
"""

from __future__ import annotations

import dataclasses
import math
import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import grain
import jax
import numpy as np

Batch = dict[str, np.ndarray]

# Stored teacher top-k per target token (distill_jax/data/kd_logits.py), carried like the targets through
# padding and packing. kd_mask is 1 on tokens that have teacher logits: rows without any fall back to CE.
KD_FEATURES = ("kd_ids", "kd_logp", "kd_residual", "kd_mask")


def mixture_weights(
    domain_counts: Mapping[str, int], mixture: str, explicit: Mapping[str, float] | None = None
) -> dict[str, float]:
    """Normalised sampling weights per domain.

    mixture: "natural" (proportional to examples), "uniform", "temperature:T" (p ~ n^(1/T), T>1
    flattens toward uniform, as in multilingual T5 sampling) or "explicit" (weights from `explicit`,
    domains not named get 0). Domains with no examples always get 0.
    """
    counts = {d: int(n) for d, n in domain_counts.items()}
    if mixture == "natural":
        raw = {d: float(n) for d, n in counts.items()}
    elif mixture == "uniform":
        raw = {d: 1.0 if n > 0 else 0.0 for d, n in counts.items()}
    elif mixture.startswith("temperature:"):
        try:
            temperature = float(mixture.split(":", 1)[1])
        except ValueError:
            temperature = -1.0
        if temperature <= 0:
            raise ValueError(f"data.mixture={mixture!r}: the temperature must be a positive number, e.g. temperature:2")
        raw = {d: float(n) ** (1.0 / temperature) if n > 0 else 0.0 for d, n in counts.items()}
    elif mixture == "explicit":
        explicit = dict(explicit or {})
        unknown = sorted(set(explicit) - set(counts))
        if unknown:
            raise ValueError(f"data.domain_weights names domains not in the data: {unknown}; known: {sorted(counts)}")
        if any(w < 0 for w in explicit.values()):
            raise ValueError(f"data.domain_weights must be >= 0, got {explicit}")
        raw = {d: float(explicit.get(d, 0.0)) if counts[d] > 0 else 0.0 for d in counts}
    else:
        raise ValueError(f"data.mixture={mixture!r}: use natural, uniform, temperature:T or explicit")
    total = sum(raw.values())
    if total <= 0:
        raise ValueError(f"data mixture {mixture!r} gives every domain weight 0 (counts={counts})")
    return {d: w / total for d, w in raw.items()}


def _truncate(tokens: Any, length: int, eos_id: int) -> np.ndarray:
    """An over-long sequence is cut to `length` and keeps a final EOS; shorter ones are unchanged."""
    tokens = np.asarray(tokens, np.int32)
    if tokens.shape[0] <= length:
        return tokens
    out = tokens[:length].copy()
    out[-1] = eos_id
    return out


def _pad(tokens: np.ndarray, length: int) -> np.ndarray:
    out = np.zeros((length, *tokens.shape[1:]), tokens.dtype)
    out[: tokens.shape[0]] = tokens
    return out


@dataclasses.dataclass(frozen=True)
class ToExample(grain.transforms.Map):
    """A shard record -> variable-length token arrays plus the domain index of every target token."""

    domain_index: Mapping[str, int]
    max_input_len: int
    max_target_len: int
    eos_id: int = 1
    kd: Any = None  # kd_logits.StoredLogits: adds KD_FEATURES, looked up by the record's id
    kd_k: int = 0  # the first kd_k of the stored top-k (sorted by probability) are used; 0 = all stored

    def map(self, record: dict[str, Any]) -> Batch:
        domain = record["domain"]
        domain = domain.decode("utf-8") if isinstance(domain, bytes) else domain
        targets = _truncate(record["targets"], self.max_target_len, self.eos_id)
        out = {
            "inputs": _truncate(record["inputs"], self.max_input_len, self.eos_id),
            "targets": targets,
            "target_domains": np.full(targets.shape, self.domain_index[domain], np.int32),
        }
        if self.kd is not None:
            out.update(self._kd_features(record, len(targets), len(record["targets"])))
        return out

    def _kd_features(self, record: dict[str, Any], n: int, stored_len: int) -> Batch:
        row_id = record["id"].decode("utf-8") if isinstance(record["id"], bytes) else record["id"]
        found, k = self.kd.get(row_id), self.kd_k or self.kd.k
        # A row the teacher never saw, or whose targets were cut here (the stored distributions would belong
        # to other positions), trains on CE alone: zeros with kd_mask 0.
        if found is None or len(found[2]) != stored_len or n != stored_len:
            return {
                "kd_ids": np.zeros((n, k), np.int32),
                "kd_logp": np.zeros((n, k), np.float32),
                "kd_residual": np.zeros((n,), np.float32),
                "kd_mask": np.zeros((n,), np.float32),
            }
        ids, logp, residual = found
        if k < ids.shape[1]:  # dropping stored entries moves their mass into the residual
            residual = np.maximum(residual + np.exp(logp[:, k:]).sum(-1), 0.0).astype(np.float32)
        mask = self.kd.mask(row_id) if hasattr(self.kd, "mask") else None  # a partial teacher: its tokens only
        return {
            "kd_ids": ids[:, :k],
            "kd_logp": logp[:, :k],
            "kd_residual": residual,
            "kd_mask": np.ones((n,), np.float32) if mask is None else mask,
        }


@dataclasses.dataclass(frozen=True)
class PadToModelFeatures(grain.transforms.Map):
    """One example -> a fixed-length row of model features (a "pack" holding one segment)."""

    max_input_len: int
    max_target_len: int

    def map(self, example: Batch) -> Batch:
        n_in, n_out = len(example["inputs"]), len(example["targets"])
        kd = {k: _pad(example[k], self.max_target_len) for k in KD_FEATURES if k in example}
        return model_features(
            **kd,
            inputs=_pad(example["inputs"], self.max_input_len),
            inputs_segment_ids=_pad(np.ones((n_in,), np.int32), self.max_input_len),
            inputs_positions=_pad(np.arange(n_in, dtype=np.int32), self.max_input_len),
            targets=_pad(example["targets"], self.max_target_len),
            targets_segment_ids=_pad(np.ones((n_out,), np.int32), self.max_target_len),
            targets_positions=_pad(np.arange(n_out, dtype=np.int32), self.max_target_len),
            target_domains=_pad(example["target_domains"], self.max_target_len),
        )


def model_features(
    *,
    inputs: np.ndarray,
    inputs_segment_ids: np.ndarray,
    inputs_positions: np.ndarray,
    targets: np.ndarray,
    targets_segment_ids: np.ndarray,
    targets_positions: np.ndarray,
    target_domains: np.ndarray,
    **kd: np.ndarray,
) -> Batch:
    """The names the train/eval steps read. Segment ids (0 = padding) and positions are always
    present, so packed and padded rows take the same code path through the model. ``kd``: the
    KD_FEATURES, passed through (already per target token)."""
    return {
        **kd,
        "encoder_input_tokens": inputs,
        "encoder_segment_ids": inputs_segment_ids,
        "encoder_positions": inputs_positions,
        "decoder_target_tokens": targets,
        "decoder_segment_ids": targets_segment_ids,
        "decoder_positions": targets_positions,
        "decoder_loss_weights": (targets_segment_ids > 0).astype(np.float32),
        "decoder_domain_ids": target_domains,
    }


@dataclasses.dataclass(frozen=True)
class PackedToModelFeatures(grain.transforms.Map):
    """grain's packed dict (`x`, `x_segment_ids`, `x_positions`) -> model feature names."""

    def map(self, packed: Batch) -> Batch:
        return model_features(**{k: packed[k] for k in _PACKED_KEYS + KD_FEATURES if k in packed})


_PACKED_KEYS = (
    "inputs",
    "inputs_segment_ids",
    "inputs_positions",
    "targets",
    "targets_segment_ids",
    "targets_positions",
    "target_domains",
)


def build_train_dataset(
    sources: Mapping[str, Sequence[Any]],
    weights: Mapping[str, float],
    domain_index: Mapping[str, int],
    *,
    seed: int,
    batch_size: int,
    max_input_len: int,
    max_target_len: int,
    shard_index: int = 0,
    shard_count: int = 1,
    worker_threads: int = 2,
    prefetch_batches: int = 4,
    pack: bool = False,
    kd: Any = None,
    kd_k: int = 0,
) -> grain.IterDataset:
    """An infinite, deterministic stream of this process's batches (batch_size = per-process rows).

    pack=True fills each row with as many whole examples as fit (first-fit over `batch_size` bins,
    grain's FirstFitPackIterDataset); segment ids keep them from attending to each other.
    ``kd`` (a kd_logits.StoredLogits) adds the teacher's top-k (first ``kd_k``) per target token.
    """
    domains = [d for d in sorted(sources) if weights.get(d, 0.0) > 0]
    if not domains:
        raise ValueError("no domain has a positive mixture weight")
    parts = []
    for d in domains:
        ds = grain.MapDataset.source(sources[d])
        if len(ds) == 0:
            raise ValueError(f"domain {d!r} has no examples but a positive mixture weight; give it weight 0")
        # A domain-specific seed keeps each domain's order independent of which other domains are mixed in.
        parts.append(ds.shuffle(seed=seed + domain_index[d]).repeat())
    mixed = grain.MapDataset.mix(parts, [weights[d] for d in domains]) if len(parts) > 1 else parts[0]
    # Processes take interleaved elements of the one global stream (index-based: each reads only its
    # own records). Global batch k then holds the same examples whatever the process count, so runs
    # and checkpoints do not depend on how many hosts there are.
    if shard_count > 1:
        mixed = mixed[shard_index::shard_count]
    examples = mixed.map(ToExample(dict(domain_index), max_input_len, max_target_len, kd=kd, kd_k=kd_k))
    read_options = grain.ReadOptions(num_threads=worker_threads, prefetch_buffer_size=prefetch_batches)
    if not pack:
        rows = examples.map(PadToModelFeatures(max_input_len, max_target_len))
        return rows.batch(batch_size, drop_remainder=True).to_iter_dataset(read_options)
    lengths = {"inputs": max_input_len, "targets": max_target_len, "target_domains": max_target_len}
    if kd is not None:  # packed along the token axis like the targets; the k axis rides along
        lengths.update({k: max_target_len for k in KD_FEATURES})
    packed = grain.experimental.FirstFitPackIterDataset(
        examples.to_iter_dataset(read_options), length_struct=lengths, num_packing_bins=batch_size, seed=seed
    )
    return packed.map(PackedToModelFeatures()).batch(batch_size, drop_remainder=True)


def build_eval_batches(
    sources: Mapping[str, Sequence[Any]],
    domain_index: Mapping[str, int],
    *,
    batch_size: int,
    max_input_len: int,
    max_target_len: int,
    max_per_domain: int = 0,
    shard_index: int = 0,
    shard_count: int = 1,
) -> list[Batch]:
    """Finite, ordered eval batches of this process's slice; the last batch is padded with zero-weight rows.

    Every process returns the same number of batches (collectives need it), padding with empty rows.
    """
    to_example = ToExample(dict(domain_index), max_input_len, max_target_len)
    to_row = PadToModelFeatures(max_input_len, max_target_len)
    rows: list[Batch] = []
    longest = 0
    for d in sorted(sources):
        n = len(sources[d]) if not max_per_domain else min(len(sources[d]), max_per_domain)
        longest += math.ceil(n / shard_count)
        for i in range(shard_index, n, shard_count):
            rows.append(to_row.map(to_example.map(sources[d][i])))
    num_batches = max(math.ceil(longest / batch_size), 1)
    empty = {
        k: np.zeros_like(v)
        for k, v in to_row.map(
            to_example.map({"domain": next(iter(domain_index)), "inputs": [1], "targets": [1]})
        ).items()
    }
    rows += [empty] * (num_batches * batch_size - len(rows))
    return [
        {k: np.stack([r[k] for r in rows[b * batch_size : (b + 1) * batch_size]]) for k in rows[0]}
        for b in range(num_batches)
    ]


class DevicePrefetcher:
    """Pulls host batches on a background thread and turns them into global device arrays ahead of use.

    It remembers, for every batch it hands out, the grain state *after* that batch, so a checkpoint
    taken after consuming batch k resumes at batch k + 1 no matter how far the thread has read ahead.
    """

    _DONE = object()

    def __init__(self, iterator: Any, to_device: Callable[[Batch], Any], buffer_size: int = 2):
        self._iterator = iterator
        self._to_device = to_device
        self._queue: queue.Queue = queue.Queue(maxsize=max(buffer_size, 1))
        self._stop = threading.Event()
        self.state = iterator.get_state()
        self._thread = threading.Thread(target=self._run, name="device-prefetch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                host_batch = next(self._iterator)
                item = (self._to_device(host_batch), self._iterator.get_state())
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except StopIteration:
            self._queue.put(self._DONE)
        except BaseException as e:  # Re-raised in the consumer thread, where it can be handled.
            self._queue.put(e)

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        item = self._queue.get()
        if item is self._DONE:
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        batch, self.state = item
        return batch

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def host_to_global(batch: Batch, shardings: Mapping[str, jax.sharding.Sharding]) -> dict[str, jax.Array]:
    """This process's rows -> global arrays sharded over the mesh (works for one or many processes)."""
    return {k: jax.make_array_from_process_local_data(shardings[k], v) for k, v in batch.items()}
