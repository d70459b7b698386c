"""What a train or eval job builds from its config before the first step: data, model, mesh, optimizer, shardings.

One function builds it so `train`, `eval` and the stage scheduler cannot disagree about, say,
the domain index order or the model's vocabulary size.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import ml_collections
import optax
from absl import logging
from jax.sharding import Mesh

from distill_jax.config import ConfigError
from distill_jax.data import shards
from distill_jax.data.pipeline import build_eval_batches
from distill_jax.data.tokenizers import Tokenizer, tokenizer_from_dict
from distill_jax.models import family
from distill_jax.models.family import Model, ModelConfig
from distill_jax.training import optimizers, partitioning, step
from distill_jax.training.evaluator import Evaluator, decode_row_ids
from distill_jax.training.train_state import TrainState, state_shardings


def lora_overrides(model_cfg: ml_collections.ConfigDict) -> dict[str, Any]:
    """Model config LoRA fields from the config's model section."""
    if not model_cfg.lora_rank:
        return {}
    targets = tuple(t.strip() for t in model_cfg.lora_targets.split(",") if t.strip())
    return dict(
        lora_rank=int(model_cfg.lora_rank),
        lora_alpha=float(model_cfg.lora_alpha),
        lora_dropout=float(model_cfg.lora_dropout),
        lora_targets=targets,
    )


