"""Tokenizers for prepared datasets: byte-level (the default), a byte-level BPE trained on the corpus
with Hugging Face `tokenizers`, or an existing tokenizer.json.

    byte   ids 0..255 are the UTF-8 bytes, 256 = <|endoftext|>, 257 = <|pad|>; vocab_size 258.
           Needs no training; decode(encode(text)) == text for every string.
    bpe    byte-level BPE (GPT-2 style pre-tokenization, no prefix space), specials <|endoftext|> = 0
           and <|pad|> = 1, then the 256 byte symbols, then the merges; trained deterministically
           (same corpus, same tokenizer.json) and stored in the dataset as tokenizer.json.
    file   any tokenizer.json given by path, copied into the dataset. It round-trips exactly only if
           it has no lossy normalizer (a byte-level BPE such as GPT-2's does).

Text inside a document never becomes a special token: a literal "<|endoftext|>" in a document is
encoded as ordinary text, so only the separator the preparation inserts marks a document end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .errors import DataError

EOT = "<|endoftext|>"
PAD = "<|pad|>"
TOKENIZER_FILE = "tokenizer.json"
MIN_BPE_VOCAB = 256 + 2  # the byte alphabet and the two specials


class ByteTokenizer:
    """UTF-8 bytes as ids 0..255, plus <|endoftext|> (256) and <|pad|> (257)."""

    kind = "byte"

    def __init__(self):
        self.special_tokens = {EOT: 256, PAD: 257}
        self.vocab_size = 258

    def encode(self, text: str) -> np.ndarray:
        """Token ids (uint32) of `text`, never containing a special id."""
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.uint32)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Text of `ids`; special ids become their names, invalid byte runs become U+FFFD."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError(f"token id out of range [0, {self.vocab_size}) for the byte tokenizer")
        names = {v: k for k, v in self.special_tokens.items()}
        pieces, start = [], 0
        for pos in np.flatnonzero(ids >= 256).tolist() + [ids.size]:
            pieces.append(ids[start:pos].astype(np.uint8).tobytes().decode("utf-8", "replace"))
            if pos < ids.size:
                pieces.append(names[int(ids[pos])])
            start = pos + 1
        return "".join(pieces)

    def token_id(self, token: str) -> int | None:
        return self.special_tokens.get(token)

    def token_byte_lengths(self) -> np.ndarray:
        """Bytes of text each id stands for (specials count as one, like a separator byte);
        used to report bits per byte, which compares across tokenizers."""
        return np.ones(self.vocab_size, dtype=np.int64)

    def to_manifest(self) -> dict:
        return {"kind": self.kind, "vocab_size": self.vocab_size, "special_tokens": dict(self.special_tokens),
                "path": None, "sha256": None}


class HFTokenizer:
    """A Hugging Face `tokenizers.Tokenizer` (trained BPE or loaded from a tokenizer.json)."""

    def __init__(self, tokenizer, kind: str):
        self.kind = kind
        self._tok = tokenizer
        # Document text must not turn into special ids (see the module docstring).
        tokenizer.encode_special_tokens = True
        vocab = tokenizer.get_vocab(with_added_tokens=True)
        self.vocab_size = max(vocab.values()) + 1 if vocab else 0
        self.special_tokens = {added.content: int(i) for i, added in
                               sorted(tokenizer.get_added_tokens_decoder().items()) if added.special}

    @classmethod
    def from_file(cls, path: str | Path, kind: str = "file") -> "HFTokenizer":
        from tokenizers import Tokenizer

        path = Path(path)
        if not path.is_file():
            raise DataError(f"tokenizer file not found: {path}")
        try:
            return cls(Tokenizer.from_file(str(path)), kind)
        except Exception as err:  # noqa: BLE001  (tokenizers raises a bare Exception on bad JSON)
            raise DataError(f"cannot load the tokenizer {path}: {err}") from None

    @classmethod
    def from_str(cls, text: str, kind: str) -> "HFTokenizer":
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_str(text), kind)

    def encode(self, text: str) -> np.ndarray:
        # One document at a time: single-threaded, so `--workers N` means N busy cores.
        return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, dtype=np.uint32)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return self._tok.decode(np.asarray(ids, dtype=np.int64).ravel().tolist(), skip_special_tokens=False)

    def token_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def token_byte_lengths(self) -> np.ndarray:
        """Bytes of text each id stands for (specials count as one). Byte-level BPE tokens spell
        one byte per character; other tokenizers are measured by decoding each id alone."""
        lengths = np.ones(self.vocab_size, dtype=np.int64)
        byte_level = self.kind == "bpe"
        for token, i in self._tok.get_vocab(with_added_tokens=True).items():
            if token in self.special_tokens:
                continue
            lengths[i] = len(token) if byte_level else max(len(self._tok.decode([i]).encode("utf-8")), 1)
        return lengths

    def to_json(self) -> str:
        return self._tok.to_str()

    def to_manifest(self) -> dict:
        return {"kind": self.kind, "vocab_size": self.vocab_size, "special_tokens": dict(self.special_tokens),
                "path": TOKENIZER_FILE}


Tokenizer = ByteTokenizer | HFTokenizer


def train_bpe(texts: Iterable[str], vocab_size: int, extra_specials: Sequence[str] = ()) -> HFTokenizer:
    """Train a byte-level BPE on `texts` (an iterator is consumed once). Deterministic: the same
    texts in the same order give the same tokenizer.json (checked across processes in the tests).
    Specials: <|endoftext|> = 0, <|pad|> = 1, then `extra_specials`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < MIN_BPE_VOCAB + len(extra_specials):
        raise DataError(f"--vocab-size must be at least {MIN_BPE_VOCAB + len(extra_specials)} for BPE "
                        f"(256 bytes + the special tokens), got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  special_tokens=[EOT, PAD, *extra_specials],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return HFTokenizer(tok, "bpe")


def tokenizer_from_spec(kind: str, json_text: str | None) -> Tokenizer:
    """Rebuild a tokenizer from (kind, tokenizer.json text) — how worker processes get theirs."""
    return ByteTokenizer() if kind == "byte" else HFTokenizer.from_str(json_text, kind)
