"""Orbax checkpoints on s3:// (S3-compatible stores): the two things Orbax 0.12.8 lacks.

1. Arrays. Orbax writes arrays with tensorstore, which has an s3 driver, but Orbax builds a
   tensorstore kvstore spec for gs:// only: an s3:// directory is normalized to `s3:/...` and
   refused as "not absolute". `enable()` extends that one decision (three private functions of
   `orbax.checkpoint._src.serialization.tensorstore_utils`, checked to exist) so an s3:// directory
   gets `{"driver": "s3", "bucket", "path", "endpoint", "aws_region"}`. tensorstore's s3 driver does
   not read AWS_ENDPOINT_URL itself (without an explicit endpoint it times out looking for AWS), so
   the endpoint and region are passed from the standard variables here; credentials stay with
   tensorstore's own AWS chain (the AWS_* variables, profiles, instance roles).
2. Atomicity. Orbax finalizes a local step by renaming its temporary directory; on s3 a rename is a
   copy plus a delete, so a writer killed mid-rename would leave a step directory that looks final.
   `atomicity_options(directory)` selects Orbax's commit-marker mode for s3 (the mode Orbax already
   uses for gs://): the step is written under its final name and `commit_success.txt` goes last;
   a step without it is not a checkpoint to Orbax's step listing.
3. GCS emulators. gcsfs finds one through STORAGE_EMULATOR_HOST, tensorstore's gcs driver only through
   its own TENSORSTORE_GCS_HTTP_URL (read when a store opens); `gcs_kvstore` passes the standard variable
   on, so one setting points every layer of a gs:// run at the emulator.
"""

from __future__ import annotations

import os
from typing import Any

import orbax.checkpoint as ocp
from orbax.checkpoint._src.path import gcs_utils
from orbax.checkpoint._src.serialization import tensorstore_utils as ts_utils

from distill_jax import storage

_enabled = False


def s3_kvstore(url: str) -> dict[str, Any]:
    """The tensorstore kvstore spec of an s3:// URL, endpoint and region from the AWS variables."""
    bucket, _, key = url[len("s3://") :].partition("/")
    spec: dict[str, Any] = {"driver": "s3", "bucket": bucket, "path": key}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        spec["endpoint"] = endpoint
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        spec["aws_region"] = region
    return spec


def gcs_kvstore(url: str) -> dict[str, Any]:
    """Orbax's tensorstore kvstore spec of a gs:// URL, with tensorstore sent to STORAGE_EMULATOR_HOST if set."""
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    if emulator and "TENSORSTORE_GCS_HTTP_URL" not in os.environ:
        os.environ["TENSORSTORE_GCS_HTTP_URL"] = emulator if "://" in emulator else f"http://{emulator}"
    return gcs_utils.get_kvstore_for_gcs(url)


def enable() -> None:
    """Teaches Orbax's tensorstore spec builder the s3 driver and the GCS emulator variable (idempotent)."""
    global _enabled
    if _enabled:
        return
    use_gcs, normalize = ts_utils._use_gcs_driver, ts_utils._normalize_path

    def use_remote_driver(directory: str) -> bool:
        return directory.startswith("s3://") or use_gcs(directory)

    def normalize_path(p: str) -> str:
        return normalize(p).replace("s3:/", "s3://", 1) if p.startswith("s3://") else normalize(p)

    def kvstore(p: str) -> dict[str, Any]:
        return s3_kvstore(p) if p.startswith("s3://") else gcs_kvstore(p)

    ts_utils._use_gcs_driver, ts_utils._normalize_path = use_remote_driver, normalize_path
    ts_utils.gcs_utils = _GcsUtilsWithS3(ts_utils.gcs_utils, kvstore)
    _enabled = True


class _GcsUtilsWithS3:
    """tensorstore_utils' view of gcs_utils with `get_kvstore_for_gcs` answering s3:// too."""

    def __init__(self, module: Any, kvstore: Any):
        self._module, self.get_kvstore_for_gcs = module, kvstore

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


def atomicity_options(directory: str) -> Any:
    """Orbax's commit-marker atomicity for s3:// (None elsewhere: Orbax's defaults are right there)."""
    if storage.scheme(directory) != "s3":
        return None
    return ocp.options.AtomicityOptions(mode=ocp.options.AtomicityMode.COMMIT_FILE)
