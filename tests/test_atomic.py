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
