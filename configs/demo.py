"""The embedded demo: a tiny byte-level T5 on the generated long-tailed corpus (CPU, a few minutes).

Same as `distill-jax demo`'s default; use it with `distill-jax train` on your own prepared data
for a quick smoke run: --config=configs/demo.py --config.data.train_dir=DIR.
"""

from distill_jax.presets import demo_config


def get_config():
    return demo_config()
