"""Atomic writes: the target is always the old complete result or the new one."""

import os

import pytest

from distill_jax import atomic


def test_replace_directory_swaps_and_restores_on_failure(tmp_path, monkeypatch):
    out, new = tmp_path / "out", tmp_path / "new"
    out.mkdir()
    (out / "a").write_text("old")
    new.mkdir()
    (new / "a").write_text("new")
    atomic.replace_directory(new, out)
    assert (out / "a").read_text() == "new" and not new.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # The renamed-away copy is gone.

    again = tmp_path / "again"
    again.mkdir()
    real_rename = os.rename

    def failing(src, dst):
        if os.fspath(src) == os.fspath(again):
            raise OSError("disk full")
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", failing)
    with pytest.raises(OSError, match="disk full"):
        atomic.replace_directory(again, out)
    assert (out / "a").read_text() == "new"  # The previous result is back in place.


def test_write_text_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "report.json"
    atomic.write_text(path, "{}\n")
    atomic.write_text(path, '{"a": 1}\n')
    assert path.read_text() == '{"a": 1}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_results_get_the_usual_permissions_not_owner_only(tmp_path):
    import tempfile

    atomic.write_text(tmp_path / "report.json", "{}")
    built = tempfile.mkdtemp(dir=tmp_path)  # 0700, as prepare builds its output.
    atomic.replace_directory(built, tmp_path / "data")
    umask = atomic._UMASK
    assert (tmp_path / "report.json").stat().st_mode & 0o777 == 0o666 & ~umask != 0o600
    assert (tmp_path / "data").stat().st_mode & 0o777 == 0o777 & ~umask != 0o700


def test_owner_only_files_inside_a_replaced_directory_become_readable(tmp_path):
    import stat
    import tempfile

    built = tempfile.mkdtemp(dir=tmp_path)
    fd, private = tempfile.mkstemp(dir=built)  # 0600, as safetensors' save_file leaves its file.
    os.close(fd)
    os.mkdir(os.path.join(built, "sub"), 0o700)
    chosen = os.path.join(built, "chosen")
    open(chosen, "w").close()
    os.chmod(chosen, 0o640)  # Group-readable on purpose: kept.
    atomic.replace_directory(built, tmp_path / "out")
    umask = atomic._UMASK
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)  # noqa: E731
    assert mode(tmp_path / "out" / os.path.basename(private)) == 0o666 & ~umask
    assert mode(tmp_path / "out" / "sub") == 0o777 & ~umask
    assert mode(tmp_path / "out" / "chosen") == 0o640


def test_an_exported_hf_directory_is_readable_by_others(tmp_path):
    """export-hf's writer (hf_files.save_model_directory): model.safetensors was 0600, the rest 0644."""
    import numpy as np

    from distill_jax.models import hf_files

    out = tmp_path / "hf"
    hf_files.save_model_directory(str(out), {"model_type": "t5"}, {}, {"w": np.zeros((2, 2), np.float32)}, None)
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()}
    assert modes["model.safetensors"] == 0o666 & ~atomic._UMASK, modes
    assert len(set(modes.values())) == 1, modes
