"""The paraphrase students of Jayawardena & Yapa 2024 with LoRA: T5-small, Flan-T5-small or BART-base.

  distill-jax train --config=configs/paraphrase_lora.py:bart_base --workdir=runs/para_bart \
      --config.model.hf_dir=PATH/bart-base --config.data.train_dir=... --config.data.eval_dir=...

ARG picks the student: t5_small (T5 v1.0: ReLU, tied embeddings, ~60M), flan_t5_small (T5 v1.1
shapes, gated-GELU, ~77M), bart_base (learned positions, post-LN, GELU, ~140M). With
--config.model.hf_dir=DIR (a local transformers checkpoint of that model) the student starts from
its weights and takes its architecture; prepare the corpus with the same tokenizer
(--config.tokenizer.kind=hf --config.tokenizer.path=DIR). Without one it starts from random weights
and adapters alone learn little: then set model.lora_rank=0 to train every weight.

The paper gives no LoRA hyper-parameters; these are the seeds' setup (r=8, alpha=16, dropout 0.1
on q and v, constant 2e-4 after 3% warmup, as in the BalDistill code). Corpus: `distill-jax
paraphrase-corpus`; evaluation: `distill-jax eval --metrics=paraphrase --presets=frontier`.
"""

from distill_jax.presets import accelerator_config

STUDENTS = {"t5_small": "t5-small-v1.0", "flan_t5_small": "small", "bart_base": "bart-base"}


def get_config(student: str = "flan_t5_small"):
    if student not in STUDENTS:
        raise ValueError(f"configs/paraphrase_lora.py:{student}: choose one of {', '.join(STUDENTS)}")
    c = accelerator_config(STUDENTS[student], batch_size=64)
    c.prepare.max_input_len = 128  # Sentences: Quora/PAWS/MRPC inputs are far below 128 subword tokens.
    c.prepare.max_target_len = 128
    c.model.lora_rank = 8
    c.model.lora_alpha = 16.0
    c.model.lora_dropout = 0.1
    c.model.lora_targets = "q,v"
    c.train.steps = 20_000
    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 2e-4
    c.optimizer.decay = "constant"
    c.optimizer.warmup_steps = 600  # 3% of train.steps.
    c.optimizer.weight_decay = 0.0
    c.eval.decode_examples_per_domain = 50
    c.eval.head_fraction = 1.0  # One paraphrase domain, unless the corpus is tagged by source.
    return c
