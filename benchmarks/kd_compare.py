"""CE-only vs CE + stored-top-k KD vs online KD on the embedded demo corpus: same student, steps and data order.

    python benchmarks/kd_compare.py --out=/tmp/kd_compare [--teacher_steps=1500 --student_steps=400 --top_k=128]
        [--teacher_d_model=256 --teacher_layers=3] [--modes=ce,stored,online]

A teacher is trained on the full demo pool (the tiny preset, or with --teacher_d_model a wider and deeper T5
over the same byte vocabulary, started from a random HF directory written here), `teacher-logits` stores its
top-k over the same training data, then the students (another seed) train the same number of steps: CE only,
with kd.logits_dir (stored top-k), and with kd.teacher_dir (the teacher's forward in every step, dense KL).
Each is evaluated per domain on the demo test split. Prints one JSON summary.
"""

from __future__ import annotations

import json
import os
import time

from absl import app, flags

_OUT = flags.DEFINE_string("out", "/tmp/kd_compare", "Work directory (corpus, teacher, logits, students).")
_TEACHER_STEPS = flags.DEFINE_integer("teacher_steps", 1500, "Teacher training steps.")
_TEACHER_D_MODEL = flags.DEFINE_integer("teacher_d_model", 0, "Teacher width (d_ff = 2x); 0 = the tiny preset.")
_TEACHER_LAYERS = flags.DEFINE_integer("teacher_layers", 3, "Teacher encoder and decoder layers (with d_model).")
_STUDENT_STEPS = flags.DEFINE_integer("student_steps", 400, "Steps of each student.")
_MODES = flags.DEFINE_list("modes", ["ce", "stored", "online"], "Students to train: ce, stored, online.")
_TOP_K = flags.DEFINE_integer("top_k", 128, "Stored top-k.")
_ALPHA = flags.DEFINE_float("alpha", 0.5, "kd.alpha")
_TEMPERATURE = flags.DEFINE_float("temperature", 1.0, "kd.temperature")


def _teacher_init(out: str, data_dir: str) -> str:
    """A random T5 of the flags' size over the demo's byte vocabulary, as an HF dir the teacher starts from."""
    import jax
    import numpy as np
    from flax import linen as nn

    from distill_jax.data import shards
    from distill_jax.models import family
    from distill_jax.training.run_setup import padded_vocab_size

    hf_dir = os.path.join(out, f"teacher_init_d{_TEACHER_D_MODEL.value}_l{_TEACHER_LAYERS.value}")
    if not os.path.isdir(hf_dir):
        tok = shards.load_manifest(data_dir)["tokenizer"]
        d = _TEACHER_D_MODEL.value
        config = family.preset_config(
            "tiny",
            vocab_size=padded_vocab_size(int(tok["vocab_size"])),
            pad_token_id=int(tok["pad_id"]),
            eos_token_id=int(tok["eos_id"]),
            d_model=d,
            d_ff=2 * d,
            d_kv=64,
            num_heads=d // 64,
            num_encoder_layers=_TEACHER_LAYERS.value,
            num_decoder_layers=_TEACHER_LAYERS.value,
        )
        params = jax.tree.map(np.asarray, nn.unbox(family.init_params(config, jax.random.key(0))))
        family.save_hf(hf_dir, config, params, tokenizer_dir=None)
    return hf_dir


def main(argv: list[str]) -> None:
    del argv
    from distill_jax.data.demo_corpus import write_demo_corpus
    from distill_jax.data.prepare import PrepareOptions, prepare_corpus
    from distill_jax.models import family
    from distill_jax.presets import demo_config
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
    teacher_cfg = config(_TEACHER_STEPS.value, 0)
    if _TEACHER_D_MODEL.value:
        teacher_cfg.model.hf_dir = _teacher_init(out, data["train"])
    teacher_dir = os.path.join(out, "teacher")
    teacher = trainer.train(teacher_cfg, teacher_dir)
    summary["teacher"] = {
        "steps": teacher.step,
        "seconds": time.perf_counter() - start,
        "params": family.num_params(family.hf_config(teacher_cfg.model.hf_dir))
        if teacher_cfg.model.hf_dir
        else family.num_params(family.preset_config("tiny", vocab_size=384)),
        "eval": teacher.eval_per_domain,
    }
    logits_dir = os.path.join(out, f"logits_k{_TOP_K.value}")
    if "stored" in _MODES.value:
        meta = teacher_logits(teacher_dir, data["train"], logits_dir, top_k=_TOP_K.value, batch_size=64)
        summary["logits"] = {
            k: meta[k] for k in ("num_examples", "num_tokens", "top_k", "ids_dtype", "bytes_per_token")
        }
        summary["logits"]["run"] = meta["run"]
    for name in _MODES.value:
        cfg = config(_STUDENT_STEPS.value, 1)
        if name != "ce":
            cfg.kd.alpha, cfg.kd.temperature = _ALPHA.value, _TEMPERATURE.value
            cfg.kd.temperature_end = _TEMPERATURE.value
        if name == "stored":
            cfg.kd.logits_dir = logits_dir
        elif name == "online":
            cfg.kd.teacher_dir = teacher_dir
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
