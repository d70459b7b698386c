"""import-hf and export-hf: a transformers T5 becomes a run that evaluates, trains on, and exports back unchanged."""

import json
import os

import jax
import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers
from helpers import cli

from distill_jax.distill.evaluate_runs import evaluate_workdir
from distill_jax.models.hf_t5 import load_hf_t5
from distill_jax.training.checkpoints import Checkpointer
from distill_jax.training.hf_interop import export_hf, import_hf
from distill_jax.training.run_setup import setup_run
from distill_jax.training.trainer import train

# v1.1 style (gated GELU, untied head) over ByT5's 384 ids, so the byte-level demo corpus fits it.
HF_SHAPE = dict(
    vocab_size=384,
    d_model=64,
    d_kv=16,
    d_ff=96,
    num_heads=4,
    num_layers=2,
    num_decoder_layers=2,
    dropout_rate=0.0,
    feed_forward_proj="gated-gelu",
    tie_word_embeddings=False,
    decoder_start_token_id=0,
)


def save_random_hf_t5(path, seed=0, **changes):
    """A random transformers T5 with its own LM head (transformers 5 builds it tied), saved as safetensors."""
    torch.manual_seed(seed)
    model = transformers.T5ForConditionalGeneration(transformers.T5Config(**HF_SHAPE | changes)).eval()
    model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.lm_head.weight) * HF_SHAPE["d_model"] ** -0.5)
    model.save_pretrained(str(path))
    return model


def restored_state(cfg, workdir, step):
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"))
    state, _, meta = checkpointer.restore(step, setup_run(cfg).abstract_state)
    checkpointer.close()
    return jax.tree.map(np.asarray, state), meta


def test_import_eval_export_round_trip_keeps_the_logits(small_train_config, demo_prepared, tmp_path):
    original = save_random_hf_t5(tmp_path / "hf")
    import_hf(str(tmp_path / "hf"), str(tmp_path / "run"), small_train_config())
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["model"]["hf_dir"] == str(tmp_path / "hf")

    report, _ = evaluate_workdir(
        str(tmp_path / "run"),
        demo_prepared["test"],
        output_dir=str(tmp_path / "report"),
        decode_examples_per_domain=1,
        max_examples_per_domain=2,
    )
    assert report["step"] == 0 and all(v["loss"] > 0 for v in report["per_domain"].values())

    assert export_hf(str(tmp_path / "run"), str(tmp_path / "out")) == 0
    exported = transformers.T5ForConditionalGeneration.from_pretrained(str(tmp_path / "out")).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "out"))
    inputs = tokenizer(["What is 12 + 30?", "Reverse the word 'jax'."], padding=True, return_tensors="pt")
    labels = tokenizer(["42", "xaj"], padding=True, return_tensors="pt").input_ids
    with torch.no_grad():
        expected = original(**inputs, labels=labels).logits
        actual = exported(**inputs, labels=labels).logits
    np.testing.assert_allclose(actual.numpy(), expected.numpy(), atol=1e-4, rtol=1e-4)


def _imported_run(small_train_config, tmp_path):
    hf_dir = str(tmp_path / "hf")
    save_random_hf_t5(hf_dir, seed=1)
    cfg = small_train_config(model__hf_dir=hf_dir, train__steps=2, train__log_every=2, train__checkpoint_every=2)
    imported = str(tmp_path / "imported")
    import_hf(hf_dir, imported, cfg)
    return hf_dir, cfg, imported


def test_training_continues_from_an_imported_checkpoint(small_train_config, tmp_path):
    hf_dir, cfg, imported = _imported_run(small_train_config, tmp_path)
    state, meta = restored_state(cfg, imported, 0)
    assert int(state.step) == 0 and meta["imported_from"] == hf_dir
    jax.tree.map(np.testing.assert_array_equal, state.params, load_hf_t5(hf_dir)[1])

    result = train(cfg, imported)
    assert result.step == 2 and np.isfinite(result.final_metrics["train/loss"])
    assert Checkpointer(os.path.join(imported, "checkpoints")).all_steps() == [0, 2]


