"""Checks of a train config that need nothing but the config and the file system, run before anything is created.

A bad value (train.steps=-5 exited 0 "at step 0"; a batch that does not split) used to surface
after the workdir was made, or never. Every problem found is named in one error.
"""

from __future__ import annotations

import ml_collections

from distill_jax import storage
from distill_jax.config import ConfigError
from distill_jax.data import shards
from distill_jax.training.checkpoints import ON_CORRUPT_CHOICES
from distill_jax.training.step import DROPOUT_PRNGS


def _int(cfg: ml_collections.ConfigDict, dotted: str) -> int | None:
    section, field = dotted.split(".")
    value = cfg[section].get(field)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def train_config_problems(cfg: ml_collections.ConfigDict) -> list[str]:
    problems = []
    for name, minimum in (
        ("train.steps", 1),
        ("train.batch_size", 1),
        ("train.log_every", 1),
        ("train.checkpoint_every", 1),
        ("train.keep_last", 1),
        ("train.keep_best", 0),
        ("train.grad_accum_steps", 1),
        ("train.skip_nonfinite_batches", 0),
        ("data.max_input_len", 2),
        ("data.max_target_len", 2),
    ):
        value = _int(cfg, name)
        if value is None or value < minimum:
            section, field = name.split(".")
            problems.append(f"{name}={cfg[section].get(field)!r} must be an integer >= {minimum}")
    batch, accum = _int(cfg, "train.batch_size"), _int(cfg, "train.grad_accum_steps")
    if batch and accum and batch >= 1 and accum >= 1 and batch % accum:
        problems.append(f"train.batch_size={batch} must be divisible by train.grad_accum_steps={accum}")
    if cfg.train.on_corrupt_checkpoint not in ON_CORRUPT_CHOICES:
        problems.append(
            f"train.on_corrupt_checkpoint={cfg.train.on_corrupt_checkpoint!r} must be one of {ON_CORRUPT_CHOICES}"
        )
    if cfg.train.dropout_prng not in DROPOUT_PRNGS:
        problems.append(f"train.dropout_prng={cfg.train.dropout_prng!r} must be one of {DROPOUT_PRNGS}")
    if not cfg.data.train_dir:
        problems.append("data.train_dir is not set: point it at a `distill-jax prepare` output directory")
    for name in ("data.train_dir", "data.eval_dir"):
        path = cfg.data[name.split(".")[1]]
        if path and not storage.isfile(storage.join(path, shards.MANIFEST_FILE)):
            what = "does not exist" if not storage.exists(path) else f"holds no {shards.MANIFEST_FILE}"
            problems.append(f"{name}={path!r} {what}: it must be a `distill-jax prepare` output directory")
    hf_dir = cfg.model.hf_dir
    if hf_dir and not storage.isfile(storage.join(hf_dir, "config.json")):
        problems.append(
            f"model.hf_dir={hf_dir!r} holds no config.json: it must be a transformers model directory "
            "(local, gs:// or s3://)"
        )
    return problems


def mesh_problems(cfg: ml_collections.ConfigDict, data_parallel: int, process_count: int) -> list[str]:
    """What only the mesh decides: the global batch must split over processes, batch shards and microbatches."""
    batch, accum = cfg.train.batch_size, cfg.train.grad_accum_steps
    problems = []
    if batch % data_parallel or batch % process_count:
        problems.append(
            f"train.batch_size={batch} must be divisible by the data-parallel size {data_parallel} "
            f"and the process count {process_count}"
        )
    elif batch % (accum * data_parallel):
        problems.append(
            f"train.batch_size={batch} must be divisible by train.grad_accum_steps={accum} times the data-parallel "
            f"size {data_parallel}, so every microbatch splits evenly over the batch shards"
        )
    return problems


def validate_train_config(cfg: ml_collections.ConfigDict) -> None:
    """Raises ConfigError naming every problem; call before creating the workdir."""
    problems = train_config_problems(cfg)
    if problems:
        raise ConfigError("invalid train config: " + "; ".join(problems))
