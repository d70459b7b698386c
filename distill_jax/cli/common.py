"""Flags and set-up shared by the subcommands: config files, multi-host initialisation, logging."""

from __future__ import annotations

import logging as std_logging
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import NoReturn

from absl import app, flags, logging
from ml_collections import config_flags

import distill_jax.presets

BUILTIN_CONFIG = distill_jax.presets.__file__

_HELP_FLAGS = ("-h", "--help", "-help", "--helpshort", "-?")
_FULL_HELP_FLAGS = ("--helpfull", "-helpfull")


def run(main: Callable[[], None], argv: list[str]) -> None:
    """absl's app.run for one subcommand: `--help` prints its usage and own flags and exits 0; a flag or
    config mistake is one line naming it, exit 2 (absl's --help exits 1 and a misspelled config field
    is a traceback). Before ``main`` runs, logging is set up, and a subcommand that defined the
    distributed flags joins its multi-process run."""
    module = sys.modules[main.__module__]

    def checked_main(args: list[str]) -> None:
        del args  # every subcommand reads its flags
        try:
            configure_logging()
            if "coordinator_address" in flags.FLAGS:
                initialize_distributed()
            main()
        except Exception as err:
            if isinstance(err, (app.UsageError, *config_errors())):
                usage_error(argv[0], str(err), argv)
            raise

    app.run(checked_main, argv=argv, flags_parser=lambda args: _parse_flags(args, module))


def config_errors() -> tuple[type[Exception], ...]:
    """A setting to fix before anything can run: a usage error (exit 2), not a stopped run (exit 1)."""
    from distill_jax.config import ConfigError  # teachers' and budgets' config errors are subclasses
    from distill_jax.data.corpus_schema import CorpusError
    from distill_jax.storage import UnsupportedStorageError  # e.g. --workdir=hdfs://...

    return (ConfigError, CorpusError, UnsupportedStorageError)


def subcommand_help(module, full: bool = False) -> str:
    """The subcommand's docstring and its own flags (those of its module and the shared ones it defined)."""
    own = flags.FLAGS.module_help(module.__name__) + flags.FLAGS.module_help(__name__)
    text = f"{(module.__doc__ or '').strip()}\n\nflags:{own}"
    if full:
        return f"{text}\n\nall flags (absl, JAX):\n{flags.FLAGS.get_help()}"
    return f"{text}\n\n(--helpfull also lists absl's and JAX's flags)"


def usage_error(prog: str, message: str, argv: Sequence[str] = ()) -> NoReturn:
    """One line naming the mistake and exit 2; with --verbosity=1 (or -v 1) the traceback too."""
    if _verbose(argv or sys.argv):
        traceback.print_exc()
    print(f"{prog}: {message}", file=sys.stderr)
    sys.exit(2)


def _verbose(argv: Sequence[str]) -> bool:
    for i, arg in enumerate(argv):
        value = arg.split("=", 1)[1] if arg.startswith(("--verbosity=", "-v=")) else None
        if arg in ("--verbosity", "-v") and i + 1 < len(argv):
            value = argv[i + 1]
        if value is not None:
            try:
                return int(value) >= 1
            except ValueError:
                return False
    return False


def _parse_flags(argv: list[str], module) -> list[str]:
    prog = argv[0]
    args = argv[1 : argv.index("--")] if "--" in argv else argv[1:]
    if any(a in _HELP_FLAGS or a in _FULL_HELP_FLAGS for a in args):
        # Parse what parses so the help shows the defaults that apply (e.g. the subcommand's --config preset).
        print(subcommand_help(module, full=any(a in _FULL_HELP_FLAGS for a in args)))
        sys.exit(0)
    try:
        rest = flags.FLAGS(argv)
    except flags.Error as err:
        usage_error(prog, f"{_one_line(str(err))} ({prog} --help lists the flags)", argv)
    except (AttributeError, KeyError, OSError, TypeError, ValueError) as err:
        # ml_collections raises these for a --config file it cannot load, or an override that names no field
        # or has the wrong type.
        usage_error(prog, config_override_problem(argv, err), argv)
    if "config" in flags.FLAGS:
        try:  # ml_collections loads the file lazily; a missing file or a bad preset fails here, not mid-run.
            flags.FLAGS["config"].value.keys()
        except Exception as err:
            message = _one_line(str(err))
            usage_error(prog, f"--config={flags.FLAGS['config'].config_filename}: {message}", argv)
    return rest


