"""Loading the candidate pool: rejects with reasons, duplicates, the hold-out split."""

import json

from distill_jax.distill.pool import load_examples, split_holdout, write_eval_rows


def test_pool_rejects_and_duplicates(tmp_path):
    path = tmp_path / "pool.jsonl"
    rows = [
        {"text": "q1", "label": "1", "source": "A"},
        {"text": "q2", "label": "2", "source": "A"},
        {"text": " q1 ", "label": "1", "source": "A"},  # Same input after normalisation.
        {"text": "q3", "source": "B"},  # No label.
        {"text": "q4", "label": "4"},  # No domain: the default.
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    fields = dict(id="", domain="source", input="text", answer="label")
    pool = load_examples([str(path)], fields, rejects_path=str(tmp_path / "rejects.jsonl"))
    assert {d: [e.input for e in v] for d, v in pool.items()} == {"A": ["q1", "q2"], "default": ["q4"]}
    assert pool["A"][0].id == "pool.jsonl:1" and pool["A"][0].answer == "1"
    reasons = [json.loads(line)["reason"] for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert reasons == ["duplicate_example", "missing_field"]
    # Unlabelled pools are allowed: answers are None.
    unlabelled = load_examples([str(path)], dict(fields, answer=""))
    assert unlabelled["B"][0].answer is None


def test_holdout_is_deterministic_and_keeps_half(tmp_path, shared_data):
    fields = dict(id="", domain="domain", input="text", answer="label")
    pool = load_examples([str(shared_data / "baldistill_mcqa" / "multichoice-qa_count_500.jsonl")], fields)
    rest, held = split_holdout(pool, 50, seed=0)
    again_rest, again_held = split_holdout(pool, 50, seed=0)
    assert {d: [e.id for e in v] for d, v in held.items()} == {d: [e.id for e in v] for d, v in again_held.items()}
    for d in pool:
        assert len(held[d]) == min(50, len(pool[d]) // 2)
        assert not {e.id for e in held[d]} & {e.id for e in rest[d]}
        assert len(held[d]) + len(rest[d]) == len(pool[d])
    n = write_eval_rows(str(tmp_path / "eval.jsonl"), held)
    assert n == sum(len(v) for v in held.values()) == 500
