"""The train loop, top to bottom: set up, resume if a checkpoint exists, step, log, evaluate, checkpoint.

Invariants worth keeping:
- The loop never reads a device value except every `train.log_every` steps (and at eval/checkpoint
  time), so dispatch runs ahead of the devices.
- Everything that decides the future of the run (params, optimizer, step, data-iterator position)
  is in the checkpoint; dropout keys derive from the step. Resuming after a kill therefore gives
  the same parameters as never having stopped.
- SIGTERM (preemption) is turned into "save at the next step boundary and exit cleanly".
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from tqdm import tqdm

from distill_jax.data import pipeline, shards
from distill_jax.evaluation import metrics
from distill_jax.evaluation.evaluator import summary_scalars
from distill_jax.models import family, lora
from distill_jax.training import step as step_lib
from distill_jax.training.checkpoints import Checkpointer, local_data_state
from distill_jax.training.metrics_writer import MetricsWriter
from distill_jax.training.run_setup import RunSetup, build_evaluator, per_process_batch_size, setup_run
from distill_jax.training.train_state import TrainState, count_params, create_train_state

# Dense bf16 peak FLOP/s per device, from the vendors' datasheets, for the MFU estimate.
PEAK_FLOPS_BY_DEVICE_KIND = {
    "H100": 989e12,
    "H200": 989e12,
    "A100": 312e12,
    "L4": 121e12,
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v6 lite": 918e12,
}


def peak_flops_per_device(configured: float) -> float | None:
    if configured > 0:
        return configured
    kind = jax.devices()[0].device_kind
    for name, flops in PEAK_FLOPS_BY_DEVICE_KIND.items():
        if name.lower() in kind.lower():
            return flops
    return None


@dataclasses.dataclass
class TrainResult:
    step: int
    workdir: str
    preempted: bool
    final_metrics: dict[str, float]
    eval_per_domain: dict[str, dict[str, float]]


class _PreemptionFlag:
    """Set by SIGTERM; the loop checks it between steps (a Python bool read, no device sync)."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # Not the main thread (e.g. called from a worker thread in tests): no handler.
            self._previous = None
        return self

    def _handle(self, signum, frame):
        logging.warning("SIGTERM received: saving a checkpoint at the next step and exiting.")
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _train_scalars(
    sums: dict[str, np.ndarray],
    domain_names: list[str],
    seconds: float,
    num_devices: int,
    flops_per_example: float,
    peak_flops: float | None,
) -> dict[str, float]:
    steps = max(float(sums["steps"]), 1.0)
    tokens = float(sums["token_count"].sum())
    examples = float(sums["example_count"].sum())
    out = {
        "train/loss": float(sums["loss_sum"]) / steps,
        "train/ce": float(sums["ce_sum"].sum()) / max(tokens, 1.0),
        "train/token_accuracy": float(sums["correct_sum"].sum()) / max(tokens, 1.0),
        "train/grad_norm": float(sums["grad_norm_sum"]) / steps,
        "perf/step_time_s": seconds / steps,
        "perf/tokens_per_s": (tokens + float(sums["input_token_count"])) / seconds,
        "perf/examples_per_s": examples / seconds,
    }
    if peak_flops:
        out["perf/mfu"] = flops_per_example * examples / seconds / (peak_flops * num_devices)
    for i, d in enumerate(domain_names):
        if sums["token_count"][i] > 0:
            out[f"train/ce/{d}"] = float(sums["ce_sum"][i] / sums["token_count"][i])
            out[f"train/token_accuracy/{d}"] = float(sums["correct_sum"][i] / sums["token_count"][i])
    return out


def _meta(run: RunSetup, weights: dict[str, float], extra: dict[str, Any] | None) -> dict[str, Any]:
    return {
        **(extra or {}),
        "config": json.loads(run.config.to_json_best_effort()),
        "domain_names": run.domain_names,
        "mixture_weights": weights,
        "model": family.config_dict(run.model_config),
        "tokenizer": run.manifest["tokenizer"],
        "train_content_hash": run.manifest.get("content_hash"),
    }


def _log_student(run: RunSetup, state: TrainState) -> None:
    """What is being trained, where, and (for LoRA) how much of it and at what optimizer memory."""
    cfg = run.config
    n_params = count_params(state.params)
    logging.info(
        "Student: %s %s, %.2fM parameters, vocab %d; mesh %s over %d devices; %d domains.",
        run.model_config.family.upper(),
        cfg.model.hf_dir or cfg.model.size,
        n_params / 1e6,
        run.model_config.vocab_size,
        dict(run.mesh.shape),
        jax.device_count(),
        len(run.domain_names),
    )
    if run.model_config.lora_rank:
        trainable = sum(
            x.size
            for x, t in zip(jax.tree.leaves(state.params), jax.tree.leaves(lora.trainable_mask(state.params)))
            if t
        )
        logging.info(
            "LoRA: %.3fM trainable of %.2fM parameters; optimizer state %.2f MB (full fine-tuning: ~%.2f MB).",
            trainable / 1e6,
            n_params / 1e6,
            _nbytes(state.opt_state) / 2**20,
            2 * _nbytes(state.params) / 2**20,
        )


