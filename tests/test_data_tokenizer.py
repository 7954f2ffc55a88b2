"""configaformer.data.tokenizer: exact round trips, deterministic BPE training, the vocab check."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from configaformer.data import (ByteTokenizer, DataError, HFTokenizer, PrepareOptions, TokenDataset, check_vocab,
                                prepare, train_bpe)
from configaformer.data.tokenizer import EOT

from .test_data_prepare import read_split_texts, write_corpus

SAMPLES = ["", "plain ascii", "tabs\tand\nnewlines\r\n  trailing  ", "ünïcödé, 中文, emoji 😀, ZWJ 👩‍👩‍👧",
           "a literal <|endoftext|> and <|pad|> in the text", "\x00 control \x7f", "   leading spaces"]
CODE = [f"def function_{i}(x, y):\n    return x * {i} + y  # comment {i % 5}\n" for i in range(200)]
CORPUS = CODE + SAMPLES


def test_byte_tokenizer_round_trips_and_keeps_specials_out_of_text():
    tok = ByteTokenizer()
    for text in SAMPLES:
        ids = tok.encode(text)
        assert tok.decode(ids) == text and len(ids) == len(text.encode("utf-8"))
        assert not np.any(ids >= 256)  # a literal "<|endoftext|>" stays bytes
    assert tok.vocab_size == 258 and tok.special_tokens == {EOT: 256, "<|pad|>": 257}
    assert tok.decode([104, 105, 256, 257]) == "hi<|endoftext|><|pad|>"
    assert tok.decode([0xC3]) == "\ufffd"  # a cut multi-byte character decodes with replacement
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([258])


def test_bpe_round_trips_exactly_and_compresses():
    tok = train_bpe(iter(CORPUS), vocab_size=400)
    assert 258 < tok.vocab_size <= 400 and tok.special_tokens == {EOT: 0, "<|pad|>": 1}  # stops when no pair repeats
    for text in SAMPLES + CORPUS[:3]:
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert not np.any(np.isin(ids, [0, 1]))  # literal specials in text never become special ids
    assert len(tok.encode(CORPUS[0])) < len(CORPUS[0].encode()) / 2


_TRAIN_IN_SUBPROCESS = """
import hashlib, sys
from configaformer.data import train_bpe
corpus = [f"def function_{i}(x, y):\\n    return x * {i} + y  # comment {i % 5}\\n" for i in range(200)]
print(hashlib.sha256(train_bpe(iter(corpus), vocab_size=400).to_json().encode()).hexdigest())
"""


def test_bpe_training_is_deterministic_across_processes():
    corpus = CODE
    digest = __import__("hashlib").sha256(train_bpe(iter(corpus), 400).to_json().encode()).hexdigest()
    assert train_bpe(iter(corpus), 400).to_json() == train_bpe(iter(corpus), 400).to_json()
    # another process has other hash-map seeds (the Rust trainer's and Python's)
    result = subprocess.run([sys.executable, "-c", _TRAIN_IN_SUBPROCESS], capture_output=True, text=True,
                            env={"PYTHONHASHSEED": "12345", "PATH": ""}, check=True)
    assert result.stdout.strip() == digest


def test_bpe_and_file_tokenizers_in_prepared_datasets(tmp_path):
    corpus = write_corpus(tmp_path / "corpus", 30)
    originals = sorted(p.read_text() for p in corpus.rglob("*.txt"))
    manifest = prepare(tmp_path / "bpe", PrepareOptions(sources=[str(corpus)], tokenizer="bpe", vocab_size=300,
                                                        val_fraction=0.0))
    tok = manifest["tokenizer"]
    assert (tok["kind"], tok["path"]) == ("bpe", "tokenizer.json") and 258 < tok["vocab_size"] <= 300
    assert manifest["separator_id"] == 0 and len(tok["sha256"]) == 64
    assert sorted(read_split_texts(tmp_path / "bpe", "train")) == originals
    # an existing tokenizer.json given by path: copied verbatim, recorded as kind "file"
    manifest2 = prepare(tmp_path / "file", PrepareOptions(sources=[str(corpus)], val_fraction=0.0,
                                                          tokenizer=str(tmp_path / "bpe" / "tokenizer.json")))
    assert manifest2["tokenizer"]["kind"] == "file" and manifest2["tokenizer"]["sha256"] == tok["sha256"]
    assert (tmp_path / "file" / "tokenizer.json").read_bytes() == (tmp_path / "bpe" / "tokenizer.json").read_bytes()
    assert (tmp_path / "file" / "train-00000.bin").read_bytes() == (tmp_path / "bpe" / "train-00000.bin").read_bytes()
    assert isinstance(TokenDataset(tmp_path / "file").tokenizer(), HFTokenizer)


def test_bad_tokenizer_inputs(tmp_path):
    corpus = write_corpus(tmp_path / "corpus", 3)
    with pytest.raises(DataError, match=f"tokenizer file not found: {tmp_path / 'missing.json'}"):
        prepare(tmp_path / "ds", PrepareOptions(sources=[str(corpus)], tokenizer=str(tmp_path / "missing.json")))
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(DataError, match="cannot load the tokenizer .*broken.json"):
        prepare(tmp_path / "ds", PrepareOptions(sources=[str(corpus)], tokenizer=str(tmp_path / "broken.json")))
    with pytest.raises(DataError, match=r"--vocab-size must be in \[258, 2\*\*32\] for BPE, got 100"):
        prepare(tmp_path / "ds", PrepareOptions(sources=[str(corpus)], tokenizer="bpe", vocab_size=100))
    assert not (tmp_path / "ds").exists()


def test_check_vocab_refuses_a_model_smaller_than_the_tokenizer(tmp_path):
    corpus = write_corpus(tmp_path / "corpus", 3)
    manifest = prepare(tmp_path / "ds", PrepareOptions(sources=[str(corpus)], val_fraction=0.0))
    assert check_vocab(tmp_path / "ds", 258) == 258 and check_vocab(manifest, 50257) == 258
    assert check_vocab(tmp_path / "ds" / "manifest.json", 300) == 258
    with pytest.raises(ValueError, match=r"the model's vocab_size \(256\) is smaller than the vocabulary of the "
                                         r"dataset .*ds \(258, byte tokenizer\)"):
        check_vocab(tmp_path / "ds", 256)
    with pytest.raises(ValueError, match="set vocab_size >= 258"):
        TokenDataset(tmp_path / "ds").check_vocab(100)
    with pytest.raises(DataError, match="has no manifest.json"):
        check_vocab(tmp_path / "corpus", 300)
