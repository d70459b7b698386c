"""Flags and set-up shared by the subcommands: config files, multi-host initialisation, logging."""

from __future__ import annotations

import logging as std_logging
import os

from absl import flags, logging
from ml_collections import config_flags

import distill_jax.config

BUILTIN_CONFIG = distill_jax.config.__file__


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
    return DecodeSettings(
        method=f.decoding,
        num_beams=f.num_beams,
        length_penalty=f.length_penalty,
        temperature=f.temperature,
        top_k=f.top_k,
        top_p=f.top_p,
        num_return_sequences=f.num_return_sequences,
        seed=f.seed,
        max_decode_len=f.max_decode_len,
    )
