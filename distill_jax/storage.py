"""Where a run's files live: local paths, gs:// and s3:// through one path layer (etils epath + fsspec).

Every path the product writes or reads goes through `check` first: a local path becomes absolute, a
gs:// or s3:// URL is kept as it is, and any other `scheme://` is refused with one line (before this
layer, `--workdir=s3://runs/r1` silently wrote a local directory `s3:/runs/r1`).

Endpoints and credentials come from the standard places and never from a config: for S3-compatible
stores the AWS variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION,
profiles, instance roles) that boto3/s3fs and tensorstore read; for GCS, Application Default
Credentials, or STORAGE_EMULATOR_HOST for an emulator.

What "atomic" means on an object store: one object PUT is atomic (a reader sees the whole old object
or the whole new one, never a prefix), and a rename is a copy plus a delete, so it is not. A result
made of several objects (a checkpoint step, prepared shards, an HF export) is therefore written
under its final name with a marker object written last, and readers treat it as complete only when
the marker is there. Appending is impossible: appended logs are written locally and the whole
object is uploaded again (see `LocalMirror`).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path

import fsspec
from absl import logging
from etils import epath

REMOTE_SCHEMES = ("gs", "s3")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")

# s3fs and gcsfs cache directory listings for the life of the process by default: a reader would
# never see steps that other processes (the other hosts, a resumed run) wrote after its first
# listing (a test caught Orbax reporting step 9 as the newest when 11 was there). Every listing asks
# the store; set before any filesystem instance exists (fsspec applies this config at creation).
for _protocol in ("s3", "gs", "gcs"):
    fsspec.config.conf.setdefault(_protocol, {}).setdefault("use_listings_cache", False)


class UnsupportedStorageError(ValueError):
    """A path with a URL scheme this product cannot write to (only local paths, gs:// and s3://)."""


def scheme(path: str | os.PathLike) -> str | None:
    """The URL scheme of `path` (lower case), or None for a local path."""
    match = _SCHEME.match(os.fspath(path))
    return match.group(1).lower() if match else None


def is_remote(path: str | os.PathLike) -> bool:
    return scheme(path) is not None


def check(path: str | os.PathLike) -> str:
    """`path` as the product stores it: absolute when local, the URL (no trailing slash) when remote.

    Raises UnsupportedStorageError for any scheme but gs:// and s3://, and for a URL without a bucket.
    """
    text = os.fspath(path)
    kind = scheme(text)
    if kind is None:
        return os.path.abspath(text)
    if kind not in REMOTE_SCHEMES:
        raise UnsupportedStorageError(
            f"{text}: unsupported storage scheme {kind}://; use a local path, gs://BUCKET/... or s3://BUCKET/..."
        )
    rest = text[len(kind) + 3 :]
    if not rest.split("/", 1)[0]:
        raise UnsupportedStorageError(f"{text}: no bucket; write gs://BUCKET/PATH or s3://BUCKET/PATH")
    return f"{kind}://{rest.rstrip('/')}"


def path(p: str | os.PathLike) -> epath.Path:
    """The checked path as an epath.Path (pathlib-like on local disk, gs:// and s3://)."""
    return epath.Path(check(p))


def join(base: str | os.PathLike, *parts: str) -> str:
    base = check(base)
    return "/".join([base.rstrip("/"), *parts]) if is_remote(base) else os.path.join(base, *parts)


def exists(p: str | os.PathLike) -> bool:
    return path(p).exists()


def isdir(p: str | os.PathLike) -> bool:
    """On an object store: some object exists under the prefix `p/`."""
    return path(p).is_dir()


def isfile(p: str | os.PathLike) -> bool:
    return path(p).is_file()


def makedirs(p: str | os.PathLike) -> None:
    """Creates a local directory; a no-op on object stores, which have prefixes, not directories."""
    p = check(p)
    if not is_remote(p):
        os.makedirs(p, exist_ok=True)


def read_text(p: str | os.PathLike) -> str:
    """The object's text; raises FileNotFoundError when absent (on every backend)."""
    return path(p).read_text(encoding="utf-8")


def put_bytes(p: str | os.PathLike, data: bytes) -> None:
    """One object write: atomic on gs:// and s3:// (a single PUT, or a multipart upload that becomes
    visible only when completed). Local paths go through distill_jax.atomic instead."""
    if not is_remote(p):
        raise ValueError(f"{p}: put_bytes is for object storage; local files go through distill_jax.atomic")
    path(p).write_bytes(data)


def remove_tree(p: str | os.PathLike) -> None:
    target = path(p)
    if target.is_dir():
        target.rmtree()
    elif target.exists():
        target.unlink()


def upload_tree(local_dir: str | os.PathLike, remote_dir: str | os.PathLike, *, last: str | None = None) -> None:
    """Copies the files under `local_dir` to `remote_dir`, object by object; `last` (a relative name,
    the marker readers check) is copied after every other file, so its presence means complete."""
    local_dir, remote = Path(local_dir), path(remote_dir)
    files = sorted(p for p in local_dir.rglob("*") if p.is_file())
    if last is not None:
        files = [p for p in files if p.relative_to(local_dir).as_posix() != last] + [local_dir / last]
    for file in files:
        (remote / file.relative_to(local_dir).as_posix()).write_bytes(file.read_bytes())


def download_tree(remote_dir: str | os.PathLike, local_dir: str | os.PathLike) -> None:
    """Copies every object under `remote_dir` into `local_dir` (created), keeping relative names."""
    remote, local_dir = check(remote_dir), Path(local_dir)
    if not is_remote(remote):
        shutil.copytree(remote, local_dir, dirs_exist_ok=True)
        return
    # fsspec directly: epath's walk passes s3fs an argument it does not take (etils 1.15, s3fs 2026.7).
    fs, root = fsspec.core.url_to_fs(remote)
    for key in fs.find(root):
        target = local_dir / os.path.relpath(key, root)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(fs.cat_file(key))


def staging_dir(remote: str | os.PathLike, purpose: str) -> str:
    """A local directory for work on `remote`'s behalf (its name is derived from the URL, so one run's
    processes on a host share it); under DISTILL_JAX_STAGING_DIR, else the system temp dir."""
    root = os.environ.get("DISTILL_JAX_STAGING_DIR") or os.path.join(tempfile.gettempdir(), "distill_jax_staging")
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", check(remote))
    directory = os.path.join(root, purpose, name)
    os.makedirs(directory, exist_ok=True)
    return directory


def staged_tree(remote_dir: str, purpose: str, version: str, marker: str) -> str:
    """A complete local copy of the tree `remote_dir`, downloaded once per host and `version` (a
    content hash: a tree rewritten under the same URL gets a new copy), for readers that open or
    memory-map local files only. `marker` (a file the tree always holds) present means complete: the
    copy is downloaded into a temporary directory and renamed into place; when several processes of a
    host race, one rename wins and the others use its copy."""
    root = staging_dir(remote_dir, purpose)
    local = os.path.join(root, version)
    if os.path.isfile(os.path.join(local, marker)):
        return local
    tmp = tempfile.mkdtemp(prefix=".download-", dir=root)
    try:
        download_tree(remote_dir, tmp)
        os.rename(tmp, local)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not os.path.isfile(os.path.join(local, marker)):  # another process on this host won the rename
            raise
    logging.info("%s: staged %s into %s", purpose, remote_dir, local)
    return local


def local_tree(p: str | os.PathLike, purpose: str) -> str:
    """`p` itself when local; for a gs:// / s3:// directory (a Hugging Face model or tokenizer directory,
    whose readers open local files only) a `staged_tree` copy, versioned by the objects' names, sizes and
    generations (ETag on s3, generation on gs), so one changed file gives a new copy. The listing is one
    request; the download happens once per host and version."""
    p = check(p)
    if not is_remote(p):
        return p
    fs, root = fsspec.core.url_to_fs(p)
    listing = fs.find(root, detail=True)
    if not listing:
        raise FileNotFoundError(f"{p}: no objects under this prefix")
    entries = sorted(
        (os.path.relpath(key, root), info.get("size"), str(info.get("ETag") or info.get("generation") or ""))
        for key, info in listing.items()
    )
    version = hashlib.sha256(repr(entries).encode("utf-8")).hexdigest()[:16]
    return staged_tree(p, purpose, version, marker=entries[0][0])


class LocalMirror:
    """A local working copy of a remote file for writers that need a real file (append-only logs,
    SQLite, TensorBoard event files): `local` starts as the remote object's bytes, `sync()` uploads
    the whole file again (one atomic PUT). For a local `target` it is the file itself, sync is a no-op."""

    def __init__(self, target: str | os.PathLike, purpose: str):
        self.target = check(target)
        self.remote = is_remote(self.target)
        if not self.remote:
            self.local = self.target
            return
        directory = tempfile.mkdtemp(dir=staging_dir(os.path.dirname(self.target), purpose))
        self.local = os.path.join(directory, os.path.basename(self.target))
        try:
            Path(self.local).write_bytes(path(self.target).read_bytes())
        except FileNotFoundError:
            pass

    def sync(self) -> None:
        if self.remote and os.path.exists(self.local):
            put_bytes(self.target, Path(self.local).read_bytes())

    def discard(self) -> None:
        if self.remote:
            shutil.rmtree(os.path.dirname(self.local), ignore_errors=True)


def local_file(p: str | os.PathLike, purpose: str) -> str:
    """`p` itself when local; for gs:// / s3:// a fresh local copy of the object, for readers that open
    local files only (ArrayRecord, csv, pyarrow). The copy lives in its own temp directory under
    `staging_dir`; the caller removes it (`os.path.dirname` of the result) when done."""
    p = check(p)
    if not is_remote(p):
        return p
    directory = tempfile.mkdtemp(dir=staging_dir(p.rsplit("/", 1)[0], purpose))
    local = os.path.join(directory, p.rsplit("/", 1)[1])
    Path(local).write_bytes(path(p).read_bytes())
    return local


class SegmentLog:
    """An append-only log on object storage, where nothing can be appended to: the base object `target`
    plus write-once segment objects under `target.d/`, one per `append` (one small PUT, so the cost of
    an append does not grow with the log, and each is atomic). `read` returns the base, then the
    segments in order; `compact(everything)` writes the whole log as the new base, then deletes the
    segments it read, so a kill between the two replays some records twice: readers must treat a
    repeated record as a no-op (the ledger's records are idempotent). One writer per log."""

    def __init__(self, target: str | os.PathLike):
        self.target = check(target)
        if not is_remote(self.target):
            raise ValueError(f"{self.target}: SegmentLog is for object storage; append to a local file directly")
        self._segments = f"{self.target}.d"
        self._fs, self._root = fsspec.core.url_to_fs(self._segments)
        self._read: list[str] = []
        self._next = 0

    def read(self) -> bytes:
        try:
            base = path(self.target).read_bytes()
        except FileNotFoundError:
            base = b""
        try:
            keys = sorted(self._fs.find(self._root))  # zero-padded names: sorted = written order
        except FileNotFoundError:
            keys = []
        parts = self._fs.cat(keys) if keys else {}  # fetched concurrently
        self._read = keys
        self._next = max([self._next, *(int(k.rsplit("/", 1)[1].split(".")[0]) + 1 for k in keys)])
        return base + b"".join(parts[k] for k in keys)

    def append(self, data: bytes) -> None:
        put_bytes(f"{self._segments}/{self._next:012d}.jsonl", data)
        self._next += 1

    def compact(self, everything: bytes) -> None:
        """`everything` (the base and every record appended since) becomes the base; segments go."""
        put_bytes(self.target, everything)
        keys = sorted(self._fs.find(self._root)) if self._fs.exists(self._root) else []
        if keys:
            self._fs.rm(keys)
        self._read = []