def test_import_and_export_need_no_data_and_training_adopts_its_data(small_train_config, tmp_path):
    # Converting is not training: no --config.data.* at all, from the command line.
    hf_dir = tmp_path / "hf"
    save_random_hf_t5(hf_dir, seed=2)
    run = tmp_path / "run"
    out = cli("import-hf", f"--hf_dir={hf_dir}", f"--workdir={run}")
    assert out.returncode == 0, out.stderr[-3000:]
    out = cli("export-hf", f"--workdir={run}", f"--out={tmp_path / 'out'}")
    assert out.returncode == 0, out.stderr[-3000:]
    exported = safetensors.numpy.load_file(str(tmp_path / "out" / "model.safetensors"))
    original = safetensors.numpy.load_file(str(hf_dir / "model.safetensors"))
    assert exported.keys() == original.keys()
    for name, value in original.items():
        np.testing.assert_array_equal(exported[name], value, err_msg=name)
    # The first train on prepared data adopts its domains (an imported step 0 has seen none).
    cfg = small_train_config(model__hf_dir=str(hf_dir), train__steps=2, train__log_every=2, train__checkpoint_every=2)
    result = train(cfg, str(run))
    assert result.step == 2 and np.isfinite(result.final_metrics["train/loss"])


@pytest.mark.slow
def test_training_from_model_hf_dir_equals_training_from_its_import(small_train_config, tmp_path):
    """train's own initialisation from model.hf_dir (no import) gives the imported state and data order."""
    _, cfg, imported = _imported_run(small_train_config, tmp_path)
    train(cfg, imported)
    train(cfg, str(tmp_path / "direct"))
    after_import, _ = restored_state(cfg, imported, 2)
    direct, _ = restored_state(cfg, str(tmp_path / "direct"), 2)
    jax.tree.map(np.testing.assert_array_equal, after_import.params, direct.params)


def test_unfit_inputs_fail_with_the_reason(small_train_config, tmp_path):
    umt5 = tmp_path / "umt5"
    umt5.mkdir()
    (umt5 / "config.json").write_text(json.dumps({"model_type": "umt5", "architectures": ["UMT5Model"]}))
    out = cli("import-hf", f"--hf_dir={umt5}", f"--workdir={tmp_path / 'run'}")
    assert out.returncode != 0 and "unsupported architecture model_type='umt5'" in out.stderr

    missing = "decoder.block.1.layer.2.DenseReluDense.wo.weight"
    save_random_hf_t5(tmp_path / "hf")
    tensors = safetensors.numpy.load_file(str(tmp_path / "hf" / "model.safetensors"))
    del tensors[missing]
    safetensors.numpy.save_file(tensors, str(tmp_path / "hf" / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=f"missing {missing}"):
        import_hf(str(tmp_path / "hf"), str(tmp_path / "run"), small_train_config())

    save_random_hf_t5(tmp_path / "small_vocab", vocab_size=256)
    with pytest.raises(ValueError, match="384 ids exceed the model's vocab_size 256.*tokenizer.kind=hf"):
        import_hf(str(tmp_path / "small_vocab"), str(tmp_path / "run"), small_train_config())

    out = cli("export-hf", f"--workdir={tmp_path / 'nothing'}", f"--out={tmp_path / 'out'}")
    assert out.returncode != 0 and "config.json not found" in out.stderr


def test_import_from_a_model_directory_on_s3_equals_a_local_import(small_train_config, s3_bucket, tmp_path):
    from distill_jax import storage
    from distill_jax.config import ConfigError

    save_random_hf_t5(tmp_path / "hf")
    remote = f"s3://{s3_bucket}/models/t5"
    storage.upload_tree(tmp_path / "hf", remote)
    import_hf(str(tmp_path / "hf"), str(tmp_path / "local"), small_train_config())
    import_hf(remote, str(tmp_path / "remote"), small_train_config())
    assert json.loads((tmp_path / "remote" / "config.json").read_text())["model"]["hf_dir"] == remote
    cfg = small_train_config()
    cfg.model.hf_dir = str(tmp_path / "hf")
    (local, _), (got, _) = (
        restored_state(cfg, str(tmp_path / "local"), 0),
        restored_state(cfg, str(tmp_path / "remote"), 0),
    )
    jax.tree.map(np.testing.assert_array_equal, local.params, got.params)

    # A tokenizer stored beside the weights is not read from the bucket: the run would record a path no host has.
    storage.put_bytes(f"{remote}/tokenizer.json", b"{}")
    no_data = small_train_config()
    no_data.data.train_dir = ""
    with pytest.raises(ConfigError, match="tokenizers are read from local directories"):
        import_hf(remote, str(tmp_path / "again"), no_data)