def _one_line(message: str) -> str:
    """A multi-line library message (ml_collections embeds whole tracebacks) as its first and last lines."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if len(lines) <= 2:
        return " ".join(lines)
    return f"{lines[0]} ... {lines[-1]}"


def config_override_problem(argv: Sequence[str], err: Exception) -> str:
    """One line for a --config file or --config.a.b=value override that ml_collections refused (what and the fix)."""
    if isinstance(err, OSError):
        given = next((a for a in argv[1:] if a.startswith("--config=")), "--config")
        return f"{given}: {_one_line(str(err))}"
    text = str(err.args[0] if err.args else err).replace("\\n", " ").replace("\n", " ").strip("'\" ")
    text = re.sub(r"\s+", " ", text.replace("\\'", "'"))
    missing = re.match(r"'?([A-Za-z_]\w*)'? ?(Did you mean.*)?$", text)
    overrides = [a for a in argv[1:] if a.startswith("--config.")]
    if missing:
        field, hint = missing.group(1), missing.group(2) or ""
        culprit = next((a for a in overrides if re.search(rf"\.{re.escape(field)}(=|$|\.)", a)), None)
        where = f"{culprit.split('=', 1)[0]}: " if culprit else ""
        return (
            f"{where}no config field {field!r}. {hint} (the fields and defaults are in distill_jax/config.py)".strip()
        )
    return f"{text} (check --config and its --config.* overrides; the fields and types are in distill_jax/config.py)"


# Libraries whose INFO lines (every checkpoint file renamed, every shard written) drown the run's own log.
_CHATTY_LIBRARIES = ("/orbax/", "/tensorflow_datasets/", "/etils/", "/grain/", "/jax/_src/xla_bridge")


class _QuietLibraries(std_logging.Filter):
    def filter(self, record: std_logging.LogRecord) -> bool:
        library = any(lib in record.pathname for lib in _CHATTY_LIBRARIES)
        if library and record.exc_info:
            # Orbax logs a failed background save with a full traceback from each of its threads (hundreds
            # of lines); the trainer reports the error in one line, so keep only the libraries' message.
            record.exc_info, record.exc_text = None, None
        return record.levelno >= std_logging.WARNING or not library


def configure_logging() -> None:
    """Our INFO logs stay; third-party INFO is dropped (warnings and errors still show)."""
    # ABSLHandler.handle() forwards straight to its python_handler, so the filter goes there.
    logging.get_absl_handler().python_handler.addFilter(_QuietLibraries())


def flag_values(*holders: flags.FlagHolder) -> dict[str, object]:
    """{flag name: value}: the keyword arguments of a job whose parameters are named like its flags."""
    return {holder.name: holder.value for holder in holders}


def define_config_flag(default_preset: str = "default") -> flags.FlagHolder:
    """--config=PATH[:ARG] (an ml_collections Python file), overridable with --config.a.b=value."""
    return config_flags.DEFINE_config_file(
        "config",
        f"{BUILTIN_CONFIG}:{default_preset}",
        "Python config file with get_config(); fields are overridden with --config.section.field=value.",
        lock_config=True,
    )


def define_distributed_flags() -> None:
    flags.DEFINE_string(
        "coordinator_address",
        None,
        "host:port of process 0 for multi-process runs; unset = single process, or JAX's "
        "auto-detection on TPU VMs / SLURM / Kubernetes when --num_processes is given.",
    )
    flags.DEFINE_integer("num_processes", None, "Total processes in a multi-process run.")
    flags.DEFINE_integer("process_id", None, "This process's index in a multi-process run.")


def initialize_distributed() -> None:
    """Calls jax.distributed.initialize when the flags (or a cluster environment) ask for several processes.

    DISTILL_JAX_DISTRIBUTED=1 (set by launch/tpu_vm.sh and launch/slurm.sbatch) asks with no flags at
    all: JAX then detects the coordinator, process count and process id (TPU VM metadata, SLURM_* ...).
    """
    f = flags.FLAGS
    asked = f.coordinator_address is not None or f.num_processes is not None or "JAX_COORDINATOR_ADDRESS" in os.environ
    if not asked and os.environ.get("DISTILL_JAX_DISTRIBUTED", "") in ("", "0"):
        return
    import jax  # Imported late: `--help` and flag errors should not pay for it.

    jax.distributed.initialize(
        coordinator_address=f.coordinator_address, num_processes=f.num_processes, process_id=f.process_id
    )
    logging.info(
        "jax.distributed: process %d of %d, %d local / %d global devices.",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )


def parse_pairs(text: str, what: str) -> dict[str, str]:
    """Parses "a=1,b=2" into {"a": "1", "b": "2"} (values may be empty; keys may not repeat)."""
    out: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or key.strip() in out:
            raise flags.ValidationError(f"--{what}: expected NAME=VALUE[,NAME=VALUE...], got {text!r}")
        out[key.strip()] = value.strip()
    return out


def define_decoding_flags() -> None:
    """--decoding and its knobs (distill_jax.evaluation.generate.DecodeSettings)."""
    flags.DEFINE_enum("decoding", "greedy", ["greedy", "beam", "sample"], "Decoding method.")
    flags.DEFINE_integer("num_beams", 4, "Beam width (--decoding=beam).")
    flags.DEFINE_float("length_penalty", 1.0, "Beam score = log-prob / length**length_penalty (--decoding=beam).")
    flags.DEFINE_float("temperature", 1.0, "Softmax temperature (--decoding=sample).")
    flags.DEFINE_integer("top_k", 0, "Keep the k most likely tokens, 0 = all (--decoding=sample).")
    flags.DEFINE_float("top_p", 1.0, "Nucleus mass kept (--decoding=sample).")
    flags.DEFINE_integer("num_return_sequences", 1, "Sequences returned per input (beam or sample).")
    flags.DEFINE_integer("seed", 0, "Sampling seed; the draws depend on it and the batch index only.")
    flags.DEFINE_integer(
        "max_decode_len", 0, "Decoder steps; 0 = the run's eval.max_decode_len or data.max_target_len."
    )
    flags.DEFINE_string(
        "preset",
        "",
        "A named decoding preset (distill_jax.evaluation.decoding_presets: greedy, beam4, beam4_n4, topk10_n5, "
        "topp80_t07_n5, topp90_n5, topp95_t12_n5); replaces --decoding and its knobs except --seed/--max_decode_len.",
    )


def decode_settings():
    """The DecodeSettings the decoding flags describe."""
    from distill_jax.evaluation.generate import DecodeSettings

    f = flags.FLAGS
    if f.preset:
        from distill_jax.evaluation.decoding_presets import preset

        try:
            return preset(f.preset, seed=f.seed, max_decode_len=f.max_decode_len)
        except ValueError as e:
            raise flags.ValidationError(f"--preset: {e}") from None
    knobs = ("num_beams", "length_penalty", "temperature", "top_k", "top_p", "num_return_sequences", "seed")
    return DecodeSettings(method=f.decoding, max_decode_len=f.max_decode_len, **{k: f[k].value for k in knobs})
