"""Student-vs-teacher paraphrase evaluation sets from a multi-reference split (leave one out).

A held-out split of a teacher paraphrase corpus has several teacher paraphrases per source. The
student is asked to paraphrase each source once; the teacher's "own paraphrases of the same inputs"
are already there. Scoring both against one common reference needs a reference the teacher set
does not contain, so per source the first paraphrase (file order) becomes the reference and the
others are the teacher's predictions, best first. Sources with a single paraphrase cannot be
scored this way and are counted, not used.

Writes ``eval.jsonl`` (id = source id, domain, input = source, target = reference) for the student's
decoding and ``teacher_predictions.jsonl`` ({id, prediction, predictions}) in the format of `generate`.
"""

from __future__ import annotations

import collections
import json
import os
from typing import Any

from distill_jax import atomic

EVAL_FILE, TEACHER_FILE = "eval.jsonl", "teacher_predictions.jsonl"


def leave_one_out_sets(split_path: str, output_dir: str) -> dict[str, Any]:
    """Writes the two files from a corpus split ({input, target, domain, meta.source_id} rows); returns counts/paths."""
    groups: dict[str, list[dict[str, Any]]] = collections.OrderedDict()
    with open(split_path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            row = json.loads(line)
            try:
                key = str((row.get("meta") or {}).get("source_id") or row["input"])
                groups.setdefault(key, []).append(row)
            except (KeyError, TypeError, AttributeError) as e:
                raise ValueError(f"{split_path}:{line_number}: not a paraphrase corpus row ({e})") from None
    usable = {key: rows for key, rows in groups.items() if len(rows) >= 2}
    eval_rows = [
        dict(id=key, domain=rows[0]["domain"], input=rows[0]["input"], target=rows[0]["target"])
        for key, rows in usable.items()
    ]
    teacher_rows = [
        dict(id=key, prediction=rows[1]["target"], predictions=[r["target"] for r in rows[1:]])
        for key, rows in usable.items()
    ]
    os.makedirs(output_dir, exist_ok=True)
    paths = {"eval": os.path.join(output_dir, EVAL_FILE), "teacher": os.path.join(output_dir, TEACHER_FILE)}
    atomic.write_jsonl(paths["eval"], eval_rows)
    atomic.write_jsonl(paths["teacher"], teacher_rows)
    return dict(
        paths=paths,
        sources=len(usable),
        single_paraphrase_sources_skipped=len(groups) - len(usable),
        teacher_paraphrases=sum(len(r["predictions"]) for r in teacher_rows),
    )
