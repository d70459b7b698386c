"""The one place every configuration knob is defined, with its default and why it exists.

Config files in configs/ are Python (ml_collections) files whose `get_config()` starts from
`default_config()` and overrides what differs; any field can then be overridden on the command line
(`--config.train.steps=100`). Keeping all knobs here (MaxText style) means a reader sees each
knob's meaning once, and a typo in a config file fails loudly (ConfigDicts are locked). Named
configs (the demos, accelerator shapes) are in presets.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ml_collections


class ConfigError(ValueError):
    """A setting to fix before anything runs; the message names the field and the fix (the CLI: one line, exit 2)."""


# Logical-axis -> mesh-axis rules, in priority order (flax assigns each mesh axis at most once per
# array, first rule wins). "batch" comes first so activations shard their batch over data+fsdp and
# their "embed" stays replicated; parameters (which have no "batch" axis) shard "embed" over fsdp
# (ZeRO-3 style) and heads/mlp/vocab over tensor (Megatron style).
DEFAULT_LOGICAL_AXIS_RULES = (
    ("batch", ("data", "fsdp")),
    ("layers", None),  # The stacked-layer axis of model.scan_layers: every device holds every layer's slice.
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("embed", "fsdp"),
    ("kv", None),
    ("length", None),
    ("relpos_buckets", None),
    ("positions", None),  # BART's learned position table: small, replicated.
)


def default_config() -> ml_collections.ConfigDict:
    """Every knob, with its default. Config files override from here."""
    c = ml_collections.ConfigDict()
    c.seed = 0  # Drives init, data order and dropout; same seed + same data => same run, bit for bit.

    c.tokenizer = ml_collections.ConfigDict()
    c.tokenizer.kind = "byt5"  # "byt5" (byte-level, needs no files) or "hf" (a local transformers tokenizer dir).
    c.tokenizer.path = ""  # Directory for kind="hf" (e.g. one holding spiece.model); unused for byt5.

    c.prepare = ml_collections.ConfigDict()
    c.prepare.max_input_len = 512  # Tokens incl. EOS; longer rows are rejected (never silently truncated).
    c.prepare.max_target_len = 512  # Same, for the formatted target (rationale + answer).
    # How a teacher rationale and the answer become one target string (fields: rationale, target, input, domain).
    c.prepare.target_template = "{rationale} So the answer is {target}."
    c.prepare.plain_target_template = "{target}"  # Target of rows without a rationale.
    c.prepare.drop_duplicate_examples = True  # Identical (input, target) within a domain adds nothing but weight.
    c.prepare.default_domain = "default"  # Domain of rows whose source has no domain column.
    # CSV/TSV without a header row: the column names, comma separated (e.g. "question,A,B,C,D,answer"); ""
    # reads them from the first row.
    c.prepare.columns = ""
    # Over-long rows: "none" rejects them (input_too_long/target_too_long); "input", "target" or "both" cut
    # those fields to max_*_len tokens keeping EOS (counted in the manifest; repeats this creates are rejected
    # as duplicate_after_truncation).
    c.prepare.truncate = "none"
    # Source key/column for each canonical field; "" for id derives one from file + line, "" for domain
    # uses default_domain, "" for rationale/meta means the source has none. input/target may join
    # several keys with a template, e.g. --config.prepare.fields.input='{Body} {Question}'. Templates may also
    # use {_file_stem} / {_file_name} of the input file: fields.domain='{_file_stem}' makes each file a domain.
    c.prepare.fields = ml_collections.ConfigDict(
        dict(id="id", domain="domain", input="input", target="target", rationale="rationale", meta="meta")
    )

    c.model = ml_collections.ConfigDict()
    # Preset: T5's (t5_config.SIZES: tiny, small, base, large, xl, t5-small-v1.0) or BART's (bart_config.SIZES:
    # bart-tiny, bart-base).
    c.model.size = "tiny"
    c.model.dtype = "float32"  # Activation dtype; "bfloat16" on GPU/TPU. Params and optimizer stay float32.
    c.model.dropout_rate = 0.1  # T5's pre-training value; 0 for deterministic comparisons.
    c.model.remat = "none"  # Per-layer rematerialisation: none | full | dots_saveable (trade FLOPs for memory).
    # One nn.scan over each stack's layers (params stacked on a leading "layers" axis): the step traces
    # and compiles one layer instead of N. Checkpoints are layout-specific; HF import/export converts.
    c.model.scan_layers = False
    # Attention kernel: einsum (fastest on XLA CPU) | jax (jax.nn.dot_product_attention: cuDNN's fused
    # kernel on GPU with bf16; XLA elsewhere; training with dropout > 0 stays on einsum). Same results.
    c.model.attention_impl = "einsum"
    # LoRA: rank > 0 adds adapters to the listed projections (q,k,v,o,wi,wo,lm_head; in BART wi is fc1, wo fc2)
    # and trains only them; the optimizer state then exists for the adapters alone. alpha/rank scales the update.
    c.model.lora_rank = 0
    c.model.lora_alpha = 16.0
    c.model.lora_dropout = 0.1
    c.model.lora_targets = "q,v"
    # Local transformers T5 or BART directory (config.json + safetensors): the student takes its architecture
    # instead of model.size and, when the workdir has no checkpoint yet, starts from its weights.
    # Prepare the data with its tokenizer (tokenizer.kind="hf", tokenizer.path=the same directory).
    c.model.hf_dir = ""

    c.data = ml_collections.ConfigDict()
    c.data.train_dir = ""  # A `distill-jax prepare` output directory.
    c.data.eval_dir = ""  # Held-out prepared directory (same tokenizer); "" disables periodic eval.
    # The batch shape is prepare's limit: one knob, so training never cuts a row that prepare accepted.
    # Setting either name sets both; a run refuses data prepared with a larger limit.
    c.data.max_input_len = c.prepare.get_ref("max_input_len")
    c.data.max_target_len = c.prepare.get_ref("max_target_len")
    # Per-domain sampling: "natural" (proportional to examples), "uniform", "temperature:T" (p ~ n^(1/T)),
    # or "explicit" with weights in data.domain_weights (missing domains get 0).
    c.data.mixture = "natural"
    # Comma-separated domains that belong to the run even when its data has no rows of them yet (the
    # stage scheduler declares the whole pool's), so per-domain vectors keep one order across resumes.
    c.data.domains = ""
    c.data.domain_weights = ml_collections.ConfigDict()  # {domain: weight}; used when mixture == "explicit".
    # Pack several whole examples into each row (segment ids keep them apart) instead of padding one
    # example per row: fewer wasted FLOPs when examples are much shorter than max_*_len.
    c.data.pack = False
    c.data.worker_threads = 2  # grain read threads that run ahead of the train step.
    c.data.prefetch_batches = 4  # Batches buffered by grain and by the device-transfer thread.

    c.train = ml_collections.ConfigDict()
    c.train.steps = 1000  # Total optimizer steps (a resumed run continues up to this number).
    c.train.batch_size = 32  # Global batch (examples), split across processes and the data/fsdp mesh axes.
    # Microbatches per step: the batch is split inside the step and gradients summed (same update,
    # ~1/N of the activation memory). batch_size must divide by N x the data-parallel size.
    c.train.grad_accum_steps = 1
    c.train.log_every = 50  # Host sync + console/TensorBoard/JSONL metrics every N steps, never in between.
    c.train.checkpoint_every = 500  # Async Orbax save every N steps (and at the end, and on SIGTERM).
    c.train.keep_last = 3  # Most recent checkpoints kept ...
    c.train.keep_best = 1  # ... plus this many best by train.best_metric (0 disables).
    c.train.best_metric = "eval/macro/loss"  # Decides "best"; lower is better for names containing "loss".
    c.train.label_smoothing = 0.0  # Mass moved from the target token to the rest of the vocabulary.
    c.train.z_loss = 1e-4  # Penalty on log(Z)^2 that keeps logits from drifting (PaLM/T5X); 0 disables.
    # Dropout's random bits: "threefry2x32" (JAX's default, integer hashing) or "rbg" / "unsafe_rbg" (XLA's
    # RngBitGenerator, the hardware RNG T5X uses on TPU). Other masks, same statistics; sharded equals
    # unsharded for each (tests/training/test_sharding.py). On CPU neither wins everywhere (BUILD_NOTES).
    c.train.dropout_prng = "threefry2x32"
    # Peak FLOP/s per device for the MFU estimate; 0 looks it up from the device kind (unknown => no MFU).
    c.train.peak_flops_per_device = 0.0
    # Non-finite loss/grad norm/params: 0 stops the run at the next log interval (nothing non-finite is ever
    # saved); N > 0 skips such batches inside the step (params and optimizer state unchanged) and stops once
    # more than N were skipped over the run.
    c.train.skip_nonfinite_batches = 0
    # An unreadable newest checkpoint at resume: "fallback" warns in one line, moves it to checkpoints/corrupt/
    # and resumes from the previous one; "fail" refuses to start.
    c.train.on_corrupt_checkpoint = "fallback"

    # Word-level knowledge distillation, from stored teacher top-k (`distill-jax teacher-logits`, offline) or from a
    # teacher in the train step (online); see distill_jax/training/kd_losses.py for the divergences and
    # missing-mass policies. kd.logits_dir and kd.teacher_dir are exclusive; neither = plain CE training.
    c.kd = ml_collections.ConfigDict()
    c.kd.logits_dir = ""  # A teacher-logits output over data.train_dir.
    # Online KD: a training workdir (latest checkpoint) or HF T5/BART dir over the student's tokenizer, loaded
    # frozen onto the student's mesh (no optimizer state, never checkpointed); its forward runs in every step.
    c.kd.teacher_dir = ""
    # The online teacher's logical-axis rules (as mesh.logical_axis_rules); () = the student's. E.g.
    # (("embed", "data"),) + DEFAULT_LOGICAL_AXIS_RULES shards a big teacher's weights over the data axis.
    c.kd.teacher_logical_axis_rules = ()
    c.kd.loss = "forward_kl"  # forward_kl (mean-seeking, classic KD) | reverse_kl (mode-seeking) | jsd.
    c.kd.jsd_beta = 0.5  # Generalized JSD's mixture weight (TRL's GKD beta); 0.5 = symmetric JS divergence.
    # What the teacher's mass outside its stored top-k becomes: renormalize (MaxText) | tail_bucket (TRL's
    # loss_add_tail) | uniform_rest (DistillKit's symmetric_uniform).
    c.kd.missing_mass = "renormalize"
    # Stored: use the first k of the stored top-k (the rest joins the residual), 0 = all stored. Online: 0 = dense
    # KD over the whole vocabulary, k = the teacher's top-k taken on device, with kd.missing_mass.
    c.kd.top_k = 0
    # Loss per token with logits = alpha * T^2 * KD + (1 - alpha) * CE; tokens without logits get CE alone.
    c.kd.alpha = 0.5
    c.kd.alpha_end = 0.5  # alpha at kd.schedule_steps (ignored by the constant schedule).
    c.kd.alpha_schedule = "constant"  # constant | linear | cosine, from kd.alpha to kd.alpha_end.
    c.kd.temperature = 1.0  # Softmax temperature T of student and (rescaled) teacher; > 0.
    c.kd.temperature_end = 1.0  # T at kd.schedule_steps (ignored by the constant schedule).
    c.kd.temperature_schedule = "constant"  # constant | linear | cosine, from kd.temperature to temperature_end.
    c.kd.schedule_steps = 0  # Steps the alpha/T schedules span, then held; 0 = train.steps.

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "adamw"  # adamw | adafactor (T5's original; factored second moments save memory).
    c.optimizer.learning_rate = 1e-3  # Peak LR after warmup.
    c.optimizer.warmup_steps = 100  # Linear warmup from 0.
    # Steps the LR schedule spans; 0 = train.steps. The stage scheduler sets it to the whole run's
    # steps, so the schedule does not restart when each stage extends train.steps.
    c.optimizer.schedule_steps = 0
    c.optimizer.decay = "cosine"  # cosine | linear | rsqrt | constant, from the peak to end_lr_fraction * peak.
    c.optimizer.end_lr_fraction = 0.1
    c.optimizer.weight_decay = 0.01  # Decoupled; applied to matrices only (not norms).
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.99
    c.optimizer.grad_clip_norm = 1.0  # Global-norm clipping; 0 disables.

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1  # Devices on the data axis; -1 takes whatever the other axes leave.
    c.mesh.fsdp = 1  # Parameter/optimizer sharding (ZeRO-3); >1 when the model does not fit per device.
    c.mesh.tensor = 1  # Megatron-style sharding of heads/mlp/vocab; keep within a host's fast interconnect.
    c.mesh.logical_axis_rules = DEFAULT_LOGICAL_AXIS_RULES

    c.eval = ml_collections.ConfigDict()
    c.eval.every = 500  # Steps between periodic evals (0: only at the end).
    c.eval.batch_size = 64  # Global eval batch.
    c.eval.max_examples_per_domain = 200  # Cap per domain for loss/accuracy (0 = all).
    c.eval.decode_examples_per_domain = 20  # Greedy-decoded per domain for exact match (0 disables).
    c.eval.max_decode_len = 0  # Decoder steps; 0 = data.max_target_len.
    c.eval.head_fraction = 0.5  # Head = biggest domains holding this share of training examples.

    # The BalDistill stage scheduler (`distill-jax distill`; distill_jax.distill).
    c.distill = ml_collections.ConfigDict()
    c.distill.pool = ""  # Comma-separated candidate files (JSONL/CSV/Parquet/tfds:): what may be bought.
    # Source keys of the pool's (and eval_data's) fields; "" id derives file:line ids, "" answer = no gold
    # labels. rationale: a reference rationale of eval rows, so eval loss is measured on correct reasoning.
    c.distill.pool_fields = ml_collections.ConfigDict(
        dict(id="", domain="domain", input="input", answer="target", rationale="")
    )
    # Comma-separated test files (same fields as the pool). "" holds out eval_holdout_per_domain
    # examples of every pool domain instead (never bought, never trained on).
    c.distill.eval_data = ""
    c.distill.eval_holdout_per_domain = 50
    c.distill.budget = (
        1000.0  # Teacher budget B over all stages (also paraphrase-corpus --from=teacher), in budget_unit.
    )
    # calls (one per request that reached the teacher, the paper's unit) | tokens (input + output, as billed)
    # | usd (priced by teacher.prices). Never exceeded: each attempt is bounded in the ledger before it is sent.
    c.distill.budget_unit = "calls"
    c.distill.stages = 5  # K; each stage spends an equal share of what is left (B/K when nothing is dropped).
    # Comma-separated methods run one after another at the same budget, each in WORKDIR/<method>:
    # random | balanced | active | naive (BalDistill-N) | adaptive (BalDistill-A).
    c.distill.methods = "adaptive"
    # Training per stage on the cumulative purchases, continuing from the previous stage's student:
    # epochs over the stage's expected cumulative data (the paper trains 8), at least min_steps_per_stage.
    c.distill.epochs_per_stage = 8.0
    c.distill.min_steps_per_stage = 50
    c.distill.ifd_max_candidates = 0  # Head candidates scored per domain and stage (a random subset); 0 = all left.
    c.distill.ifd_max_new_tokens = 200  # Length of the student's own answer y in IFD (the paper's code: 200).
    c.distill.ifd_batch_size = 64  # Global batch of the scoring passes.
    c.distill.synthesis_seeds = 3  # Examples of the domain shown to the teacher per synthesis request.
    # Drop annotations whose answer disagrees with the gold label, and synthetic examples whose rationale
    # disagrees with their own label (both still paid).
    c.distill.check_answers = True
    # Classification pools (the domain is the label, e.g. topic classification): "pool" = the pool's gold
    # answers form the label set, or a comma-separated list. Rationales that never say "the answer is X"
    # are then checked by the label they name last, and the report adds macro-F1 over labels. "" = free-form.
    c.distill.label_set = ""
    # Each stage's student: "continue" trains on from the previous stage's (one LR schedule over the whole
    # run); "restart" starts every stage from the initial weights on all data bought so far.
    c.distill.stage_init = "continue"
    c.distill.request_chunk = 256  # Requests per teacher round trip; the ledger is settled after each.
    # Each stage's loss: "ce" on the teacher's text, or "kd": alpha * KD + (1 - alpha) * CE (the kd section's
    # settings) with the teacher's top-k (kd.top_k, 0 = 128) over the stage's data, computed per stage from
    # distill.kd_teacher (a local seq2seq workdir or HF dir over the student's tokenizer; "" = teacher.checkpoint
    # when teacher.kind=local; with teacher.kind=openai and no kd_teacher: bought with the annotations, see
    # teacher.top_logprobs). See distill_jax/distill/stage_kd.py.
    c.distill.loss = "ce"
    c.distill.kd_teacher = ""

    # Who answers the stage scheduler's annotate/synthesize requests (distill_jax.teachers).
    c.teacher = ml_collections.ConfigDict()
    c.teacher.kind = "pool"  # pool | openai | local | program (the demo's exact teacher).
    # local: a bigger seq2seq run of this project (a `train` or `import-hf` workdir) decodes the requests
    # (greedy, up to max_tokens); synthesis uses synthesize_prompt and expects the JSON reply it asks for.
    c.teacher.checkpoint = ""
    # pool: stored teacher outputs. Comma-separated files (JSONL/CSV/Parquet) of annotations, looked
    # up by the example's input text; fields named below.
    c.teacher.pool_outputs = ""
    # Comma-separated files of teacher-synthesized examples, handed out per domain in file order.
    c.teacher.pool_synthetic = ""
    c.teacher.pool_fields = ml_collections.ConfigDict(
        dict(input="text", rationale="rationale", answer="label", domain="source")
    )
    # Stored synthetic rows name their label differently in BalDistill's files ("gt_choice").
    c.teacher.pool_synthetic_answer = "gt_choice"
    # Comma-separated files (JSONL/JSON/CSV/TSV/Parquet) of stored paraphrase lists, looked up by the
    # sentence: the source field holds it, the paraphrases field a list (or one paraphrase per row).
    c.teacher.pool_paraphrases = ""
    c.teacher.pool_paraphrase_fields = ml_collections.ConfigDict(dict(source="source", paraphrases="paraphrases"))
    # openai: any OpenAI-compatible chat-completions endpoint. The key is read from this environment
    # variable at start-up and is never logged, cached or checkpointed.
    c.teacher.base_url = "https://api.openai.com/v1"
    c.teacher.model = "gpt-4o-mini"
    c.teacher.api_key_env = "OPENAI_API_KEY"
    c.teacher.temperature = 0.0  # 0: the most reproducible annotations.
    # Completion cap per call. Under a tokens/usd budget an attempt's bound is its prompt's bytes + this cap,
    # lowered to what is left near the end of the budget (never below the run's p95 completion length).
    c.teacher.max_tokens = 512
    # distill.loss=kd without distill.kd_teacher: annotations also buy the teacher's top-k log-probs per token
    # (logprobs/top_logprobs; needs a teacher over the student's tokenizer). At most the server's max_logprobs (20 at
    # OpenAI and vLLM's default).
    c.teacher.top_logprobs = 20
    c.teacher.concurrency = 8  # Requests in flight at once.
    c.teacher.timeout_s = 60.0  # Per HTTP attempt: the longest wait to connect or for the reply's next bytes.
    # Retries on 408/409/429/5xx, timeouts, resets and malformed/truncated/empty bodies, with exponential backoff +
    # jitter (teachers.http_json); 401/403/404/422 and a 400 naming the model/key/a parameter stop the run.
    c.teacher.max_retries = 5
    c.teacher.backoff_s = 1.0  # First backoff; doubles per retry (a Retry-After header wins).
    # SQLite cache of usable answers, so none is bought twice; "" = WORKDIR/teacher_cache.sqlite.
    c.teacher.cache_path = ""
    # USD per million input/output tokens per model, "MODEL=IN/OUT,..."; needed for distill.budget_unit=usd
    # (an unpriced model is an error before anything is sent). Check your provider's current prices.
    c.teacher.prices = "gpt-4o-mini=0.15/0.6,gpt-4o=2.5/10"
    # Prompt templates. Fields: {input}, {answer} (gold, or "unknown"), {domain}, {examples} (seeds).
    c.teacher.annotate_prompt = (
        "Answer the question step by step and end with 'So the answer is X.', where X is the final answer. "
        "The reference answer is {answer}; if it is known, explain the reasoning that leads to it."
        "\n\nQuestion: {input}"
    )
    c.teacher.synthesize_prompt = (
        "Here are examples of {domain} problems with step-by-step solutions:\n\n{examples}\n\n"
        "Write one new, different problem of the same kind and solve it step by step. Reply with JSON "
        'only: {{"question": "...", "rationale": "...", "answer": "..."}}'
    )
    # Fields: {input} (the sentence), {k} (paraphrases wanted), {domain}. Jayawardena & Yapa's style: ask
    # ChatGPT at temperature 0 for a list; teachers.paraphrase_list reads numbered, bulleted or JSON lists.
    c.teacher.paraphrase_prompt = (
        "Give {k} paraphrases of the following sentence as a numbered list, one per line, with nothing else. "
        "Each must keep the full meaning and differ from the sentence and from each other in wording or "
        "structure.\n\nSentence: {input}"
    )

    # `distill-jax paraphrase-corpus`: (source, paraphrase) pairs from a teacher or a paraphrase data set,
    # filtered (each filter counted; every removed row goes to rejects.jsonl) and split by source.
    c.paraphrase = ml_collections.ConfigDict()
    c.paraphrase.k = 5  # Paraphrases asked of the teacher per source sentence.
    c.paraphrase.domain = "paraphrase"  # Domain of the written rows (prepare's per-domain shards).
    c.paraphrase.request_chunk = 256  # Requests per teacher round trip; progress is logged after each.
    # Columns of generic inputs (--from=table, and the sentences of --from=teacher): "" id derives one from
    # file:line; paraphrases holds a list or one paraphrase per row; label ("" = none) a human judgement
    # (1/true = a paraphrase) that require_judged_paraphrase reads.
    c.paraphrase.fields = ml_collections.ConfigDict(dict(id="", source="source", paraphrases="paraphrases", label=""))
    # Filters, in the order they run; the first that objects names the row's reject.
    c.paraphrase.require_judged_paraphrase = True  # Drop pairs a human judged not to be paraphrases (APTY/MRPC/PAWS).
    c.paraphrase.drop_garbled = True  # Control characters, mostly non-letters, repeated-token loops, artifacts.
    c.paraphrase.min_letter_fraction = 0.5  # Of non-space characters; below is garbled.
    # A 1-4 word sequence this many times in a row is a decoding loop (people write "please, please, please").
    c.paraphrase.max_repeats = 4
    # Leftovers of the model's chatter inside a paraphrase (APTY's "Altered: ... Justification: ..."),
    # matched case-insensitively; "" disables.
    c.paraphrase.artifact_pattern = (
        r"^(?:altered|original|paraphrased?|rephrased|rewritten|output|answer)(?: text| sentence| version)?\s*:"
        r"|\b(?:justification|explanation|reasoning|changes? made)\s*:"
        r"|\(\s*[a-z]+(?: [a-z]+)?\s*:\s*[\"'“‘]"
        r"|'''|```"
    )
    c.paraphrase.drop_identical_to_source = True  # Same as the source once case, punctuation and spacing are ignored.
    # Paraphrase length / source length, in characters; outside is a cut-off or rambling reply. 0 disables a bound.
    c.paraphrase.min_length_ratio = 0.5
    c.paraphrase.max_length_ratio = 2.0
    c.paraphrase.drop_exact_duplicates = True  # The same (source, paraphrase) pair again, anywhere in the input.
    # Within a source: Jaccard similarity of word uni+bigram sets (order-aware) at or above this makes a
    # paraphrase a near duplicate of one kept before it (1.0: only the same words in the same order). 0 disables.
    c.paraphrase.near_duplicate_jaccard = 0.9
    # Content filter: a word list ("default" = the one shipped in distill_jax/data, a path, or "" = none) ...
    c.paraphrase.blocklist = "default"
    # ... and an OpenAI-compatible moderation endpoint (POST {base_url}/moderations) on sources and paraphrases.
    c.paraphrase.moderation = ml_collections.ConfigDict()
    c.paraphrase.moderation.enabled = False
    c.paraphrase.moderation.base_url = "https://api.openai.com/v1"
    c.paraphrase.moderation.model = "omni-moderation-latest"
    c.paraphrase.moderation.api_key_env = "OPENAI_API_KEY"
    c.paraphrase.moderation.batch_size = 32  # Texts per call.
    c.paraphrase.moderation.timeout_s = 60.0
    c.paraphrase.moderation.max_retries = 5  # Same discipline as the teacher: 408/429/5xx/timeouts/bad bodies.
    c.paraphrase.moderation.backoff_s = 1.0
    # Train/validation split by source (all paraphrases of a source on one side), deterministic by seed.
    c.paraphrase.validation_fraction = 0.1
    c.paraphrase.split_seed = 0
    # `distill-jax paraphrase-demo` (and what its eval step runs): decoding presets the student is scored
    # under (distill_jax.evaluation.decoding_presets; "frontier" = five along the fidelity-diversity trade-off).
    c.paraphrase.eval_presets = "frontier"
    return c


def over_defaults(saved: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """A config an earlier run saved (its config.json), laid over today's ``default_config()``.

    Knobs added since the run was saved take their defaults, so readers of old run directories need
    no ``.get()`` fallbacks; what the run saved wins everywhere else (keys unknown today are kept).
    """
    config = default_config()
    _lay_over(config, saved)
    return config


def _lay_over(config: ml_collections.ConfigDict, saved: Mapping[str, Any]) -> None:
    for key, value in saved.items():
        if key in config and isinstance(config[key], ml_collections.ConfigDict) and isinstance(value, Mapping):
            _lay_over(config[key], value)
        else:
            config[key] = value
