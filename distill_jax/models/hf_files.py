"""The files of a transformers model directory, whatever the architecture (shared by ``hf_t5`` and ``hf_bart``).

Reads config.json and safetensors weights (single file or sharded; never pickle); writes a model
directory (config.json, generation_config.json, model.safetensors, tokenizer files) or a PEFT LoRA
adapter directory, each into a temporary sibling renamed into place when complete, so a crash never
leaves a half-written directory.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from flax import traverse_util
from safetensors import safe_open
from safetensors.numpy import save_file

from distill_jax import atomic, storage
from distill_jax.models.lora import ADAPTER

# Files a transformers tokenizer directory may hold; export copies the ones present.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
)


def read_config(hf_dir: str) -> dict[str, Any]:
    """``hf_dir``'s config.json as a dict (on gs:// / s3:// the one object, read in place)."""
    path = storage.join(hf_dir, "config.json")
    try:
        return json.loads(storage.read_text(path))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path} not found: expected a transformers model directory (config.json + safetensors)"
        ) from None


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    # The flax reader handles bfloat16 (safetensors.numpy does not); keep the arrays on the host.
    with jax.default_device(jax.devices("cpu")[0]), safe_open(path, framework="flax") as f:
        return {name: np.asarray(f.get_tensor(name)) for name in f.keys()}


def read_checkpoint(hf_dir: str) -> dict[str, np.ndarray]:
    """Every tensor of ``hf_dir``'s model.safetensors, or of the shards its index names (gs:// / s3://:
    of a local copy staged once per host, since safetensors memory-maps local files)."""
    hf_dir = storage.local_tree(hf_dir, "hf_model")
    single = os.path.join(hf_dir, "model.safetensors")
    index = os.path.join(hf_dir, "model.safetensors.index.json")
    if os.path.exists(single):
        return _read_safetensors(single)
    if os.path.exists(index):
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        tensors: dict[str, np.ndarray] = {}
        for shard in shards:
            tensors |= _read_safetensors(os.path.join(hf_dir, shard))
        return tensors
    pickled = " (pickled weights such as pytorch_model.bin are never loaded: re-save with safetensors)"
    raise FileNotFoundError(
        f"{hf_dir} has neither model.safetensors nor model.safetensors.index.json"
        + (pickled if os.path.exists(os.path.join(hf_dir, "pytorch_model.bin")) else "")
    )


