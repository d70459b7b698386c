"""An OpenAI teacher's logprobs/top_logprobs as KD targets, against the real local chat-completions server
(tests/teachers/teacher_servers.MockOpenAI answering in OpenAI's format: choices[0].logprobs.content[i])."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
import sentencepiece as spm

from distill_jax.config import ConfigError
from distill_jax.data.tokenizers import HFTokenizer
from distill_jax.presets import demo_config
from distill_jax.teachers import logprobs as lp
from distill_jax.teachers.base import Example, Request, TeacherTokenizerError
from distill_jax.teachers.openai import OpenAITeacher, from_config
from tests.teachers.teacher_servers import MockOpenAI

KEY = "sk-test-logprobs"
ANNOTATE = "[{domain}] Gold: {answer}. Question: {input}"
SENTENCES = [f"Working on q{i}. So the answer is Q{i}." for i in range(300)] + [
    f"The quick brown fox jumps over the lazy dog {i} times." for i in range(300)
]


def _reply(prompt: str) -> str:
    question = prompt.rsplit("Question: ", 1)[-1]
    return f"Working on {question}. So the answer is {question.upper()}."


@pytest.fixture(scope="module")
def student_tok(tmp_path_factory) -> HFTokenizer:
    d = tmp_path_factory.mktemp("spm")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(SENTENCES), model_writer=model, vocab_size=250, pad_id=0, eos_id=1, unk_id=2,
        bos_id=-1, model_type="unigram", hard_vocab_limit=False, minloglevel=2,
    )  # fmt: skip
    (d / "spiece.model").write_bytes(model.getvalue())
    return HFTokenizer(str(d))


def same_tokenizer(tok: HFTokenizer, *, as_ids: bool = False, drop_after: int | None = None, alts: int | None = None):
    """The server's logprobs from a teacher over ``tok``: vLLM-style incremental text (or ``token_id:N``)."""

    def logprobs(content: str, k: int) -> list[dict]:
        ids = tok.encode(content)[:-1].tolist()
        out = []
        for i, chosen in enumerate(ids):
            prev = tok.decode(ids[:i])

            def text(j: int, i: int = i, prev: str = prev) -> str:
                return f"token_id:{j}" if as_ids else tok.decode(ids[:i] + [j])[len(prev) :]

            others = [j for j in (4, 5, 6, 7, 8, 9, 10, 11) if j != chosen][: (alts or k) - 1]
            top = [{"token": text(j), "logprob": -0.2 - n} for n, j in enumerate([chosen, *others])]
            token = text(chosen) if drop_after is None or i < drop_after else "\u2603"  # not in the vocabulary
            out.append({"token": token, "logprob": -0.2, "bytes": list(token.encode()), "top_logprobs": top})
        return out

    return logprobs


def word_tokenizer(content: str, k: int) -> list[dict]:
    """A teacher whose tokenizer is not the student's: GPT-style word pieces with a leading space."""
    return [
        {"token": t, "logprob": -0.1, "top_logprobs": [{"token": t, "logprob": -0.1}] * k}
        for t in re.findall(r"\s?\S+", content)
    ]


@pytest.fixture
def serve(monkeypatch):
    monkeypatch.setenv("no_proxy", "*")
    servers = []

    def start(logprobs):
        servers.append(MockOpenAI(KEY, models=("kd-teacher",), reply=_reply, logprobs=logprobs))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


def teacher(server, tok, tmp_path, k=3, concurrency=4):
    return OpenAITeacher(
        server.base_url, "kd-teacher", KEY, temperature=0.0, max_tokens=64, concurrency=concurrency, timeout_s=5.0,
        max_retries=0, backoff_s=0.0, cache_path=tmp_path / "cache.sqlite", annotate_prompt=ANNOTATE,
        synthesize_prompt="Like these {domain}: {examples}", paraphrase_prompt="{k} {domain} {input}",
        top_logprobs=k, tokenizer=tok,
    )  # fmt: skip


def annotate(i):
    return Request("annotate", "math", Example(f"id{i}", "math", f"q{i}", f"Q{i}"))


