"""A teacher that is a bigger seq2seq checkpoint of this project (trained or imported with import-hf).

Requests are decoded with the `generate` job (KV-cache decoder, batches sharded over the devices,
resumable chunks) from a scratch directory under the workdir: annotate decodes the example's input
(the rationale is the output, its answer extracted from it); synthesize decodes the synthesis prompt
built from the domain's seed examples and parses the reply like the HTTP teacher does. Costs are the
generated tokens. Decoding is a collective over every process while the scheduler asks its teacher
from process 0 only, so this teacher runs in single-process jobs.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence

import jax
import ml_collections

from distill_jax import atomic, storage
from distill_jax.config import ConfigError
from distill_jax.evaluation.generate import DecodeSettings, generate
from distill_jax.metrics import extract_answer
from distill_jax.teachers.base import Request, Response
from distill_jax.teachers.openai import parse_synthesis
from distill_jax.teachers.pool import estimate_tokens

_CANONICAL = dict(id="id", domain="domain", input="input", target="target", rationale="", meta="")


class LocalTeacher:
    name = "local"

    def __init__(
        self,
        checkpoint: str,
        scratch_dir: str,
        *,
        synthesize_prompt: str,
        max_decode_len: int = 0,
        batch_size: int = 0,
    ):
        if jax.process_count() > 1:
            raise ValueError(
                "teacher.kind=local decodes on every device of a single process; run distill single-process"
            )
        self.checkpoint = checkpoint
        self.scratch_dir = scratch_dir
        self.synthesize_prompt = synthesize_prompt
        self.batch_size = batch_size
        self.settings = DecodeSettings(method="greedy", max_decode_len=max_decode_len)  # Annotations want the mode.

    def _prompt(self, request: Request) -> str:
        if request.kind == "annotate":
            return request.example.input
        examples = "\n\n".join(f"Question: {s.input}\nAnswer: {s.answer or 'unknown'}" for s in request.seeds)
        return self.synthesize_prompt.format(domain=request.domain, examples=examples)

    def complete(self, requests: Sequence[Request]) -> list[Response]:
        if not requests:
            return []
        work = os.path.join(self.scratch_dir, "local_teacher")
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work)
        rows = [dict(id=r.key, domain=r.domain, input=self._prompt(r), target="-") for r in requests]
        data = os.path.join(work, "requests.jsonl")
        atomic.write_jsonl(data, rows)
        summary = generate(
            self.checkpoint,
            data,
            os.path.join(work, "out"),
            self.settings,
            batch_size=self.batch_size,
            fields=_CANONICAL,
            progress=False,
        )
        with open(summary["predictions"], encoding="utf-8") as f:
            predictions = {r["id"]: r["prediction"] for r in map(json.loads, f)}
        return [self._response(r, predictions.get(r.key)) for r in requests]

    def _response(self, request: Request, output: str | None) -> Response:
        if output is None:
            return Response(request.key, "failed", error="not decoded (input longer than the teacher's max_input_len)")
        tokens = estimate_tokens(output)
        if not output.strip():
            return Response(request.key, "failed", tokens=tokens, error="empty output")
        if request.kind == "annotate":
            return Response(
                request.key,
                "ok",
                input=request.example.input,
                rationale=output,
                answer=extract_answer(output),
                tokens=tokens,
            )
        try:
            question, rationale, answer = parse_synthesis(output)
        except ValueError as err:
            return Response(request.key, "failed", tokens=tokens, error=f"unparseable synthesis: {err}")
        return Response(request.key, "ok", input=question, rationale=rationale, answer=answer, tokens=tokens)

    def close(self) -> None:
        pass


def from_config(config: ml_collections.ConfigDict, workdir: str, purpose: str = "distill") -> LocalTeacher:
    """A LocalTeacher decoding with the run `config.teacher.checkpoint` names."""
    del purpose  # Only BalDistill asks a local teacher (the registry checks).
    cfg_teacher = config.teacher
    if not cfg_teacher.checkpoint:
        raise ConfigError("teacher.kind=local needs --config.teacher.checkpoint=WORKDIR of a trained or imported run")
    # Its requests and decodes are scratch, rewritten per call: on a gs:// / s3:// workdir they stay on local disk.
    scratch = storage.staging_dir(workdir, "local_teacher") if storage.is_remote(workdir) else workdir
    return LocalTeacher(
        cfg_teacher.checkpoint,
        scratch,
        synthesize_prompt=cfg_teacher.synthesize_prompt,
        max_decode_len=int(cfg_teacher.max_tokens),
    )
