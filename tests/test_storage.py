"""The path layer (distill_jax/storage.py, atomic.py on object storage) against real servers: moto (s3://) and
fake-gcs-server (gs://, through gcsfs and STORAGE_EMULATOR_HOST)."""

import os

import pytest

from distill_jax import atomic, storage


@pytest.mark.parametrize("url", ["hdfs://nn/runs/r1", "ftp://host/x", "file://tmp/x", "S3A://runs/x", "az://c/x"])
def test_an_unsupported_scheme_is_refused_in_one_line_and_never_written_locally(url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        storage.UnsupportedStorageError, match=r"unsupported storage scheme .*://; use a local path"
    ) as err:
        atomic.write_text(url + "/config.json", "{}")
    assert "\n" not in str(err.value)
    with pytest.raises(storage.UnsupportedStorageError):
        storage.makedirs(url)
    assert list(tmp_path.iterdir()) == []  # Before storage.py, `s3://runs/r1` became a local `s3:/runs/r1`.


def test_check_keeps_urls_and_makes_local_paths_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.check("s3://runs/r1/") == "s3://runs/r1"
    assert storage.check("gs://bucket/a/b/") == "gs://bucket/a/b"
    assert storage.check("rel/dir") == str(tmp_path / "rel" / "dir")
    assert storage.join("s3://runs/r1", "checkpoints", "7") == "s3://runs/r1/checkpoints/7"
    with pytest.raises(storage.UnsupportedStorageError, match="no bucket"):
        storage.check("s3:///path")


def test_text_files_round_trip_on_s3_as_single_objects(s3_server, s3_bucket):
    url = f"s3://{s3_bucket}/run/config.json"
    assert not storage.exists(url)
    atomic.write_text(url, '{"a": 1}\n')
    atomic.write_text(url, '{"a": 2}\n')
    assert storage.read_text(url) == '{"a": 2}\n'
    assert storage.isfile(url) and storage.isdir(f"s3://{s3_bucket}/run")
    assert s3_server.keys(s3_bucket) == ["run/config.json"]  # No temporary object left beside it.
    with pytest.raises(FileNotFoundError):
        storage.read_text(f"s3://{s3_bucket}/run/missing.json")


def test_upload_tree_writes_the_marker_last_and_download_tree_restores_it(s3_server, s3_bucket, tmp_path):
    built = tmp_path / "built"
    (built / "sub").mkdir(parents=True)
    (built / "manifest.json").write_text("{}")
    (built / "sub" / "z.bin").write_bytes(os.urandom(1000))
    (built / "a.txt").write_text("a")
    url = f"s3://{s3_bucket}/data"
    uploaded = []
    real = storage.epath.Path.write_bytes

    def recording(self, data):
        uploaded.append(str(self))
        return real(self, data)

    storage.epath.Path.write_bytes = recording
    try:
        storage.upload_tree(built, url, last="manifest.json")
    finally:
        storage.epath.Path.write_bytes = real
    assert uploaded[-1] == f"{url}/manifest.json" and len(uploaded) == 3
    storage.download_tree(url, tmp_path / "copy")
    assert (tmp_path / "copy" / "sub" / "z.bin").read_bytes() == (built / "sub" / "z.bin").read_bytes()
    storage.remove_tree(url)
    assert s3_server.keys(s3_bucket) == []


def test_a_local_mirror_starts_from_the_object_and_uploads_the_whole_file(s3_bucket):
    url = f"s3://{s3_bucket}/run/metrics.jsonl"
    atomic.write_text(url, "1\n")
    mirror = storage.LocalMirror(url, "test")
    with open(mirror.local, "a") as f:
        f.write("2\n")
    assert storage.read_text(url) == "1\n"  # Nothing reaches the store before sync.
    mirror.sync()
    assert storage.read_text(url) == "1\n2\n"
    mirror.discard()
    assert not os.path.exists(mirror.local)


def test_listings_show_objects_other_processes_wrote_since(s3_server, s3_bucket):
    """s3fs caches listings forever by default: a resumed run's new steps stayed invisible to a reader."""
    s3_server.client().put_object(Bucket=s3_bucket, Key="ckpt/1/x", Body=b"1")
    assert [p.name for p in storage.path(f"s3://{s3_bucket}/ckpt").iterdir()] == ["1"]
    s3_server.client().put_object(Bucket=s3_bucket, Key="ckpt/2/x", Body=b"2")
    assert sorted(p.name for p in storage.path(f"s3://{s3_bucket}/ckpt").iterdir()) == ["1", "2"]


def test_the_same_layer_on_gs_through_a_gcs_emulator(gcs_bucket, tmp_path):
    url = f"gs://{gcs_bucket}/run"
    atomic.write_text(f"{url}/config.json", '{"a": 1}\n')
    assert storage.read_text(f"{url}/config.json") == '{"a": 1}\n' and storage.isdir(url)
    (tmp_path / "built" / "sub").mkdir(parents=True)
    (tmp_path / "built" / "sub" / "z.bin").write_bytes(b"z" * 1000)
    (tmp_path / "built" / "manifest.json").write_text("{}")
    storage.upload_tree(tmp_path / "built", f"{url}/data", last="manifest.json")
    storage.download_tree(f"{url}/data", tmp_path / "copy")
    assert (tmp_path / "copy" / "sub" / "z.bin").read_bytes() == b"z" * 1000
    mirror = storage.LocalMirror(f"{url}/metrics.jsonl", "test")
    with open(mirror.local, "a") as f:
        f.write("1\n")
    mirror.sync()
    assert storage.read_text(f"{url}/metrics.jsonl") == "1\n"
