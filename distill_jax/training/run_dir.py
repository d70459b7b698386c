"""A training run's directory: config.json, checkpoints/, and what jobs that read a run restore from it.

`train` and `import-hf` write one; `eval`, `generate`, `export-hf`, `teacher-logits`, a local or online
teacher and the stage scheduler read one. They all go through `RunDir`, so a run's saved config is read
the same way everywhere (laid over today's defaults: knobs added since take their defaults), a
checkpoint step is resolved the same way, and readers restore params only, never the optimizer state.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import ml_collections

from distill_jax import atomic, storage
from distill_jax.config import over_defaults
from distill_jax.models import family
from distill_jax.training.checkpoints import Checkpointer
from distill_jax.training.run_setup import RunSetup

CONFIG_FILE = "config.json"


@dataclasses.dataclass(frozen=True)
class RunDir:
    """``path`` (local, gs:// or s3://) of a run written by `distill-jax train` or `import-hf`."""

    path: str

    @classmethod
    def resolve(cls, path: str, step: int | None = None) -> tuple[RunDir, int | None]:
        """A run directory, or one of its step directories RUN/checkpoints/STEP -> (the run, the step)."""
        p = storage.check(path)
        if cls(p).has_config():
            return cls(p), step
        workdir, checkpoints, name = ([""] * 2 + p.rsplit("/", 2))[-3:]
        if name.isdigit() and checkpoints == "checkpoints" and cls(workdir).has_config():
            if step is not None and step != int(name):
                raise ValueError(f"--checkpoint={path} is step {name} but --step={step}")
            return cls(workdir), int(name)
        raise FileNotFoundError(
            f"{path}: not a training workdir (no {CONFIG_FILE}) nor a WORKDIR/checkpoints/STEP directory; "
            "give the --workdir of `distill-jax train`"
        )

    @property
    def config_path(self) -> str:
        return storage.join(self.path, CONFIG_FILE)

    @property
    def checkpoints(self) -> str:
        return storage.join(self.path, "checkpoints")

    def has_config(self) -> bool:
        return storage.isfile(self.config_path)

    def has_checkpoints(self) -> bool:
        return storage.isdir(self.checkpoints)

    def load_config(self) -> ml_collections.ConfigDict:
        """The run's saved config over today's defaults (a run saved before a knob existed gets its default)."""
        if not self.has_config():
            raise FileNotFoundError(
                f"{self.config_path} not found: not a directory written by `distill-jax train` or `import-hf`"
            )
        return over_defaults(json.loads(storage.read_text(self.config_path)))

    def save_config(self, config: ml_collections.ConfigDict) -> None:
        """Written whole or not at all (call from one process)."""
        atomic.write_text(self.config_path, config.to_json_best_effort(indent=2))

    def checkpointer(self, **options: Any) -> Checkpointer:
        return Checkpointer(self.checkpoints, **options)

    def step_meta(self, step: int | None = None) -> tuple[int, dict[str, Any]]:
        """(step, its checkpoint's metadata): ``step``, or the newest one."""
        checkpointer = self.checkpointer()
        try:
            chosen = checkpointer.latest_step() if step is None else step
            if chosen is None:
                raise FileNotFoundError(f"{self.checkpoints} holds no checkpoint: train first")
            return chosen, checkpointer.restore_meta(chosen)
        finally:
            checkpointer.close()

    def restore_params(self, run: RunSetup, step: int | None = None) -> tuple[Any, int]:
        """The params of ``step`` (default: the newest readable checkpoint), sharded for ``run``'s mesh.

        Only the params are read: jobs that run the model (eval, generate, IFD, teachers, export-hf)
        never load the optimizer's moments (load time and host memory).
        """
        if not self.has_checkpoints():
            raise FileNotFoundError(
                f"no checkpoint in {self.checkpoints}: train first (distill-jax train --workdir=...)"
            )
        checkpointer = self.checkpointer()
        try:
            if step is not None:
                state, _, _ = checkpointer.restore(step, run.abstract_state, params_only=True)
                return state.params, step
            # A reader never moves damaged steps (a training job may own the directory); it just skips them.
            restored = checkpointer.restore_latest(
                run.abstract_state, check_meta=meta_checker(run, self.path), params_only=True
            )
            if restored is None:
                raise FileNotFoundError(
                    f"no readable checkpoint in {self.checkpoints}: train first (distill-jax train --workdir=...)"
                )
            return restored.state.params, restored.step
        finally:
            checkpointer.close()


def meta_checker(run: RunSetup, workdir: str):
    """Refuses a checkpoint of another architecture or other domains (a config mistake, not damage)."""

    def check(step: int, meta: dict[str, Any]) -> None:
        changed = family.architecture_changes(meta["model"], run.model_config)
        if changed:
            raise ValueError(
                f"{workdir}: the checkpoint's model differs from the config's (checkpoint, config): {changed}; "
                "use the config it was trained with (e.g. the same --config.model.size or --config.model.hf_dir) "
                "or a fresh --workdir"
            )
        # An import-hf checkpoint made without data has seen no domains yet: the first data decides them.
        adopts = meta.get("imported_from") and not meta["domain_names"] and step == 0
        if meta["domain_names"] != run.domain_names and not adopts:
            raise ValueError(
                f"{workdir}: the checkpoint's domains {meta['domain_names']} differ from the data's "
                f"{run.domain_names}; use a fresh --workdir for different data"
            )

    return check
