"""The scheduler with the pool teacher on BalDistill's own MATH files, as they are."""

import json
import os

import pytest

from distill_jax.distill.scheduler import run_distillation

pytestmark = pytest.mark.slow


def test_math_pool_two_naive_stages(shared_data, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "cfg", os.path.join(os.path.dirname(__file__), "../../configs/baldistill_math.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.get_config()
    root = shared_data / "baldistill_math"
    c.distill.pool = str(root / "corpus.jsonl")
    c.distill.eval_data = str(root / "test_corpus.jsonl")
    c.teacher.pool_outputs = str(root / "math_chatgpt_cot_train_count_300.jsonl")
    c.teacher.pool_synthetic = str(root / "math_chatgpt_cot_train_composed.jsonl")
    # Shrunk to a CPU: tiny student, 5 examples per domain per stage, a few steps, a sliver of eval.
    c.model.size, c.model.dtype = "tiny", "float32"
    c.prepare.max_input_len = c.prepare.max_target_len = 512
    c.data.max_input_len = c.data.max_target_len = 512
    c.train.batch_size, c.eval.batch_size = 8, 8
    c.train.log_every = c.train.checkpoint_every = 2
    c.eval.max_examples_per_domain, c.eval.decode_examples_per_domain, c.eval.max_decode_len = 2, 1, 8
    c.distill.methods, c.distill.stages, c.distill.budget = "naive", 2, 70
    c.distill.epochs_per_stage, c.distill.min_steps_per_stage = 0.0, 2
    c.distill.ifd_max_candidates, c.distill.ifd_max_new_tokens, c.distill.ifd_batch_size = 5, 8, 8
    report = run_distillation(c, str(tmp_path / "run"))
    m = report["methods"]["naive"]
    # 4125 rows, one a repeated problem (same domain and text): rejected with its reason, not dropped silently.
    assert sum(report["pool_sizes"].values()) == 4124 and len(report["pool_sizes"]) == 7
    with open(tmp_path / "run" / "pool_rejects.jsonl") as f:
        assert [json.loads(line)["reason"] for line in f] == ["duplicate_example"]
    assert m["ledger"]["spent"] <= 70
    dropped = {}
    for s in m["stages"]:
        for d in s["domains"].values():
            for reason, n in d["dropped"].items():
                dropped[reason] = dropped.get(reason, 0) + n
    # About half the pool has stored rationales: the rest is unavailable (free), never a crash.
    assert dropped.get("unavailable", 0) > 0
    with open(tmp_path / "run" / "naive" / "stage_0" / "purchased.jsonl") as f:
        rows = [json.loads(line) for line in f]
    assert rows and all(r["rationale"] and r["target"] for r in rows)
    assert set(m["stages"][-1]["per_domain"]) == set(report["pool_sizes"])