@pytest.mark.parametrize("as_ids", [False, True])
def test_top_logprobs_come_back_as_the_students_ids_and_are_cached(serve, student_tok, tmp_path, as_ids):
    server = serve(same_tokenizer(student_tok, as_ids=as_ids))
    t = teacher(server, student_tok, tmp_path)
    seeds = (Example("s", "math", "a", "1"),)
    responses = t.complete([annotate(i) for i in range(5)] + [Request("synthesize", "math", seeds=seeds)])
    t.close()
    payloads = list(server.calls)
    assert all(
        p["logprobs"] is True and p["top_logprobs"] == 3 for p in payloads if "Gold" in p["messages"][0]["content"]
    )
    assert [("logprobs" in p) for p in payloads].count(False) == 1  # synthesize asks for none
    for r in responses[:5]:
        own = student_tok.encode(r.rationale)[:-1]
        assert r.topk.valid == len(own) and np.array_equal(r.topk.chosen, own)
        assert np.array_equal(r.topk.ids[:, 0], own)  # the chosen token ranks first, as the server said
        np.testing.assert_allclose(r.topk.logp[:, :2], [[-0.2, -1.2]] * len(own), rtol=1e-6)
    assert responses[5].topk is None
    # The cache keeps the log-probs: a new run gets them without a call.
    again = teacher(server, student_tok, tmp_path)
    calls = len(server.calls)
    cached = again.complete([annotate(i) for i in range(5)])
    again.close()
    assert len(server.calls) == calls and all(r.cached for r in cached)
    for a, b in zip(cached, responses):
        assert np.array_equal(a.topk.ids, b.topk.ids) and np.array_equal(a.topk.logp, b.topk.logp)


def test_a_teacher_with_another_tokenizer_is_refused_after_one_request(serve, student_tok, tmp_path):
    server = serve(word_tokenizer)
    t = teacher(server, student_tok, tmp_path)
    with pytest.raises(TeacherTokenizerError, match="tokenizer is not the student's .*set distill.kd_teacher"):
        t.complete([annotate(i) for i in range(6)])
    t.close()
    assert isinstance(TeacherTokenizerError("x"), ConfigError)  # exit 2 at the CLI, one line
    assert len(server.calls) == 1  # the first purchase went alone; nothing else was bought


@pytest.mark.parametrize(
    ("logprobs", "match"),
    [(None, "returned no logprobs"), ("fewer", r"at most 2 top_logprobs .* set teacher.top_logprobs=2")],
)
def test_a_server_without_enough_logprobs_is_a_clear_error(serve, student_tok, tmp_path, logprobs, match):
    fn = same_tokenizer(student_tok, alts=2) if logprobs == "fewer" else None
    server = serve(fn)
    t = teacher(server, student_tok, tmp_path)
    with pytest.raises(TeacherTokenizerError, match=match):
        t.complete([annotate(i) for i in range(4)])
    t.close()
    assert len(server.calls) == 1


def test_a_later_unmappable_token_ends_that_rows_kd_there(serve, student_tok, tmp_path):
    server = serve(same_tokenizer(student_tok))
    t = teacher(server, student_tok, tmp_path, concurrency=1)
    (first,) = t.complete([annotate(0)])  # verified
    server.server.logprobs = same_tokenizer(student_tok, drop_after=4)
    (later,) = t.complete([annotate(1)])
    t.close()
    assert first.topk.valid == len(first.topk.chosen) and later.topk.valid == 4 and later.status == "ok"


def test_from_config_asks_for_logprobs_only_for_kd_stages(serve, student_tok, monkeypatch, tmp_path):
    monkeypatch.setenv("KD_KEY", KEY)
    cfg = demo_config()
    cfg.teacher.kind, cfg.teacher.api_key_env, cfg.teacher.base_url = "openai", "KD_KEY", "http://127.0.0.1:9/v1"
    cfg.tokenizer.kind, cfg.tokenizer.path = "hf", student_tok.path
    assert from_config(cfg, str(tmp_path)).top_logprobs == 0  # distill.loss=ce
    cfg.distill.loss = "kd"
    assert from_config(cfg, str(tmp_path)).top_logprobs == lp.SERVER_CAP
    assert from_config(cfg, str(tmp_path), "paraphrase").top_logprobs == 0
    cfg.distill.kd_teacher = "/a/local/teacher"  # the logits come from there instead
    assert from_config(cfg, str(tmp_path)).top_logprobs == 0
    cfg.distill.kd_teacher, cfg.teacher.top_logprobs = "", 0
    with pytest.raises(ConfigError, match="teacher.top_logprobs=0"):
        from_config(cfg, str(tmp_path))
