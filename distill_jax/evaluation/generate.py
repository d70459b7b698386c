"""The generate job: decode a dataset with a checkpoint, sharded over hosts and devices, resumable.

    OUT/plan.json                 what is decoded: checkpoint + step, data, ids, decoding, batch, chunking
    OUT/chunks/chunk_000000.jsonl one file per `chunk_size` consecutive examples, renamed into place whole
    OUT/predictions.jsonl         every row once, ordered by id, written at the end
    OUT/summary.json              counts, skipped rows, throughput, parameter count

Global batch b holds examples [b * B, (b + 1) * B) of the one ordered example list; each process
feeds its share of the rows and the batch is sharded over the mesh's batch axes. Decoded rows are
gathered to process 0, which alone writes, so only it needs the output directory. A rerun reads
which chunks exist (process 0 broadcasts it) and decodes the rest; chunks are written whole, so a
killed job never leaves half a chunk, and the merge checks that every id appears exactly once.
Sampling draws from a key folded with the global batch index, so a resumed or differently
sharded run writes the same rows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from tqdm import tqdm

from distill_jax import atomic, job_output, multihost, storage
from distill_jax.data.corpus import FieldMapping
from distill_jax.data.prepare import PrepareOptions
from distill_jax.evaluation.examples import Example, is_prepared_dir, load_examples
from distill_jax.models import decoding
from distill_jax.models.family import Model
from distill_jax.training.inference import InferenceRunner
from distill_jax.training.run_dir import RunDir
from distill_jax.training.run_setup import forward_batch_size, per_process_batch_size, setup_run
from distill_jax.training.train_state import count_params

SUMMARY_FILE, PREDICTIONS_FILE, CHUNKS_DIR = "summary.json", "predictions.jsonl", "chunks"
DECODE_METHODS = ("greedy", "beam", "sample")
_PLAN_FORMAT = 1


@dataclasses.dataclass(frozen=True)
class DecodeSettings:
    """How to decode; the knobs of distill_jax.models.decoding. max_decode_len 0 = the run's eval setting."""

    method: str = "greedy"
    num_beams: int = 4
    length_penalty: float = 1.0
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    num_return_sequences: int = 1
    seed: int = 0
    max_decode_len: int = 0

    def __post_init__(self) -> None:
        if self.method not in DECODE_METHODS:
            raise ValueError(f"decoding method {self.method!r}: use one of {DECODE_METHODS}")
        if self.num_return_sequences < 1:
            raise ValueError(f"num_return_sequences must be >= 1, got {self.num_return_sequences}")
        if self.method == "greedy" and self.num_return_sequences != 1:
            raise ValueError("greedy decoding returns one sequence; use beam or sample for num_return_sequences > 1")
        if self.method == "beam" and not 1 <= self.num_return_sequences <= self.num_beams:
            raise ValueError(f"num_return_sequences must be in [1, num_beams={self.num_beams}]")
        if self.max_decode_len < 0:
            raise ValueError(f"max_decode_len must be >= 0, got {self.max_decode_len}")

    def described(self) -> dict[str, Any]:
        """Only the knobs the method uses (what plan.json and the summary record)."""
        used = {
            "greedy": (),
            "beam": ("num_beams", "length_penalty", "num_return_sequences"),
            "sample": ("temperature", "top_k", "top_p", "num_return_sequences", "seed"),
        }[self.method]
        return {"method": self.method, **{k: getattr(self, k) for k in used}}


def prepare_options(cfg: ml_collections.ConfigDict, fields: Mapping[str, str] | None = None) -> PrepareOptions:
    """How a data file is read: the run's prepare settings, with ``fields`` overriding its field mapping."""
    options = PrepareOptions.from_config(cfg)
    if not fields:
        return options
    unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(FieldMapping)})
    if unknown:
        raise ValueError(f"unknown field(s) {unknown}; map id, domain, input, target, rationale or meta")
    mapping = dataclasses.replace(options.mapping, **{k: (v or None) for k, v in fields.items()})
    return dataclasses.replace(options, mapping=mapping)


def make_decoder(
    model: Model, settings: DecodeSettings, max_decode_len: int
) -> Callable[[Any, jax.Array, jax.Array], jax.Array]:
    """``decode(params, tokens [B, L], batch_index) -> [B, n, max_decode_len]`` for any method."""
    s = settings

    def decode(params: Any, tokens: jax.Array, batch_index: jax.Array) -> jax.Array:
        if s.method == "greedy":
            return decoding.greedy_decode(model, params, tokens, max_decode_length=max_decode_len)[:, None]
        common = dict(max_decode_length=max_decode_len, num_return_sequences=s.num_return_sequences)
        if s.method == "beam":
            return decoding.beam_search(
                model, params, tokens, num_beams=s.num_beams, length_penalty=s.length_penalty, **common
            )[0]
        # Folded inside the jitted function: a host scalar is a valid input on every process.
        rng = jax.random.fold_in(jax.random.key(s.seed), batch_index)
        filters = decoding.LogitFilters(s.temperature, s.top_k, s.top_p)
        return decoding.sample(model, params, tokens, rng, filters=filters, **common)

    return decode


