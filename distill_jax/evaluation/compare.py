"""The eval job over prediction sets: score one or several (student checkpoints, teacher outputs, baselines) side by side.

Each set is a predictions JSONL file, or a checkpoint (a training workdir or WORKDIR/checkpoints/STEP)
that is first decoded with :func:`generate.generate` into OUT/predictions/NAME. All sets are scored
on the same examples (from ``data``, or recorded in the first predictions file), per domain and as
head / tail / macro / micro, and a teacher set (if named) gives every other set its ratios.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
from absl import logging

from distill_jax.config import default_config
from distill_jax.data import shards
from distill_jax.evaluation import decoding_presets
from distill_jax.evaluation import examples as examples_lib
from distill_jax.evaluation import generate as generate_lib
from distill_jax.evaluation.embeddings import load_encoder
from distill_jax.evaluation.report import build_comparison_report, head_and_tail, write_comparison_report
from distill_jax.evaluation.scoring import (
    ScoringOptions,
    examples_from_predictions,
    read_predictions,
    score_predictions,
)
from distill_jax.training.run_dir import RunDir


def _is_checkpoint(path: str) -> bool:
    try:
        RunDir.resolve(path)
    except FileNotFoundError:
        return False
    return True


def _load_set(
    name: str, path: str, data: str, output_dir: str, settings: generate_lib.DecodeSettings, fields: Mapping[str, str]
) -> dict[str, Any] | None:
    """{"source", "rows", "step", "params", "checkpoint"} of one set; decodes a checkpoint first (collective)."""
    if _is_checkpoint(path):
        if not data:
            raise ValueError(f"set {name!r} is a checkpoint ({path}): pass --data to decode it on")
        out = os.path.join(output_dir, "predictions", name)
        summary = generate_lib.generate(path, data, out, settings, fields=fields)
        predictions = os.path.join(out, generate_lib.PREDICTIONS_FILE)
    else:
        predictions = path
        summary_path = os.path.join(os.path.dirname(os.path.abspath(path)), generate_lib.SUMMARY_FILE)
        summary = {}
        if os.path.isfile(summary_path):  # written by `generate` beside its predictions
            with open(summary_path, encoding="utf-8") as f:
                summary = json.load(f)
    if jax.process_index() != 0:
        return None
    return {
        "source": os.path.abspath(predictions),
        "rows": read_predictions(predictions),
        "step": summary.get("step"),
        "params": summary.get("params"),
        "checkpoint": summary.get("checkpoint"),
        "decoding": summary.get("decoding"),
        "examples_per_s": summary.get("throughput", {}).get("examples_per_s"),
    }


def expand_presets(
    sets: Sequence[tuple[str, str]], settings: generate_lib.DecodeSettings, presets: Sequence[str]
) -> list[tuple[str, str, generate_lib.DecodeSettings]]:
    """(name, path, settings) per set: a checkpoint becomes one set per preset, named NAME@PRESET."""
    if not presets:
        return [(name, path, settings) for name, path in sets]
    out = []
    for name, path in sets:
        if not _is_checkpoint(path):
            out.append((name, path, settings))
            continue
        for preset_name in presets:
            chosen = decoding_presets.preset(preset_name, seed=settings.seed, max_decode_len=settings.max_decode_len)
            out.append((f"{name}@{preset_name}", path, chosen))
    return out


def _train_counts(train_data: str, workdir: str, loaded: Mapping[str, Mapping[str, Any]]) -> tuple[dict[str, int], str]:
    """Training domain sizes for head/tail: --train_data, else the workdir's (or a set's checkpoint's) training data."""
    candidates = [train_data] if train_data else []
    for path in [workdir, *(s.get("checkpoint") for s in loaded.values())]:
        if path and RunDir(path).has_config():
            candidates.append(RunDir(path).load_config().data.train_dir)
    for candidate in candidates:
        if candidate and os.path.isfile(os.path.join(candidate, shards.MANIFEST_FILE)):
            manifest = shards.load_manifest(candidate)
            return {d: int(v["num_examples"]) for d, v in manifest["domains"].items()}, candidate
    return {}, ""


