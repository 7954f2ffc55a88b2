"""What general-purpose compressors reach on the same validation text, in bits per byte.

A language model's bits per byte is its cross-entropy in bits spread over the bytes of the text
it predicted; gzip's and xz's are 8 * compressed size / original size. Both are computed on the
tokens the evaluation reads (special tokens count as one byte, a newline).

On a short text they measure their containers, not the text: gzip -9 adds 20 bytes and xz -9e 32
whatever the input, which on 128 bytes of Python source reads as 8.3 and 11.3 bits per byte. From
MIN_TEXT_BYTES (4 KiB) on, those fixed bytes are under 2% of either output (1.2% and 1.8% on the
standard library's json/ and email/ sources), so shorter texts get no baseline.
"""

from __future__ import annotations

import gzip
import lzma

import numpy as np


def eval_text_bytes(trainer) -> bytes:
    """The bytes of the validation tokens the evaluation reads, in order."""
    loader = trainer.eval_loader
    steps = min(trainer.cfg.eval_batches, loader.steps_per_epoch)
    tokens = np.concatenate([loader.batch_at(0, i).tokens[:, 1:].reshape(-1).numpy() for i in range(steps)])
    tokenizer = trainer.dataset.tokenizer()
    specials = set(tokenizer.special_tokens.values())
    pieces, start = [], 0
    for pos in [i for i, t in enumerate(tokens.tolist()) if t in specials] + [len(tokens)]:
        if pos > start:
            pieces.append(tokenizer.decode(tokens[start:pos]).encode("utf-8"))
        if pos < len(tokens):
            pieces.append(b"\n")
        start = pos + 1
    return b"".join(pieces)


MIN_TEXT_BYTES = 4096


def compressor_bits_per_byte(data: bytes) -> dict[str, float]:
    """gzip's and xz's bits per byte on `data`; {} when it is shorter than MIN_TEXT_BYTES."""
    if len(data) < MIN_TEXT_BYTES:
        return {}
    return {"gzip -9": 8 * len(gzip.compress(data, compresslevel=9)) / len(data),
            "xz -9e": 8 * len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)) / len(data)}
