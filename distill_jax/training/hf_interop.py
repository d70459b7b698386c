"""A transformers T5/BART directory as a run checkpoint, and a run checkpoint as a transformers directory.

The functions behind `distill-jax import-hf` and `export-hf`; they live here, not in the CLI
modules, so they can be called in-process without defining absl flags.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from typing import Any

import jax
import ml_collections
from jax.experimental import multihost_utils

from distill_jax import storage
from distill_jax.config import ConfigError
from distill_jax.data.tokenizers import load_tokenizer
from distill_jax.models import family
from distill_jax.models.encoder_decoder import unstack_layers
from distill_jax.models.hf_files import TOKENIZER_FILES
from distill_jax.models.lora import merge_lora, strip_adapters
from distill_jax.training.resume import hf_initial_state
from distill_jax.training.run_dir import RunDir
from distill_jax.training.run_setup import setup_run


def import_hf(hf_dir: str, workdir: str, config: ml_collections.ConfigDict) -> None:
    """Writes `workdir`'s config.json and a step-0 checkpoint holding `hf_dir`'s weights.

    The result is an ordinary run: `eval` evaluates it, and `train` with the same config continues
    from it. Converting needs no data: with `data.train_dir` set, the run records that data's domains
    and tokenizer (and checks the tokenizer fits the model); without, the tokenizer is `config.tokenizer`
    when it names an "hf" directory, else `hf_dir`'s own files, and the first `train` adopts its data's
    domains. Its `model.hf_dir` is set to `hf_dir`, so the run takes the HF architecture.
    The optimizer state is freshly initialised from `config.optimizer`, exactly as `train` does from
    `model.hf_dir`. Refuses a workdir that already holds checkpoints.
    """
    hf_dir = storage.check(hf_dir)
    if not storage.is_remote(hf_dir):
        hf_dir = os.path.abspath(hf_dir)
    family.hf_config(hf_dir)  # An unsupported architecture fails here, before any data is read.
    cfg = config.copy_and_resolve_references()
    cfg.model.hf_dir = hf_dir
    run_dir = RunDir(workdir)
    checkpointer = run_dir.checkpointer()
    try:
        if checkpointer.latest_step() is not None:
            raise FileExistsError(f"{run_dir.checkpoints} already holds checkpoints; import into a fresh workdir")
        run = setup_run(cfg, manifest=None if cfg.data.train_dir else _model_only_manifest(cfg, hf_dir))
        meta = {
            "config": json.loads(cfg.to_json_best_effort()),
            "domain_names": run.domain_names,
            # No data consumed yet: None never equals the run's weights, so training starts a fresh data order.
            "mixture_weights": None,
            "model": family.config_dict(run.model_config),
            "tokenizer": run.manifest["tokenizer"],
            "train_content_hash": run.manifest.get("content_hash"),
            "imported_from": hf_dir,
        }
        checkpointer.save(0, hf_initial_state(run), {}, meta)
    finally:
        checkpointer.close()
    if jax.process_index() == 0:
        run_dir.save_config(cfg)


def _model_only_manifest(cfg: ml_collections.ConfigDict, hf_dir: str) -> dict[str, Any]:
    """What setup_run needs from a manifest when no data is given: the tokenizer, and no domains yet."""
    if cfg.tokenizer.kind == "hf" and cfg.tokenizer.path:
        tokenizer = load_tokenizer("hf", cfg.tokenizer.path)
    elif any(storage.exists(storage.join(hf_dir, name)) for name in TOKENIZER_FILES):
        if storage.is_remote(hf_dir):
            # A run records its tokenizer's path and every later job (on any host) loads it from there.
            raise ConfigError(
                f"{hf_dir} holds a tokenizer, and tokenizers are read from local directories: pass "
                "--config.tokenizer.kind=hf --config.tokenizer.path=A_LOCAL_COPY (or --config.data.train_dir)"
            )
        tokenizer = load_tokenizer("hf", hf_dir)
    else:
        tokenizer = load_tokenizer(cfg.tokenizer.kind, cfg.tokenizer.path)
    return {"tokenizer": tokenizer.to_dict(), "domains": {}}


def export_hf(
    workdir: str, out_dir: str, step: int | None = None, overwrite: bool = False, lora_format: str = "merged"
) -> int:
    """Writes checkpoint `step` (default: the latest) of `workdir` to `out_dir`; returns the step exported.

    The tokenizer is the one the run's training data was prepared with (from its manifest, checked
    against its fingerprint): ByT5's files for "byt5", a copy of the directory's files for "hf".
    A LoRA run is exported with its adapters folded into the weights (lora_format="merged"), or
    (lora_format="peft") as the frozen base model in `out_dir` plus the adapters in PEFT's format in
    `out_dir/lora_adapter`, for `PeftModel.from_pretrained(base, out_dir + "/lora_adapter")`.
    """
    if lora_format not in ("merged", "peft"):
        raise ValueError(f"lora_format={lora_format!r}: use merged or peft")
    run_dir = RunDir(workdir)
    cfg = run_dir.load_config()
    out_url = storage.check(out_dir)
    if storage.is_remote(out_url):
        if storage.exists(storage.join(out_url, "config.json")) and not overwrite:
            raise FileExistsError(f"{out_url} holds a model; choose another --out or pass overwrite")
        # Written locally as usual, then uploaded with config.json (what from_pretrained opens first) last.
        out_dir = os.path.join(tempfile.mkdtemp(dir=storage.staging_dir(out_url, "export")), "out")
    # The checkpoint records its domains and tokenizer: exporting needs neither the training nor the eval data.
    _, meta = run_dir.step_meta(step)
    manifest = {"tokenizer": meta["tokenizer"], "domains": dict.fromkeys(meta["domain_names"], {"num_examples": 0})}
    run = setup_run(cfg, eval_dir="", manifest=manifest)
    params, step = run_dir.restore_params(run, step)
    host_params = multihost_utils.process_allgather(params, tiled=True)
    config = run.model_config
    if config.scan_layers:  # Everything below (HF names, LoRA merging) is per layer.
        host_params = unstack_layers(host_params, config)
        config = dataclasses.replace(config, scan_layers=False)
    if config.lora_rank == 0 and lora_format == "peft":
        raise ValueError(f"{workdir} was trained without LoRA (model.lora_rank=0): export it merged")
    if jax.process_index() == 0:
        tokenizer_dir = run.tokenizer.path if run.tokenizer.kind == "hf" else None
        base_config = dataclasses.replace(config, lora_rank=0)
        if config.lora_rank == 0:
            family.save_hf(out_dir, config, host_params, tokenizer_dir, overwrite=overwrite)
        elif lora_format == "merged":
            family.save_hf(out_dir, base_config, merge_lora(host_params, config), tokenizer_dir, overwrite=overwrite)
        else:
            family.save_hf(out_dir, base_config, strip_adapters(host_params), tokenizer_dir, overwrite=overwrite)
            family.save_peft_adapter(os.path.join(out_dir, "lora_adapter"), config, host_params, out_url)
        if storage.is_remote(out_url):
            storage.remove_tree(out_url)
            storage.upload_tree(out_dir, out_url, last="config.json")
            shutil.rmtree(os.path.dirname(out_dir), ignore_errors=True)
    return step
