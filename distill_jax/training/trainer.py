"""The train loop, top to bottom: set up, resume if a checkpoint exists, step, log, evaluate, checkpoint.

Invariants worth keeping:
- The loop never reads a device value except every `train.log_every` steps (and at eval/checkpoint
  time), so dispatch runs ahead of the devices.
- Everything that decides the future of the run (params, optimizer, step, data-iterator position)
  is in the checkpoint; dropout keys derive from the step. Resuming after a kill therefore gives
  the same parameters as never having stopped.
- SIGTERM (preemption) is turned into "save at the next step boundary and exit cleanly"; on several
  processes at a step they all agree on, whichever host got the signal (preemption.py).
- Nothing non-finite is saved: the step counts non-finite losses/grad norms/params on device and the
  loop reads those counters at the log interval and before every save or eval (guard.py).
- The config is checked and the state built before the workdir is created, so a run that cannot
  start leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from distill_jax import metrics, storage
from distill_jax.data import pipeline, shards
from distill_jax.models import family, lora
from distill_jax.training import guard, interval_scalars, memory, partitioning
from distill_jax.training import step as step_lib
from distill_jax.training.checkpoints import Checkpointer, CheckpointSaveError, CorruptCheckpointError
from distill_jax.training.config_checks import ConfigError, mesh_problems, validate_train_config
from distill_jax.training.evaluator import summary_scalars
from distill_jax.training.kd_setup import open_kd
from distill_jax.training.metrics_writer import MetricsWriter
from distill_jax.training.preemption import Preemption
from distill_jax.training.progress import Progress
from distill_jax.training.resume import hf_initial_state, resume
from distill_jax.training.run_dir import RunDir
from distill_jax.training.run_setup import RunSetup, build_evaluator, input_layout, per_process_batch_size, setup_run
from distill_jax.training.train_state import TrainState, count_params, create_train_state

# What stops a run on purpose with a one-line reason (the CLI prints it and exits 1, no traceback); a
# ConfigError (a setting to fix before anything runs) is a usage error instead: one line, exit 2.
STOP_ERRORS = (guard.TrainingStopped, CheckpointSaveError, CorruptCheckpointError)
__all__ = ["STOP_ERRORS", "TrainResult", "train"]


@dataclasses.dataclass
class TrainResult:
    step: int
    workdir: str
    preempted: bool
    final_metrics: dict[str, float]
    eval_per_domain: dict[str, dict[str, float]]


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


def _fresh_scalars(scalars: dict[str, float], scalars_step: int, step: int) -> dict[str, float]:
    """Metrics measured at `step` itself: a checkpoint's "best" value must describe its own params."""
    return scalars if scalars_step == step else {}


