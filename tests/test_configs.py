"""Every config file loads, names a real model preset, and rejects misspelt fields."""

import importlib.util
from pathlib import Path

import pytest

from distill_jax.models import bart_config, t5_config

SIZES = {**t5_config.SIZES, **bart_config.SIZES}

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.py"))


def load(path, *args):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(*args)


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


@pytest.mark.parametrize("student", ["t5_small", "flan_t5_small", "bart_base"])
def test_paraphrase_students(student):
    """configs/paraphrase_lora.py:ARG: the paper's three students, LoRA r=8 on q,v."""
    cfg = load(Path(__file__).resolve().parents[1] / "configs" / "paraphrase_lora.py", student)
    assert cfg.model.size in SIZES and (cfg.model.lora_rank, cfg.model.lora_targets) == (8, "q,v")
    with pytest.raises(ValueError, match="choose one of t5_small, flan_t5_small, bart_base"):
        load(Path(__file__).resolve().parents[1] / "configs" / "paraphrase_lora.py", "gpt2")
