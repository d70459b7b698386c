"""The prepare step: teacher corpus -> validated, tokenized, per-domain shards + manifest.

read -> validate (corpus.py) -> format target -> tokenize -> duplicate/length checks -> spill
-> TFDS shards (shards.py) -> manifest.json + rejects.jsonl, all inside a sibling temp dir that
is renamed onto the output only when complete, so a crash never leaves a half-written corpus.

Every non-blank input row ends up either written or in rejects.jsonl with a reason code and
its file:line; ``read == written + rejected`` is checked before anything is published. By default
over-long rows are rejected so the student never learns cut-off targets; ``truncate`` (input,
target or both) cuts those fields to their limit instead, keeping EOS, and counts them. Because
prepare is the one path every row takes (teacher corpora, pool purchases, stored teacher outputs,
synthetic rows, eval sets), truncation applies to all of them alike.

Re-running with the same inputs (by content hash), options and tokenizer vocabulary is a no-op,
so pipelines can call prepare unconditionally.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from absl import logging

from distill_jax import atomic, storage
from distill_jax.data import shards
from distill_jax.data.corpus import (
    TFDS_PREFIX,
    CorpusError,
    input_sha256,
)
from distill_jax.data.corpus_writer import CorpusWriter
from distill_jax.data.prepare_options import (  # noqa: F401 - re-exported: callers import them from here
    DEFAULT_PLAIN_TARGET_TEMPLATE,
    DEFAULT_TARGET_TEMPLATE,
    TEMPLATE_FIELDS,
    TRUNCATE_CHOICES,
    PrepareOptions,
    PrepareSummary,
)
from distill_jax.data.tokenizers import Tokenizer, load_tokenizer


def prepare_corpus(
    inputs: Sequence[str], output_dir: str, options: PrepareOptions, overwrite: bool = False
) -> PrepareSummary:
    """Prepares ``inputs`` into ``output_dir`` atomically; see the module docstring.

    Raises CorpusError when ``output_dir`` holds a different corpus and ``overwrite`` is False,
    for unreadable/unknown inputs, and for bad options.
    """
    options.check()
    if not inputs:
        raise CorpusError("no inputs given; pass at least one corpus file or tfds: spec")
    repeated = sorted({p for p in inputs if list(inputs).count(p) > 1})
    if repeated:
        raise CorpusError(f"inputs {repeated} are given more than once; list each input once")
    out_url = storage.check(output_dir)  # local, gs:// or s3://; any other scheme:// is refused here
    tok = load_tokenizer(options.tokenizer_kind, options.tokenizer_path)
    if storage.is_remote(out_url):
        # Built on local disk as usual, then uploaded (see _publish).
        out = Path(storage.staging_dir(out_url, "prepare")) / "out"
    else:
        out = Path(out_url)
    # gs:// / s3:// inputs (the distill scheduler's purchases on a remote workdir, or a user's corpus) are
    # read from a local copy (the readers open local files); the manifest names the URL.
    local: dict[str, str] = {}
    try:
        for p in inputs:
            if storage.is_remote(p):
                try:
                    local[p] = storage.local_file(p, "prepare_inputs")
                except FileNotFoundError:
                    raise CorpusError(f"{p}: cannot open input (no such object); check the URL") from None
        return _prepare(inputs, local, out_url, out, options, tok, overwrite)
    finally:
        for copy in local.values():
            shutil.rmtree(os.path.dirname(copy), ignore_errors=True)


def _prepare(
    inputs: Sequence[str],
    local: dict[str, str],
    out_url: str,
    out: Path,
    options: PrepareOptions,
    tok: Tokenizer,
    overwrite: bool,
) -> PrepareSummary:
    input_infos = [
        {"path": p if p.startswith(TFDS_PREFIX) else storage.check(p), "sha256": input_sha256(local.get(p, p))}
        for p in inputs
    ]
    content_hash = _content_hash(input_infos, options, tok)
    if storage.exists(out_url):
        existing = _existing_manifest(out_url)
        if existing is not None and existing["content_hash"] == content_hash:
            logging.info("prepare: %s is up to date (content hash %s); nothing to do", out_url, content_hash[:12])
            return PrepareSummary.from_manifest(out_url, existing, was_noop=True)
        if not overwrite:
            what = "a corpus prepared from other inputs/options" if existing else "other files"
            raise CorpusError(
                f"{out_url} already exists and holds {what}; choose another output "
                "directory or pass overwrite to replace it"
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{out.name}.tmp-", dir=out.parent))
    try:
        manifest = CorpusWriter(tmp, options, tok).run(inputs, input_infos, content_hash, local)
        if storage.is_remote(out_url):
            _publish(tmp, out_url)
        else:
            atomic.replace_directory(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    summary = PrepareSummary.from_manifest(out_url, manifest, was_noop=False)
    logging.info(
        "prepare: wrote %d examples in %d domains to %s (%d rows rejected)",
        summary.written,
        len(summary.domains),
        out_url,
        summary.rejected_total,
    )
    return summary


def _publish(built: Path, url: str) -> None:
    """Uploads a built corpus to object storage, where nothing renames atomically: the old manifest
    goes first and the new one last, so at every moment the URL either has no manifest (readers
    refuse it) or a complete corpus."""
    storage.remove_tree(url)
    storage.upload_tree(built, url, last=shards.MANIFEST_FILE)


def _content_hash(input_infos: list[dict[str, Any]], options: PrepareOptions, tok: Tokenizer) -> str:
    key = {
        "format_version": shards.FORMAT_VERSION,
        "inputs": input_infos,
        "options": options.hashed(),
        "tokenizer": tok.fingerprint(),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()


def _existing_manifest(out: str) -> dict[str, Any] | None:
    """The manifest of a complete prepared corpus at ``out``, else None."""
    try:
        manifest = shards.load_manifest(out)
    except CorpusError:
        return None
    info = storage.join(out, shards.TFDS_NAME, shards.TFDS_VERSION, "dataset_info.json")
    return manifest if storage.exists(info) else None
