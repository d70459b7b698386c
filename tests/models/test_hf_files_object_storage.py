"""A transformers model directory on gs:// (fake-gcs-server) or s3:// (moto): model.hf_dir and an HF teacher
read it in place (config.json) or from a once-per-host staged copy (safetensors memory-maps local files)."""

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from distill_jax import storage
from distill_jax.models import hf_files


def _hf_dir(path, scale):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"model_type": "t5", "d_model": 8}))
    tensors = {"shared.weight": np.arange(24, dtype=np.float32).reshape(3, 8) * scale}
    save_file(tensors, str(path / "model.safetensors"))
    return tensors


@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_a_remote_hf_dir_reads_like_a_local_one_and_a_changed_file_is_staged_again(scheme, request, tmp_path):
    bucket = request.getfixturevalue("s3_bucket" if scheme == "s3" else "gcs_bucket")
    remote = f"{scheme}://{bucket}/models/t5-tiny"
    first = _hf_dir(tmp_path / "v1", 1.0)
    storage.upload_tree(tmp_path / "v1", remote)

    assert hf_files.read_config(remote) == {"model_type": "t5", "d_model": 8}
    np.testing.assert_array_equal(hf_files.read_checkpoint(remote)["shared.weight"], first["shared.weight"])
    np.testing.assert_array_equal(hf_files.read_checkpoint(remote)["shared.weight"], first["shared.weight"])

    # The same directory, other weights: a new version, so a new copy, not the stale one.
    second = _hf_dir(tmp_path / "v2", -2.0)
    storage.upload_tree(tmp_path / "v2", remote)
    np.testing.assert_array_equal(hf_files.read_checkpoint(remote)["shared.weight"], second["shared.weight"])

    with pytest.raises(FileNotFoundError, match="config.json not found"):
        hf_files.read_config(f"{scheme}://{bucket}/models/absent")
