"""configaformer.data: raw text -> sharded, verified token files -> training batches.

    from configaformer.data import PrepareOptions, prepare, TokenDataset, BatchLoader, check_vocab

    prepare("data/stdlib", PrepareOptions(sources=["python-stdlib"], max_bytes=2_000_000))
    dataset = TokenDataset("data/stdlib")
    check_vocab(dataset.manifest, model_vocab_size)             # ValueError if the model is too small
    loader = BatchLoader(dataset.split("train"), batch_size=8, seq_len=256, rank=0, world_size=1, seed=0)
    batch = next(loader)                                        # batch.tokens: (8, 257) int64
"""

from .errors import DataError
from .loader import Batch, BatchLoader, TokenDataset, TokenSplit, document_mask
from .manifest import check_vocab, read_manifest
from .pipeline import PrepareOptions, prepare, split_of
from .shards import verify
from .tokenizer import ByteTokenizer, HFTokenizer, train_bpe

__all__ = ["Batch", "BatchLoader", "ByteTokenizer", "DataError", "HFTokenizer", "PrepareOptions", "TokenDataset",
           "TokenSplit", "check_vocab", "document_mask", "prepare", "read_manifest", "split_of", "train_bpe",
           "verify"]
