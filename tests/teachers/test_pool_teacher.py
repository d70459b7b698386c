"""The pool teacher on BalDistill's own files, as they are, and on small hand-made ones."""

import json

from distill_jax.distill.purchase import to_training_row
from distill_jax.teachers.base import Example, Request
from distill_jax.teachers.pool import PoolTeacher
from distill_jax.teachers.program import ProgramTeacher


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_lookup_by_normalised_input_and_synthetic_in_order(tmp_path):
    outputs = _write(
        tmp_path / "out.jsonl",
        [
            {"text": "What is  2+2?", "label": "4", "rationale": "2+2=4. The answer is: 4"},
            {"text": "No rationale here", "label": "1"},
            "not an object",
        ],
    )
    synthetic = _write(
        tmp_path / "syn.jsonl",
        [
            {"text": "New 1?", "gt_choice": "B", "rationale": "So the answer is (B) x.", "source": "qa"},
            {"text": "New 2?", "gt_choice": "A", "rationale": "So the answer is (A) y.", "source": "qa"},
        ],
    )
    teacher = PoolTeacher(outputs, synthetic, rejects_path=str(tmp_path / "rejects.jsonl"))
    rejects = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert [r["reason"] for r in rejects] == ["missing_field", "not_an_object"]
    ann = Request("annotate", "math", example=Example("p1", "math", "What is 2+2?\n", "4"))
    missing = Request("annotate", "math", example=Example("p2", "math", "Unknown?", "4"))
    syn = [Request("synthesize", "qa", index=i) for i in range(3)]
    responses = teacher.complete([ann, missing, *syn])
    assert responses[0].status == "ok" and responses[0].answer == "4" and responses[0].tokens > 0
    assert responses[1].status == "unavailable"
    assert [r.input for r in responses[2:4]] == ["New 1?", "New 2?"] and responses[2].answer == "B"
    assert responses[4].status == "unavailable" and "holds 2 synthetic" in responses[4].error


def test_baldistill_math_pool_as_is(shared_data):
    root = shared_data / "baldistill_math"
    teacher = PoolTeacher(
        str(root / "math_chatgpt_cot_train_count_300.jsonl"), str(root / "math_chatgpt_cot_train_composed.jsonl")
    )
    pool = [json.loads(line) for line in (root / "corpus.jsonl").open()][:400]
    requests = [
        Request("annotate", r["source"], example=Example(str(i), r["source"], r["text"], r["label"]))
        for i, r in enumerate(pool)
    ]
    responses = teacher.complete(requests)
    ok = [(q, r) for q, r in zip(requests, responses) if r.status == "ok"]
    # 2100 of the 4125 pool problems have stored rationales; all agree with their labels.
    assert 120 < len(ok) < 300
    rows = [to_training_row(q, r, stage=0, check_answers=True, known_inputs=set()) for q, r in ok]
    assert all(isinstance(row, dict) for row in rows)
    assert teacher.synthetic_available("Geometry") == 358 and teacher.synthetic_available("Algebra") == 0


def test_baldistill_mcqa_synthetic_noise_is_caught(shared_data):
    root = shared_data / "baldistill_mcqa"
    teacher = PoolTeacher((), str(root / "multichoice-qa_chatgpt_cot_train_composed.jsonl"))
    requests = [Request("synthesize", "qasc", index=i) for i in range(200)]
    responses = teacher.complete(requests)
    known: set[str] = set()
    results = [
        to_training_row(q, r, stage=1, check_answers=True, known_inputs=known) for q, r in zip(requests, responses)
    ]
    kept = [r for r in results if isinstance(r, dict)]
    reasons = {r.reason for r in results if not isinstance(r, dict)}
    # Real teacher noise: about a third of the stored synthetic rationales name another choice than their label.
    assert 0.4 < len(kept) / len(results) < 0.9
    assert "inconsistent_answer" in reasons


def test_program_teacher_synthesizes_new_correct_examples(tmp_path):
    from distill_jax.data.demo_corpus import write_demo_corpus

    files = write_demo_corpus(str(tmp_path), num_train=400, num_test_per_domain=5)
    teacher = ProgramTeacher(f"{files['train']},{files['test']}", seed=0)
    pool_inputs = {json.loads(line)["input"] for f in files.values() for line in open(f)}
    requests = [Request("synthesize", "missing_letter", index=i) for i in range(30)]
    first = teacher.complete(requests)
    again = ProgramTeacher(f"{files['train']},{files['test']}", seed=0).complete(requests[::-1])[::-1]
    assert [r.input for r in first] == [r.input for r in again]  # The i-th example is fixed.
    assert len({r.input for r in first}) == 30 and not pool_inputs & {r.input for r in first}
    known: set[str] = set()
    assert all(
        isinstance(to_training_row(q, r, stage=1, check_answers=True, known_inputs=known), dict)
        for q, r in zip(requests, first)
    )


def test_paraphrase_lists_by_normalised_sentence_up_to_k(tmp_path):
    stored = _write(
        tmp_path / "paraphrases.jsonl",
        [
            {"sentence": "The  vote passed.", "versions": ["1. The motion was carried.", "It was approved.", "---"]},
            {"sentence": "The vote passed.", "versions": "Lawmakers approved it."},  # one more row, same sentence
            {"sentence": "Rain fell.", "versions": [3]},
            {"versions": ["orphan"]},
        ],
    )
    teacher = PoolTeacher(
        "",
        paraphrases=stored,
        paraphrase_fields={"source": "sentence", "paraphrases": "versions"},
        rejects_path=str(tmp_path / "rejects.jsonl"),
    )
    rejects = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert [r["origin"] for r in rejects] == ["paraphrases.jsonl:3", "paraphrases.jsonl:4"]

    def ask(text, k):
        return Request("paraphrase", "p", example=Example("s", "p", text), k=k)

    two, four, missing = teacher.complete([ask("The vote passed.\n", 2), ask("The vote passed.", 4), ask("New.", 3)])
    assert two.status == "ok" and two.paraphrases == ("The motion was carried.", "It was approved.") and two.tokens > 0
    assert four.paraphrases == ("The motion was carried.", "It was approved.", "Lawmakers approved it.")
    assert four.dropped == (("---", "not_a_sentence"),)
    assert missing.status == "unavailable" and missing.paraphrases == ()
