"""Reading a prepared dataset for training: memory-mapped splits and a resumable, rank-sharded loader.

    dataset = TokenDataset("data/stdlib")            # checks the manifest
    train = dataset.split("train")                    # TokenSplit: tokens(start, stop), document(i), ...
    loader = BatchLoader(train, batch_size=8, seq_len=256, rank=0, world_size=1, seed=0, mode="random")
    batch = next(loader)      # batch.tokens (8, 257) int64; batch.inputs / batch.targets (8, 256)
    state = loader.state_dict()                       # plain ints: JSON- and safetensors-friendly
    loader.load_state_dict(state)                     # the same batches, in the same order, again

Examples. With `packing=True` (the default) an example is a window of seq_len + 1 tokens of the
split's documents laid end to end (each ends with the separator token), windows starting at
0, L, 2L, ... so every token is a target exactly once per epoch. `batch.doc_ids` gives each token's
document, and `document_mask(batch.doc_ids)` the (B, L, L) mask that keeps attention inside a
document. With `packing=False` every example starts at a document start (a long document continues
in the next example, stride L); short ones are padded with the pad token and
`batch.padding_mask` is False there (the model's `padding_mask` argument takes batch.input_mask).

Order. An epoch is the list of examples, in file order (`mode="sequential"`) or permuted with a
seed fixed by (seed, epoch) (`mode="random"`; numpy's legacy RandomState, whose stream numpy keeps
frozen across versions). Global step s of an epoch takes the examples
[s * G, (s + 1) * G) with G = batch_size * world_size; rank r gets the r-th block of batch_size of
them, so ranks never overlap, and the union over ranks does not depend on world_size. A last
partial global batch is dropped so that all ranks run the same number of steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import DataError
from .manifest import check_vocab, read_manifest
from .shards import INDEX_DTYPE, LABEL_DTYPE
from .tokenizer import PAD, TOKENIZER_FILE, ByteTokenizer, HFTokenizer

MODES = ("random", "sequential")
IGNORE_INDEX = -100


def _check_size(path: Path, size: int, directory: Path) -> None:
    """DataError unless `path` has the manifest's `size` bytes (a truncated or missing shard): the
    cheap part of `data verify`, done whenever a split is opened (hashes are left to verify)."""
    if not path.is_file():
        raise DataError(f"{path}: missing; run `configaformer data verify {directory}`")
    found = path.stat().st_size
    if found != size:
        raise DataError(f"{path}: {found:,} bytes, the manifest says {size:,} (truncated or changed); run "
                        f"`configaformer data verify {directory}`")


class TokenSplit:
    """One split of a dataset: its shards' tokens as one stream, and document offsets into it."""

    def __init__(self, directory: Path, name: str, info: dict, dtype: np.dtype, pad_id: int = 0):
        self.name, self.num_tokens, self.num_documents = name, info["tokens"], info["documents"]
        self.pad_id = pad_id  # fills the padding of unpacked examples
        self._paths = [directory / shard["tokens_file"] for shard in info["shards"]]
        self._dtype = dtype
        self._maps: list[np.memmap | None] = [None] * len(self._paths)
        starts, doc_starts = [0], [np.zeros(1, np.int64)]
        for shard in info["shards"]:
            _check_size(directory / shard["tokens_file"], shard["num_tokens"] * dtype.itemsize, directory)
            _check_size(directory / shard["index_file"], (shard["num_documents"] + 1) * INDEX_DTYPE.itemsize, directory)
            offsets = np.fromfile(directory / shard["index_file"], dtype=INDEX_DTYPE).astype(np.int64)
            if len(offsets) != shard["num_documents"] + 1 or offsets[-1] != shard["num_tokens"]:
                raise DataError(f"{directory / shard['index_file']}: does not match the manifest; run "
                                f"`configaformer data verify {directory}`")
            doc_starts.append(offsets[1:] + starts[-1])
            starts.append(starts[-1] + shard["num_tokens"])
        self._shard_starts = np.asarray(starts, dtype=np.int64)  # (num_shards + 1,)
        # Per-document labels (data prepare --label-field), or None; -1 marks a document without one.
        self.doc_labels = None
        self.num_label_classes = 0
        if "labels" in info:
            _check_size(directory / info["labels"]["file"], info["documents"] * LABEL_DTYPE.itemsize, directory)
            self.doc_labels = np.fromfile(directory / info["labels"]["file"], dtype=LABEL_DTYPE).astype(np.int64)
            self.num_label_classes = info["labels"]["num_classes"]
        self.doc_starts = np.concatenate(doc_starts)               # (num_documents + 1,)

    def _shard(self, i: int) -> np.memmap:
        if self._maps[i] is None:
            self._maps[i] = np.memmap(self._paths[i], dtype=self._dtype, mode="r")
        return self._maps[i]

    def tokens(self, start: int, stop: int) -> np.ndarray:
        """Tokens [start, stop) of the split (across shard boundaries), as int64."""
        if not 0 <= start <= stop <= self.num_tokens:
            raise IndexError(f"token range [{start}, {stop}) outside split {self.name!r} of {self.num_tokens}")
        parts, i = [], int(np.searchsorted(self._shard_starts, start, side="right")) - 1
        while start < stop:
            base, end = self._shard_starts[i], self._shard_starts[i + 1]
            take = min(stop, end)
            parts.append(self._shard(i)[start - base:take - base])
            start, i = take, i + 1
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

    def doc_index(self, start: int, stop: int) -> np.ndarray:
        """Document number (0-based within the split) of each token in [start, stop)."""
        return np.searchsorted(self.doc_starts, np.arange(start, stop), side="right") - 1

    def document(self, i: int) -> np.ndarray:
        """Tokens of document i (its separator included)."""
        return self.tokens(int(self.doc_starts[i]), int(self.doc_starts[i + 1]))


