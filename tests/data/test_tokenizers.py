"""Tokenizers: the numpy ByT5 encoder equals transformers' ByT5Tokenizer; HF dirs equal sentencepiece."""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
import transformers
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from distill_jax.data.tokenizers import load_tokenizer, tokenizer_from_dict

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
SP_MODELS = SHARED / "data" / "sentencepiece_test_models"
HF_SPECIAL = re.compile(r"</s>|<pad>|<unk>|<extra_id_\d+>")  # ByT5Tokenizer parses these in text
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A student learns from a teacher.",
    "Distillation compresses a large model into a small one.",
    "So the answer is 42.",
] * 20


@pytest.fixture(scope="module")
def hf_byt5():
    return transformers.ByT5Tokenizer()


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_byte_encoder_matches_byt5_tokenizer(hf_byt5, text):
    ours = load_tokenizer("byt5")
    assume(not HF_SPECIAL.search(text))
    ids = ours.encode(text)
    assert ids.dtype == np.int32 and ids[-1] == 1
    assert ids.tolist() == hf_byt5(text)["input_ids"]
    assert ours.decode(ids) == text


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 383).filter(lambda i: i != 1), max_size=40))
def test_byte_decoder_matches_byt5_tokenizer_on_any_ids(hf_byt5, ids):
    assert load_tokenizer("byt5").decode(ids) == hf_byt5.decode(ids, skip_special_tokens=True)


def test_byte_tokenizer_properties_eos_cut_and_markup():
    tok = load_tokenizer()
    assert (tok.vocab_size, tok.pad_id, tok.eos_id, tok.name) == (384, 0, 1, "byt5")
    assert tok.decode([107, 0, 108, 1, 109, 1]) == "hi"
    # Literal markup in teacher text stays bytes: it can never inject an EOS.
    assert 1 not in tok.encode("a</s>b")[:-1].tolist()
    assert tok.decode(tok.encode("a</s>b")) == "a</s>b"
    batch = tok.encode_batch(["x", "", "é"])
    assert [b.tolist() for b in batch] == [[123, 1], [1], [198, 172, 1]]
    assert tok.to_dict() == {
        "kind": "byt5",
        "path": "",
        "name": "byt5",
        "vocab_size": 384,
        "pad_id": 0,
        "eos_id": 1,
        "fingerprint": tok.fingerprint(),
    }
    assert len(tok.fingerprint()) == 64


def _train_spm(vocab_size: int, sentences: list[str]) -> bytes:
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        vocab_size=vocab_size,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        model_type="unigram",
        hard_vocab_limit=False,
        minloglevel=2,
    )
    return model.getvalue()


@pytest.fixture(scope="module")
def spm_dir(tmp_path_factory) -> tuple[Path, spm.SentencePieceProcessor]:
    proto = _train_spm(60, SENTENCES)
    path = tmp_path_factory.mktemp("spm")
    (path / "spiece.model").write_bytes(proto)
    return path, spm.SentencePieceProcessor(model_proto=proto)


def test_hf_tokenizer_from_spiece_dir_matches_sentencepiece(spm_dir):
    path, sp = spm_dir
    tok = load_tokenizer("hf", str(path))
    assert (tok.pad_id, tok.eos_id) == (0, 1)
    for text in ["The lazy student jumps.", "So the answer is 42.", "unseen zzz words"]:
        ids = tok.encode(text)
        assert ids.tolist() == sp.encode(text) + [1]
        assert tok.decode(ids) == sp.decode(sp.encode(text))
    assert [a.tolist() for a in tok.encode_batch(["a dog", "the fox"])] == [
        tok.encode("a dog").tolist(),
        tok.encode("the fox").tolist(),
    ]
    assert tok.decode(tok.encode("the dog").tolist() + [5, 6]) == "the dog"
    info = tok.to_dict()
    assert info["kind"] == "hf" and info["path"] == str(path) and info["vocab_size"] >= sp.get_piece_size()