def _nbytes(tree: Any) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def _resume(
    checkpointer: Checkpointer, step: int, run: RunSetup, weights: dict[str, float], data_iter: Any, workdir: str
) -> TrainState:
    """Restores the state of `step` and, where it still applies, the data position."""
    meta = checkpointer.restore_meta(step)
    changed = family.architecture_changes(meta["model"], run.model_config)
    if changed:
        raise ValueError(
            f"{workdir}: the checkpoint's model differs from the config's (checkpoint, config): {changed}; "
            "use the config it was trained with (e.g. the same --config.model.size or --config.model.hf_dir) "
            "or a fresh --workdir"
        )
    if meta["domain_names"] != run.domain_names:
        raise ValueError(
            f"{workdir}: the checkpoint's domains {meta['domain_names']} differ from the data's "
            f"{run.domain_names}; use a fresh --workdir for different data"
        )
    state, saved_data, _ = checkpointer.restore(step, run.abstract_state)
    data_state = local_data_state(saved_data)
    if meta["mixture_weights"] is None:
        logging.info("The checkpoint of step %d holds no data position (e.g. import-hf): fresh data order.", step)
    elif meta["mixture_weights"] != weights:
        # A new phase with new weights (e.g. the next distillation stage) starts a fresh data order.
        logging.info("Mixture weights changed since step %d: data order restarts for the new mixture.", step)
    elif data_state is None:
        logging.warning(
            "The packed data stream of step %d was saved by %d processes, not %d: data order restarts.",
            step,
            len(saved_data["per_process"]),
            jax.process_count(),
        )
    else:
        data_iter.set_state(data_state)
    logging.info("Resumed from %s at step %d.", checkpointer_dir(workdir), step)
    return state


