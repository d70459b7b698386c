"""What a KD run adds to a training run: the stored teacher logits and the step's KD settings, checked together."""

from __future__ import annotations

from typing import Any

import ml_collections
from absl import logging

from distill_jax.data.kd_logits import StoredLogits
from distill_jax.training.kd_losses import KDSettings


def open_kd(cfg: ml_collections.ConfigDict, vocab_size: int) -> tuple[Any, KDSettings | None]:
    """(StoredLogits, KDSettings) when ``kd.logits_dir`` is set, else (None, None).

    Refuses logits of another vocabulary (their ids would index the wrong rows) and a kd.top_k above the
    stored k, before anything compiles.
    """
    kd_cfg = cfg.get("kd")  # .get: workdir configs saved before the section existed lack it
    if kd_cfg is None or not kd_cfg.logits_dir:
        return None, None
    store = StoredLogits.open(kd_cfg.logits_dir)
    stored_vocab = int(store.meta["vocab_size"])
    if stored_vocab != vocab_size:
        raise ValueError(
            f"kd.logits_dir={kd_cfg.logits_dir} holds logits over {stored_vocab} ids but the student's vocabulary has "
            f"{vocab_size}; the teacher must share the student's tokenizer"
        )
    settings = KDSettings.from_config(
        kd_cfg, train_steps=cfg.train.steps, stored_k=store.k, stored_temperature=store.temperature
    )
    logging.info(
        "KD from %s: %d examples with teacher top-%d (using %d), %s with %s, alpha %s, T %s",
        kd_cfg.logits_dir,
        len(store),
        store.k,
        settings.top_k,
        settings.kind,
        settings.policy,
        settings.alpha,
        settings.temperature,
    )
    return store, settings
