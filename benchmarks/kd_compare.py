"""CE-only vs CE + stored-top-k KD on the embedded demo corpus: same student, same steps, same data order.

    python benchmarks/kd_compare.py --out=/tmp/kd_compare [--teacher_steps=1500 --student_steps=400 --top_k=128]

A tiny teacher is trained longer on the full demo pool, `teacher-logits` stores its top-k over the same
training data, then two students (another seed) train the same number of steps, one with CE only and one
with kd.logits_dir set; both are evaluated per domain on the demo test split. Prints one JSON summary.
"""

from __future__ import annotations

import json
import os
import time

from absl import app, flags

_OUT = flags.DEFINE_string("out", "/tmp/kd_compare", "Work directory (corpus, teacher, logits, students).")
_TEACHER_STEPS = flags.DEFINE_integer("teacher_steps", 1500, "Teacher training steps.")
_STUDENT_STEPS = flags.DEFINE_integer("student_steps", 400, "Steps of each student.")
_TOP_K = flags.DEFINE_integer("top_k", 128, "Stored top-k.")
_ALPHA = flags.DEFINE_float("alpha", 0.5, "kd.alpha")
_TEMPERATURE = flags.DEFINE_float("temperature", 1.0, "kd.temperature")


def main(argv: list[str]) -> None:
    del argv
    from distill_jax.config import demo_config
    from distill_jax.data.demo_corpus import write_demo_corpus
    from distill_jax.data.prepare import PrepareOptions, prepare_corpus
    from distill_jax.training import trainer
    from distill_jax.training.teacher_logits import teacher_logits

    out = _OUT.value
    data = {s: os.path.join(out, "data", s) for s in ("train", "test")}
    if not os.path.isdir(data["train"]):
        files = write_demo_corpus(os.path.join(out, "corpus"), seed=0)
        for split, path in files.items():
            prepare_corpus([path], data[split], PrepareOptions.from_config(demo_config()))

    def config(steps: int, seed: int):
        cfg = demo_config()
        cfg.data.train_dir, cfg.data.eval_dir = data["train"], data["test"]
        cfg.train.steps, cfg.seed = steps, seed
        cfg.train.checkpoint_every, cfg.eval.every = steps, steps
        return cfg

    summary = {}
    start = time.perf_counter()
    teacher = trainer.train(config(_TEACHER_STEPS.value, 0), os.path.join(out, "teacher"))
    summary["teacher"] = {
        "steps": teacher.step,
        "seconds": time.perf_counter() - start,
        "eval": teacher.eval_per_domain,
    }
    logits_dir = os.path.join(out, f"logits_k{_TOP_K.value}")
    meta = teacher_logits(os.path.join(out, "teacher"), data["train"], logits_dir, top_k=_TOP_K.value, batch_size=64)
    summary["logits"] = {k: meta[k] for k in ("num_examples", "num_tokens", "top_k", "ids_dtype", "bytes_per_token")}
    summary["logits"]["run"] = meta["run"]
    for name in ("ce", "kd"):
        cfg = config(_STUDENT_STEPS.value, 1)
        if name == "kd":
            cfg.kd.logits_dir, cfg.kd.alpha, cfg.kd.temperature = logits_dir, _ALPHA.value, _TEMPERATURE.value
            cfg.kd.temperature_end = _TEMPERATURE.value
        start = time.perf_counter()
        result = trainer.train(cfg, os.path.join(out, f"student_{name}"))
        seconds = time.perf_counter() - start
        rows = [json.loads(line) for line in open(os.path.join(out, f"student_{name}", "metrics.jsonl"))]
        step_times = [r["perf/step_time_s"] for r in rows if "perf/step_time_s" in r][1:]  # first interval compiles
        summary[name] = {
            "seconds": seconds,
            "steps_per_s": 1.0 / (sum(step_times) / len(step_times)) if step_times else None,
            "final": result.final_metrics,
            "eval": result.eval_per_domain,
        }
    print(json.dumps(summary, indent=1, sort_keys=True, default=float))


if __name__ == "__main__":
    app.run(main)
