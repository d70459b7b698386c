"""`distill-jax SUBCOMMAND [--flags]`: dispatches to one subcommand module, which alone defines its flags.

Importing only the chosen subcommand keeps `--help` short and start-up lean (no jax import for
`prepare --help`), and lets each subcommand give `--config` its own default.
"""

from __future__ import annotations

import importlib
import sys

from distill_jax.process_env import cli_reexec_argv, enable_compilation_cache, reexec_with_malloc_tuning

# Subcommand -> what it does; its module is distill_jax.cli.<name with "_" for "-"> (``module_of``).
SUBCOMMANDS = {
    "prepare": "validate and tokenize a teacher corpus into per-domain shards",
    "paraphrase-corpus": "filtered paraphrase pairs from a teacher or data set",
    "train": "train (or resume) a student on prepared shards",
    "eval": "score a checkpoint or stored predictions per domain (head/tail), or compare sets",
    "generate": "decode a dataset with a checkpoint into predictions.jsonl (resumable)",
    "teacher-logits": "a teacher's top-k log-probs over prepared targets, for word-level KD (resumable)",
    "distill": "multi-stage balanced distillation under a teacher budget (BalDistill)",
    "demo": "random vs BalDistill on the embedded long-tailed pool, one table (CPU minutes)",
    "paraphrase-demo": "APTY paraphrases -> filtered corpus -> student -> decoding presets vs teacher, frontier plot",
    "import-hf": "a step-0 run checkpoint from a transformers T5 or BART directory",
    "export-hf": "a run's checkpoint as a transformers T5 or BART directory (safetensors)",
}
# A module named eval would shadow the builtin wherever the package imports it.
_MODULE_NAMES = {"eval": "evaluate"}


def module_of(name: str) -> str:
    """The module that defines subcommand ``name``'s flags and ``main``."""
    return "distill_jax.cli." + _MODULE_NAMES.get(name, name.replace("-", "_"))


def usage() -> str:
    lines = ["usage: distill-jax SUBCOMMAND [--flags]   (distill-jax SUBCOMMAND --help for its flags)", ""]
    lines += [f"  {name:<17} {help_text}" for name, help_text in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """The console entry point (``argv`` None: this process's own arguments), or a call with explicit ``argv``."""
    if argv is None:
        # A real process start: re-exec once with glibc's huge-page tunable (see process_env); calls with
        # an explicit argv run inside someone else's process, whose environment is not ours to change.
        main_module = sys.modules.get("__main__")
        spec = getattr(main_module, "__spec__", None)
        reexec_with_malloc_tuning(
            cli_reexec_argv(
                sys.argv[1:],
                main_spec_name=spec.name if spec is not None else None,
                argv0=sys.argv[0],
                safe_path=bool(getattr(sys.flags, "safe_path", False)),
            )
        )
        enable_compilation_cache()
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        print(usage())
        sys.exit(0 if len(argv) >= 2 else 2)
    name = argv[1]
    if name not in SUBCOMMANDS:
        print(f"distill-jax: unknown subcommand {name!r}\n\n{usage()}", file=sys.stderr)
        sys.exit(2)
    from distill_jax.cli import common

    try:
        module = importlib.import_module(module_of(name))
    except (AttributeError, KeyError, OSError, TypeError, ValueError) as err:
        # ml_collections loads --config and applies its --config.a.b overrides while the module defines the flag.
        common.usage_error(f"distill-jax {name}", common.config_override_problem(argv, err), argv)
    common.run(module.main, [f"distill-jax {name}"] + argv[2:])


if __name__ == "__main__":
    main()