def generated_lengths(tokens: np.ndarray, eos_id: int) -> np.ndarray:
    """Tokens produced per sequence of ``tokens`` [..., L]: up to and including EOS, else all L."""
    has_eos = (tokens == eos_id).any(-1)
    return np.where(has_eos, np.argmax(tokens == eos_id, axis=-1) + 1, tokens.shape[-1])


def _chunk_path(output_dir: str, chunk: int) -> str:
    return storage.join(output_dir, CHUNKS_DIR, f"chunk_{chunk:06d}.jsonl")


def _write_chunk(path: str, rows: list[dict[str, Any]]) -> None:
    atomic.write_jsonl(path, rows)


def merge_chunks(output_dir: str, num_chunks: int, num_examples: int) -> str:
    """Joins the chunk files into predictions.jsonl ordered by id; checks every example is there once."""
    rows = [row for c in range(num_chunks) for row in atomic.read_jsonl(_chunk_path(output_dir, c))]
    ids = [row["id"] for row in rows]
    if len(ids) != num_examples or len(set(ids)) != len(ids):
        raise RuntimeError(
            f"{output_dir}/{CHUNKS_DIR} holds {len(ids)} rows ({len(set(ids))} distinct ids) "
            f"for {num_examples} examples; rerun with --overwrite"
        )
    rows.sort(key=lambda r: r["id"])
    path = storage.join(output_dir, PREDICTIONS_FILE)
    atomic.write_jsonl(path, rows)
    return path


def _encode_inputs(examples: list[Example], tokenizer: Any) -> list[np.ndarray]:
    missing = [i for i, e in enumerate(examples) if e.tokens is None]
    encoded = dict(zip(missing, tokenizer.encode_batch([examples[i].input for i in missing])))
    return [encoded[i] if e.tokens is None else e.tokens for i, e in enumerate(examples)]


def _ids_digest(examples: list[Example]) -> str:
    return hashlib.sha256("\n".join(e.id for e in examples).encode("utf-8")).hexdigest()


