"""The grain input pipeline: per-domain shards -> weighted mixture -> fixed-shape batches -> device arrays.

Why this shape:
- Each domain is its own random-access source, shuffled and repeated on its own, then mixed with
  explicit weights. Changing the weights between training phases (what the stage scheduler does) is
  building a new dataset; nothing is re-written on disk.
- grain's MapDataset is index-based, so the whole order is a pure function of the seed and the
  iterator state is a small dict: checkpointing it with the model gives exact resume.
- Each process reads only its own slice of every domain (`[process_index::process_count]`) and
  builds its share of the global batch; `make_array_from_process_local_data` assembles the global
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


def _pad_to(tokens: np.ndarray, length: int, eos_id: int) -> np.ndarray:
    """Right-pads with 0 (T5 pad); an over-long sequence is cut and keeps its final EOS."""
    out = np.zeros((length,), np.int32)
    tokens = np.asarray(tokens, np.int32)
    if tokens.shape[0] > length:
        out[:] = tokens[:length]
        out[-1] = eos_id
    else:
        out[: tokens.shape[0]] = tokens
    return out


@dataclasses.dataclass(frozen=True)
class ToFixedShape(grain.transforms.Map):
    """A shard record -> fixed-length model features plus its domain index."""

    domain_index: Mapping[str, int]
    max_input_len: int
    max_target_len: int
    eos_id: int = 1

    def map(self, record: dict[str, Any]) -> Batch:
        domain = record["domain"]
        domain = domain.decode("utf-8") if isinstance(domain, bytes) else domain
        targets = _pad_to(record["targets"], self.max_target_len, self.eos_id)
        return {
            "encoder_input_tokens": _pad_to(record["inputs"], self.max_input_len, self.eos_id),
            "decoder_target_tokens": targets,
            "decoder_loss_weights": (targets != 0).astype(np.float32),
            "domain_ids": np.int32(self.domain_index[domain]),
        }


def _process_slice(source: Sequence[Any], shard_index: int, shard_count: int) -> grain.MapDataset:
    ds = grain.MapDataset.source(source)
    return ds[shard_index::shard_count] if shard_count > 1 else ds


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
) -> grain.IterDataset:
    """An infinite, deterministic stream of this process's batches (batch_size = per-process rows)."""
    domains = [d for d in sorted(sources) if weights.get(d, 0.0) > 0]
    if not domains:
        raise ValueError("no domain has a positive mixture weight")
    parts = []
    for d in domains:
        ds = _process_slice(sources[d], shard_index, shard_count)
        if len(ds) == 0:
            raise ValueError(
                f"domain {d!r} has fewer examples ({len(sources[d])}) than processes ({shard_count}); "
                "give it weight 0 or run with fewer processes"
            )
        # A domain-specific seed keeps each domain's order independent of which other domains are mixed in.
        parts.append(ds.shuffle(seed=seed + domain_index[d]).repeat())
    mixed = grain.MapDataset.mix(parts, [weights[d] for d in domains]) if len(parts) > 1 else parts[0]
    mixed = mixed.map(ToFixedShape(dict(domain_index), max_input_len, max_target_len))
    batched = mixed.batch(batch_size, drop_remainder=True)
    return batched.to_iter_dataset(grain.ReadOptions(num_threads=worker_threads, prefetch_buffer_size=prefetch_batches))


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
    transform = ToFixedShape(dict(domain_index), max_input_len, max_target_len)
    rows: list[Batch] = []
    longest = 0
    for d in sorted(sources):
        n = len(sources[d]) if not max_per_domain else min(len(sources[d]), max_per_domain)
        longest += math.ceil(n / shard_count)
        for i in range(shard_index, n, shard_count):
            rows.append(transform.map(sources[d][i]))
    num_batches = max(math.ceil(longest / batch_size), 1)
    empty = {
        k: np.zeros_like(v)
        for k, v in transform.map({"domain": next(iter(domain_index)), "inputs": [1], "targets": [1]}).items()
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