def padded_vocab_size(vocab_size: int, multiple: int = 128) -> int:
    """Rounds the embedding up so its rows split evenly over devices (T5's 32100 -> 32128)."""
    return -(-vocab_size // multiple) * multiple


@dataclasses.dataclass
class RunSetup:
    config: ml_collections.ConfigDict
    manifest: dict[str, Any]
    eval_manifest: dict[str, Any] | None
    tokenizer: Tokenizer
    domain_names: list[str]  # Index order of every per-domain vector (train and eval domains together).
    model_config: ModelConfig
    model: Model
    mesh: Mesh
    rules: partitioning.LogicalRules
    tx: optax.GradientTransformation
    abstract_state: TrainState
    shardings: TrainState
    batch_shardings: dict[str, Any]

    @property
    def domain_index(self) -> dict[str, int]:
        return {d: i for i, d in enumerate(self.domain_names)}

    @property
    def train_domain_counts(self) -> dict[str, int]:
        return {d: int(v["num_examples"]) for d, v in self.manifest["domains"].items()}


def _check_same_tokenizer(train: Mapping[str, Any], other: Mapping[str, Any], other_dir: str) -> None:
    if train["tokenizer"]["fingerprint"] != other["tokenizer"]["fingerprint"]:
        raise ValueError(
            f"{other_dir} was prepared with tokenizer {other['tokenizer'].get('name')} "
            f"({other['tokenizer']['fingerprint'][:12]}) but the training data with "
            f"{train['tokenizer'].get('name')} ({train['tokenizer']['fingerprint'][:12]}); "
            "re-run `distill-jax prepare` on it with the same --config tokenizer settings"
        )


def _check_lengths(config: ml_collections.ConfigDict, manifest: Mapping[str, Any], data_dir: str) -> None:
    """A batch shorter than what prepare accepted would silently cut rows (a rationale's answer with them)."""
    for field in ("max_input_len", "max_target_len"):
        prepared, batch = manifest.get(field), config.data[field]
        if prepared is not None and int(prepared) > int(batch):
            raise ConfigError(
                f"{data_dir} was prepared with {field}={prepared} but this run's batch holds data.{field}={batch} "
                f"tokens, which would cut longer rows: set --config.prepare.{field}={prepared} (the batch follows it) "
                f"or prepare the data again with {field}={batch}"
            )


def _check_tokenizer_fits(tok: Mapping[str, Any], model_config: ModelConfig, hf_dir: str) -> None:
    """The data's ids must be ids of the imported model, with its pad and EOS: a pretrained embedding has no slack."""
    problems = []
    if int(tok["vocab_size"]) > model_config.vocab_size:
        problems.append(f"its {tok['vocab_size']} ids exceed the model's vocab_size {model_config.vocab_size}")
    if (int(tok["pad_id"]), int(tok["eos_id"])) != (model_config.pad_token_id, model_config.eos_token_id):
        problems.append(
            f"its pad/eos ids ({tok['pad_id']}, {tok['eos_id']}) differ from the model's "
            f"({model_config.pad_token_id}, {model_config.eos_token_id})"
        )
    if problems:
        raise ValueError(
            f"the training data was prepared with tokenizer {tok.get('name')!r}, which does not fit the model in "
            f"{hf_dir}: {'; '.join(problems)}. Prepare the data with that model's tokenizer: "
            f"--config.tokenizer.kind=hf --config.tokenizer.path={hf_dir}"
        )


def setup_run(
    config: ml_collections.ConfigDict,
    *,
    train_dir: str | None = None,
    eval_dir: str | None = None,
    manifest: Mapping[str, Any] | None = None,
) -> RunSetup:
    """Builds everything static about a run. Directories default to config.data.*_dir.

    ``manifest`` stands in for the training data's manifest where no data is needed (importing or
    exporting a checkpoint): ``{"tokenizer": Tokenizer.to_dict(), "domains": {name: {...}}}``.
    """
    train_dir = train_dir or config.data.train_dir
    eval_dir = config.data.eval_dir if eval_dir is None else eval_dir
    if manifest is None:
        if not train_dir:
            raise ConfigError(
                "no training data: set --config.data.train_dir to a `distill-jax prepare` output directory"
            )
        manifest = shards.load_manifest(train_dir)
    eval_manifest = shards.load_manifest(eval_dir) if eval_dir else None
    _check_lengths(config, manifest, train_dir)
    if eval_manifest is not None:
        _check_same_tokenizer(manifest, eval_manifest, eval_dir)
        _check_lengths(config, eval_manifest, eval_dir)
    tok = manifest["tokenizer"]
    tokenizer = tokenizer_from_dict(tok)
    # data.domains: a run whose data gains domains later (the stage scheduler) keeps one index order.
    declared = [d.strip() for d in config.data.domains.split(",") if d.strip()]
    domains = set(manifest["domains"]) | set(eval_manifest["domains"] if eval_manifest else ()) | set(declared)
    overrides = dict(
        dtype=config.model.dtype,
        dropout_rate=config.model.dropout_rate,
        remat=config.model.remat,
        scan_layers=config.model.scan_layers,
        attention_impl=config.model.attention_impl,
        **lora_overrides(config.model),
    )
    hf_dir = config.model.hf_dir
    if hf_dir:
        model_config = family.hf_config(hf_dir, **overrides)
        _check_tokenizer_fits(tok, model_config, hf_dir)
    else:
        # A BART preset also takes the tokenizer's EOS as its decoder start token (BART's convention).
        model_config = family.preset_config(
            config.model.size,
            vocab_size=padded_vocab_size(int(tok["vocab_size"])),
            pad_token_id=int(tok["pad_id"]),
            eos_token_id=int(tok["eos_id"]),
            **overrides,
        )
    mesh = partitioning.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
    rules = tuple(tuple(r) for r in config.mesh.logical_axis_rules)
    schedule_steps = config.optimizer.schedule_steps or config.train.steps
    tx = optimizers.make_optimizer(config.optimizer, schedule_steps, train_only_adapters=model_config.lora_rank > 0)
    abstract_state, shardings = state_shardings(model_config, tx, mesh, rules)
    return RunSetup(
        config=config,
        manifest=manifest,
        eval_manifest=eval_manifest,
        tokenizer=tokenizer,
        domain_names=sorted(domains),
        model_config=model_config,
        model=family.model_for(model_config),
        mesh=mesh,
        rules=rules,
        tx=tx,
        abstract_state=abstract_state,
        shardings=shardings,
        batch_shardings=step.batch_shardings(mesh, rules),
    )


def per_process_batch_size(global_batch: int, run: RunSetup, what: str) -> int:
    """The rows each process feeds; the global batch must split evenly over processes and batch shards."""
    ways = partitioning.data_parallel_size(run.mesh, run.rules)
    if global_batch % ways or global_batch % jax.process_count():
        raise ValueError(
            f"{what}={global_batch} must be divisible by the data-parallel size {ways} "
            f"and the process count {jax.process_count()}"
        )
    return global_batch // jax.process_count()


def forward_batch_size(global_batch: int, run: RunSetup, what: str) -> int:
    """A forward-only global batch (eval, IFD scoring, decoding) rounded up so that it splits evenly.

    Those passes already pad their last batch with masked rows, so rounding up changes nothing but
    the padding; a config written for one device then also runs on a mesh of 8 (or 6).
    """
    multiple = math.lcm(partitioning.data_parallel_size(run.mesh, run.rules), jax.process_count())
    rounded = -(-global_batch // multiple) * multiple
    if rounded != global_batch:
        logging.info(
            "%s=%d rounded up to %d to split evenly over %d batch shards", what, global_batch, rounded, multiple
        )
    return rounded


def input_layout(run: RunSetup) -> dict[str, int]:
    """The batch's lengths and this process's share of the global stream, as every input pipeline takes them."""
    lengths = dict(max_input_len=run.config.data.max_input_len, max_target_len=run.config.data.max_target_len)
    return dict(**lengths, shard_index=jax.process_index(), shard_count=jax.process_count())


def build_evaluator(run: RunSetup, eval_dir: str, domains: Sequence[str] | None = None) -> Evaluator:
    """The evaluator over a prepared held-out directory (optionally only some of its domains)."""
    cfg = run.config
    sources = shards.open_domain_sources(eval_dir)
    if domains is not None:
        sources = {d: s for d, s in sources.items() if d in set(domains)}
    global_batch = forward_batch_size(cfg.eval.batch_size, run, "eval.batch_size")
    batch_size = per_process_batch_size(global_batch, run, "eval.batch_size")
    common = dict(domain_index=run.domain_index, batch_size=batch_size, **input_layout(run))
    loss_batches = build_eval_batches(sources, max_per_domain=cfg.eval.max_examples_per_domain, **common)
    decode_batches = (
        build_eval_batches(sources, max_per_domain=cfg.eval.decode_examples_per_domain, **common)
        if cfg.eval.decode_examples_per_domain > 0
        else []
    )
    decode_ids = decode_row_ids(
        sources,
        batch_size=batch_size,
        max_per_domain=cfg.eval.decode_examples_per_domain,
        shard_index=jax.process_index(),
        shard_count=jax.process_count(),
    )
    eval_step = step.make_eval_step(
        run.model,
        mesh=run.mesh,
        rules=run.rules,
        param_shardings=run.shardings.params,
        batch_shardings=run.batch_shardings,
        num_domains=len(run.domain_names),
    )
    return Evaluator(
        model=run.model,
        mesh=run.mesh,
        rules=run.rules,
        eval_step=eval_step,
        batch_shardings=run.batch_shardings,
        domain_names=run.domain_names,
        loss_batches=loss_batches,
        decode_batches=decode_batches,
        decode_text=run.tokenizer.decode,
        max_decode_len=cfg.eval.max_decode_len or cfg.data.max_target_len,
        decode_ids=decode_ids if decode_batches else (),
    )