class TokenDataset:
    """A prepared dataset directory: manifest, tokenizer info and its splits."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        tok = self.manifest["tokenizer"]
        self.vocab_size: int = tok["vocab_size"]
        self.special_tokens: dict[str, int] = tok["special_tokens"]
        self.separator_id: int | None = self.manifest["separator_id"]
        fallback = self.separator_id if self.separator_id is not None else 0
        self.pad_id: int = self.special_tokens.get(PAD, fallback)
        self._dtype = np.dtype(self.manifest["dtype"]).newbyteorder("<")

    def split(self, name: str) -> TokenSplit:
        splits = self.manifest["splits"]
        if name not in splits:
            raise DataError(f"{self.path}: no split {name!r} (splits: {', '.join(splits)})")
        return TokenSplit(self.path, name, splits[name], self._dtype, self.pad_id)

    def tokenizer(self) -> ByteTokenizer | HFTokenizer:
        """The tokenizer that made the dataset (to decode samples)."""
        tok = self.manifest["tokenizer"]
        if tok["kind"] == "byte":
            return ByteTokenizer()
        return HFTokenizer.from_file(self.path / (tok.get("path") or TOKENIZER_FILE), tok["kind"])

    def check_vocab(self, model_vocab_size: int) -> int:
        return check_vocab(self.manifest, model_vocab_size)


@dataclass
class Batch:
    tokens: torch.Tensor        # (B, L + 1) int64 token ids
    doc_ids: torch.Tensor       # (B, L + 1) int64 document number within the split; -1 on padding
    padding_mask: torch.Tensor  # (B, L + 1) bool, True for real tokens
    labels: torch.Tensor | None = None  # (B, L + 1) int64 label of each token's document; -1 = none

    @property
    def inputs(self) -> torch.Tensor:  # (B, L)
        return self.tokens[:, :-1]

    @property
    def targets(self) -> torch.Tensor:  # (B, L), IGNORE_INDEX where the target is padding
        return self.tokens[:, 1:].masked_fill(~self.padding_mask[:, 1:], IGNORE_INDEX)

    @property
    def input_mask(self) -> torch.Tensor:  # (B, L) for the model's padding_mask
        return self.padding_mask[:, :-1]


def document_mask(doc_ids: torch.Tensor) -> torch.Tensor:
    """(B, L) document ids -> (B, L, L) bool: True where query and key are in the same document."""
    return doc_ids[:, :, None] == doc_ids[:, None, :]


class BatchLoader:
    """Batches of examples of seq_len + 1 tokens from a TokenSplit (see the module docstring)."""

    def __init__(self, split: TokenSplit, batch_size: int, seq_len: int, *, rank: int = 0,
                 world_size: int = 1, seed: int = 0, mode: str = "random", packing: bool = True):
        for name, value, low in (("batch_size", batch_size, 1), ("seq_len", seq_len, 1),
                                 ("world_size", world_size, 1), ("seed", seed, 0)):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"BatchLoader: {name} must be an integer >= {low}, got {value!r}")
        if not isinstance(rank, int) or not 0 <= rank < world_size:
            raise ValueError(f"BatchLoader: rank must be in [0, world_size={world_size}), got {rank!r}")
        if mode not in MODES:
            raise ValueError(f"BatchLoader: mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.split, self.batch_size, self.seq_len = split, batch_size, seq_len
        self.rank, self.world_size, self.seed, self.mode = rank, world_size, seed, mode
        self.packing = packing
        self._starts, self._lengths = self._examples()
        self.num_examples = len(self._starts)
        self.global_batch = batch_size * world_size
        self.steps_per_epoch = self.num_examples // self.global_batch
        if self.steps_per_epoch == 0:
            raise ValueError(f"split {split.name!r} has {split.num_tokens} tokens in {split.num_documents} "
                             f"documents: {self.num_examples} examples of seq_len + 1 = {seq_len + 1} tokens, "
                             f"fewer than one global batch (batch_size * world_size = {self.global_batch})")
        self.epoch = self.step = 0
        self._order_epoch, self._order = -1, None

    def _examples(self) -> tuple[np.ndarray, np.ndarray]:
        """(start, length) of every example, in file order."""
        L = self.seq_len
        if self.packing:
            count = max(self.split.num_tokens - 1, 0) // L
            return np.arange(count, dtype=np.int64) * L, np.full(count, L + 1, dtype=np.int64)
        starts, ends = self.split.doc_starts[:-1], self.split.doc_starts[1:]
        chunks = np.maximum(ends - starts - 1 + L - 1, 0) // L      # pieces with >= 2 tokens
        first = np.repeat(starts, chunks)
        within = np.arange(chunks.sum()) - np.repeat(np.cumsum(chunks) - chunks, chunks)
        example_starts = first + within * L
        return example_starts, np.minimum(L + 1, np.repeat(ends, chunks) - example_starts)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if self._order_epoch != epoch:
            if self.mode == "sequential":
                self._order = np.arange(self.num_examples)
            else:
                self._order = np.random.RandomState([self.seed % 2 ** 32, epoch % 2 ** 32]).permutation(
                    self.num_examples)
            self._order_epoch = epoch
        return self._order

    def example_ids(self, epoch: int, step: int) -> np.ndarray:
        """Indices (into the file-order example list) of this rank's examples at (epoch, step)."""
        first = step * self.global_batch + self.rank * self.batch_size
        return self._epoch_order(epoch)[first:first + self.batch_size]

    def batch_at(self, epoch: int, step: int) -> Batch:
        if not 0 <= step < self.steps_per_epoch:
            raise IndexError(f"step {step} outside [0, {self.steps_per_epoch})")
        width = self.seq_len + 1
        tokens = np.full((self.batch_size, width), self.split.pad_id, dtype=np.int64)
        doc_ids = np.full((self.batch_size, width), -1, dtype=np.int64)
        for row, example in enumerate(self.example_ids(epoch, step)):
            start, length = int(self._starts[example]), int(self._lengths[example])
            tokens[row, :length] = self.split.tokens(start, start + length)
            doc_ids[row, :length] = self.split.doc_index(start, start + length)
        doc_ids_t = torch.from_numpy(doc_ids)
        labels = None
        if self.split.doc_labels is not None:
            labels = torch.from_numpy(np.where(doc_ids >= 0, self.split.doc_labels[np.maximum(doc_ids, 0)], -1))
        return Batch(torch.from_numpy(tokens), doc_ids_t, doc_ids_t >= 0, labels)

    def __iter__(self) -> "BatchLoader":
        return self

    def __next__(self) -> Batch:
        batch = self.batch_at(self.epoch, self.step)
        self.step += 1
        if self.step == self.steps_per_epoch:
            self.epoch, self.step = self.epoch + 1, 0
        return batch

    def state_dict(self) -> dict[str, int]:
        """The position of the next batch, and what must match to resume: plain ints only."""
        return {"epoch": self.epoch, "step": self.step, "seed": self.seed, "seq_len": self.seq_len,
                "global_batch": self.global_batch, "num_examples": self.num_examples,
                "packing": int(self.packing), "random": int(self.mode == "random")}

    def load_state_dict(self, state: dict) -> None:
        """Resume at a saved position. rank and world_size may differ from the saving run's as long as
        the global batch is the same (the same examples are then consumed at every global step)."""
        mine = self.state_dict()
        for key, value in mine.items():
            if key not in state:
                raise ValueError(f"loader state lacks {key!r}")
            if key not in ("epoch", "step") and int(state[key]) != value:
                raise ValueError(f"loader state has {key}={int(state[key])}, but this loader has {value}; "
                                 f"it cannot resume a run over different data or batches")
        epoch, step = int(state["epoch"]), int(state["step"])
        if epoch < 0 or not 0 <= step < self.steps_per_epoch:
            raise ValueError(f"loader state position epoch={epoch}, step={step} is out of range")
        self.epoch, self.step = epoch, step