def train(config: ml_collections.ConfigDict, workdir: str, extra_meta: dict[str, Any] | None = None) -> TrainResult:
    """Trains (or resumes) the student described by `config`, writing everything under `workdir`.

    `extra_meta` (JSON-able, e.g. the stage scheduler's state) is saved in every checkpoint's meta.
    Raises one of STOP_ERRORS (one-line message) when the run must stop: a bad config, a non-finite
    value, a failed save, or a damaged checkpoint with train.on_corrupt_checkpoint=fail.
    """
    cfg = config
    workdir = storage.check(workdir)  # local, gs:// or s3://; any other scheme:// is refused here
    validate_train_config(cfg)
    run = setup_run(cfg)
    is_main = jax.process_index() == 0
    problems = mesh_problems(cfg, partitioning.data_parallel_size(run.mesh, run.rules), jax.process_count())
    if problems:
        raise ConfigError("invalid train config: " + "; ".join(problems))

    # --- Data: this process's slice of every domain, mixed with the configured weights.
    sources = shards.open_domain_sources(cfg.data.train_dir)
    weights = pipeline.mixture_weights(run.train_domain_counts, cfg.data.mixture, dict(cfg.data.domain_weights))
    local_batch = per_process_batch_size(cfg.train.batch_size, run, "train.batch_size")
    kd = open_kd(cfg, run.model_config.vocab_size, run.mesh)
    dataset = pipeline.build_train_dataset(
        sources,
        weights,
        run.domain_index,
        seed=cfg.seed,
        batch_size=local_batch,
        **input_layout(run),
        worker_threads=cfg.data.worker_threads,
        prefetch_batches=cfg.data.prefetch_batches,
        pack=cfg.data.pack,
        kd=kd.store,
        kd_k=kd.stored_k,
    )
    data_iter = iter(dataset)

    # --- State: restore the newest readable checkpoint, or initialise directly into shards. The
    # checkpoint directory is only opened when it exists: a run that fails to start creates nothing.
    checkpointer = None
    restored = None
    skip_cap = cfg.train.skip_nonfinite_batches
    if RunDir(workdir).has_checkpoints():
        checkpointer = _checkpointer(cfg, workdir)
        restored = resume(checkpointer, run, weights, data_iter, workdir)
    if restored is not None:
        state = restored.state
    elif cfg.model.hf_dir:
        state = hf_initial_state(run)
        logging.info("Initialised the student from the HF checkpoint in %s.", cfg.model.hf_dir)
    else:
        state = create_train_state(run.model_config, run.tx, run.mesh, run.rules, cfg.seed)
    start_step = int(state.step)
    skipped = int(restored.meta.get("skipped_nonfinite_batches", 0)) if restored is not None else 0

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
        dropout_prng=cfg.train.dropout_prng,
        label_smoothing=cfg.train.label_smoothing,
        z_loss=cfg.train.z_loss,
        grad_accum_steps=cfg.train.grad_accum_steps,
        skip_nonfinite=skip_cap > 0,
        kd=kd.settings,
        teacher=kd.teacher,
    )
    # Compiled ahead of time so the memory it needs is known before the first step; the loop runs
    # this very executable (no second compile), which also refuses any batch of another shape.
    batch_shapes = step_lib.batch_spec(
        cfg.train.batch_size,
        cfg.data.max_input_len,
        cfg.data.max_target_len,
        run.batch_shardings,
        kd.stored_k,
    )
    train_step = train_step.compile(run.abstract_state, batch_shapes)
    logging.info("%s", memory.memory_line(memory.memory_footprint(train_step)))
    teacher_bytes = kd.teacher.bytes_per_device() if kd.teacher else None
    logging.info("%s", memory.resident_line(memory.per_device_bytes(run.abstract_state), teacher_bytes))
    evaluator = build_evaluator(run, cfg.data.eval_dir) if cfg.data.eval_dir else None
    head, tail = metrics.split_head_tail(run.train_domain_counts, cfg.eval.head_fraction)

    # --- Everything could start: only now does the workdir get written.
    storage.makedirs(workdir)
    if is_main:
        RunDir(workdir).save_config(cfg)
    if checkpointer is None:
        checkpointer = _checkpointer(cfg, workdir)
    writer = MetricsWriter(workdir, resume_step=start_step)
    # Training FLOPs of one padded example (fixed shapes: this is what the devices compute).
    flops_per_example = (
        family.flops_per_token(run.model_config, cfg.data.max_input_len, cfg.data.max_target_len)
        * cfg.data.max_target_len
    )
    if kd.teacher:  # online KD: the devices also run the teacher's forward on every example
        flops_per_example += kd.teacher.forward_flops_per_example(cfg.data.max_input_len, cfg.data.max_target_len)
    peak = interval_scalars.peak_flops_per_device(cfg.train.peak_flops_per_device)

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
    scalars_step = eval_step = -1
    # checked_step: every step up to it was proven finite on the host; synced_step: the last log interval.
    step = checked_step = synced_step = start_step
    preempted = False
    progress = Progress(cfg.train.steps, start_step, enabled=is_main)
    interval_start = time.perf_counter()

    def check_finite(counters: dict[str, np.ndarray]) -> None:
        nonlocal skipped, checked_step
        skipped = guard.check_interval(
            counters,
            first_step=checked_step + 1,
            last_step=step,
            skipped_before=skipped,
            skip_cap=skip_cap,
            last_good=checkpointer.describe_last_good(),
        )
        checked_step = step

    def check_before_use() -> None:
        """Before a save or an eval: the steps since the last log interval must be proven finite too."""
        if checked_step < step:
            check_finite({k: np.asarray(sums[k]) for k in guard.GUARD_KEYS})

    completed = False
    try:
        with Preemption() as preemption:
            while step < cfg.train.steps:
                state, sums = train_step(state, sums, next(prefetcher))
                step += 1
                preempt = preemption.reached(step)  # the same answer on every process at this step
                checkpointer.poll()  # A failed background save stops the run here, one step later.
                if step % cfg.train.log_every == 0 or step == cfg.train.steps:
                    host_sums = jax.tree.map(np.asarray, sums)  # The only host sync of the interval.
                    seconds = time.perf_counter() - interval_start
                    steps_done, synced_step = step - synced_step, step
                    check_finite(host_sums)
                    last_scalars = interval_scalars.train_scalars(
                        host_sums, run.domain_names, seconds, jax.device_count(), flops_per_example, peak
                    )
                    if skip_cap > 0:
                        last_scalars["train/skipped_batches_total"] = float(skipped)
                    scalars_step = step
                    writer.write(step, last_scalars)
                    progress.finished(
                        step, steps_done, seconds, last_scalars["train/loss"], last_scalars["perf/tokens_per_s"]
                    )
                    sums = step_lib.zero_metric_sums(len(run.domain_names), run.mesh)
                    interval_start = time.perf_counter()
                is_last = step == cfg.train.steps
                if evaluator is not None and ((cfg.eval.every and step % cfg.eval.every == 0) or is_last):
                    check_before_use()
                    eval_per_domain, eval_scalars = evaluate(step)
                    eval_step = step
                    interval_start = time.perf_counter()
                if step % cfg.train.checkpoint_every == 0 or is_last or preempt:
                    check_before_use()
                    checkpointer.save(
                        step,
                        state,
                        prefetcher.state,
                        {**_meta(run, weights, extra_meta), "skipped_nonfinite_batches": skipped},
                        metrics={
                            **_fresh_scalars(last_scalars, scalars_step, step),
                            **_fresh_scalars(eval_scalars, eval_step, step),
                        },
                    )
                if preempt:
                    preempted = True
                    break
        if evaluator is not None and not eval_per_domain and not preempted:
            eval_per_domain, eval_scalars = evaluate(step)  # The run was already complete: report on its last state.
        completed = True
    finally:
        progress.close()
        prefetcher.close()
        writer.close()
        if completed:
            checkpointer.close()  # Waits for the last save; raises CheckpointSaveError if it failed.
        else:
            _close_quietly(checkpointer)
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


def _close_quietly(checkpointer: Checkpointer) -> None:
    """Closes while another error propagates: that error is the one to report, a failed last save a warning."""
    try:
        checkpointer.close()
    except CheckpointSaveError as err:
        logging.warning("%s", err)


def _checkpointer(cfg: ml_collections.ConfigDict, workdir: str) -> Checkpointer:
    return RunDir(workdir).checkpointer(
        keep_last=cfg.train.keep_last,
        keep_best=cfg.train.keep_best,
        best_metric=cfg.train.best_metric,
    )
