"""The teacher-logits job: a seq2seq teacher, teacher-forced over a prepared corpus's targets, writes per target
token its top-k ids and log-probs plus the residual mass (format: distill_jax/data/kd_logits.py).

Like `generate`: examples are one ordered list (domains sorted, each in shard order); global batch b holds
examples [b * B, (b + 1) * B), each process feeding its share of the rows, the batch sharded over the mesh's
batch axes. The top-k is taken on device and the (small) result is replicated, so process 0 reads every row
from its own devices and alone writes. Chunks of `chunk_size` examples are renamed into place whole; a rerun
finds the finished ones (process 0 decides, then broadcasts) and computes only the rest, so no row is ever
written twice and a killed job leaves at most an ignored .tmp- directory.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from distill_jax import atomic, job_output, storage
from distill_jax.config import ConfigError, default_config
from distill_jax.data import kd_logits, shards
from distill_jax.data.pipeline import PadToModelFeatures, ToExample
from distill_jax.models import family
from distill_jax.models.seq2seq import Seq2SeqModel
from distill_jax.training import partitioning
from distill_jax.training.run_dir import RunDir
from distill_jax.training.run_setup import RunSetup, forward_batch_size, per_process_batch_size, setup_run

_PLAN_FORMAT = 1


def _config_json(teacher: str) -> dict[str, Any] | None:
    """The teacher's config.json (a training workdir's or an HF dir's; local, gs:// or s3://), else None."""
    try:
        return json.loads(storage.read_text(storage.join(teacher, "config.json")))
    except (OSError, ValueError):
        return None


def _with_mesh(cfg: ml_collections.ConfigDict, mesh: ml_collections.ConfigDict | None) -> ml_collections.ConfigDict:
    """The teacher's config on another run's mesh section (the devices it shares with that run's student)."""
    if mesh is not None:
        cfg.mesh = ml_collections.ConfigDict(mesh.to_dict())
    return cfg


def _hf_params(run: RunSetup) -> Any:
    """``model.hf_dir``'s weights on ``run``'s mesh, each device receiving only its slices; no optimizer state."""
    host = family.load_hf_params(run.config.model.hf_dir, run.model_config)
    return jax.tree.map(
        lambda x, sharding: jax.make_array_from_callback(x.shape, sharding, lambda index: x[index]),
        host,
        run.shardings.params,
    )


def load_teacher(
    teacher: str, data: str, step: int | None = None, mesh: ml_collections.ConfigDict | None = None
) -> tuple[RunSetup, Any, dict[str, Any]]:
    """(run set up over ``data``, teacher params on its mesh, a description) from a training workdir or an HF dir.

    The teacher must share the data's tokenizer: its logits index the student's vocabulary. A workdir's
    checkpoint records the tokenizer it was trained with, which is compared with the data's. ``mesh`` (a
    config's mesh section) replaces the teacher's own: an online teacher lives on its student's devices, with
    the logical rules that section names.
    """
    teacher = storage.check(teacher)
    config = _config_json(teacher)
    if config is not None and "model_type" in config:
        cfg = _with_mesh(default_config(), mesh)
        cfg.model.hf_dir = teacher  # setup_run refuses data whose tokenizer does not fit the model
        run = setup_run(cfg, train_dir=data, eval_dir="")
        return run, _hf_params(run), {"teacher": teacher, "kind": "hf", "step": None}
    if config is None:
        raise ConfigError(f"{teacher}: neither a training workdir (config.json) nor a Hugging Face model directory")
    run_dir = RunDir(teacher)
    run = setup_run(_with_mesh(run_dir.load_config(), mesh), train_dir=data, eval_dir="")
    step, meta = run_dir.step_meta(step)
    if meta["tokenizer"]["fingerprint"] != run.manifest["tokenizer"]["fingerprint"]:
        raise ValueError(
            f"the teacher {teacher} was trained with tokenizer {meta['tokenizer'].get('name')!r} but {data} was "
            f"prepared with {run.manifest['tokenizer'].get('name')!r}: its logits must index the student's "
            "vocabulary; prepare the data with the teacher's tokenizer"
        )
    changed = family.architecture_changes(meta["model"], run.model_config)
    if changed:
        raise ValueError(f"{teacher}: its checkpoint's model differs from its config: {changed}")
    params, step = run_dir.restore_params(run, step)
    return run, params, {"teacher": teacher, "kind": "run", "step": int(step)}


def _examples(data: str) -> list[dict[str, Any]]:
    sources = shards.open_domain_sources(data)
    return [sources[d][i] for d in sorted(sources) for i in range(len(sources[d]))]


def _topk_fn(run: RunSetup, top_k: int, temperature: float):
    model = Seq2SeqModel(run.model)

    def forward(params: Any, batch: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array, jax.Array]:
        logits = model.logits(params, batch)
        logp = jax.nn.log_softmax(logits.astype(jnp.float32) / temperature, axis=-1)
        values, ids = jax.lax.top_k(logp, top_k)
        # In float32 before the fp16 cast: the residual of a confident teacher is ~1e-4, below fp16's step near 1.
        residual = jnp.maximum(1.0 - jnp.sum(jnp.exp(values), axis=-1), 0.0)
        return ids.astype(jnp.int32), values.astype(jnp.float16), residual.astype(jnp.float16)

    return forward


