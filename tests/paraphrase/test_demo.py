"""`distill-jax paraphrase-demo` end to end on the real APTY file (shortened training; slow)."""

from __future__ import annotations

import json

import pytest

from distill_jax.paraphrase.demo import run_paraphrase_demo
from distill_jax.presets import paraphrase_demo_config


@pytest.mark.slow
def test_paraphrase_demo_chain(shared_data, tmp_path):
    config = paraphrase_demo_config()
    config.train.steps = 20
    config.eval.every = 0
    config.paraphrase.eval_presets = "greedy,topk10_n5"
    apty = shared_data / "apty_chatgpt_paraphrase_types" / "apty_base.csv"
    report, text = run_paraphrase_demo(str(tmp_path), config, str(apty), teacher_examples_per_s=2.0)

    assert report["order"] == ["student@greedy", "student@topk10_n5", "teacher"]
    counts = json.loads((tmp_path / "corpus" / "filter_counts.json").read_text())
    assert (
        counts["kept"] + sum(counts["removed_before_filters"].values()) + sum(counts["removed_by_filter"].values())
        == counts["input"]
    )
    teacher = report["sets"]["teacher"]["aggregates"]["micro"]
    assert teacher["semantic_similarity"] > 0.8  # ChatGPT's paraphrases keep the meaning of held-out sources
    assert report["ratios"]["student@greedy"]["examples_per_s"] > 0
    assert "self-BLEU" in text and (tmp_path / "report" / "plots" / "fidelity_diversity.png").is_file()