def write_json(path: str, value: Mapping[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, sort_keys=True)
        f.write("\n")


def _write_tokenizer(out_dir: str, tokenizer_dir: str | None) -> None:
    if tokenizer_dir is None:
        import transformers  # Imported late: only byte-level exports need it.

        transformers.ByT5Tokenizer().save_pretrained(out_dir)
        return
    present = [name for name in TOKENIZER_FILES if os.path.isfile(os.path.join(tokenizer_dir, name))]
    if not present:
        raise FileNotFoundError(f"{tokenizer_dir} holds none of the tokenizer files {', '.join(TOKENIZER_FILES)}")
    for name in present:
        shutil.copy2(os.path.join(tokenizer_dir, name), os.path.join(out_dir, name))


def _write_directory(out_dir: str, write: Callable[[str], None]) -> None:
    """Runs ``write(tmp)`` on a fresh temporary sibling of ``out_dir``, then renames it onto ``out_dir``."""
    out = os.path.abspath(out_dir)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.tmp-", dir=os.path.dirname(out))
    try:
        write(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp creates it private; a model directory is meant to be shared.
        atomic.replace_directory(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def save_model_directory(
    out_dir: str,
    config: Mapping[str, Any],
    generation_config: Mapping[str, Any],
    state: Mapping[str, np.ndarray],
    tokenizer_dir: str | None,
    *,
    overwrite: bool = False,
) -> None:
    """Writes config.json, generation_config.json, model.safetensors (``state``) and the tokenizer files.

    ``tokenizer_dir`` is a transformers tokenizer directory whose tokenizer files are copied; None
    writes ByT5's files (the byte vocabulary needs nothing but its config). A non-empty ``out_dir`` is
    replaced only with ``overwrite``.
    """
    out = os.path.abspath(out_dir)
    if os.path.isdir(out) and os.listdir(out) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty; choose another directory or pass overwrite")

    def write(tmp: str) -> None:
        write_json(os.path.join(tmp, "config.json"), config)
        write_json(os.path.join(tmp, "generation_config.json"), generation_config)
        # "format": "pt" tells transformers the tensors are in PyTorch's layout.
        save_file(dict(state), os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        _write_tokenizer(tmp, tokenizer_dir)

    _write_directory(out, write)


def peft_state_dict(
    params: Mapping[str, Any], linear_weights: Mapping[tuple[str, ...], str], rank: int
) -> dict[str, np.ndarray]:
    """The LoRA adapters of ``params`` as PEFT names them on the transformers model.

    ``linear_weights`` maps each kernel path that may carry an adapter to its HF Linear weight name
    (``M.weight``). Each adapted ``M`` gets ``base_model.model.M.lora_A.weight`` [r, in] and
    ``...lora_B.weight`` [out, r]; PEFT's delta ``B @ A * alpha / r`` in torch's [out, in] layout is
    the transpose of our ``lora_a @ lora_b`` in kernel layout.
    """
    flat = traverse_util.flatten_dict(params)
    state = {}
    for kernel_path, name in linear_weights.items():
        adapter = kernel_path[:-1] + (ADAPTER,)
        if adapter + ("lora_a",) not in flat:
            continue
        a = np.asarray(flat[adapter + ("lora_a",)], np.float32)
        b = np.asarray(flat[adapter + ("lora_b",)], np.float32)
        module = f"base_model.model.{name.removesuffix('.weight')}"
        state[f"{module}.lora_A.weight"] = np.ascontiguousarray(a.reshape(-1, rank).T)
        state[f"{module}.lora_B.weight"] = np.ascontiguousarray(b.reshape(rank, -1).T)
    if not state:
        raise ValueError("no LoRA adapters in these parameters (model.lora_rank is 0?)")
    return state


def save_peft_directory(
    out_dir: str, state: Mapping[str, np.ndarray], rank: int, alpha: float, dropout: float, base_model: str
) -> None:
    """Writes adapter_model.safetensors + adapter_config.json that ``peft.PeftModel.from_pretrained`` loads
    onto the transformers model in ``base_model``; the target modules are the adapted modules' names."""
    adapter_config = {
        "peft_type": "LORA",
        "task_type": "SEQ_2_SEQ_LM",
        "r": rank,
        "lora_alpha": alpha,
        "lora_dropout": dropout,
        "target_modules": sorted({key.split(".")[-3] for key in state}),
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "base_model_name_or_path": base_model,
    }

    def write(tmp: str) -> None:
        write_json(os.path.join(tmp, "adapter_config.json"), adapter_config)
        save_file(dict(state), os.path.join(tmp, "adapter_model.safetensors"), metadata={"format": "pt"})

    _write_directory(out_dir, write)


def check_params_match(flat: Mapping[tuple[str, ...], Any], expected: Mapping[tuple[str, ...], Any]) -> None:
    """Raises ``ValueError`` naming every missing, unexpected or wrong-shape parameter of ``flat`` (path -> array)."""
    errors = [f"missing parameter {'/'.join(path)}" for path in sorted(set(expected) - set(flat))]
    errors += [f"unexpected parameter {'/'.join(path)}" for path in sorted(set(flat) - set(expected))]
    errors += [
        f"parameter {'/'.join(path)} has shape {tuple(flat[path].shape)}, expected {expected[path].shape}"
        for path in sorted(set(flat) & set(expected))
        if tuple(flat[path].shape) != expected[path].shape
    ]
    if errors:
        raise ValueError("parameters do not match the config:\n  " + "\n  ".join(errors))