def test_hf_fingerprint_identifies_the_vocabulary_not_the_files(spm_dir, tmp_path):
    path, _ = spm_dir
    tok = load_tokenizer("hf", str(path))
    saved = tmp_path / "saved"
    transformers.T5Tokenizer.from_pretrained(str(path)).save_pretrained(str(saved))
    assert (saved / "tokenizer_config.json").exists()
    assert load_tokenizer("hf", str(saved)).fingerprint() == tok.fingerprint()
    other = tmp_path / "other"
    other.mkdir()
    (other / "spiece.model").write_bytes(_train_spm(50, SENTENCES[::-1] + ["other words here"] * 5))
    assert load_tokenizer("hf", str(other)).fingerprint() != tok.fingerprint()


def test_tokenizer_from_dict_refuses_a_changed_vocabulary(spm_dir, tmp_path):
    path, _ = spm_dir
    copy = tmp_path / "tok"
    shutil.copytree(path, copy)
    info = load_tokenizer("hf", str(copy)).to_dict()
    assert tokenizer_from_dict(info).fingerprint() == info["fingerprint"]
    (copy / "spiece.model").write_bytes(_train_spm(50, ["completely different text"] * 50 + SENTENCES))
    with pytest.raises(ValueError, match="fingerprint differs"):
        tokenizer_from_dict(info)


@pytest.mark.skipif(not SP_MODELS.is_dir(), reason=f"{SP_MODELS} absent (../shared not checked out)")
def test_shared_botchan_unigram_model_ids_match_sentencepiece(tmp_path):
    model = SP_MODELS / "botchan_en_unigram_1000.model"
    (tmp_path / "spiece.model").write_bytes(model.read_bytes())
    sp = spm.SentencePieceProcessor(model_file=str(model))
    tok = load_tokenizer("hf", str(tmp_path))
    text = "I was a scapegrace from my childhood, and always getting into trouble."
    ids = tok.encode(text)
    assert ids[:-1].tolist() == sp.encode(text) and ids[-1] == tok.eos_id
    assert tok.decode(ids) == sp.decode(sp.encode(text))


def test_load_tokenizer_errors_say_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="unknown tokenizer kind 'spm'.*'byt5' or 'hf'"):
        load_tokenizer("spm")
    with pytest.raises(ValueError, match="needs path"):
        load_tokenizer("hf")
    with pytest.raises(ValueError, match="takes no path"):
        load_tokenizer("byt5", "/x")
    with pytest.raises(ValueError, match="not a directory"):
        load_tokenizer("hf", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="cannot load a tokenizer"):
        load_tokenizer("hf", str(tmp_path))


@pytest.fixture(scope="module")
def bart_style_dir(tmp_path_factory) -> Path:
    """A byte-level BPE tokenizer framed like BART's (``<s> text </s>``), trained here on a few sentences."""
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers, processors, trainers

    backend = tokenizers.Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(SENTENCES * 5, trainer)
    backend.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    wrapped = transformers.BartTokenizer(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
    )
    path = tmp_path_factory.mktemp("bart_tok")
    wrapped.save_pretrained(str(path))
    return path


def test_hf_tokenizer_keeps_the_vocabularys_own_bos_frame(bart_style_dir, spm_dir):
    tok = load_tokenizer("hf", str(bart_style_dir))
    reference = transformers.AutoTokenizer.from_pretrained(str(bart_style_dir))
    assert tok.prefix_ids == (reference.bos_token_id,)
    for text in ["The lazy student jumps.", "So the answer is 42.", ""]:
        assert tok.encode(text).tolist() == reference(text)["input_ids"]  # <s> ... </s>, as BART was pretrained
        assert tok.decode(tok.encode(text)) == text
    assert load_tokenizer("hf", str(spm_dir[0])).prefix_ids == ()  # T5 frames a text with EOS only
