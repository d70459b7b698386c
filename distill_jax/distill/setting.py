"""What every method of one distill run shares: the config, the candidate pool, the eval data, the teacher.

`prepare_setting` loads the pool (and the eval set, or holds one out of the pool), prepares the eval
shards once, and opens the teacher the config names; the stage loop (scheduler.py) runs each method over it.
"""

from __future__ import annotations

import dataclasses

import ml_collections
from absl import logging

from distill_jax import multihost, storage
from distill_jax.config import ConfigError
from distill_jax.data.corpus import FieldMapping
from distill_jax.data.prepare import PrepareOptions, prepare_corpus
from distill_jax.distill.pool import Pool, load_examples, split_holdout, write_eval_rows
from distill_jax.teachers import registry
from distill_jax.teachers.base import Teacher
from distill_jax.teachers.pool import normalize_input


def parse_list(spec: str) -> list[str]:
    """A comma-separated config value as its non-empty items."""
    return [p.strip() for p in spec.split(",") if p.strip()]


@dataclasses.dataclass
class Setting:
    """What every method shares: the config, the pool, the eval data, the teacher."""

    config: ml_collections.ConfigDict
    workdir: str
    pool: Pool  # Candidates, eval hold-out removed.
    eval_dir: str
    known_inputs: set[str]  # Normalised inputs of pool and eval: synthetic examples must be new.
    teacher: Teacher
    labels: tuple[str, ...] = ()  # Classification pools: the label set answers are checked against.

    @property
    def domains(self) -> list[str]:
        return sorted(self.pool)

    @property
    def pool_sizes(self) -> dict[str, int]:
        return {d: len(v) for d, v in self.pool.items()}


def prepare_setting(config: ml_collections.ConfigDict, workdir: str) -> Setting:
    """Loads the pool, splits/prepares the eval set, opens the teacher. Idempotent."""
    d = config.distill
    workdir = storage.check(workdir)
    storage.makedirs(workdir)
    fields = dict(d.pool_fields)
    default_domain = config.prepare.default_domain
    pool = load_examples(
        parse_list(d.pool),
        fields,
        default_domain=default_domain,
        rejects_path=storage.join(workdir, "pool_rejects.jsonl"),
    )
    if d.eval_data:
        held = load_examples(
            parse_list(d.eval_data),
            fields,
            default_domain=default_domain,
            rejects_path=storage.join(workdir, "eval_rejects.jsonl"),
        )
    else:
        pool, held = split_holdout(pool, d.eval_holdout_per_domain, config.seed)
    eval_rows = storage.join(workdir, "eval_rows.jsonl")
    eval_dir = storage.join(workdir, "eval_data")
    if multihost.is_main():
        write_eval_rows(eval_rows, held)
        options = dataclasses.replace(PrepareOptions.from_config(config), mapping=FieldMapping(), progress=False)
        prepare_corpus([eval_rows], eval_dir, options, overwrite=True)
    multihost.barrier("distill-eval-prepared")
    known = {normalize_input(e.input) for group in (pool, held) for examples in group.values() for e in examples}
    logging.info(
        "Pool: %d examples in %d domains %s; eval: %d examples.",
        sum(len(v) for v in pool.values()),
        len(pool),
        {k: len(v) for k, v in sorted(pool.items(), key=lambda kv: -len(kv[1]))},
        sum(len(v) for v in held.values()),
    )
    return Setting(
        config, workdir, pool, eval_dir, known, registry.from_config(config, workdir), _label_set(d.label_set, pool)
    )


def _label_set(spec: str, pool: Pool) -> tuple[str, ...]:
    """distill.label_set: "" (free-form answers), "pool" (the pool's gold answers) or a comma-separated list."""
    if spec.strip() == "pool":
        labels = sorted({e.answer for examples in pool.values() for e in examples if e.answer})
        if not labels:
            raise ConfigError("distill.label_set=pool but the pool has no gold answers: map pool_fields.answer")
        return tuple(labels)
    return tuple(parse_list(spec))
