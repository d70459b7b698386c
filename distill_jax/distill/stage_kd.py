"""``distill.loss=kd``: BalDistill stages train on the teacher's token distributions too (word-level KD).

Each stage's student then trains on ``alpha * KD + (1 - alpha) * CE`` (the ``kd`` config section) over its
cumulative purchases, with the teacher's top-k computed once per stage by the teacher-logits job (resumable
chunks under the stage directory) from a local seq2seq teacher over the student's tokenizer:
``distill.kd_teacher``, or the annotating teacher itself when ``teacher.kind=local``. Teachers that answer in
text only (pool, program) need ``distill.kd_teacher``.

With ``teacher.kind=openai`` and no ``distill.kd_teacher`` the logits are bought with the annotations
(``teacher.top_logprobs``; the teacher refuses one whose tokens are not the student's): each stage's buy phase
writes its annotations' top-k, aligned to the prepared targets, to ``STAGE/purchased_kd`` (``write_purchased``;
the kd_logits format with its mask), and the stage trains on the union of its stages' (``STAGE/kd_logits``).
A target token has the teacher's distribution while the target's prefix before it is the teacher's own tokens
(the template's text after the rationale, a cut or unmappable token, and synthetic rows get CE only).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np
from absl import logging

from distill_jax import atomic, multihost, storage
from distill_jax.config import ConfigError
from distill_jax.data import kd_logits
from distill_jax.data.prepare_options import PrepareOptions
from distill_jax.data.tokenizers import load_tokenizer
from distill_jax.training.teacher_logits import teacher_logits

LOSSES = ("ce", "kd")
BOUGHT = "bought with the annotations"  # kd_teacher(): the OpenAI teacher's own log-probs
PURCHASED_DIR = "purchased_kd"
DEFAULT_TOP_K = 128  # What the stages store when kd.top_k is 0 (DistillKit's and our bytes/token reference k)


def kd_teacher(cfg: ml_collections.ConfigDict) -> str:
    """The local teacher whose logits kd stages train on; "" for CE stages. Refuses what cannot work, in one line."""
    loss = cfg.distill.loss
    if loss not in LOSSES:
        raise ConfigError(f"distill.loss={loss!r}: use one of {', '.join(LOSSES)}")
    if loss == "ce":
        return ""
    if cfg.kd.logits_dir or cfg.kd.teacher_dir:
        raise ConfigError(
            "distill.loss=kd computes each stage's teacher logits itself: leave kd.logits_dir and kd.teacher_dir unset"
        )
    if cfg.distill.kd_teacher:
        return cfg.distill.kd_teacher
    if cfg.teacher.kind == "local":
        return cfg.teacher.checkpoint
    if cfg.teacher.kind == "openai":
        k, stored = int(cfg.kd.top_k), int(cfg.teacher.top_logprobs)
        if stored and k > stored:
            raise ConfigError(
                f"kd.top_k={k} but teacher.top_logprobs={stored} is what the annotations buy: use kd.top_k=0 or <= {stored}"
            )
        template = cfg.prepare.target_template
        if not template.startswith("{rationale}"):
            raise ConfigError(
                f"prepare.target_template={template!r}: distill.loss=kd with teacher.kind=openai trains on the "
                "teacher's log-probs over its rationale, so the target must start with it: begin the template with "
                "{rationale}, or set distill.kd_teacher"
            )
        return BOUGHT
    raise ConfigError(
        f"distill.loss=kd with teacher.kind={cfg.teacher.kind}: its annotations carry no token distributions here; "
        "set distill.kd_teacher to a local seq2seq teacher (a train/import-hf workdir or HF dir) over the "
        "student's tokenizer"
    )


def with_stage_logits(
    cfg: ml_collections.ConfigDict, stage_dir: str, stage_dirs: Sequence[str] = ()
) -> ml_collections.ConfigDict:
    """The stage's train config, plus kd.logits_dir over its ``data.train_dir`` for kd stages (``cfg`` otherwise).

    A collective: every process calls it (the teacher-logits job shards over the mesh and process 0 writes).
    ``stage_dirs``: this and every earlier stage's directory, whose purchased top-k a bought-KD stage trains on.
    """
    teacher = kd_teacher(cfg)
    if not teacher:
        return cfg
    if teacher == BOUGHT:
        union = _union(storage.join(stage_dir, "kd_logits"), stage_dirs or [stage_dir])
        if not union:
            logging.warning("distill.loss=kd: no purchased annotation of %s carries log-probs; CE only", stage_dir)
            return cfg
        cfg = copy.deepcopy(cfg)
        cfg.kd.logits_dir = union
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


def _meta(k: int, vocab: int, num_chunks: int, rows: int, tokens: int, kd_tokens: int) -> dict[str, Any]:
    return {
        "format_version": kd_logits.FORMAT_VERSION,
        "teacher": BOUGHT,
        "kind": "openai",
        "top_k": k,
        # Servers report the model's log-probs (vLLM's default logprobs-mode: raw, before temperature).
        "temperature": 1.0,
        "vocab_size": vocab,
        "ids_dtype": kd_logits.ids_dtype(vocab).name,
        "logp_dtype": "float16",
        "residual_dtype": "float16",
        "num_chunks": num_chunks,
        "num_examples": rows,
        "num_tokens": tokens,
        "kd_tokens": kd_tokens,  # tokens whose mask is 1
        "bytes_per_token": k * (kd_logits.ids_dtype(vocab).itemsize + 2) + 2 + 1,
    }


def aligned(topk: Any, target_ids: np.ndarray, prefix: int) -> tuple[np.ndarray, ...]:
    """(ids [n, k], logp [n, k], residual [n], mask [n]) over a prepared target of n tokens from the teacher's top-k
    over its completion (teachers.logprobs.TeacherTopK), where the completion's tokens start at ``prefix``.

    Target token p = prefix + j has the teacher's distribution iff j < topk.valid and the teacher's tokens 0..j-1
    are the target's (the teacher was conditioned on the same prefix); the rest (and the frame) get CE only.
    """
    n, k = len(target_ids), topk.k
    ids, logp = np.zeros((n, k), np.int32), np.zeros((n, k), np.float32)
    residual, mask = np.zeros((n,), np.float32), np.zeros((n,), np.uint8)
    own = np.asarray(target_ids[prefix:], np.int64)
    limit = min(int(topk.valid), len(own))
    same = np.asarray(topk.chosen[:limit], np.int64) == own[:limit]
    diverge = int(np.argmin(same)) if not same.all() else limit
    m = min(limit, diverge + 1)  # the first differing token still has the same prefix before it
    ids[prefix : prefix + m], logp[prefix : prefix + m] = topk.ids[:m], topk.logp[:m]
    residual[prefix : prefix + m] = np.maximum(1.0 - np.exp(topk.logp[:m].astype(np.float32)).sum(-1), 0.0)
    mask[prefix : prefix + m] = 1
    return ids, logp, residual, mask


def write_purchased(
    cfg: ml_collections.ConfigDict, stage_dir: str, rows: Sequence[dict[str, Any]], topks: Mapping[str, Any]
) -> dict[str, Any] | None:
    """Writes the stage's purchased annotations' top-k (``topks`` by row id), aligned to the targets prepare will
    write from ``rows`` (same template and tokenizer), to STAGE/purchased_kd; returns its meta (None: not bought KD).

    Process 0 only (the buy phase); written before purchased.jsonl, so a finished buy phase always has it.
    """
    if kd_teacher(cfg) != BOUGHT:
        return None
    options = PrepareOptions.from_config(cfg)
    tok = load_tokenizer(options.tokenizer_kind, options.tokenizer_path)
    prefix = len(tok.prefix_ids)
    k = int(cfg.teacher.top_logprobs)
    out = storage.join(stage_dir, PURCHASED_DIR)
    written, ids_written, tokens, kd_tokens = [], [], 0, 0
    for row in rows:
        topk = topks.get(row["id"])
        if topk is None:
            continue
        template = options.target_template if row.get("rationale") is not None else options.plain_target_template
        target = template.format(
            rationale=row.get("rationale"), target=row["target"], input=row["input"], domain=row["domain"]
        )
        arrays = aligned(topk, tok.encode(target), prefix)
        written.append(arrays)
        ids_written.append(row["id"])
        tokens += len(arrays[3])
        kd_tokens += int(arrays[3].sum())
    storage.remove_tree(out) if storage.exists(out) else None
    if written:
        kd_logits.write_chunk(out, 0, ids_written, written, tok.vocab_size)
    meta = _meta(k, tok.vocab_size, int(bool(written)), len(written), tokens, kd_tokens)
    atomic.write_text(storage.join(out, kd_logits.META_FILE), json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta


def _union(out: str, stage_dirs: Sequence[str], cfg_k: int = 0) -> str:
    """STAGE/kd_logits: one chunk per earlier stage's purchased top-k (rewritten whole each time: they are small)."""
    if multihost.is_main():
        dirs = [storage.join(d, PURCHASED_DIR) for d in stage_dirs]
        stores = [kd_logits.StoredLogits.open(d) for d in dirs if storage.exists(storage.join(d, kd_logits.META_FILE))]
        stores = [s for s in stores if len(s)]
        storage.remove_tree(out) if storage.exists(out) else None
        storage.makedirs(out)
        k, vocab = int(cfg_k), 0
        for chunk, store in enumerate(stores):
            ids = sorted(store.index, key=lambda i: store.index[i])
            rows = [(*store.get(i), store.mask(i)) for i in ids]
            k, vocab = store.k, int(store.meta["vocab_size"])
            kd_logits.write_chunk(out, chunk, ids, rows, vocab)
        totals = [sum(int(s.meta[f]) for s in stores) for f in ("num_examples", "num_tokens", "kd_tokens")]
        meta = _meta(k, vocab, len(stores), *totals)
        atomic.write_text(storage.join(out, kd_logits.META_FILE), json.dumps(meta, indent=2, sort_keys=True) + "\n")
    multihost.barrier("stage_kd_union")
    return out if json.loads(storage.read_text(storage.join(out, kd_logits.META_FILE)))["num_examples"] else ""
