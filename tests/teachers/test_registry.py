"""The teacher registry: config.teacher.kind builds its teacher for a purpose, or says what to set."""

import json

import pytest

from distill_jax.config import ConfigError, default_config
from distill_jax.teachers.base import Example, Request
from distill_jax.teachers.registry import KINDS, from_config


def _pool_files(tmp_path):
    outputs = tmp_path / "outputs.jsonl"
    outputs.write_text(
        json.dumps({"text": "2+2?", "rationale": "2 plus 2 is 4.", "label": "4", "source": "math"}) + "\n"
    )
    paraphrases = tmp_path / "paraphrases.jsonl"
    paraphrases.write_text(json.dumps({"source": "A cat sat.", "paraphrases": ["A cat was sitting."]}) + "\n")
    return str(outputs), str(paraphrases)


def test_every_kind_builds_for_each_purpose_it_serves(tmp_path, monkeypatch):
    outputs, paraphrases = _pool_files(tmp_path)
    cfg = default_config()
    cfg.teacher.pool_outputs, cfg.teacher.pool_paraphrases = outputs, paraphrases
    cfg.distill.pool = outputs
    monkeypatch.setenv(cfg.teacher.api_key_env, "sk-test")
    built = {}
    for kind, (_, purposes) in KINDS.items():
        if kind == "local":
            continue  # Needs a trained run; tests/teachers/test_local_teacher.py builds one.
        cfg.teacher.kind = kind
        for purpose in purposes:
            (tmp_path / kind).mkdir(exist_ok=True)
            teacher = from_config(cfg, str(tmp_path / kind), purpose)
            built[kind, purpose] = teacher.name
            teacher.close()
    assert built[("pool", "distill")] == built[("pool", "paraphrase")] == "pool"
    assert built[("program", "distill")] == "program"
    assert built[("openai", "distill")].startswith("openai") and "sk-test" not in repr(built)
    # The stored pool answers from the files it was given.
    cfg.teacher.kind = "pool"
    (response,) = from_config(cfg, str(tmp_path), "distill").complete(
        [Request("annotate", "math", example=Example("e1", "math", "2+2?", "4"))]
    )
    assert response.status == "ok" and response.rationale == "2 plus 2 is 4."


@pytest.mark.parametrize(
    "kind, purpose, message",
    [
        ("oracle", "distill", "teacher.kind='oracle': use local, openai, pool, program"),
        ("program", "paraphrase", "teacher.kind='program' cannot paraphrase; use openai, pool"),
        ("local", "distill", "teacher.kind=local needs --config.teacher.checkpoint"),
        ("pool", "distill", "needs --config.teacher.pool_outputs"),
        ("pool", "paraphrase", "needs --config.teacher.pool_paraphrases"),
    ],
)
def test_a_teacher_that_cannot_be_built_names_the_setting(tmp_path, kind, purpose, message):
    cfg = default_config()
    cfg.teacher.kind = kind
    with pytest.raises(ConfigError, match=message.replace("(", "\\(")):
        from_config(cfg, str(tmp_path), purpose)
