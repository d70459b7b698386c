"""Decoding throughput: our jitted decoders against ``transformers`` ``generate`` on one model.

Both sides run the *same* random T5 (built in ``transformers``, converted with
``params_from_hf_state_dict``) on the *same* padded inputs in one process, so the only difference
is the decoder implementation. EOS is set to an id outside the vocabulary, which neither side can
emit, so every row of every method generates exactly ``--max_new_tokens`` tokens and the token
counts are equal. Greedy outputs are compared token for token before anything is timed.

    python benchmarks/decode.py [--size tiny|small|base] [--batch_sizes 1,64] [--max_new_tokens 32]
                                [--repeats 5] [--json OUT.json]

Figures are generated tokens per second (``batch * max_new_tokens`` returned tokens; beams and
discarded hypotheses are not counted), median of ``--repeats`` timed runs after one warm-up run.
Our compile time (lower + compile, once per method and batch size) is reported separately.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers
import workload_bound

from distill_jax.models.decoding import LogitFilters, beam_search, greedy_decode, sample
from distill_jax.models.hf_t5 import params_from_hf_state_dict
from distill_jax.models.t5 import T5Transformer
from distill_jax.models.t5_config import T5Config, get_config
from distill_jax.process_env import reexec_with_malloc_tuning

# Ragged on purpose (6 to ~110 bytes) so padding and the cross-attention mask are exercised.
SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Distillation trains a small student to imitate a large teacher.",
    "What is 17 times 23?",
    "Paris is the capital of France.",
    "Short.",
    "A rationale explains, step by step, why the answer follows from the question and the context given.",
    "Beam search keeps several hypotheses alive at every step.",
    "Nucleus sampling draws from the smallest set of tokens holding most of the probability mass.",
    "Translate English to German: the house is wonderful.",
    "If a train leaves at noon and travels 60 km/h, where is it at three o'clock?",
    "Summarize: the meeting was moved to Thursday because the room was booked.",
    "Yes or no?",
)
METHODS = ("greedy", "beam4", "sample_top_p0.9")
NUM_BEAMS = 4
TOP_P = 0.9


def build_models(size: str, seed: int = 0) -> tuple[T5Config, dict[str, Any], transformers.T5ForConditionalGeneration]:
    """A random HF T5 of the ``size`` preset's shape and the same weights as our params.

    EOS is moved out of the vocabulary so neither decoder can stop early. transformers 5 ties the
    LM head to the embedding structurally; v1.1 shapes are untied, so the head gets its own weights.
    """
    cfg = get_config(size, dropout_rate=0.0)
    cfg = dataclasses.replace(cfg, eos_token_id=cfg.vocab_size)
    torch.manual_seed(seed)
    hf_model = transformers.T5ForConditionalGeneration(transformers.T5Config(**cfg.to_hf_dict())).eval()
    with torch.no_grad():
        hf_model.lm_head.weight = torch.nn.Parameter(torch.randn_like(hf_model.lm_head.weight) * cfg.d_model**-0.5)
    params = params_from_hf_state_dict({k: v.numpy() for k, v in hf_model.state_dict().items()}, cfg)
    return cfg, params, hf_model


def make_inputs(cfg: T5Config, batch_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded ``(input_ids, attention_mask)`` [batch, max_len] for ``batch_size`` sentences.

    The byte vocabulary tokenizes the sentences with ByT5; the 32k-vocabulary sizes have no
    tokenizer offline, so they get random ids with roughly SentencePiece lengths (a quarter of the
    byte length) ending in the tokenizer's usual EOS id 1.
    """
    sentences = [SENTENCES[i % len(SENTENCES)] for i in range(batch_size)]
    if cfg.vocab_size <= 384:
        encoded = transformers.ByT5Tokenizer()(sentences, padding=True, return_tensors="np")
        return encoded.input_ids.astype(np.int32), encoded.attention_mask.astype(np.int32)
    rng = np.random.default_rng(seed)
    lengths = [max(3, len(s.encode()) // 4) for s in sentences]
    ids = np.full((batch_size, max(lengths)), cfg.pad_token_id, np.int32)
    for row, length in zip(ids, lengths):
        row[: length - 1] = rng.integers(3, cfg.vocab_size, length - 1)
        row[length - 1] = 1
    return ids, (ids != cfg.pad_token_id).astype(np.int32)


def _ours(cfg: T5Config, method: str, max_new_tokens: int) -> Callable[..., jax.Array]:
    """Our decoder for ``method`` as ``fn(params, tokens, rng)`` returning [B, max_new_tokens]."""
    model = T5Transformer(cfg)
    if method == "greedy":
        decode = functools.partial(greedy_decode, model, max_decode_length=max_new_tokens)
        return lambda params, tokens, rng: decode(params, tokens)
    if method == "beam4":
        decode = functools.partial(beam_search, model, max_decode_length=max_new_tokens, num_beams=NUM_BEAMS)
        return lambda params, tokens, rng: decode(params, tokens)[0][:, 0]
    decode = functools.partial(sample, model, max_decode_length=max_new_tokens, filters=LogitFilters(top_p=TOP_P))
    return lambda params, tokens, rng: decode(params, tokens, rng)[:, 0]


def _beams(method: str) -> int:
    return NUM_BEAMS if method == "beam4" else 1


def _hf_settings(method: str) -> dict[str, Any]:
    """``generate`` settings matching ``_ours``: HF's default top_k=50 is switched off for sampling."""
    if method == "greedy":
        return dict(do_sample=False, num_beams=1)
    if method == "beam4":
        return dict(do_sample=False, num_beams=NUM_BEAMS, length_penalty=1.0, early_stopping=False)
    return dict(do_sample=True, top_p=TOP_P, top_k=0, temperature=1.0)


def _median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    """One untimed warm-up call, then the median wall time of ``repeats`` calls."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine_info() -> dict[str, Any]:
    """What the figures depend on: CPU, cores, accelerators, library versions and torch threads."""
    cpu = platform.processor() or "unknown"
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return dict(
        cpu=cpu,
        cores=os.cpu_count(),
        jax_devices=[str(d) for d in jax.devices()],
        torch_device="cuda" if torch.cuda.is_available() else "cpu",
        torch_num_threads=torch.get_num_threads(),
        python=platform.python_version(),
        jax=jax.__version__,
        torch=torch.__version__,
        transformers=transformers.__version__,
    )


def _hf_generate(
    hf_model: transformers.T5ForConditionalGeneration,
    hf_inputs: dict[str, torch.Tensor],
    cfg: T5Config,
    method: str,
    max_new_tokens: int,
) -> np.ndarray:
    """HF ``generate`` for ``method`` under ``inference_mode``: [B, max_new_tokens], start token dropped."""
    with torch.inference_mode():
        out = hf_model.generate(
            **hf_inputs,
            max_new_tokens=max_new_tokens,
            eos_token_id=cfg.eos_token_id,
            pad_token_id=cfg.pad_token_id,
            decoder_start_token_id=cfg.decoder_start_token_id,
            **_hf_settings(method),
        )
    return out[:, 1:].cpu().numpy()  # .cpu() also waits for a GPU to finish


def _measure(
    cfg: T5Config,
    params: dict[str, Any],
    hf_model: transformers.T5ForConditionalGeneration,
    inputs: tuple[np.ndarray, np.ndarray],
    method: str,
    max_new_tokens: int,
    repeats: int,
    bound_s: float,
) -> dict[str, Any]:
    """Compiles ours, checks both emit the same number of tokens (and, for greedy, the same tokens), then times both."""
    ids, mask = inputs
    batch_size = ids.shape[0]
    device = next(hf_model.parameters()).device
    hf_inputs = dict(
        input_ids=torch.from_numpy(ids).long().to(device), attention_mask=torch.from_numpy(mask).to(device)
    )
    args = (params, jnp.asarray(ids), jax.random.PRNGKey(0))
    start = time.perf_counter()
    compiled = jax.jit(_ours(cfg, method, max_new_tokens)).lower(*args).compile()
    compile_s = time.perf_counter() - start

    ours_out = np.asarray(compiled(*args))
    hf_out = _hf_generate(hf_model, hf_inputs, cfg, method, max_new_tokens)
    if not ours_out.shape == hf_out.shape == (batch_size, max_new_tokens):
        raise RuntimeError(f"{method}: token counts differ, ours {ours_out.shape} vs HF {hf_out.shape}")
    if method == "greedy" and not np.array_equal(ours_out, hf_out):
        bad = np.argwhere(ours_out != hf_out)[0]
        raise RuntimeError(f"greedy outputs differ from HF at (row, step) {tuple(bad)}: not comparing like with like")

    ours_s = _median_seconds(lambda: jax.block_until_ready(compiled(*args)), repeats)
    hf_s = _median_seconds(lambda: _hf_generate(hf_model, hf_inputs, cfg, method, max_new_tokens), repeats)
    generated = batch_size * max_new_tokens
    return dict(
        method=method,
        batch_size=batch_size,
        generated_tokens=generated,
        ours_compile_s=compile_s,
        ours_s=ours_s,
        hf_s=hf_s,
        ours_tokens_per_s=generated / ours_s,
        hf_tokens_per_s=generated / hf_s,
        ratio=hf_s / ours_s,
        bound_s=bound_s,
        ours_pct_of_bound=100 * bound_s / ours_s,
        hf_pct_of_bound=100 * bound_s / hf_s,
    )


def run(size: str, batch_sizes: Sequence[int], max_new_tokens: int, repeats: int) -> dict[str, Any]:
    """Builds the model once and times every (batch size, method) pair; returns the JSON report."""
    cfg, params, hf_model = build_models(size)
    hf_model.to(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    rows = []
    for batch_size in batch_sizes:
        inputs = make_inputs(cfg, batch_size)
        # The bound per decoded row count (beams decode batch x beams rows), timed before either side runs.
        bounds = {
            rows_decoded: workload_bound.bound(
                workload_bound.decode_matmuls(cfg, rows_decoded, inputs[0].shape[1], max_new_tokens)
            )["bound_s"]
            for rows_decoded in sorted({batch_size * _beams(m) for m in METHODS})
        }
        for method in METHODS:
            bound_s = bounds[batch_size * _beams(method)]
            rows.append(_measure(cfg, params, hf_model, inputs, method, max_new_tokens, repeats, bound_s))
            print(_format_row(rows[-1]), flush=True)
    return dict(
        settings=dict(size=size, batch_sizes=list(batch_sizes), max_new_tokens=max_new_tokens, repeats=repeats),
        model=dict(
            num_params=sum(p.numel() for p in hf_model.parameters()),
            hf_attn_implementation=hf_model.config._attn_implementation,
        ),
        machine=machine_info(),
        rows=rows,
    )


_HEADER = (
    f"{'method':<16} {'batch':>5} {'ours tok/s':>11} {'HF tok/s':>10} {'ours/HF':>8} {'compile s':>10} "
    f"{'bound s':>8} {'ours %bound':>11} {'HF %bound':>9}"
)


def _format_row(row: dict[str, Any]) -> str:
    return (
        f"{row['method']:<16} {row['batch_size']:>5} {row['ours_tokens_per_s']:>11.0f} "
        f"{row['hf_tokens_per_s']:>10.0f} {row['ratio']:>7.2f}x {row['ours_compile_s']:>10.1f} "
        f"{row['bound_s']:>8.3f} {row['ours_pct_of_bound']:>11.0f} {row['hf_pct_of_bound']:>9.0f}"
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parses ``argv``, runs the benchmark, prints the table and writes ``--json`` if given."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="tiny", choices=("tiny", "small", "base"))
    parser.add_argument("--batch_sizes", default="1,64", help="comma-separated")
    parser.add_argument("--max_new_tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per figure (median)")
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args(argv)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    print(_HEADER, flush=True)
    report = run(args.size, batch_sizes, args.max_new_tokens, args.repeats)
    print(json.dumps(dict(machine=report["machine"], model=report["model"])))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    reexec_with_malloc_tuning(sys.argv)  # The figures are measured as the CLI runs: with its allocator setting.
    main(sys.argv[1:])
