"""BalDistill on the embedded long-tailed demo corpus, with the exact program teacher (CPU, minutes).

This is what `distill-jax demo` runs (it also writes the corpus). By hand: generate the corpus
(`python -c "from distill_jax.data.demo_corpus import write_demo_corpus; write_demo_corpus('CORPUS', num_train=3000)"`),
then: distill-jax distill --config=configs/baldistill_demo.py --config.distill.pool=CORPUS/train.jsonl \
      --config.distill.eval_data=CORPUS/test.jsonl --workdir=DIR
The program teacher annotates pool rows with their (correct) answers and synthesizes new, unseen
examples of a domain when its pool runs short.
"""

from distill_jax.presets import baldistill_demo_config


def get_config():
    return baldistill_demo_config()