def compare_predictions(
    sets: Sequence[tuple[str, str]],
    output_dir: str,
    *,
    data: str = "",
    workdir: str = "",
    options: ScoringOptions | None = None,
    settings: generate_lib.DecodeSettings | None = None,
    fields: Mapping[str, str] | None = None,
    train_data: str = "",
    head_domains: Sequence[str] = (),
    head_fraction: float | None = None,
    teacher: str | None = None,
    param_counts: Mapping[str, float] | None = None,
    embedding_model: str = "",
    presets: Sequence[str] = (),
    throughputs: Mapping[str, float] | None = None,
) -> tuple[dict[str, Any] | None, str]:
    """Scores ``sets`` ([(name, predictions file or checkpoint)]) and writes the report; returns (report, table).

    With ``presets`` (decoding preset names) each checkpoint is decoded once per preset, as sets
    NAME@PRESET. ``throughputs`` gives examples/s of sets that were not decoded here (a teacher's
    API, say); decoded sets carry their own. Every process must call it (checkpoints are decoded by
    all); only process 0 scores and writes, the others return (None, "").
    """
    options, settings = options or ScoringOptions(), settings or generate_lib.DecodeSettings()
    names = [name for name, _ in sets]
    if not sets or len(set(names)) != len(names):
        raise ValueError(f"give one or more prediction sets with distinct names, got {names}")
    expanded = expand_presets(sets, settings, presets)
    sets = [(name, path) for name, path, _ in expanded]
    names = [name for name, _ in sets]
    # The run whose prepare settings read the data: --workdir, else the first checkpoint among the sets.
    workdir = workdir or next((RunDir.resolve(p)[0].path for _, p in sets if _is_checkpoint(p)), "")
    cfg = RunDir(workdir).load_config() if workdir else default_config()
    fields = dict(fields or {})
    loaded = {name: _load_set(name, path, data, output_dir, chosen, fields) for name, path, chosen in expanded}
    if jax.process_index() != 0:
        return None, ""

    notes: list[str] = []
    if data:
        examples, skipped = examples_lib.load_examples(data, generate_lib.prepare_options(cfg, fields))
        if skipped:
            notes.append(f"rows of {data} skipped: {skipped}")
    else:
        first = names[0]
        examples = examples_from_predictions(loaded[first]["rows"], loaded[first]["source"])
        notes.append(f"examples and references are those recorded in {loaded[first]['source']}")

    counts, counts_from = _train_counts(train_data, workdir, loaded)
    if not counts:
        counts = examples_lib.domain_counts(examples)
        counts_from = "the evaluated data (no training manifest given)"
        if not head_domains:
            notes.append(
                "head/tail split by the evaluated data's domain sizes: pass --train_data for the training ones"
            )
    fraction = cfg.eval.head_fraction if head_fraction is None else head_fraction
    head, tail = head_and_tail(counts, fraction, sorted({e.domain for e in examples}), head_domains)

    encoder = None
    if "paraphrase" in options.groups:
        encoder, reason = load_encoder(embedding_model)
        if encoder is None:
            logging.warning("semantic_similarity skipped: %s", reason)
            notes.append(f"semantic_similarity skipped: {reason}")

    scored: dict[str, dict[str, Any]] = {}
    for name, s in loaded.items():
        per_domain, join = score_predictions(examples, s["rows"], options, encoder)
        params = (param_counts or {}).get(name, s["params"])
        speed = (throughputs or {}).get(name, s["examples_per_s"])
        scored[name] = {
            "per_domain": per_domain,
            "source": s["source"],
            "step": s["step"],
            "params": int(params) if params else None,
            "examples_per_s": float(speed) if speed else None,
            "decoding": s["decoding"],
            **join,
        }
        if join["missing"] or join["unknown"]:
            notes.append(
                f"{name}: {join['missing']} examples without a prediction (scored empty), {join['unknown']} unknown ids"
            )
    if teacher is None and "teacher" in scored:
        teacher = "teacher"
    extra = {
        "data": os.path.abspath(data) if data else None,
        "head_tail_from": "--head_domains" if head_domains else counts_from,
        "notes": notes,
        "config": {
            "eval": {
                "metrics": list(options.groups),
                "answer_patterns": list(options.answer_patterns),
                "max_labels": options.max_labels,
                "ibleu_alpha": options.ibleu_alpha,
                "head_fraction": fraction,
                "decoding": settings.described(),
                "presets": list(presets),
                "embedding_model": embedding_model or ("packaged all-MiniLM-L6-v2" if encoder else None),
            },
            "run": json.loads(cfg.to_json_best_effort()) if workdir else None,
        },
    }
    report, table = build_comparison_report(scored, counts, head, tail, teacher, extra)
    paths = write_comparison_report(output_dir, report, table, title=f"Evaluation: {' vs '.join(names)}")
    logging.info("Report written to %s and %s", paths["json"], paths["md"])
    return report, table
