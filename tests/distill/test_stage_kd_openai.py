"""distill.loss=kd with an OpenAI teacher: the log-probs bought with each annotation are aligned to the prepared
targets (mask: the rationale's tokens), kept per stage and unioned for training; the pipeline carries the mask."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest

from distill_jax.config import ConfigError
from distill_jax.data import kd_logits, shards
from distill_jax.data.pipeline import ToExample
from distill_jax.data.prepare import prepare_corpus
from distill_jax.data.prepare_options import FieldMapping, PrepareOptions
from distill_jax.data.tokenizers import ByteTokenizer
from distill_jax.distill import stage_kd
from distill_jax.presets import demo_config
from distill_jax.teachers import logprobs as lp

TEMPLATE = "{rationale} So the answer is {target}."


def _cfg():
    cfg = demo_config()
    cfg.teacher.kind, cfg.distill.loss = "openai", "kd"
    cfg.teacher.top_logprobs = 3
    cfg.prepare.target_template = TEMPLATE
    cfg.prepare.max_target_len = cfg.data.max_target_len = 128
    return cfg


def _topk(text: str, k: int = 3, cut: int | None = None) -> lp.TeacherTopK:
    """What the OpenAI teacher returns for a completion from a ByT5 teacher: chosen first, then k-1 others."""
    tok = ByteTokenizer()
    ids = tok.encode(text)[:-1]
    entries = []
    for i, c in enumerate(ids):
        others = [j for j in (68, 69, 70, 71) if j != c][: k - 1]
        token = chr(c - 3) if cut is None or i < cut else "\u2603"
        entries.append((token, -1.0, [(chr(j - 3), -1.0 - n) for n, j in enumerate([c, *others])]))
    return lp.to_student(entries, lp.TokenMap(tok), k)


def test_kd_with_an_openai_teacher_is_bought_and_checked_before_anything_is():
    cfg = _cfg()
    assert stage_kd.kd_teacher(cfg) == stage_kd.BOUGHT
    cfg.kd.top_k = 8
    with pytest.raises(ConfigError, match="kd.top_k=8 but teacher.top_logprobs=3"):
        stage_kd.kd_teacher(cfg)
    cfg.kd.top_k, cfg.prepare.target_template = 0, "{target}"
    with pytest.raises(ConfigError, match="begin the template with {rationale}"):
        stage_kd.kd_teacher(cfg)
    cfg.distill.kd_teacher = "/a/local/teacher"  # then the local teacher's logits, as before
    assert stage_kd.kd_teacher(cfg) == "/a/local/teacher"


def test_alignment_covers_the_teachers_prefix_and_the_first_differing_token():
    topk = _topk("Add 2 and 2.")
    target = ByteTokenizer().encode("Add 2 and 2. So the answer is 4.")
    ids, logp, residual, mask = stage_kd.aligned(topk, target, prefix=0)
    n = len(topk.chosen)
    assert mask[:n].all() and not mask[n:].any()
    assert np.array_equal(ids[:n], topk.ids) and np.array_equal(logp[:n], topk.logp)
    np.testing.assert_allclose(residual[:n], 1 - np.exp(topk.logp).sum(-1), rtol=1e-6)
    # The target leaves the teacher's text at token 4: token 4 still has the teacher's (same) prefix, 5.. do not.
    other = ByteTokenizer().encode("Add 3 and 2. So the answer is 5.")
    assert stage_kd.aligned(topk, other, prefix=0)[3].tolist()[:6] == [1, 1, 1, 1, 1, 0]
    # A frame token (BART's <s>) before the text: shifted by it, never taught.
    framed = np.concatenate([[0], target])
    assert stage_kd.aligned(topk, framed, prefix=1)[3].tolist()[: n + 2] == [0] + [1] * n + [0]
    # A token the student's vocabulary lacks ends the row's KD there.
    assert stage_kd.aligned(_topk("Add 2 and 2.", cut=3), target, prefix=0)[3].sum() == 3


def test_stages_store_their_purchases_top_k_and_train_on_the_union(tmp_path):
    cfg = _cfg()
    rows = [
        dict(id=f"r{i}", domain="math", input=f"q{i}", rationale=f"Add {i} and {i}.", target=str(2 * i), meta={})
        for i in range(5)
    ]
    topks = {r["id"]: _topk(r["rationale"]) for r in rows if r["id"] != "r4"}  # r4: a cached reply without logprobs
    stages = [str(tmp_path / "stage_0"), str(tmp_path / "stage_1")]
    meta0 = stage_kd.write_purchased(cfg, stages[0], rows[:2], topks)
    meta1 = stage_kd.write_purchased(cfg, stages[1], rows[2:], topks)
    assert (meta0["num_examples"], meta1["num_examples"]) == (2, 2) and meta0["top_k"] == 3
    jsonl = tmp_path / "purchased.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    options = PrepareOptions.from_config(cfg)
    options = dataclasses.replace(options, mapping=FieldMapping(), progress=False)
    prepare_corpus([str(jsonl)], str(tmp_path / "train_data"), options, overwrite=True)
    cfg.data.train_dir = str(tmp_path / "train_data")

    stage = stage_kd.with_stage_logits(cfg, stages[1], stages)
    assert cfg.kd.logits_dir == "" and stage.kd.logits_dir == os.path.join(stages[1], "kd_logits")
    store = kd_logits.StoredLogits.open(stage.kd.logits_dir)
    assert len(store) == 4 and store.k == 3 and store.meta["num_chunks"] == 2
    to_example = ToExample({"math": 0}, 64, 128, kd=store)
    for record in (r for s in shards.open_domain_sources(cfg.data.train_dir).values() for r in s):
        out = to_example.map(record)
        row_id = record["id"].decode() if isinstance(record["id"], bytes) else record["id"]
        n = len(topks[row_id].chosen) if row_id in topks else 0
        assert out["kd_mask"].tolist() == [1.0] * n + [0.0] * (len(out["targets"]) - n), row_id
        if n:
            assert np.array_equal(out["kd_ids"][:n], topks[row_id].ids)
    # A stage whose purchases carry no log-probs at all trains on CE.
    assert stage_kd.with_stage_logits(cfg, str(tmp_path / "stage_9"), [str(tmp_path / "stage_9")]) is cfg


def _byte_logprobs(content: str, k: int) -> list[dict]:
    """The real local server's logprobs from a ByT5 teacher (the demo's tokenizer), as vLLM writes them."""
    ids = ByteTokenizer().encode(content)[:-1]
    out = []
    for c in ids:
        alts = [c] + [j for j in (68, 69, 70, 71, 72) if j != c][: k - 1]
        top = [{"token": chr(j - 3), "logprob": -1.0 - n} for n, j in enumerate(alts)]
        out.append({"token": chr(c - 3), "logprob": -1.0, "top_logprobs": top})
    return out


@pytest.mark.slow  # two stages of a distill run (purchases from the HTTP server, prepare, training, eval)
def test_distill_run_buys_the_logits_with_the_annotations(tmp_path, monkeypatch):
    from distill_jax.data.demo_corpus import write_demo_corpus
    from distill_jax.distill.scheduler import run_distillation
    from tests.distill.test_scheduler import _config
    from tests.teachers.teacher_servers import MockOpenAI

    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("KD_KEY", "sk-kd")
    server = MockOpenAI("sk-kd", models=("kd-teacher",), logprobs=_byte_logprobs)
    try:
        corpus = write_demo_corpus(str(tmp_path / "corpus"), seed=0, num_train=800, num_test_per_domain=6)
        cfg = _config(corpus, methods="random", budget=40, loss="kd", check_answers=False)
        cfg.teacher.kind, cfg.teacher.base_url, cfg.teacher.model = "openai", server.base_url, "kd-teacher"
        cfg.teacher.api_key_env, cfg.teacher.top_logprobs, cfg.teacher.concurrency = "KD_KEY", 4, 2
        cfg.distill.budget_unit = "calls"
        cfg.prepare.target_template = TEMPLATE
        cfg.prepare.max_target_len = cfg.data.max_target_len = 96
        workdir = str(tmp_path / "run")
        report = run_distillation(cfg, workdir)
        calls = len(server.calls)
    finally:
        server.stop()
    assert report["methods"]["random"]["phase"] == "done"
    assert all(c.get("top_logprobs") == 4 for c in server.calls if "Question:" in c["messages"][0]["content"])
    for stage in range(2):
        stage_dir = os.path.join(workdir, "random", f"stage_{stage}")
        meta = json.loads(open(os.path.join(stage_dir, "kd_logits", kd_logits.META_FILE)).read())
        purchased = sum(1 for _ in open(os.path.join(stage_dir, "purchased.jsonl")))
        assert meta["top_k"] == 4 and meta["kd_tokens"] > 0
        assert json.loads(open(os.path.join(stage_dir, "purchased_kd", kd_logits.META_FILE)).read())[
            "num_examples"
        ] == sum(
            1 for r in open(os.path.join(stage_dir, "purchased.jsonl")) if json.loads(r)["meta"]["kind"] == "annotate"
        )
        assert purchased > 0
    rows = [json.loads(line) for line in open(os.path.join(workdir, "random", "train", "metrics.jsonl"))]
    kd_rows = [r for r in rows if "train/kd" in r]
    assert kd_rows and all(0 < r["train/kd_token_fraction"] < 1 for r in kd_rows)  # the rationale's tokens
    assert calls == len(server.calls)
