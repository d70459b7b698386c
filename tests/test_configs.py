"""Every config file loads, names a real model preset, and rejects misspelt fields."""

import importlib.util
from pathlib import Path

import pytest

from distill_jax.models.t5_config import SIZES

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.py"))


def load(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_file_loads_with_a_known_model(path):
    cfg = load(path)
    assert cfg.model.size in SIZES
    assert cfg.train.batch_size > 0 and cfg.train.steps > 0
    cfg.lock()
    with pytest.raises(AttributeError):
        cfg.train.stepz = 3  # A typo fails loudly instead of being ignored.


def test_all_expected_configs_exist():
    assert {p.name for p in CONFIGS} >= {"demo.py", "t5_small.py", "t5_base.py", "t5_small_lora.py"}
