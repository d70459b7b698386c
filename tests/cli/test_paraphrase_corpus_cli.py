"""`distill-jax paraphrase-corpus` end to end: on the real APTY file, and with an HTTP teacher and moderation."""

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from helpers import REPO

from distill_jax.config import default_config
from distill_jax.data.prepare import PrepareOptions, prepare_corpus

KEY = "sk-cli-test-0123"


def cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "distill_jax.cli.main", "paraphrase-corpus", *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
    )


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _check_outputs(out, counts):
    train, validation, rejects = (_jsonl(out / f) for f in ("train.jsonl", "validation.jsonl", "rejects.jsonl"))
    removed = sum(counts["removed_before_filters"].values()) + sum(counts["removed_by_filter"].values())
    assert counts["input"] == counts["kept"] + removed == len(train) + len(validation) + len(rejects)
    assert {normalize_source(r) for r in train}.isdisjoint({normalize_source(r) for r in validation})
    assert all(r["filter"] and r["detail"] for r in rejects)
    return train, validation, rejects


def normalize_source(row):
    from distill_jax.data.paraphrase_filters import normalize

    return normalize(row["input"])


def test_real_apty_end_to_end_and_prepare_accepts_it(shared_data, tmp_path):
    out = tmp_path / "apty"
    apty = shared_data / "apty_chatgpt_paraphrase_types" / "apty_base.csv"
    result = cli("--from=apty", f"--input={apty}", f"--output_dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    counts = json.loads((out / "filter_counts.json").read_text())
    train, validation, rejects = _check_outputs(out, counts)
    assert counts["input"] == 575
    assert counts["removed_by_filter"]["judged_not_paraphrase"] == 57  # APTY's human "not a paraphrase" verdicts
    assert counts["removed_by_filter"]["identical_to_source"] > 0 and counts["removed_by_filter"]["exact_duplicate"] > 0
    assert 200 < counts["kept"] < 518 and validation
    assert "units in 575 = kept" in result.stdout and "judged_not_paraphrase" in result.stdout
    assert all("paraphrase" in r["meta"] and r["meta"]["source_id"] for r in train)

    options = PrepareOptions.from_config(default_config())
    for name, rows in (("train", train), ("validation", validation)):
        summary = prepare_corpus([str(out / f"{name}.jsonl")], str(tmp_path / f"prepared_{name}"), options)
        assert summary.written == len(rows) and summary.rejected_total == 0

    again = cli("--from=apty", f"--input={apty}", f"--output_dir={out}")
    assert again.returncode == 0 and (out / "train.jsonl").read_text() == "".join(
        json.dumps(r, ensure_ascii=False) + "\n" for r in train
    )


class _Handler(BaseHTTPRequestHandler):
    """Chat completions answer a numbered list with chatter; moderation flags texts containing "grue"."""

    def do_POST(self):
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.calls.append(self.path)
        if self.path.endswith("/moderations"):
            body = {
                "results": [{"flagged": "grue" in t, "categories": {"violence": "grue" in t}} for t in payload["input"]]
            }
        else:
            sentence = payload["messages"][0]["content"].rsplit("Sentence: ", 1)[1].rstrip(".")
            content = (
                f"Here are 3 paraphrases:\n1. {sentence}, it is said.\n2. It is said that {sentence.lower()}.\n"
                f"3. {sentence}, it is said."
            )
            body = {
                "choices": [{"message": {"content": content}, "finish_reason": "stop"}],
                "usage": {"total_tokens": 30},
            }
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def endpoint():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.calls = []
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    yield server, f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_teacher_run_with_moderation_is_resumable_from_the_cache(endpoint, tmp_path):
    server, base_url = endpoint
    sentences = tmp_path / "sentences.txt"
    sentences.write_text(
        "The market rose sharply today.\nA grue was seen near the lamp.\nThe market rose sharply today.\n"
    )
    args = [
        "--from=teacher",
        f"--input={sentences}",
        f"--output_dir={tmp_path / 'out'}",
        "--config.teacher.kind=openai",
        f"--config.teacher.base_url={base_url}",
        "--config.teacher.api_key_env=DISTILL_CLI_TEST_KEY",
        "--config.paraphrase.k=3",
        "--config.paraphrase.validation_fraction=0.5",
        "--config.paraphrase.moderation.enabled=True",
        f"--config.paraphrase.moderation.base_url={base_url}",
        "--config.paraphrase.moderation.api_key_env=DISTILL_CLI_TEST_KEY",
    ]
    env = {"DISTILL_CLI_TEST_KEY": KEY, "no_proxy": "*"}
    first = cli(*args, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    counts = json.loads((tmp_path / "out" / "filter_counts.json").read_text())
    _check_outputs(tmp_path / "out", counts)
    # 2 distinct sentences x 3 items: per sentence one exact duplicate; the grue sentence's rest is moderated away.
    assert counts["removed_before_filters"] == {"read": 0, "duplicate_source": 1, "teacher": 0, "parse": 2}
    assert counts["removed_by_filter"]["exact_duplicate"] == 2 and counts["removed_by_filter"]["moderation"] == 2
    assert counts["kept"] == 2 and counts["teacher"]["requests"] == 2 and counts["teacher"]["cached"] == 0
    chat_calls = [c for c in server.calls if c.endswith("/chat/completions")]
    assert len(chat_calls) == 2 and server.calls.count("/v1/moderations") == 1

    # Teacher and moderation calls went through the ledger (issue 16): one entry each, sent before settled.
    ledger = [json.loads(line) for line in (tmp_path / "out" / "ledger.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in ledger if r["op"] == "sent"].count("moderation") == 1
    assert counts["teacher"]["ledger"]["spent"] == 3 and counts["teacher"]["ledger"]["attempts"] == {"billed": 3}

    second = cli(*args, env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert json.loads((tmp_path / "out" / "filter_counts.json").read_text())["teacher"]["cached"] == 2
    assert len([c for c in server.calls if c.endswith("/chat/completions")]) == 2  # nothing bought twice
    assert "2 from cache, 0 tokens billed now" in second.stdout


def test_teacher_paraphrases_stop_at_the_budget(endpoint, tmp_path):
    # Defect 6: --from=teacher had no budget at all.
    server, base_url = endpoint
    sentences = tmp_path / "sentences.txt"
    sentences.write_text("".join(f"Sentence {i} is about the market.\n" for i in range(5)))
    out = tmp_path / "out"
    args = [
        "--from=teacher",
        f"--input={sentences}",
        f"--output_dir={out}",
        "--config.teacher.kind=openai",
        f"--config.teacher.base_url={base_url}",
        "--config.teacher.api_key_env=DISTILL_CLI_TEST_KEY",
        "--config.paraphrase.k=3",
        "--config.distill.budget=2",
        "--config.paraphrase.request_chunk=2",
    ]
    result = cli(*args, env={"DISTILL_CLI_TEST_KEY": KEY, "no_proxy": "*"})
    assert result.returncode == 0, result.stderr[-3000:]
    counts = json.loads((out / "filter_counts.json").read_text())
    assert counts["teacher"]["requests"] == 2 and counts["teacher"]["not_asked"] == 3
    assert len([c for c in server.calls if c.endswith("/chat/completions")]) == 2
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert sum("not asked: the teacher budget" in r["detail"] for r in rejects) == 3
    assert "left 0 of 2 calls" in result.stdout


def test_bad_input_is_a_clear_error(tmp_path):
    bad = tmp_path / "pairs.csv"
    bad.write_text("sentence,other\nA.,B.\n")
    result = cli("--from=table", f"--input={bad}", f"--output_dir={tmp_path / 'o'}")
    assert result.returncode != 0 and "pairs.csv: no column(s) ['source', 'paraphrases']" in result.stderr
    result = cli("--from=teacher", f"--input={bad}", f"--output_dir={tmp_path / 'o'}")
    assert result.returncode != 0 and "pool_paraphrases" in result.stderr