def train(config: ml_collections.ConfigDict, workdir: str, extra_meta: dict[str, Any] | None = None) -> TrainResult:
    """Trains (or resumes) the student described by `config`, writing everything under `workdir`.

    `extra_meta` (JSON-able, e.g. the stage scheduler's state) is saved in every checkpoint's meta.
    """
    os.makedirs(workdir, exist_ok=True)
    cfg = config
    run = setup_run(cfg)
    is_main = jax.process_index() == 0
    if is_main:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(cfg.to_json_best_effort(indent=2))

    # --- Data: this process's slice of every domain, mixed with the configured weights.
    sources = shards.open_domain_sources(cfg.data.train_dir)
    weights = pipeline.mixture_weights(run.train_domain_counts, cfg.data.mixture, dict(cfg.data.domain_weights))
    local_batch = per_process_batch_size(cfg.train.batch_size, run, "train.batch_size")
    dataset = pipeline.build_train_dataset(
        sources,
        weights,
        run.domain_index,
        seed=cfg.seed,
        batch_size=local_batch,
        max_input_len=cfg.data.max_input_len,
        max_target_len=cfg.data.max_target_len,
        shard_index=jax.process_index(),
        shard_count=jax.process_count(),
        worker_threads=cfg.data.worker_threads,
        prefetch_batches=cfg.data.prefetch_batches,
        pack=cfg.data.pack,
    )
    data_iter = iter(dataset)

    # --- State: restore the latest checkpoint, or initialise directly into shards.
    checkpointer = Checkpointer(
        os.path.join(workdir, "checkpoints"),
        keep_last=cfg.train.keep_last,
        keep_best=cfg.train.keep_best,
        best_metric=cfg.train.best_metric,
    )
    latest = checkpointer.latest_step()
    if latest is not None:
        state = _resume(checkpointer, latest, run, weights, data_iter, workdir)
    elif cfg.model.hf_dir:
        state = hf_initial_state(run)
        logging.info("Initialised the student from the HF checkpoint in %s.", cfg.model.hf_dir)
    else:
        state = create_train_state(run.model_config, run.tx, run.mesh, run.rules, cfg.seed)
    start_step = int(state.step)

    _log_student(run, state)

    train_step = step_lib.make_train_step(
        run.model,
        run.tx,
        mesh=run.mesh,
        rules=run.rules,
        state_shardings=run.shardings,
        batch_shardings=run.batch_shardings,
        num_domains=len(run.domain_names),
        dropout_seed=cfg.seed + 1,
        label_smoothing=cfg.train.label_smoothing,
        z_loss=cfg.train.z_loss,
        grad_accum_steps=cfg.train.grad_accum_steps,
    )
    # Compiled ahead of time so the memory it needs is known before the first step; the loop runs
    # this very executable (no second compile), which also refuses any batch of another shape.
    batch_shapes = step_lib.batch_spec(
        cfg.train.batch_size, cfg.data.max_input_len, cfg.data.max_target_len, run.batch_shardings
    )
    train_step = train_step.compile(run.abstract_state, batch_shapes)
    logging.info("%s", step_lib.memory_line(step_lib.memory_footprint(train_step)))
    evaluator = build_evaluator(run, cfg.data.eval_dir) if cfg.data.eval_dir else None
    head, tail = metrics.split_head_tail(run.train_domain_counts, cfg.eval.head_fraction)
    writer = MetricsWriter(workdir)
    # Training FLOPs of one padded example (fixed shapes: this is what the devices compute).
    flops_per_example = (
        family.flops_per_token(run.model_config, cfg.data.max_input_len, cfg.data.max_target_len)
        * cfg.data.max_target_len
    )
    peak = peak_flops_per_device(cfg.train.peak_flops_per_device)

    def evaluate(step: int) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
        per_domain, samples = evaluator.run(state.params, num_samples_to_log=3)
        scalars = summary_scalars(per_domain, head, tail)
        writer.write(step, scalars)
        for s in samples:
            logging.info(
                "eval sample [%s] %r -> %r (reference %r)", s["domain"], s["input"], s["prediction"], s["reference"]
            )
        return per_domain, scalars

    prefetcher = pipeline.DevicePrefetcher(
        data_iter, lambda b: pipeline.host_to_global(b, run.batch_shardings), buffer_size=cfg.data.prefetch_batches
    )
    sums = step_lib.zero_metric_sums(len(run.domain_names), run.mesh)
    last_scalars: dict[str, float] = {}
    eval_per_domain: dict[str, dict[str, float]] = {}
    eval_scalars: dict[str, float] = {}
    step = start_step
    preempted = False
    progress = tqdm(
        total=cfg.train.steps, initial=start_step, desc="train", unit="step", disable=not is_main, dynamic_ncols=True
    )
    interval_start = time.perf_counter()
    try:
        with _PreemptionFlag() as preemption:
            while step < cfg.train.steps:
                state, sums = train_step(state, sums, next(prefetcher))
                step += 1
                progress.update(1)
                if step % cfg.train.log_every == 0 or step == cfg.train.steps:
                    host_sums = jax.tree.map(np.asarray, sums)  # The only host sync of the interval.
                    seconds = time.perf_counter() - interval_start
                    last_scalars = _train_scalars(
                        host_sums, run.domain_names, seconds, jax.device_count(), flops_per_example, peak
                    )
                    writer.write(step, last_scalars)
                    progress.set_postfix(
                        loss=f"{last_scalars['train/loss']:.3f}", tok_s=f"{last_scalars['perf/tokens_per_s']:.0f}"
                    )
                    sums = step_lib.zero_metric_sums(len(run.domain_names), run.mesh)
                    interval_start = time.perf_counter()
                is_last = step == cfg.train.steps
                if evaluator is not None and ((cfg.eval.every and step % cfg.eval.every == 0) or is_last):
                    eval_per_domain, eval_scalars = evaluate(step)
                    interval_start = time.perf_counter()
                if step % cfg.train.checkpoint_every == 0 or is_last or preemption.requested:
                    checkpointer.save(
                        step,
                        state,
                        prefetcher.state,
                        _meta(run, weights, extra_meta),
                        metrics={**last_scalars, **eval_scalars},
                    )
                if preemption.requested:
                    preempted = True
                    break
        if evaluator is not None and not eval_per_domain and not preempted:
            eval_per_domain, eval_scalars = evaluate(step)  # The run was already complete: report on its last state.
    finally:
        progress.close()
        prefetcher.close()
        checkpointer.close()
        writer.close()
    logging.info(
        "Stopped at step %d%s. TensorBoard: tensorboard --logdir %s",
        step,
        " (preempted; re-run the same command to resume)" if preempted else "",
        writer.tensorboard_dir,
    )
    return TrainResult(
        step=step,
        workdir=workdir,
        preempted=preempted,
        final_metrics={**last_scalars, **eval_scalars},
        eval_per_domain=eval_per_domain,
    )


def checkpointer_dir(workdir: str) -> str:
    return os.path.join(workdir, "checkpoints")


def restore_params(run: RunSetup, workdir: str, step: int | None = None) -> tuple[Any, int]:
    """The params of a workdir's checkpoint (latest by default), sharded for `run`'s mesh."""
    checkpointer = Checkpointer(checkpointer_dir(workdir))
    step = checkpointer.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(
            f"no checkpoint in {checkpointer_dir(workdir)}: train first (distill-jax train --workdir=...)"
        )
    state, _, _ = checkpointer.restore(step, run.abstract_state)
    checkpointer.close()
    return state.params, step


def hf_initial_state(run: RunSetup) -> TrainState:
    """Step-0 state holding the weights of `model.hf_dir` and a fresh optimizer state, already sharded.

    Every process reads the checkpoint on its host; each device receives only its own slices.
    """
    base_config = dataclasses.replace(run.model_config, lora_rank=0)
    host = family.load_hf_params(run.config.model.hf_dir, base_config)
    if run.model_config.lora_rank:
        fresh = nn.unbox(family.init_params(run.model_config, jax.random.key(run.config.seed)))
        host = lora.with_adapters(host, jax.tree.map(np.asarray, fresh))
    params = jax.tree.map(
        lambda x, sharding: jax.make_array_from_callback(x.shape, sharding, lambda index: x[index]),
        host,
        run.shardings.params,
    )

    def init(params: Any) -> TrainState:
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=run.tx.init(params))

    return jax.jit(init, out_shardings=run.shardings)(params)
