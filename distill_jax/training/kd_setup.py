"""What a KD run adds to a training run, checked together before anything compiles: the stored teacher logits
(``kd.logits_dir``, offline) or a teacher in the loop (``kd.teacher_dir``, online), and the step's KD settings."""

from __future__ import annotations

import dataclasses

import ml_collections
from absl import logging
from jax.sharding import Mesh

from distill_jax.config import ConfigError
from distill_jax.data.kd_logits import StoredLogits
from distill_jax.models import family
from distill_jax.training.kd_losses import KDSettings, OnlineKDSettings
from distill_jax.training.online_teacher import OnlineTeacher
from distill_jax.training.teacher_logits import load_teacher


@dataclasses.dataclass(frozen=True)
class KDRun:
    """At most one teacher source; ``settings`` is None for plain CE training."""

    settings: KDSettings | None = None
    store: StoredLogits | None = None  # offline: batches carry its top-k (the pipeline looks rows up by id)
    teacher: OnlineTeacher | None = None  # online: its forward runs inside the train step

    @property
    def stored_k(self) -> int:
        """k of the top-k the batches carry (0: none, also for an online teacher)."""
        return self.settings.top_k if self.store is not None else 0


def kd_mode(cfg: ml_collections.ConfigDict) -> str:
    """The KD source of a run: "stored", "online" or "" (none); both at once is refused in one line."""
    stored, online = bool(cfg.kd.logits_dir), bool(cfg.kd.teacher_dir)
    if stored and online:
        raise ConfigError(
            "kd.logits_dir and kd.teacher_dir are exclusive: stored teacher top-k (offline) or a teacher in the "
            "train step (online); set one of them"
        )
    return "stored" if stored else "online" if online else ""


def open_kd(cfg: ml_collections.ConfigDict, vocab_size: int, mesh: Mesh) -> KDRun:
    """The KD side of a run from ``cfg.kd``: nothing, the stored logits, or the teacher loaded onto ``mesh``."""
    mode = kd_mode(cfg)
    if mode == "online":
        teacher = load_online_teacher(cfg, mesh, vocab_size)
        settings = OnlineKDSettings.online_from_config(cfg.kd, train_steps=cfg.train.steps, vocab_size=vocab_size)
        _log_settings(f"online teacher {cfg.kd.teacher_dir}", settings)
        return KDRun(settings=settings, teacher=teacher)
    if mode == "stored":
        store = open_stored(cfg, vocab_size)
        settings = KDSettings.from_config(
            cfg.kd, train_steps=cfg.train.steps, stored_k=store.k, stored_temperature=store.temperature
        )
        _log_settings(f"{cfg.kd.logits_dir}: {len(store)} examples with teacher top-{store.k}", settings)
        return KDRun(settings=settings, store=store)
    return KDRun()


def open_stored(cfg: ml_collections.ConfigDict, vocab_size: int) -> StoredLogits:
    """``kd.logits_dir``, refusing logits of another vocabulary (their ids would index the wrong rows)."""
    store = StoredLogits.open(cfg.kd.logits_dir)
    stored_vocab = int(store.meta["vocab_size"])
    if stored_vocab != vocab_size:
        raise ConfigError(
            f"kd.logits_dir={cfg.kd.logits_dir} holds logits over {stored_vocab} ids but the student's vocabulary "
            f"has {vocab_size}; the teacher must share the student's tokenizer"
        )
    return store


def _log_settings(source: str, settings: KDSettings) -> None:
    logging.info(
        "KD from %s: %s, %s, alpha %s, T %s",
        source,
        settings.kind,
        f"top-{settings.top_k} with {settings.policy}" if settings.top_k else "dense",
        settings.alpha,
        settings.temperature,
    )


def load_online_teacher(cfg: ml_collections.ConfigDict, mesh: Mesh, vocab_size: int) -> OnlineTeacher:
    """``kd.teacher_dir`` loaded onto the student's ``mesh`` (the devices of ``cfg.mesh``) with its own rules.

    Refuses a teacher over another vocabulary (dense KL compares the two distributions id by id) or one whose
    tokenizer is not the student data's (load_teacher), before anything compiles.
    """
    kd = cfg.kd
    mesh_cfg = ml_collections.ConfigDict(cfg.mesh.to_dict())
    if kd.get("teacher_logical_axis_rules"):
        mesh_cfg.logical_axis_rules = [tuple(r) for r in kd.teacher_logical_axis_rules]
    run, params, described = load_teacher(kd.teacher_dir, cfg.data.train_dir, mesh=mesh_cfg)
    if run.mesh != mesh:
        raise ConfigError(f"kd.teacher_dir={kd.teacher_dir}: its mesh {dict(run.mesh.shape)} is not the student's")
    if run.model_config.vocab_size != vocab_size:
        raise ConfigError(
            f"kd.teacher_dir={kd.teacher_dir} has a vocabulary of {run.model_config.vocab_size} ids but the student "
            f"{vocab_size}: online KD compares distributions id by id; use a teacher with the student's tokenizer"
        )
    teacher = OnlineTeacher(
        model=run.model,
        model_config=run.model_config,
        params=params,
        shardings=run.shardings.params,
        rules=run.rules,
        description=described,
    )
    logging.info(
        "Online KD teacher %s (%s%s): %s, %.2fM parameters, frozen, no optimizer state; %.2f MiB per device.",
        kd.teacher_dir,
        described["kind"],
        f" step {described['step']}" if described["step"] is not None else "",
        run.model_config.family.upper(),
        family.num_params(run.model_config) / 1e6,
        teacher.bytes_per_device() / 2**20,
    )
    return teacher