def teacher_logits(
    teacher: str,
    data: str,
    output_dir: str,
    *,
    top_k: int = 128,
    temperature: float = 1.0,
    step: int | None = None,
    batch_size: int = 32,
    chunk_size: int = 1024,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Writes the teacher's top-k over every target token of ``data`` into ``output_dir``; returns meta.json's dict.

    ``batch_size`` is the global batch, ``chunk_size`` (examples per chunk, the unit of resumption) is rounded
    up to a multiple of it. Every process must call this with the same arguments.
    """
    if temperature <= 0:
        raise ValueError(f"--temperature must be > 0, got {temperature}")
    run, params, described = load_teacher(teacher, data, step)
    vocab = run.model_config.vocab_size
    if not 1 <= top_k <= vocab:
        raise ValueError(f"--top_k={top_k} must be in [1, the teacher's vocabulary {vocab}]")
    global_batch = forward_batch_size(batch_size, run, "batch_size")
    local_batch = per_process_batch_size(global_batch, run, "batch_size")
    chunk_size = -(-max(chunk_size, 1) // global_batch) * global_batch
    examples = _examples(data)
    # The data's own longest rows, rounded to multiples of 8: one compiled shape, no truncation.
    round8 = lambda n: -(-max(n, 1) // 8) * 8  # noqa: E731
    input_len = round8(max((len(e["inputs"]) for e in examples), default=1))
    target_len = round8(max((len(e["targets"]) for e in examples), default=1))
    num_chunks = -(-len(examples) // chunk_size)
    plan = {
        "format": _PLAN_FORMAT,
        **described,
        "data": storage.check(data),
        "num_examples": len(examples),
        "ids_sha256": hashlib.sha256("\n".join(e["id"] for e in examples).encode("utf-8")).hexdigest(),
        "top_k": top_k,
        "temperature": temperature,
        "global_batch": global_batch,
        "chunk_size": chunk_size,
        "input_len": input_len,
        "target_len": target_len,
    }
    done = job_output.start(
        output_dir,
        plan,
        num_chunks,
        chunks_dir=kd_logits.CHUNKS_DIR,
        finished_chunks=lambda: kd_logits.finished_chunks(output_dir),
        outputs=(kd_logits.META_FILE,),
        overwrite=overwrite,
        what="teacher-logits",
    )

    domain_index = {d: i for i, d in enumerate(sorted({e["domain"] for e in examples}) or ["_"])}
    to_example = ToExample(domain_index, input_len, target_len, run.tokenizer.eos_id)
    to_row = PadToModelFeatures(input_len, target_len)
    filler = {"domain": next(iter(domain_index)), "inputs": [run.tokenizer.eos_id], "targets": [run.tokenizer.eos_id]}
    first = jax.process_index() * local_batch

    def local_batch_at(start: int) -> dict[str, np.ndarray]:
        # Rows past the end hold one EOS (an all-padding row would attend to nothing); their output is dropped.
        rows = [
            to_row.map(to_example.map(examples[i] if i < len(examples) else filler))
            for i in range(start + first, start + first + local_batch)
        ]
        return {k: np.stack([r[k] for r in rows]) for k in rows[0]}

    in_sharding = partitioning.batch_sharding(run.mesh, run.rules, 2)
    replicated = partitioning.replicated(run.mesh)
    compile_start = time.perf_counter()
    with partitioning.mesh_context(run.mesh, run.rules):
        host = local_batch_at(0)
        spec = {k: jax.make_array_from_process_local_data(in_sharding, v) for k, v in host.items()}
        compiled = jax.jit(_topk_fn(run, top_k, temperature), out_shardings=replicated).lower(params, spec).compile()
    compile_s = time.perf_counter() - compile_start

    written_bytes = tokens_written = 0
    start_time = time.perf_counter()
    for chunk in (c for c in range(num_chunks) if not done[c]):
        chunk_end = min((chunk + 1) * chunk_size, len(examples))
        rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for start in range(chunk * chunk_size, chunk_end, global_batch):
            batch = {
                k: jax.make_array_from_process_local_data(in_sharding, v) for k, v in local_batch_at(start).items()
            }
            with partitioning.mesh_context(run.mesh, run.rules):
                out = compiled(params, batch)
            # Replicated: every process holds the whole global batch on its first device.
            ids, logp, residual = (np.asarray(x.addressable_data(0)) for x in out)
            for row, i in enumerate(range(start, min(start + global_batch, chunk_end))):
                n = len(examples[i]["targets"])
                rows.append((ids[row, :n], logp[row, :n], residual[row, :n]))
        if jax.process_index() == 0:
            written_bytes += kd_logits.write_chunk(
                output_dir, chunk, [examples[i]["id"] for i in range(chunk * chunk_size, chunk_end)], rows, vocab
            )
            tokens_written += sum(len(r[2]) for r in rows)
    elapsed = time.perf_counter() - start_time
    multihost_utils.sync_global_devices("teacher_logits_written") if jax.process_count() > 1 else None

    num_tokens = sum(len(e["targets"]) for e in examples)
    bytes_per_token = top_k * (kd_logits.ids_dtype(vocab).itemsize + 2) + 2
    meta = {
        "format_version": kd_logits.FORMAT_VERSION,
        **plan,
        "vocab_size": vocab,
        "ids_dtype": kd_logits.ids_dtype(vocab).name,
        "logp_dtype": "float16",
        "residual_dtype": "float16",
        "num_chunks": num_chunks,
        "num_tokens": num_tokens,
        "bytes_per_token": bytes_per_token,
        "payload_bytes": bytes_per_token * num_tokens,
        "run": {
            "chunks_already_done": sum(done),
            "chunks_written": num_chunks - sum(done),
            "tokens_written": tokens_written,
            "bytes_written": written_bytes,
            "compile_s": compile_s,
            "seconds": elapsed,
            "tokens_per_s": tokens_written / elapsed if tokens_written else 0.0,
            "devices": jax.device_count(),
            "processes": jax.process_count(),
        },
    }
    if jax.process_index() == 0:
        atomic.write_text(
            storage.join(output_dir, kd_logits.META_FILE), json.dumps(meta, indent=2, sort_keys=True) + "\n"
        )
    return meta
