"""Writes that never leave a half-written result behind: build beside the target, then rename.

On object storage (gs://, s3://) a file is one object and one PUT, which is atomic by itself; see
distill_jax/storage.py for what atomic means for results made of several objects.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from typing import Any

from distill_jax import storage

# mkstemp/mkdtemp create owner-only (0600/0700) entries; results should get the usual permissions.
# Read once at import (os.umask can only be read by setting it).
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def replace_directory(tmp: str | os.PathLike, out: str | os.PathLike) -> None:
    """Renames the finished directory `tmp` onto `out` (same filesystem).

    An existing `out` is renamed away first and restored if the rename fails, so `out` is always
    either the old complete result or the new one.
    """
    tmp, out = os.fspath(tmp), os.fspath(out)
    os.chmod(tmp, 0o777 & ~_UMASK)
    _share_owner_only_entries(tmp)
    if not os.path.exists(out):
        os.rename(tmp, out)
        return
    old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old-", dir=os.path.dirname(os.path.abspath(out)))
    previous = os.path.join(old, "previous")
    os.rename(out, previous)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(previous, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _share_owner_only_entries(root: str) -> None:
    """Gives owner-only files and directories inside ``root`` the umask's permissions.

    Writers that build through their own temporary files (mkstemp, safetensors' save_file) leave 0600
    entries, and permissions survive a rename: an exported model.safetensors was unreadable to a serving
    container or another user while its neighbours were 0644. Entries with any group/other bit set were
    chosen on purpose and are left alone.
    """
    for directory, subdirs, files in os.walk(root):
        for name in subdirs + files:
            path = os.path.join(directory, name)
            if os.path.islink(path):
                continue
            mode = os.stat(path).st_mode & 0o777
            if mode & 0o077 == 0:
                executable = os.path.isdir(path) or mode & 0o100
                os.chmod(path, (0o777 if executable else 0o666) & ~_UMASK)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Writes `text` to a temporary file beside `path`, then renames it into place (one PUT on object storage)."""
    write_bytes(path, text.encode("utf-8"))


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` to a temporary file beside `path`, then renames it into place (one PUT on object storage)."""
    path = storage.check(path)
    if storage.is_remote(path):
        storage.put_bytes(path, data)
        return
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=f".tmp-{os.path.basename(path)}")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_jsonl(path: str | os.PathLike, rows: Iterable[Any], **dumps_kwargs: Any) -> None:
    """One JSON value per line (UTF-8, not ASCII-escaped), written atomically like `write_text`."""
    write_text(path, "".join(json.dumps(r, ensure_ascii=False, **dumps_kwargs) + "\n" for r in rows))


def read_jsonl(path: str | os.PathLike) -> list[Any]:
    """The JSON values of a JSONL file, blank lines skipped (the reader of what `write_jsonl` writes)."""
    # split("\n"), not splitlines(): rows written with ensure_ascii=False may hold a raw U+2028.
    return [json.loads(line) for line in storage.read_text(path).split("\n") if line.strip()]
