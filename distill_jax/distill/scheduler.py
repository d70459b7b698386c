"""The BalDistill stage loop, one method at a time, resumable at every phase.

For each method (WORKDIR/<method>/) and stage i = 0..K-1:

  plan     quotas n_{i,d} from the balancing policy and the stage budget; head/tail split; head
           domains pick their examples (IFD under the previous stage's student, or at random); tail
           domains take what their pool has left and ask the teacher to synthesize the rest.
  buy      the requests go to the teacher in chunks, each reserved in the ledger before it is sent;
           responses become training rows (answers checked) or dropped records with a reason.
  prepare  the purchases of stages 0..i become one prepared shard set (cumulative training data).
  train    the student continues from the previous stage on it, with mixture weights from the
           cumulative quotas (a domain short of its quota is sampled more: repeated, not padded);
           the trainer evaluates per domain at the end of the stage.

The plan is saved before anything is bought, and every phase ends by saving the state file
(atomically), so a killed run re-planned nothing and paid nothing twice: buying again re-issues
already-charged requests, which the ledger does not charge again and the teachers answer from
their stores/caches. The scheduler state is also written into every training checkpoint's meta.

Multi-host: every process runs this loop (IFD scoring and training are collective); only process
0 talks to the teacher and writes files, and the others read them after a barrier, so the workdir
must be one all hosts see: a shared filesystem, or gs:// / s3:// (every path goes through
distill_jax.storage; the ledger on object storage is teachers/ledger.py's write-once segments).
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import json
import math
from typing import Any

import ml_collections
import numpy as np
from absl import logging

from distill_jax import atomic, multihost, storage
from distill_jax.config import ConfigError
from distill_jax.data import shards
from distill_jax.data.corpus import FieldMapping
from distill_jax.data.prepare import PrepareOptions, prepare_corpus
from distill_jax.distill import balancing, ifd, purchase, report, stage_eval, stage_kd
from distill_jax.distill.setting import Setting, parse_list, prepare_setting
from distill_jax.teachers import spend
from distill_jax.teachers.base import Example, Request
from distill_jax.teachers.ledger import Ledger
from distill_jax.teachers.pool import normalize_input
from distill_jax.training import trainer
from distill_jax.training.run_dir import RunDir
from distill_jax.training.run_setup import setup_run

STATE_FILE = "scheduler_state.json"


class Preempted(Exception):
    """Training stopped on SIGTERM after checkpointing; re-running the same command resumes."""


class MethodRun:
    """One method's stages under WORKDIR/<method>."""

    def __init__(self, setting: Setting, method: balancing.Method):
        self.s = setting
        self.cfg = setting.config
        self.method = method
        self.dir = storage.join(setting.workdir, method.name)
        self.train_dir = storage.join(self.dir, "train")
        storage.makedirs(self.dir)
        d = self.cfg.distill
        self.num_stages = int(d.stages)
        if self.num_stages < 1:
            raise ConfigError(f"distill.stages must be >= 1, got {d.stages}")
        self.ledger = Ledger(storage.join(self.dir, "ledger.jsonl"), float(d.budget), d.budget_unit)
        state_path = storage.join(self.dir, STATE_FILE)
        fresh = {"method": method.name, "stage": 0, "phase": "plan", "stages": [], "synthetic_next": {}}
        self.state = json.loads(storage.read_text(state_path)) if storage.exists(state_path) else fresh

    # ------------------------------------------------------------------------------------ state

    def _save(self, phase: str, stage: int | None = None) -> None:
        self.state["phase"] = phase
        if stage is not None:
            self.state["stage"] = stage
        self.state["ledger"] = self.ledger.summary()
        if multihost.is_main():
            atomic.write_text(
                storage.join(self.dir, STATE_FILE), json.dumps(self.state, indent=1, sort_keys=True) + "\n"
            )
        multihost.barrier(f"distill-{self.method.name}-{self.state['stage']}-{phase}")

    def _stage_dir(self, stage: int) -> str:
        path = storage.join(self.dir, f"stage_{stage}")
        storage.makedirs(path)
        return path

    def _taken_ids(self) -> set[str]:
        """Pool examples planned for annotation in any stage so far: they have left the pool."""
        return {item[0] for st in self.state["stages"] for ids in st["annotate"].values() for item in ids}

    def _remaining(self) -> dict[str, list[Example]]:
        taken = self._taken_ids()
        return {d: [e for e in examples if e.id not in taken] for d, examples in self.s.pool.items()}

    # ------------------------------------------------------------------------------------ steps

    def _unit_cost(self) -> float:
        """Budget units one request costs on average (calls: 1; tokens: as billed so far, else the cap)."""
        if self.ledger.unit == "calls":
            return 1.0
        return self.ledger.mean_charge() or spend.default_request_cost(self.cfg, self.ledger.unit)

    def _train_steps_until(self, cumulative_examples: float) -> int:
        d, batch = self.cfg.distill, self.cfg.train.batch_size
        return max(int(d.min_steps_per_stage), math.ceil(d.epochs_per_stage * cumulative_examples / batch))

    @property
    def _restarts(self) -> bool:
        init = self.cfg.distill.stage_init
        if init not in ("continue", "restart"):
            raise ConfigError(f"distill.stage_init={init!r}: use continue or restart")
        return init == "restart"

    def _run_dir(self, stage: int) -> str:
        """The training run holding `stage`'s student: one continuing run, or one run per stage."""
        return storage.join(self._stage_dir(stage), "train") if self._restarts else self.train_dir

    def _target_step(self, stage: int) -> int:
        """Step at which `stage`'s training ends: each stage trains epochs over its cumulative data
        (on top of the previous stages' steps when the student continues)."""
        cumulative = 0
        total = 0
        for st in self.state["stages"][: stage + 1]:
            cumulative += sum(st["quotas"].values())
            total = (0 if self._restarts else total) + self._train_steps_until(cumulative)
        return total

    def _schedule_steps(self) -> int:
        """The whole run's steps if every stage spends its share: the LR schedule's length, fixed at stage 0."""
        per_stage = self.cfg.distill.budget / self._unit_cost() / self.num_stages
        return sum(self._train_steps_until(per_stage * (i + 1)) for i in range(self.num_stages))

    # ------------------------------------------------------------------------------------- plan

    def _student_ifd(self, stage: int, candidates: list[Example]) -> np.ndarray:
        d = self.cfg.distill
        previous = self._stage_dir(stage - 1)
        run = setup_run(self._train_config(stage - 1), train_dir=storage.join(previous, "train_data"))
        params, step = RunDir(self._run_dir(stage - 1)).restore_params(run)
        logging.info(
            "[%s] stage %d: IFD of %d candidates under the student of step %d.",
            self.method.name,
            stage,
            len(candidates),
            step,
        )
        return ifd.ifd_scores(
            run,
            params,
            [e.input for e in candidates],
            batch_size=int(d.ifd_batch_size),
            max_new_tokens=int(d.ifd_max_new_tokens),
            desc=f"IFD stage {stage}",
        )

    def _plan(self, stage: int) -> dict[str, Any]:
        d = self.cfg.distill
        rng = np.random.default_rng([int(self.cfg.seed), stage, sum(map(ord, self.method.name))])
        remaining = self._remaining()
        left = {dom: len(v) for dom, v in remaining.items()}
        budget_units = balancing.stage_budget(float(d.budget), self.ledger.spent, stage, self.num_stages)
        stage_examples = int(budget_units // self._unit_cost())
        quotas = balancing.stage_quotas(
            self.method.policy,
            stage=stage,
            num_stages=self.num_stages,
            stage_budget=stage_examples,
            pool_sizes=self.s.pool_sizes,
            remaining=left,
            rng=rng,
        )
        head, tail = balancing.split_head_tail(quotas, left)
        annotate: dict[str, list[list[Any]]] = {}
        synthesize: dict[str, list[int]] = {}
        # Head: IFD selection needs a student, so stage 0 (and the random-selection methods) sample.
        use_ifd = self.method.selection == "ifd" and stage > 0 and bool(self.state["stages"][stage - 1].get("eval"))
        scored: list[Example] = []
        for dom in head:
            if quotas[dom] == 0:
                continue
            order = list(rng.permutation(left[dom]))
            if use_ifd:
                cap = int(d.ifd_max_candidates)
                # Never fewer candidates than the quota: a cap below it would leave budget unspent.
                cands = [remaining[dom][i] for i in (order[: max(cap, quotas[dom])] if cap else order)]
                scored.extend(cands)
            else:
                annotate[dom] = [[remaining[dom][i].id, None] for i in order[: quotas[dom]]]
        if scored:
            scores = self._student_ifd(stage, scored)
            by_domain: dict[str, list[tuple[float, Example]]] = {}
            for e, score in zip(scored, scores):
                by_domain.setdefault(e.domain, []).append((float(score), e))
            for dom, pairs in by_domain.items():
                pairs.sort(key=lambda p: -p[0])  # Stable: ties keep the random candidate order.
                annotate[dom] = [[e.id, score] for score, e in pairs[: quotas[dom]]]
        for dom in tail:
            annotate[dom] = [[e.id, None] for e in remaining[dom]]
            if self.method.synthesize:
                start = int(self.state["synthetic_next"].get(dom, 0))
                synthesize[dom] = [start, quotas[dom] - left[dom]]
                self.state["synthetic_next"][dom] = start + quotas[dom] - left[dom]
        return dict(
            stage=stage,
            budget=budget_units,
            quotas=quotas,
            head=head,
            tail=tail,
            selection="ifd" if use_ifd else "random",
            annotate=annotate,
            synthesize=synthesize,
        )

    # -------------------------------------------------------------------------------------- buy

    def _requests(self, plan: dict[str, Any]) -> tuple[list[Request], dict[str, float | None]]:
        return purchase.stage_requests(plan, self.s.pool, int(self.cfg.seed), int(self.cfg.distill.synthesis_seeds))

    def _previous_inputs(self, stage: int) -> set[str]:
        inputs = set()
        for j in range(stage):
            path = storage.join(self._stage_dir(j), "purchased.jsonl")
            inputs |= {normalize_input(r["input"]) for r in atomic.read_jsonl(path)}
        return inputs

    def _buy(self, plan: dict[str, Any]) -> None:
        stage = plan["stage"]
        out = self._stage_dir(stage)
        if multihost.is_main():
            requests, scores = self._requests(plan)
            known = self.s.known_inputs | self._previous_inputs(stage)
            budget = spend.budget_for(self.cfg, self.ledger, stage, self.s.teacher)
            topks: dict[str, Any] = {}  # distill.loss=kd with an OpenAI teacher: its top-k, bought with the rows
            rows, dropped, sent = purchase.buy(
                self.s.teacher,
                requests,
                budget,
                chunk=int(self.cfg.distill.request_chunk),
                stage=stage,
                check_answers=bool(self.cfg.distill.check_answers),
                known_inputs=known,
                scores=scores,
                labels=self.s.labels,
                topks=topks,
            )
            stage_kd.write_purchased(self.cfg, out, rows, topks)
            if sent < len(requests):
                logging.warning(
                    "[%s] stage %d: budget exhausted after %d of %d requests.",
                    self.method.name,
                    stage,
                    sent,
                    len(requests),
                )
            atomic.write_jsonl(storage.join(out, "dropped.jsonl"), dropped, sort_keys=True)
            atomic.write_jsonl(storage.join(out, "purchased.jsonl"), rows, sort_keys=True)
            logging.info(
                "[%s] %s; %d rows kept, %d dropped %s.",
                self.method.name,
                spend.stage_line(self.ledger, stage),
                len(rows),
                len(dropped),
                dict(sorted(collections.Counter(d["reason"] for d in dropped).items())),
            )

    # ---------------------------------------------------------------------------- prepare/train

    def _prepare(self, stage: int) -> None:
        inputs = [storage.join(self._stage_dir(j), "purchased.jsonl") for j in range(stage + 1)]
        if multihost.is_main():
            options = dataclasses.replace(PrepareOptions.from_config(self.cfg), mapping=FieldMapping(), progress=False)
            prepare_corpus(inputs, storage.join(self._stage_dir(stage), "train_data"), options, overwrite=True)

    def _cumulative_quotas(self, stage: int) -> dict[str, int]:
        total: dict[str, int] = {}
        for st in self.state["stages"][: stage + 1]:
            for dom, n in st["quotas"].items():
                total[dom] = total.get(dom, 0) + int(n)
        return total

    def _train_config(self, stage: int) -> ml_collections.ConfigDict:
        cfg = copy.deepcopy(self.cfg)
        data_dir = storage.join(self._stage_dir(stage), "train_data")
        cfg.data.train_dir = data_dir
        cfg.data.eval_dir = self.s.eval_dir
        cfg.data.domains = ",".join(self.s.domains)
        # A stage whose purchases all failed has no shards yet: nothing of it is present.
        manifest = storage.join(data_dir, shards.MANIFEST_FILE)
        present = set(shards.load_manifest(data_dir)["domains"]) if storage.exists(manifest) else set()
        cfg.data.mixture = "explicit"
        # Quota, not rows: a domain whose purchases fell short of its quota is sampled more often.
        cfg.data.domain_weights = ml_collections.ConfigDict(
            {dom: float(n) for dom, n in self._cumulative_quotas(stage).items() if dom in present and n > 0}
        )
        cfg.train.steps = self._target_step(stage)
        # One LR schedule over the whole run when the student continues; a restarted one spans its stage.
        cfg.optimizer.schedule_steps = cfg.train.steps if self._restarts else int(self.state["schedule_steps"])
        cfg.eval.every = 0  # The stage's eval happens at its last step.
        return cfg

    def _train(self, stage: int) -> dict[str, Any]:
        cfg = self._train_config(stage)
        if not cfg.data.domain_weights:
            logging.warning("[%s] stage %d: nothing to train on yet; skipping training.", self.method.name, stage)
            return {}
        stage_dirs = [self._stage_dir(j) for j in range(stage + 1)]
        cfg = stage_kd.with_stage_logits(cfg, self._stage_dir(stage), stage_dirs)  # distill.loss=kd: teacher top-k
        logging.info(
            "[%s] stage %d: training to step %d on %s",
            self.method.name,
            stage,
            cfg.train.steps,
            {k: int(v) for k, v in cfg.data.domain_weights.items()},
        )
        # The trainer's own end-of-stage eval keeps to the loss (its keep-best metric); the decoded stage
        # eval below also writes every prediction, so it runs once, here.
        trainer_cfg = copy.deepcopy(cfg)
        trainer_cfg.eval.decode_examples_per_domain = 0
        result = trainer.train(trainer_cfg, self._run_dir(stage), extra_meta={"scheduler": self.state})
        if result.preempted:
            raise Preempted(f"[{self.method.name}] stage {stage}: preempted at step {result.step}")
        label = f"[{self.method.name}] stage {stage}"
        per_domain = stage_eval.evaluate(cfg, self._run_dir(stage), self._stage_dir(stage), label)
        quotas = self.state["stages"][stage]["quotas"]
        scalars = stage_eval.stage_scalars(
            stage, self.ledger.spent, quotas, self._cumulative_quotas(stage), per_domain, self.s.pool_sizes, cfg
        )
        stage_eval.write_scalars(self._run_dir(stage), result.step, scalars)
        return dict(step=result.step, per_domain=per_domain)

    # ------------------------------------------------------------------------------------- loop

    def run(self) -> dict[str, Any]:
        stage = int(self.state["stage"])
        while stage < self.num_stages:
            phase = self.state["phase"]
            if phase == "plan":
                plan = self._plan(stage)
                self.state["stages"] = self.state["stages"][:stage] + [plan]
                if stage == 0:
                    self.state["schedule_steps"] = self._schedule_steps()
                self._save("buy", stage)
            elif phase == "buy":
                self._buy(self.state["stages"][stage])
                self._save("prepare")
            elif phase == "prepare":
                self._prepare(stage)
                self._save("train")
            elif phase == "train":
                self.state["stages"][stage]["eval"] = self._train(stage)
                self.state["stages"][stage]["spent_after"] = self.ledger.spent
                stage += 1
                self._save("plan" if stage < self.num_stages else "done", stage)
            else:
                raise ValueError(f"{self.dir}/{STATE_FILE}: unknown phase {phase!r}")
        return self.state

    def close(self) -> None:
        self.ledger.close()


def run_distillation(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Runs every configured method at the same budget, then writes the comparison report.

    Returns the report (see distill.report). Raises Preempted when training stopped on SIGTERM.
    """
    methods = [balancing.get_method(m) for m in parse_list(config.distill.methods)]
    if not methods:
        raise ConfigError("distill.methods is empty: name at least one of " + ", ".join(balancing.METHODS))
    stage_kd.kd_teacher(config)  # A kd stage's teacher is refused here, before anything is bought.
    setting = prepare_setting(config, workdir)
    if multihost.is_main():  # Before stage 0: a wrong key, model, URL or price stops here, with nothing bought.
        spend.preflight(config, setting.teacher)
    if multihost.is_main():
        RunDir(workdir).save_config(config)  # what `eval --workdir` reads the methods from
    states: dict[str, dict[str, Any]] = {}
    try:
        for method in methods:
            run = MethodRun(setting, method)
            try:
                states[method.name] = run.run()
            finally:
                run.close()
            if multihost.is_main():  # After each method, so a long comparison shows its finished methods early.
                result = report.write_report(workdir, states, setting.pool_sizes, config)
    finally:
        setting.teacher.close()
    multihost.barrier("distill-report")
    return result if multihost.is_main() else {}
