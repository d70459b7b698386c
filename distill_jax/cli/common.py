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
        return record.levelno >= std_logging.WARNING or not any(lib in record.pathname for lib in _CHATTY_LIBRARIES)


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
    """Calls jax.distributed.initialize when the flags (or a cluster environment) ask for several processes."""
    f = flags.FLAGS
    if f.coordinator_address is None and f.num_processes is None and "JAX_COORDINATOR_ADDRESS" not in os.environ:
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
