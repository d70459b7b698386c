"""The local teacher answers with exactly what the checkpoint's greedy decoder writes."""

import numpy as np

from distill_jax.models.decoding import greedy_decode
from distill_jax.teachers.base import Example, Request
from distill_jax.teachers.local import LocalTeacher
from distill_jax.training.run_dir import RunDir
from distill_jax.training.run_setup import setup_run
from distill_jax.training.trainer import train


def test_annotations_are_the_checkpoints_greedy_outputs(small_train_config, tmp_path):
    cfg = small_train_config(train__steps=6)
    workdir = str(tmp_path / "teacher_run")
    train(cfg, workdir)
    teacher = LocalTeacher(
        workdir,
        str(tmp_path / "scratch"),
        synthesize_prompt="Make a {domain} problem like: {examples}",
        max_decode_len=12,
    )
    inputs = ["What is 12 + 30?", "Is 7 even or odd?", "Reverse the word 'apple'."]
    requests = [Request("annotate", "d", example=Example(str(i), "d", text, None)) for i, text in enumerate(inputs)]
    requests.append(Request("synthesize", "d", seeds=(Example("s", "d", "What is 1 + 1?", "2"),), index=0))
    responses = teacher.complete(requests)
    assert [r.request_key for r in responses] == [r.key for r in requests]
    run = setup_run(cfg)
    params, _ = RunDir(workdir).restore_params(run)
    tokens = np.zeros((len(inputs), 64), np.int32)
    for i, ids in enumerate(run.tokenizer.encode_batch(inputs)):
        tokens[i, : len(ids)] = ids
    expected = [
        run.tokenizer.decode(row) for row in np.asarray(greedy_decode(run.model, params, tokens, max_decode_length=12))
    ]
    for response, want in zip(responses[:3], expected):
        if want.strip():
            assert response.status == "ok" and response.rationale == want
        else:
            assert response.status == "failed" and response.error == "empty output"
    # A 6-step student cannot write the JSON a synthesis asks for: a failed response with the reason.
    assert responses[3].status == "failed" and responses[3].error
