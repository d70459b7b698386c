"""The examples a generate or eval job works on: id, domain, input text and reference, from a file or prepared shards.

A file (JSONL/CSV/TSV/Parquet/JSON, or ``tfds:``) is read with the corpus readers and the same
field mapping and target templates as ``prepare``, so the reference is exactly what a student
trained on that corpus learns to write. A prepared directory is read from its shards; its inputs
keep their stored token ids. The order is deterministic (file order; or domains sorted, then
shard order), which is what lets a resumed job find its place by position.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

from distill_jax import storage
from distill_jax.data import shards
from distill_jax.data.corpus import Reject, read_rows
from distill_jax.data.prepare import PrepareOptions
from distill_jax.data.tokenizers import tokenizer_from_dict


@dataclasses.dataclass(frozen=True)
class Example:
    id: str
    domain: str
    input: str
    reference: str
    tokens: np.ndarray | None = None  # input ids with EOS, when the data is already tokenized


def is_prepared_dir(data: str) -> bool:
    return storage.isfile(storage.join(data, shards.MANIFEST_FILE))


def load_examples(data: str, options: PrepareOptions) -> tuple[list[Example], dict[str, int]]:
    """(examples, {reason: rows skipped}). Rejected rows and repeated ids (first one wins) are skipped."""
    if is_prepared_dir(data):
        return _prepared_examples(data), {}
    skipped: collections.Counter[str] = collections.Counter()
    examples, seen = [], set()
    for row in read_rows(data, options.mapping, default_domain=options.default_domain, columns=options.columns):
        if isinstance(row, Reject):
            skipped[row.reason] += 1
            continue
        if row.id in seen:
            skipped["duplicate_id"] += 1
            continue
        seen.add(row.id)
        template = options.target_template if row.rationale is not None else options.plain_target_template
        reference = template.format(rationale=row.rationale, target=row.target, input=row.input, domain=row.domain)
        examples.append(Example(row.id, row.domain, row.input, reference))
    return examples, dict(skipped)


def _prepared_examples(prepared_dir: str) -> list[Example]:
    tokenizer = tokenizer_from_dict(shards.load_manifest(prepared_dir)["tokenizer"])
    examples = []
    for domain, source in sorted(shards.open_domain_sources(prepared_dir).items()):
        for example in source:
            inputs = np.asarray(example["inputs"], np.int32)
            examples.append(
                Example(
                    example["id"], domain, tokenizer.decode(inputs), tokenizer.decode(example["targets"]), tokens=inputs
                )
            )
    return examples


def domain_counts(examples: list[Example]) -> dict[str, int]:
    return dict(collections.Counter(e.domain for e in examples))
