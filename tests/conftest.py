"""Test-wide set-up: 8 virtual CPU devices (before JAX starts) and the ../shared data folder."""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Multi-device code is tested on 8 virtual CPU devices; must be set before JAX initialises.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Many tests (and the CLI processes they start) compile the same programs; a compilation cache for
# this session only (fresh every run, so nothing stale carries over) roughly halves the suite's time.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="distill_jax_tests_xla_")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the checkout; tests that need it skip with a reason when it is absent."""
    data = SHARED / "data"
    if not data.is_dir():
        pytest.skip(f"{data} not found: real teacher data lives beside the checkout in ../shared (CI has it)")
    return data


@pytest.fixture(scope="session")
def demo_prepared(tmp_path_factory) -> dict[str, str]:
    """A small generated long-tailed corpus, prepared: {"train": dir, "test": dir}."""
    from distill_jax.data.demo_corpus import write_demo_corpus
    from distill_jax.data.prepare import PrepareOptions, prepare_corpus
    from distill_jax.presets import demo_config

    root = tmp_path_factory.mktemp("demo")
    files = write_demo_corpus(str(root / "corpus"), seed=0, num_train=800, num_test_per_domain=8)
    options = PrepareOptions.from_config(demo_config())
    out = {}
    for split, path in files.items():
        out[split] = str(root / "data" / split)
        prepare_corpus([path], out[split], options)
    return out


@pytest.fixture
def small_train_config(demo_prepared):
    """Factory: the demo config shrunk to seconds (few steps, small batches, short sequences).

    small_train_config(with_eval=False, train__steps=20, ...) overrides section__field=value.
    """
    return lambda with_eval=False, **overrides: _small_train_config(
        demo_prepared["train"], demo_prepared["test"] if with_eval else "", **overrides
    )


def _small_train_config(train_dir: str, eval_dir: str = "", **train_overrides):
    from distill_jax.presets import demo_config

    cfg = demo_config()
    cfg.data.train_dir, cfg.data.eval_dir = train_dir, eval_dir
    cfg.data.max_input_len, cfg.data.max_target_len = 64, 96
    cfg.train.batch_size = 16
    cfg.train.steps = 12
    cfg.train.log_every = 4
    cfg.train.checkpoint_every = 4
    cfg.eval.every = 0
    cfg.eval.batch_size = 16
    cfg.eval.max_examples_per_domain = 8
    cfg.eval.decode_examples_per_domain = 2
    cfg.eval.max_decode_len = 16
    for key, value in train_overrides.items():
        section, field = key.split("__")
        cfg[section][field] = value
    return cfg


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """One moto S3 server for the session (tests/object_store.py); tests take fresh buckets from it."""
    from object_store import S3Server

    server = S3Server(tmp_path_factory.mktemp("moto"))
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(s3_server, monkeypatch, tmp_path):
    """A fresh bucket on the session's S3 server, with this process's AWS variables pointing at it."""
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DISTILL_JAX_STAGING_DIR", str(tmp_path / "staging"))
    return s3_server.new_bucket()


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory):
    """One fake-gcs-server for the session (tests/object_store.py); tests take fresh buckets from it."""
    from object_store import GcsEmulator

    server = GcsEmulator(tmp_path_factory.mktemp("gcs"))
    yield server
    server.stop()


@pytest.fixture
def gcs_bucket(gcs_emulator, monkeypatch, tmp_path):
    """A fresh bucket on the session's GCS emulator, with STORAGE_EMULATOR_HOST pointing at it."""
    for key, value in gcs_emulator.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DISTILL_JAX_STAGING_DIR", str(tmp_path / "staging"))
    return gcs_emulator.new_bucket()