def generate(
    checkpoint: str,
    data: str,
    output_dir: str,
    settings: DecodeSettings = DecodeSettings(),
    *,
    step: int | None = None,
    batch_size: int = 0,
    chunk_size: int = 512,
    fields: Mapping[str, str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Decodes every example of ``data`` with a checkpoint into ``output_dir``; returns the summary.

    ``batch_size`` is the global batch (0 = the run's eval.batch_size); ``chunk_size`` is rounded
    up to a multiple of it. Every process must call this with the same arguments.
    """
    run_dir, step = RunDir.resolve(checkpoint, step)
    cfg = run_dir.load_config()
    run = setup_run(cfg, eval_dir=data if is_prepared_dir(data) else "")
    params, step = run_dir.restore_params(run, step)
    global_batch = forward_batch_size(batch_size or cfg.eval.batch_size, run, "batch_size")
    runner = InferenceRunner(run.mesh, run.rules, per_process_batch_size(global_batch, run, "batch_size"))
    chunk_size = -(-max(chunk_size, 1) // global_batch) * global_batch
    max_decode_len = settings.max_decode_len or cfg.eval.max_decode_len or cfg.data.max_target_len
    n_return = settings.num_return_sequences

    examples, skipped = load_examples(data, prepare_options(cfg, fields))
    tokens = _encode_inputs(examples, run.tokenizer)
    max_input_len = cfg.data.max_input_len
    keep = [i for i, t in enumerate(tokens) if len(t) <= max_input_len]
    if len(keep) < len(examples):
        skipped["input_too_long"] = len(examples) - len(keep)
        logging.warning(
            "%d inputs are longer than data.max_input_len=%d; skipped", len(examples) - len(keep), max_input_len
        )
    examples, tokens = [examples[i] for i in keep], [tokens[i] for i in keep]
    longest = max((len(t) for t in tokens), default=1)
    input_len = min(-(-longest // 8) * 8, max_input_len)  # the one compiled shape; multiples of 8 suit the MXU/TCs
    num_chunks = -(-len(examples) // chunk_size)
    plan = {
        "format": _PLAN_FORMAT,
        "checkpoint": run_dir.path,
        "step": step,
        "data": storage.check(data),
        "num_examples": len(examples),
        "ids_sha256": _ids_digest(examples),
        "decoding": settings.described(),
        "max_decode_len": max_decode_len,
        "input_len": input_len,
        "global_batch": global_batch,
        "chunk_size": chunk_size,
    }
    done = job_output.start(
        output_dir,
        plan,
        num_chunks,
        chunks_dir=CHUNKS_DIR,
        finished_chunks=lambda: {c for c in range(num_chunks) if storage.exists(_chunk_path(output_dir, c))},
        outputs=(PREDICTIONS_FILE, SUMMARY_FILE),
        overwrite=overwrite,
        what="predictions",
    )

    eos = run.tokenizer.eos_id

    def local_tokens(start: int) -> np.ndarray:
        rows = [tokens[i] for i in runner.local_rows(start, len(examples))]
        return runner.token_block(rows, input_len, pad_id=run.tokenizer.pad_id, eos_id=eos)

    compile_start = time.perf_counter()
    decode = runner.compile(make_decoder(run.model, settings, max_decode_len), params, local_tokens(0), np.int32(0))
    compile_s = time.perf_counter() - compile_start

    todo = [c for c in range(num_chunks) if not done[c]]
    batches_per_chunk = chunk_size // global_batch
    total_batches = sum(-(-(min(chunk_size, len(examples) - c * chunk_size)) // global_batch) for c in todo)
    bar = tqdm(
        total=total_batches,
        unit="batch",
        desc="generate",
        disable=not progress or jax.process_index() != 0,
        leave=False,
    )
    decoded_examples = generated_tokens = 0
    decode_start = time.perf_counter()
    for chunk in todo:
        chunk_end = min((chunk + 1) * chunk_size, len(examples))
        rows = []
        for j in range(batches_per_chunk):
            start = chunk * chunk_size + j * global_batch
            if start >= chunk_end:
                break
            out = decode(params, local_tokens(start), np.int32(chunk * batches_per_chunk + j))
            for row, i in enumerate(runner.local_rows(start, chunk_end)):
                texts = [run.tokenizer.decode(seq) for seq in out[row]]
                e = examples[i]
                record = {
                    "id": e.id,
                    "domain": e.domain,
                    "input": e.input,
                    "reference": e.reference,
                    "prediction": texts[0],
                }
                if n_return > 1:
                    record["predictions"] = texts
                rows.append(record)
                generated_tokens += int(generated_lengths(out[row], eos).sum())
                decoded_examples += 1
            bar.update(1)
        rows = multihost.gather_rows(rows)
        if jax.process_index() == 0:
            _write_chunk(_chunk_path(output_dir, chunk), sorted(rows, key=lambda r: r["id"]))
    bar.close()
    decode_s = time.perf_counter() - decode_start
    # Gathered as JSON: exact integers (without jax_enable_x64 a gathered count would be 32-bit).
    counts = multihost.gather_rows([{"examples": decoded_examples, "tokens": generated_tokens}])
    decoded_examples, generated_tokens = (sum(c[k] for c in counts) for k in ("examples", "tokens"))

    summary = {
        "checkpoint": run_dir.path,
        "step": step,
        "params": count_params(params),
        "data": storage.check(data),
        "output_dir": storage.check(output_dir),
        "num_examples": len(examples),
        "skipped": skipped,
        "decoding": {**settings.described(), "max_decode_len": max_decode_len, "input_len": input_len},
        "chunks": {"total": num_chunks, "already_done": num_chunks - len(todo), "decoded": len(todo)},
        "throughput": {
            "devices": jax.device_count(),
            "processes": jax.process_count(),
            "global_batch": global_batch,
            "compile_s": compile_s,
            "decode_s": decode_s,
            "examples_decoded": decoded_examples,
            "generated_tokens": generated_tokens,
            "examples_per_s": decoded_examples / decode_s if decoded_examples else 0.0,
            "generated_tokens_per_s_per_device": generated_tokens / decode_s / jax.device_count()
            if decoded_examples
            else 0.0,
        },
        "config": json.loads(cfg.to_json_best_effort()),
    }
    if jax.process_index() == 0:
        summary["predictions"] = merge_chunks(output_dir, num_chunks, len(examples))
        atomic.write_text(storage.join(output_dir, SUMMARY_FILE), json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def format_summary(summary: Mapping[str, Any]) -> str:
    """The one screen printed at the end of a generate job."""
    t, c = summary["throughput"], summary["chunks"]
    skipped = ", ".join(f"{k} {v}" for k, v in sorted(summary["skipped"].items())) or "none"
    lines = [
        f"checkpoint   {summary['checkpoint']} (step {summary['step']}, {summary['params'] / 1e6:.2f}M params)",
        f"data         {summary['data']}: {summary['num_examples']} examples (skipped: {skipped})",
        f"decoding     {json.dumps(summary['decoding'])}",
        f"chunks       {c['total']} total, {c['already_done']} already done, {c['decoded']} decoded now",
        f"throughput   {t['examples_per_s']:.1f} examples/s, {t['generated_tokens_per_s_per_device']:.1f} generated "
        f"tokens/s per device ({t['examples_decoded']} examples, {t['generated_tokens']} tokens in {t['decode_s']:.1f} s "
        f"on {t['devices']} devices / {t['processes']} processes; compile {t['compile_s']:.1f} s)",
    ]
    if "predictions" in summary:
        lines.append(f"predictions  {summary['predictions']}")
    return "\n".join(lines)
