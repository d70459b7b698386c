"""On-disk format of stored teacher top-k logits (written by `distill-jax teacher-logits`, read by the pipeline).

    OUT/plan.json                     the job that wrote it (teacher, data, k, temperature, ids digest, chunking)
    OUT/chunks/chunk_000000/          one directory per `chunk_size` consecutive examples, renamed into place whole:
        ids.npy       [tokens, k]     top-k token ids, uint16 when the vocabulary has < 65536 ids, else int32
        logp.npy      [tokens, k]     their log-probabilities at the recorded temperature, float16
        residual.npy  [tokens]        1 - sum(top-k probabilities), float16 (computed in float32 on device)
        offsets.npy   [rows + 1]      int64: row i's tokens are [offsets[i], offsets[i + 1])
        mask.npy      [tokens]        optional uint8: 1 where the top-k is the teacher's (else CE only there)
        example_ids.json              the rows' example ids, in row order
    OUT/meta.json                     k, temperature, vocab, dtypes, counts and bytes/token (written last)

Why .npy chunk directories and not ArrayRecord: TFDS writes a whole dataset at once (no appending, so no
resumable chunks), and each ArrayRecord record would be a serialised example to decode per read. Plain
.npy files are written once per chunk (atomic by directory rename, so a killed job leaves no half chunk),
are memory-mapped by readers (a row is a slice, zero-copy; grain workers only pickle paths), and their
bytes are exactly the payload, so bytes/token is the encoding's size: k * (2 + 2) + 2 bytes at uint16 ids.
Rows are keyed by example id (unique across a prepared corpus), so the shards never have to be rewritten.

On object storage (OUT is gs:// or s3://, distill_jax/storage.py) nothing renames atomically: a chunk's
arrays are uploaded under their final names and example_ids.json last, so a chunk is finished exactly when
its example_ids.json exists (a killed upload leaves a chunk without it, which a rerun writes again). Readers
memory-map a local copy, downloaded once per host and meta.json (`StoredLogits.open`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import fsspec
import numpy as np

from distill_jax import storage

CHUNKS_DIR, META_FILE, PLAN_FILE = "chunks", "meta.json", "plan.json"
IDS_FILE = "example_ids.json"  # written last: on object storage, the chunk's completion marker
ARRAYS = ("ids", "logp", "residual", "offsets")
FORMAT_VERSION = 1


def ids_dtype(vocab_size: int) -> np.dtype:
    """uint16 halves the ids' bytes whenever every id fits (T5's 32128, BART's 50265, ByT5's 384)."""
    return np.dtype(np.uint16) if vocab_size <= 65536 else np.dtype(np.int32)


def chunk_dir(output_dir: str | os.PathLike, chunk: int) -> Path:
    return Path(output_dir) / CHUNKS_DIR / f"chunk_{chunk:06d}"


def write_chunk(
    output_dir: str | os.PathLike,
    chunk: int,
    example_ids: Sequence[str],
    rows: Sequence[tuple[np.ndarray, ...]],
    vocab_size: int,
) -> int:
    """Writes one chunk (rows of (ids [n, k], logp [n, k], residual [n])) beside-then-rename (object storage:
    example_ids.json last); returns its bytes."""
    lengths = [len(r[2]) for r in rows]
    arrays = {
        "ids": np.concatenate([r[0] for r in rows]).astype(ids_dtype(vocab_size)),
        "logp": np.concatenate([r[1] for r in rows]).astype(np.float16),
        "residual": np.concatenate([r[2] for r in rows]).astype(np.float16),
        "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
    }
    if any(len(r) > 3 for r in rows):  # a 4th element: which tokens have the teacher's distribution (mask.npy)
        arrays["mask"] = np.concatenate([r[3] if len(r) > 3 else np.ones(len(r[2])) for r in rows]).astype(np.uint8)
    payload = sum(a.nbytes for k, a in arrays.items() if k != "offsets")
    if storage.is_remote(output_dir):
        final_url = storage.join(output_dir, CHUNKS_DIR, f"chunk_{chunk:06d}")
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.save(buffer, array)
            storage.put_bytes(f"{final_url}/{name}.npy", buffer.getvalue())
        storage.put_bytes(f"{final_url}/{IDS_FILE}", json.dumps(list(example_ids)).encode("utf-8"))  # the marker
        return payload
    final = chunk_dir(output_dir, chunk)
    tmp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    for name, array in arrays.items():
        np.save(tmp / f"{name}.npy", array)
    (tmp / IDS_FILE).write_text(json.dumps(list(example_ids)), encoding="utf-8")
    for f in tmp.iterdir():  # durable before it becomes visible
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    os.rename(tmp, final)
    return payload


def finished_chunks(output_dir: str | os.PathLike) -> set[int]:
    """Chunk numbers fully written; leftovers of a killed write (.tmp-*) are removed, never read (on object
    storage: the chunks with their example_ids.json; one without it is written again)."""
    if storage.is_remote(output_dir):
        fs, root = fsspec.core.url_to_fs(storage.join(output_dir, CHUNKS_DIR))
        markers = fs.glob(f"{root}/chunk_*/{IDS_FILE}")
        return {int(m.rsplit("/", 2)[1].split("_")[1]) for m in markers}
    root = Path(output_dir) / CHUNKS_DIR
    if not root.is_dir():
        return set()
    done = set()
    for entry in root.iterdir():
        if entry.name.startswith(".tmp-"):
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.name.startswith("chunk_") and entry.is_dir():
            done.add(int(entry.name.split("_")[1]))
    return done


def _local_copy(output_dir: str, meta_text: str) -> str:
    """`output_dir` when local; for gs:// / s3:// a complete local copy (np.load memory-maps local files only),
    downloaded once per host and meta.json (a job rerun under the same URL gets a new copy)."""
    if not storage.is_remote(output_dir):
        return output_dir
    version = hashlib.sha256(meta_text.encode("utf-8")).hexdigest()[:16]
    return storage.staged_tree(output_dir, "kd_logits", version, META_FILE)


@dataclasses.dataclass
class StoredLogits:
    """Random access to stored top-k rows by example id; arrays are memory-mapped on first use.

    Picklable (grain may copy it into worker threads or processes): only paths and the id index travel.
    """

    root: str
    meta: dict[str, Any]
    index: dict[str, tuple[int, int, int]]  # example id -> (chunk, start token, end token)
    _open: dict[int, dict[str, np.ndarray]] = dataclasses.field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, output_dir: str | os.PathLike) -> StoredLogits:
        output_dir = storage.check(output_dir)
        meta_path = storage.join(output_dir, META_FILE)
        if not storage.isfile(meta_path):
            raise FileNotFoundError(
                f"{output_dir}: no {META_FILE}; not a finished `distill-jax teacher-logits` output "
                "(rerun the job with the same flags to finish it)"
            )
        text = storage.read_text(meta_path)
        meta = json.loads(text)
        output_dir = _local_copy(output_dir, text)
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{meta_path}: format_version {meta.get('format_version')!r} is not {FORMAT_VERSION}")
        index: dict[str, tuple[int, int, int]] = {}
        for chunk in range(int(meta["num_chunks"])):
            d = chunk_dir(output_dir, chunk)
            ids = json.loads((d / IDS_FILE).read_text(encoding="utf-8"))
            offsets = np.load(d / "offsets.npy")
            for i, example_id in enumerate(ids):
                index[example_id] = (chunk, int(offsets[i]), int(offsets[i + 1]))
        return cls(os.fspath(output_dir), meta, index)

    def __getstate__(self) -> dict[str, Any]:
        return {"root": self.root, "meta": self.meta, "index": self.index, "_open": {}}

    @property
    def k(self) -> int:
        return int(self.meta["top_k"])

    @property
    def temperature(self) -> float:
        return float(self.meta["temperature"])

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, example_id: object) -> bool:
        return example_id in self.index

    def get(self, example_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(ids int32 [n, k], log-probs float32 [n, k], residual float32 [n]) of one example, or None."""
        where = self.index.get(example_id)
        if where is None:
            return None
        chunk, start, end = where
        if chunk not in self._open:
            d = chunk_dir(self.root, chunk)
            self._open[chunk] = {n: np.load(d / f"{n}.npy", mmap_mode="r") for n in ARRAYS if n != "offsets"}
        a = self._open[chunk]
        return (
            np.asarray(a["ids"][start:end], np.int32),
            np.asarray(a["logp"][start:end], np.float32),
            np.asarray(a["residual"][start:end], np.float32),
        )

    def mask(self, example_id: str) -> np.ndarray | None:
        """float32 [n]: 1 where the stored top-k is the teacher's (mask.npy, written by teachers whose distribution
        covers only part of a target, e.g. an OpenAI teacher's rationale tokens); None when every token is."""
        where = self.index.get(example_id)
        if where is None:
            return None
        chunk, start, end = where
        path = chunk_dir(self.root, chunk) / "mask.npy"
        if not path.is_file():
            return None
        return np.asarray(np.load(path, mmap_mode="r")[start:end], np.float32)
