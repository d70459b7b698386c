"""Orbax checkpoints of everything a run needs to continue exactly: train state, data-iterator state, metadata.

A checkpoint directory per step holds three items:
  state/  the TrainState (params, optimizer state, step), written by every process for its shards;
  data/   every process's grain iterator state after the last consumed batch (JSON, gathered to
          process 0, which alone writes JSON items);
  meta/   JSON: config, domain list, mixture weights, metrics at save time.
With LoRA adapters in the params, the frozen base weights never change, so they are written once
(``frozen_base/`` beside the step directories) and each step's ``state/`` holds the adapters, their
optimizer state and the step only: a step of a LoRA run costs the size of its adapters, not of the
model. Restoring reassembles the full params from both.
Saves are asynchronous (the step loop continues while bytes go to disk) and atomic (locally Orbax
writes to a temporary directory and renames it when complete; on gs:// and s3://, where a rename is
a copy, it writes in place and a step counts only once its commit_success.txt is written, last), so a
kill -9 at any moment leaves the last finished checkpoint intact. The directory may be local, gs://
or s3:// (distill_jax/storage.py; s3 arrays through training/orbax_s3.py).

Robustness (issue 15): which steps are deleted is decided here, not by Orbax, from a record kept in
the directory (training/retention.py), so the best and the newest known-good steps survive resumes.
A save that fails in the background is noticed at the next `poll()` (one cheap Python check per
step) and raised as CheckpointSaveError. `restore_latest` restores the newest step that reads back
completely; a damaged one is reported in one line, moved to ``corrupt/`` and the previous one is
used, unless the caller asks to refuse instead.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from distill_jax import multihost, storage
from distill_jax.models import lora
from distill_jax.training import orbax_s3, retention

FROZEN_BASE = "frozen_base"
CORRUPT_DIR = "corrupt"  # Damaged steps are moved here (kept for inspection, out of Orbax's step list).
ON_CORRUPT_CHOICES = ("fallback", "fail")


def _split_frozen_base(state: Any) -> tuple[Any, Any | None]:
    """(the state with only the adapter params, the frozen base params) for a LoRA state; (state, None) otherwise."""
    adapters = lora.adapters_only(state.params)
    if not adapters:
        return state, None
    return state.replace(params=adapters), lora.strip_adapters(state.params)


class CheckpointSaveError(RuntimeError):
    """A checkpoint could not be written (disk full, permissions, ...): the run must stop, not carry on unsaved."""


class CorruptCheckpointError(RuntimeError):
    """The newest checkpoint is unreadable and train.on_corrupt_checkpoint=fail refuses to fall back."""


@dataclasses.dataclass
class Restored:
    step: int
    state: Any
    data: dict[str, Any]
    meta: dict[str, Any]


def _one_line(err: BaseException, limit: int = 360) -> str:
    """`Type: first line of the message`, capped: tensorstore errors run to several hundred characters.

    Both ends are kept: the start says what failed, the end why ("No space left on device [os_error_code=28]").
    """
    text = (str(err).strip().splitlines() or [""])[0]
    if len(text) > limit:
        text = text[: limit // 2 - 2] + " ... " + text[-(limit // 2 - 3) :]
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _any_process_failed(problem: BaseException | None) -> BaseException | None:
    """Every process must take the same branch (the restores are collective): a failure anywhere counts."""
    if jax.process_count() == 1:
        return problem
    flags = multihost_utils.process_allgather(np.array([problem is not None], np.int32)).reshape(-1)
    if problem is None and flags.any():
        return RuntimeError(f"unreadable on process(es) {[int(i) for i in np.flatnonzero(flags)]}")
    return problem


class Checkpointer:
    """Keep-last-N plus keep-best-N checkpoints of a training run (plus, always, the newest recorded one)."""

    def __init__(
        self,
        directory: str,
        *,
        keep_last: int = 3,
        keep_best: int = 0,
        best_metric: str = "eval/loss",
        async_save: bool = True,
    ):
        self.directory = storage.check(directory)
        self.best_metric = best_metric
        self.keep_last, self.keep_best = keep_last, keep_best
        self._async = async_save
        orbax_s3.enable()
        # No Orbax preservation policy: it would keep everything, and _apply_retention deletes by the record.
        # On s3 a step is final when its commit_success.txt is there (orbax_s3.atomicity_options).
        self._atomicity = orbax_s3.atomicity_options(self.directory)
        options = ocp.CheckpointManagerOptions(
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,
            atomicity_options=self._atomicity,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)
        self._record = retention.RetentionRecord(self.directory, best_metric)
        self._pending: tuple[int, float | None] | None = None  # (step, metric) of a save not yet confirmed
        self._saved = False  # Retention runs only in a Checkpointer that saved: readers never delete.
        self._failed = False
        # Orbax writes it to a temporary name and renames it when complete: present means whole.
        self._frozen_base_dir = storage.join(self.directory, FROZEN_BASE)
        self._frozen_base_written = storage.isdir(self._frozen_base_dir)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    @property
    def recorded_steps(self) -> dict[int, float | None]:
        """Steps saved (and confirmed) by this code, with their best_metric values: the known-good ones."""
        return dict(self._record.steps)

    def last_good_step(self) -> int | None:
        """The newest confirmed step still on disk (every confirmed save was of a finite state)."""
        recorded = [s for s in self.all_steps() if s in self._record.steps]
        return recorded[-1] if recorded else None

    def describe_last_good(self) -> str:
        step = self.last_good_step()
        if step is None:
            step = self.latest_step()
        return f"step {step} in {self.directory}" if step is not None else f"none in {self.directory}"

    def save(
        self,
        step: int,
        state: Any,
        data_state: dict[str, Any],
        meta: dict[str, Any],
        metrics: dict[str, float] | None = None,
    ) -> None:
        """Starts an asynchronous save; returns once the arrays are copied off the devices.

        Raises CheckpointSaveError if this save or the previous (background) one failed. The caller
        must only pass finite states: what is saved here is recorded as known good.
        """
        self._confirm_pending()
        self._apply_retention()
        if step in self._manager.all_steps():
            return
        state, frozen_base = _split_frozen_base(state)
        metric = None
        if metrics is not None and self.best_metric in metrics:
            metric = float(metrics[self.best_metric])
        try:
            if frozen_base is not None and not self._frozen_base_written:
                with ocp.StandardCheckpointer(atomicity_options=self._atomicity) as writer:
                    writer.save(self._frozen_base_dir, frozen_base)
                self._frozen_base_written = True
            self._manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state),
                    data=ocp.args.JsonSave({"per_process": multihost.gather_rows([data_state])}),
                    meta=ocp.args.JsonSave(meta),
                ),
            )
        except Exception as err:
            self._failed = True
            raise CheckpointSaveError(self._failure_line(step, err)) from err
        self._pending, self._saved = (step, metric), True
        if not self._async:
            self._confirm_pending()

    def poll(self) -> None:
        """Raises CheckpointSaveError once a background save has failed; cheap enough to call every step.

        Local only (no collective): processes notice a finished save at different steps. Deleting old
        steps is collective, so it waits for the next save() or close(), which every process reaches
        at the same step.
        """
        if self._pending is not None and not self._manager.is_saving_in_progress():
            self._confirm_pending()

    def _failure_line(self, step: int, err: BaseException) -> str:
        kept = [s for s in self.all_steps() if s != step]
        return (
            f"checkpoint save of step {step} to {storage.join(self.directory, str(step))} failed ({_one_line(err)}); "
            f"stopping. Checkpoints intact: {kept or 'none'}"
        )

    def _confirm_pending(self) -> None:
        """Waits for the save in flight and records it, or raises CheckpointSaveError."""
        if self._pending is None:
            return
        step, metric = self._pending
        self._pending = None
        try:
            self._manager.wait_until_finished()
            problem = None if step in self._manager.all_steps() else RuntimeError("the step was not finalized")
        except Exception as err:
            problem = err
        if problem is not None:
            self._failed = True
            raise CheckpointSaveError(self._failure_line(step, problem)) from problem
        self._record.add(step, metric)
        self._write_record(step)

    def _write_record(self, step: int) -> None:
        """retention.json after a save or deletion; a full disk here stops the run like a failed save."""
        if jax.process_index() != 0:
            return
        try:
            self._record.write()
        except OSError as err:
            self._failed = True
            raise CheckpointSaveError(self._failure_line(step, err)) from err

    def _apply_retention(self) -> None:
        if not self._saved:
            return
        on_disk = self.all_steps()
        keep = retention.steps_to_keep(on_disk, self._record.steps, self.keep_last, self.keep_best, self.best_metric)
        for step in on_disk:
            if step not in keep:
                self._manager.delete(step)  # Collective: every process calls it, the primary deletes.
        self._record.forget([s for s in list(self._record.steps) if s not in keep])
        self._write_record(max(on_disk))

    # ----------------------------------------------------------------------------------- restore

    def restore_latest(
        self,
        abstract_state: Any,
        *,
        on_corrupt: str = "fallback",
        check_meta: Callable[[int, dict[str, Any]], None] | None = None,
        quarantine: bool = False,
        params_only: bool = False,
    ) -> Restored | None:
        """The newest step that reads back completely, or None when there is none.

        A step whose meta, data or state item cannot be read (truncated array file, deleted
        ``_METADATA``, missing or truncated item, partial copy) is reported in one warning line and
        the previous step is tried; with ``on_corrupt="fail"`` CorruptCheckpointError is raised
        instead. ``check_meta(step, meta)`` runs before the state is read, so its errors (e.g. a
        different architecture) propagate as they are: they are not damage. ``quarantine`` moves
        damaged steps into ``corrupt/`` so that the resumed run can save those step numbers again.
        ``params_only`` reads the params alone (see `restore`).
        """
        if on_corrupt not in ON_CORRUPT_CHOICES:
            raise ValueError(f"on_corrupt_checkpoint={on_corrupt!r}: must be one of {ON_CORRUPT_CHOICES}")
        steps = sorted(self.all_steps(), reverse=True)
        for i, step in enumerate(steps):
            problem: BaseException | None = None
            try:
                meta = self.restore_meta(step)
                missing = [k for k in ("model", "domain_names", "mixture_weights") if k not in meta]
                if missing:
                    raise KeyError(f"meta lacks {missing}")
            except Exception as err:
                problem = err
            problem = _any_process_failed(problem)
            if problem is None:
                if check_meta is not None:
                    check_meta(step, meta)
                try:
                    state, data = self._read(step, abstract_state, params_only)
                except Exception as err:
                    problem = err
                problem = _any_process_failed(problem)
            if problem is None:
                return Restored(step, self._with_frozen_base(step, state, abstract_state), data, meta)
            line = f"checkpoint step {step} in {self.directory} is unreadable ({_one_line(problem)})"
            if on_corrupt == "fail":
                raise CorruptCheckpointError(
                    f"{line}; refusing to fall back (train.on_corrupt_checkpoint=fail): move "
                    f"{storage.join(self.directory, str(step))} away, or set train.on_corrupt_checkpoint=fallback"
                ) from problem
            older = steps[i + 1] if i + 1 < len(steps) else None
            logging.warning(
                "%s; %s%s",
                line,
                f"falling back to step {older}" if older is not None else "no older checkpoint: starting from step 0",
                f" (moved to {storage.join(self.directory, CORRUPT_DIR)})" if quarantine else "",
            )
            if quarantine:
                self._quarantine(step)
        return None

    def _quarantine(self, step: int) -> None:
        if jax.process_index() == 0:
            target_dir = storage.join(self.directory, CORRUPT_DIR)
            storage.makedirs(target_dir)
            target, n = storage.join(target_dir, str(step)), 1
            while storage.exists(target):
                n += 1
                target = storage.join(target_dir, f"{step}.{n}")
            # On object storage a rename is copy + delete: a kill in between leaves a copy to delete by hand.
            storage.path(storage.join(self.directory, str(step))).rename(target)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"distill_jax_quarantine_{step}")
        self._record.forget([step])
        self._manager.reload()

    def _read(self, step: int, abstract_state: Any, params_only: bool) -> tuple[Any, dict[str, Any]]:
        return (
            self._restore_params(step, abstract_state)
            if params_only
            else self._restore_state_and_data(step, abstract_state)
        )

    def _restore_params(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
        """The state with its params read and `opt_state=None`: the optimizer's moments (2x the params
        under Adam) are never read, for jobs that only run the model (eval, generate, IFD, teachers)."""
        adapters_abstract, _ = _split_frozen_base(abstract_state)
        item = {"params": adapters_abstract.params}
        with ocp.PyTreeCheckpointer() as reader:
            restored = reader.restore(
                storage.join(self.directory, str(step), "state"),
                args=ocp.args.PyTreeRestore(
                    item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item), partial_restore=True
                ),
            )
        return abstract_state.replace(params=restored["params"], opt_state=None), {}

    def _restore_state_and_data(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
        adapters_abstract, _ = _split_frozen_base(abstract_state)
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(adapters_abstract), data=ocp.args.JsonRestore()),
        )
        if not isinstance(restored["data"], dict) or "per_process" not in restored["data"]:
            raise KeyError("the data item holds no per_process iterator states")
        return restored["state"], restored["data"]

    def _with_frozen_base(self, step: int, state: Any, abstract_state: Any) -> Any:
        _, abstract_base = _split_frozen_base(abstract_state)
        if abstract_base is None:
            return state
        if not self._frozen_base_written:
            raise FileNotFoundError(
                f"{self._frozen_base_dir} is missing: the LoRA checkpoint of step {step} holds only the "
                "adapters and needs the frozen base weights written beside it at the run's first save"
            )
        with ocp.StandardCheckpointer(atomicity_options=self._atomicity) as reader:
            base = reader.restore(self._frozen_base_dir, abstract_base)
        return state.replace(params=lora.with_adapters(base, state.params))

    def restore(
        self, step: int, abstract_state: Any, *, params_only: bool = False
    ) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        """Restores onto the shardings carried by `abstract_state` (ShapeDtypeStructs), resharding if needed.

        With ``params_only`` only the params are read (the returned state has ``opt_state=None`` and
        the data item is ``{}``).
        """
        state, data = self._read(step, abstract_state, params_only)
        return self._with_frozen_base(step, state, abstract_state), data, self.restore_meta(step)

    def restore_meta(self, step: int) -> dict[str, Any]:
        return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def close(self) -> None:
        """Waits for the save in flight (raising CheckpointSaveError if it failed), then closes."""
        try:
            self._confirm_pending()
            self._apply_retention()
        finally:
            try:
                self._manager.close()
            except Exception:
                if not self._failed:
                    raise
                # The failure was reported already (CheckpointSaveError); Orbax re-raises it on close.
