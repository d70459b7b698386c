"""``distill.loss=kd``: BalDistill stages train on the teacher's token distributions too (word-level KD).

Each stage's student then trains on ``alpha * KD + (1 - alpha) * CE`` (the ``kd`` config section) over its
cumulative purchases, with the teacher's top-k computed once per stage by the teacher-logits job (resumable
chunks under the stage directory) from a local seq2seq teacher over the student's tokenizer:
``distill.kd_teacher``, or the annotating teacher itself when ``teacher.kind=local``. Teachers that answer in
text only (pool, program) and the HTTP teacher, whose ``logprobs`` are not read yet, need ``distill.kd_teacher``.
"""

from __future__ import annotations

import copy

import ml_collections

from distill_jax import storage
from distill_jax.config import ConfigError
from distill_jax.training.teacher_logits import teacher_logits

LOSSES = ("ce", "kd")
DEFAULT_TOP_K = 128  # What the stages store when kd.top_k is 0 (DistillKit's and our bytes/token reference k)


def kd_teacher(cfg: ml_collections.ConfigDict) -> str:
    """The local teacher whose logits kd stages train on; "" for CE stages. Refuses what cannot work, in one line."""
    loss = cfg.distill.get("loss", "ce")  # .get: configs saved before the knob lack it
    if loss not in LOSSES:
        raise ConfigError(f"distill.loss={loss!r}: use one of {', '.join(LOSSES)}")
    if loss == "ce":
        return ""
    if cfg.kd.get("logits_dir") or cfg.kd.get("teacher_dir"):
        raise ConfigError(
            "distill.loss=kd computes each stage's teacher logits itself: leave kd.logits_dir and kd.teacher_dir unset"
        )
    if cfg.distill.get("kd_teacher"):
        return cfg.distill.kd_teacher
    if cfg.teacher.kind == "local":
        return cfg.teacher.checkpoint
    raise ConfigError(
        f"distill.loss=kd with teacher.kind={cfg.teacher.kind}: its annotations carry no token distributions here; "
        "set distill.kd_teacher to a local seq2seq teacher (a train/import-hf workdir or HF dir) over the "
        "student's tokenizer"
    )


def with_stage_logits(cfg: ml_collections.ConfigDict, stage_dir: str) -> ml_collections.ConfigDict:
    """The stage's train config, plus kd.logits_dir over its ``data.train_dir`` for kd stages (``cfg`` otherwise).

    A collective: every process calls it (the teacher-logits job shards over the mesh and process 0 writes).
    """
    teacher = kd_teacher(cfg)
    if not teacher:
        return cfg
    out = storage.join(stage_dir, "kd_logits")
    teacher_logits(
        teacher,
        cfg.data.train_dir,
        out,
        top_k=int(cfg.kd.top_k) or DEFAULT_TOP_K,
        batch_size=int(cfg.distill.ifd_batch_size),
    )
    cfg = copy.deepcopy(cfg)
    cfg.kd.logits_dir = out
    return cfg
