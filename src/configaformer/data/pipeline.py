"""`prepare`: raw sources -> a dataset directory of token shards and a manifest.

    read documents (sources, in order) -> skip empty / too short / exact duplicates
      -> split by a hash of each document's key (a long document: of its pieces, `piece_splits`)
      -> [train a BPE on the train documents]
      -> tokenize (in worker processes, results kept in document order) -> append the separator
      -> shards of the train and val splits -> manifest.json, last

Everything goes to a temporary directory beside the output, renamed into place at the end, so an
interrupted run leaves the output as it was. The same inputs and options give byte-identical files,
whatever the number of workers.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import multiprocessing
import os
import shutil
from collections import deque
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import DataError
from .manifest import FORMAT, MANIFEST_FILE, SPLITS, VERSION, read_manifest, write_manifest
from .progress import progress_bar
from .shards import SplitWriter, atomic_directory, clean_stale_temporaries, token_dtype
from .sources import Document, ReadStats, Source, resolve_source
from .tokenizer import (EOT, MIN_BPE_VOCAB, PAD, TOKENIZER_FILE, ByteTokenizer, HFTokenizer, tokenizer_from_spec,
                        train_bpe)

_SPLIT_SALT = b"configaformer-split-v1:"
SPLIT_RULE = ("sha256 of the document key; a document of at least split_piece_chars / val_fraction characters is "
              "cut at line ends into pieces of at most split_piece_chars, every 1/val_fraction-th piece (from an "
              "offset set by the hash) to val; docs/data-splits.md")
_CHUNK_CHARS = 1 << 18   # text per worker task
_IN_FLIGHT = 3           # tasks queued per worker: bounded memory, workers never starve


@dataclass
class PrepareOptions:
    """Every option of `configaformer data prepare` (the flag names are in `validate`'s messages)."""

    sources: list[str] = field(default_factory=lambda: ["python-stdlib"])
    tokenizer: str = "byte"              # byte | bpe | path to a tokenizer.json
    vocab_size: int = 8192               # bpe only
    bpe_train_bytes: int | None = None   # bpe only: train on at most this much text (None = all)
    val_fraction: float = 0.05
    split_piece_chars: int = 16384       # a long document is split in pieces of at most this (see piece_splits)
    separator: str | None = EOT          # special token appended to every document; None = none
    dedup: bool = True                   # drop exact duplicate documents (first one kept)
    min_chars: int = 0                   # drop documents with fewer characters
    max_bytes: int | None = None         # stop reading after this many bytes of document text
    text_field: str = "text"             # jsonl / parquet / arrow / hf column
    label_field: str | None = None       # jsonl / parquet / arrow / hf column of integer labels per record
    hf_split: str | None = None          # one split of a saved DatasetDict (None = all)
    shard_tokens: int = 1 << 26          # tokens per shard file (at most; documents are not cut)
    workers: int = 1                     # BPE/file tokenizing processes (never changes the output)

    def validate(self) -> None:
        def need(ok: bool, flag: str, what: str, value) -> None:
            if not ok:
                raise DataError(f"{flag} must be {what}, got {value!r}")

        need(bool(self.sources), "--source", "given at least once", self.sources)
        need(isinstance(self.workers, int) and 1 <= self.workers <= 256, "--workers", "an integer in [1, 256]",
             self.workers)
        need(0.0 <= self.val_fraction < 1.0, "--val-fraction", "in [0, 1)", self.val_fraction)
        need(isinstance(self.split_piece_chars, int) and self.split_piece_chars >= 1, "--split-piece-chars",
             "an integer >= 1", self.split_piece_chars)
        need(self.min_chars >= 0, "--min-chars", ">= 0", self.min_chars)
        need(self.shard_tokens >= 1, "--shard-tokens", ">= 1", self.shard_tokens)
        need(self.max_bytes is None or self.max_bytes >= 1, "--max-bytes", ">= 1", self.max_bytes)
        need(self.bpe_train_bytes is None or self.bpe_train_bytes >= 1, "--bpe-train-bytes", ">= 1",
             self.bpe_train_bytes)
        need(self.tokenizer != "bpe" or MIN_BPE_VOCAB <= self.vocab_size <= 2 ** 32, "--vocab-size",
             f"in [{MIN_BPE_VOCAB}, 2**32] for BPE", self.vocab_size)
        need(bool(self.text_field), "--text-field", "a non-empty name", self.text_field)

    def settings(self) -> dict:
        """What shapes the data (recorded in the manifest): everything but `workers`."""
        settings = asdict(self)
        del settings["workers"]
        if self.tokenizer != "bpe":
            del settings["vocab_size"], settings["bpe_train_bytes"]
        return settings


def piece_splits(key: str, val_fraction: float, num_pieces: int = 1) -> list[str]:
    """'val' or 'train' for each of a document's `num_pieces` consecutive pieces.

    Systematic sampling with a start drawn from the key: with u = sha256(key) as a number in [0, 1),
    piece i goes to val when u + i * val_fraction passes an integer, i.e. when
    floor(u + i * f) > floor(u + (i - 1) * f). So a document of n pieces gives val floor(n * f) or
    ceil(n * f) pieces, evenly spaced through it; a whole document (n = 1) goes to val when u < f.
    Everything depends on the key and the piece index only: adding documents, or text at a
    document's end, moves no piece. Exact integer arithmetic: the same on every machine.
    """
    digest = hashlib.sha256(_SPLIT_SALT + key.encode("utf-8", "surrogatepass")).digest()
    start = int.from_bytes(digest[:8], "big")  # u * 2**64
    step = Fraction(val_fraction) * 2 ** 64    # f * 2**64, exactly
    scale = step.denominator << 64

    def crossed(i: int) -> int:  # floor(u + i * f), in integers
        return (start * step.denominator + i * step.numerator) // scale

    return ["val" if crossed(i) > crossed(i - 1) else "train" for i in range(num_pieces)]


def split_of(key: str, val_fraction: float) -> str:
    """'val' or 'train' for a whole document: a fixed hash of its key, so it keeps its split forever."""
    return piece_splits(key, val_fraction)[0]


def cut_threshold(opts: PrepareOptions) -> float:
    """Documents of at least this many characters are cut into pieces for the split (inf: none)."""
    return opts.split_piece_chars / opts.val_fraction if opts.val_fraction > 0 else float("inf")


def cut_pieces(text: str, piece_chars: int) -> list[str]:
    """`text` in consecutive pieces of at most `piece_chars` characters, each ending at a line end
    (after its last newline) where it holds one; they join back to `text`."""
    pieces, start = [], 0
    while len(text) - start > piece_chars:
        end = text.rfind("\n", start, start + piece_chars) + 1
        end = end if end > start else start + piece_chars
        pieces.append(text[start:end])
        start = end
    pieces.append(text[start:])
    return pieces


def _split_document(doc: Document, opts: PrepareOptions, counts: _Counts) -> Iterator[tuple[str, Document]]:
    """(split, document) for a kept document: itself, or, when it is long enough to give val a piece of
    its own, the runs of its consecutive pieces that share a split (each stored as one document)."""
    if len(doc.text) < cut_threshold(opts):
        yield split_of(doc.key, opts.val_fraction), doc
        return
    counts.documents_cut += 1
    pieces = cut_pieces(doc.text, opts.split_piece_chars)
    runs = itertools.groupby(zip(piece_splits(doc.key, opts.val_fraction, len(pieces)), pieces),
                             key=lambda pair: pair[0])
    for split, run in runs:
        yield split, Document(doc.key, "".join(text for _, text in run), doc.invalid_utf8, doc.label)


@dataclass
class _Counts:
    documents_read: int = 0
    empty_documents: int = 0
    invalid_utf8_documents: int = 0
    duplicates_removed: int = 0
    too_short: int = 0
    documents_cut: int = 0            # long documents split by pieces (piece_splits)
    longest_document_chars: int = 0   # of the kept documents


def _documents(sources: list[Source], opts: PrepareOptions, stats: ReadStats,
               counts: _Counts) -> Iterator[tuple[str, Document]]:
    """(split, document) for every kept document (or run of pieces of one, `_split_document`), in order."""
    seen: set[bytes] = set()
    taken = 0
    for source in sources:
        for doc in source.read(stats):
            counts.documents_read += 1
            counts.invalid_utf8_documents += doc.invalid_utf8
            if opts.max_bytes is not None:
                taken += len(doc.text.encode("utf-8"))
            if not doc.text.strip():
                counts.empty_documents += 1
            elif len(doc.text) < opts.min_chars:
                counts.too_short += 1
            elif opts.dedup and (digest := hashlib.sha256(doc.text.encode("utf-8")).digest()) in seen:
                counts.duplicates_removed += 1
            else:
                if opts.dedup:
                    seen.add(digest)
                counts.longest_document_chars = max(counts.longest_document_chars, len(doc.text))
                yield from _split_document(doc, opts, counts)
            if opts.max_bytes is not None and taken >= opts.max_bytes:
                return


# ---- tokenizing in worker processes, in document order -----------------------------------------
_WORKER_TOKENIZER = None


def _worker_init(kind: str, json_text: str | None) -> None:
    global _WORKER_TOKENIZER
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread per worker process
    _WORKER_TOKENIZER = tokenizer_from_spec(kind, json_text)


def _encode_chunk(texts: list[str], tokenizer=None) -> tuple[np.ndarray, np.ndarray]:
    """All texts' ids concatenated (uint32) and their lengths: two arrays cross the process pipe."""
    tokenizer = tokenizer or _WORKER_TOKENIZER
    parts = [tokenizer.encode(text) for text in texts]
    lengths = np.fromiter((len(p) for p in parts), dtype=np.int64, count=len(parts))
    return (np.concatenate(parts) if parts else np.zeros(0, np.uint32)), lengths


def _chunks(docs: Iterator[tuple[str, Document]]) -> Iterator[list[tuple[str, Document]]]:
    chunk, size = [], 0
    for item in docs:
        chunk.append(item)
        size += len(item[1].text)
        if size >= _CHUNK_CHARS:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


@contextmanager
def _encoder(tokenizer, workers: int):
    """Yield `encoded(chunks)`: (chunk, ids, lengths) in chunk order, from `workers` processes with a
    bounded number of tasks queued. The pool is forked here, before any progress-bar thread starts."""
    if workers == 1 or isinstance(tokenizer, ByteTokenizer):
        # Byte-level encoding is a copy: sending text to a worker costs more than encoding it here.
        yield lambda chunks: ((chunk, *_encode_chunk([d.text for _, d in chunk], tokenizer)) for chunk in chunks)
        return
    # fork starts workers at once (no re-import of torch); the tokenizer is rebuilt in each worker.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    json_text = tokenizer.to_json() if isinstance(tokenizer, HFTokenizer) else None
    with multiprocessing.get_context(method).Pool(workers, _worker_init, (tokenizer.kind, json_text)) as pool:
        def encoded(chunks):
            pending: deque = deque()
            for chunk in chunks:
                pending.append((chunk, pool.apply_async(_encode_chunk, ([d.text for _, d in chunk],))))
                if len(pending) >= workers * _IN_FLIGHT:
                    done, result = pending.popleft()
                    yield (done, *result.get())
            while pending:
                done, result = pending.popleft()
                yield (done, *result.get())

        yield encoded


# ---- the whole preparation ---------------------------------------------------------------------
def _check_output(out: Path, settings: dict, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} exists and is not a directory")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not (out / MANIFEST_FILE).is_file():
        raise DataError(f"--out {out} is a non-empty directory that is not a configaformer dataset; "
                        f"refusing to replace it (choose another --out)")
    if overwrite:
        return  # a dataset (even one whose manifest no longer reads) may be replaced
    old = read_manifest(out).get("settings", {})
    differs = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
    if differs:
        raise DataError(f"--out {out} already holds a different dataset (it differs in: {', '.join(differs)}); "
                        f"pass --overwrite to replace it, or choose another --out")


def _total_chars(sources: list[Source], opts: PrepareOptions) -> int | None:
    """About how much text the sources hold (for the progress bar); None when unknown."""
    if any(source.kind == "hf" for source in sources):
        return opts.max_bytes
    total = sum(path.stat().st_size for source in sources for path in source.paths if path.is_file())
    return min(total, opts.max_bytes) if opts.max_bytes is not None else total


def _make_tokenizer(opts: PrepareOptions, sources: list[Source], show_progress: bool):
    if opts.tokenizer == "byte":
        return ByteTokenizer()
    if opts.tokenizer != "bpe":
        return HFTokenizer.from_file(opts.tokenizer)
    extra = [opts.separator] if opts.separator not in (None, EOT, PAD) else []

    def train_texts(bar) -> Iterator[str]:
        used = 0
        for split, doc in _documents(sources, opts, ReadStats(), _Counts()):
            if split == "train":
                yield doc.text
                bar.advance(len(doc.text))
                used += len(doc.text.encode("utf-8"))
                if opts.bpe_train_bytes is not None and used >= opts.bpe_train_bytes:
                    break
        bar.describe(f"computing {opts.vocab_size} BPE tokens from")

    total = _total_chars(sources, opts)
    if opts.bpe_train_bytes is not None:
        total = min(total, opts.bpe_train_bytes) if total is not None else opts.bpe_train_bytes
    with progress_bar("reading for BPE", show_progress, total) as bar:
        return train_bpe(train_texts(bar), opts.vocab_size, extra)


def _empty_val_message(opts: PrepareOptions, counts: _Counts) -> str:
    """What to change when --val-fraction drew no validation text at all."""
    longest, piece, fraction = counts.longest_document_chars, opts.split_piece_chars, opts.val_fraction
    fixes, needed = [], math.ceil(piece / longest * 1000) / 1000  # the fraction from which the longest is cut
    if needed < 1:
        fixes.append(f"raise --val-fraction to {needed:g} or more")
    if longest * fraction >= 1:
        fixes.append(f"lower --split-piece-chars to {int(longest * fraction):,} or less")
    return (f"--val-fraction {fraction:g} gives an empty validation split: no whole document was drawn for it and "
            f"none is long enough to be cut into pieces (the longest has {longest:,} characters, cutting starts "
            f"at --split-piece-chars / --val-fraction = {cut_threshold(opts):,.0f}); "
            + ", or ".join(fixes + ["pass --val-fraction 0 for no validation split"]))


def prepare(out: str | Path, options: PrepareOptions | None = None, *, overwrite: bool = False,
            show_progress: bool = False) -> dict:
    """Prepare a dataset in `out` from `options.sources`; returns its manifest.

    Raises DataError (a ValueError naming the path or option) for every bad input, before
    anything is written where possible; `out` is never left half-written.
    """
    opts = options or PrepareOptions()
    opts.validate()
    out = Path(out)
    settings = opts.settings()
    clean_stale_temporaries(out)  # what a killed earlier run into `out` left beside it
    _check_output(out, settings, overwrite)

    def fresh_sources() -> list[Source]:
        sources = [resolve_source(spec, opts.text_field, opts.hf_split) for spec in opts.sources]
        for source in sources:
            source.label_field = opts.label_field
        for source in sources:  # never read an earlier dataset written inside a source directory
            source.paths = [p for p in source.paths if not p.is_relative_to(out.resolve())]
        return sources

    sources = fresh_sources()  # resolving checks every path before any work
    tokenizer = _make_tokenizer(opts, sources, show_progress)
    if opts.tokenizer == "bpe":
        sources = fresh_sources()  # the training pass read them once; start the records afresh
    separator_id = None
    if opts.separator is not None:
        separator_id = tokenizer.token_id(opts.separator)
        if separator_id is None:
            raise DataError(f"--separator {opts.separator!r} is not a token of the tokenizer "
                            f"{opts.tokenizer}; give one of its tokens or 'none'")
    dtype = token_dtype(tokenizer.vocab_size)
    stats, counts = ReadStats(), _Counts()
    with atomic_directory(out) as tmp:
        writers = {split: SplitWriter(tmp, split, dtype, opts.shard_tokens) for split in SPLITS}
        tok_entry = tokenizer.to_manifest()
        if isinstance(tokenizer, HFTokenizer):
            if tokenizer.kind == "file":
                shutil.copyfile(opts.tokenizer, tmp / TOKENIZER_FILE)
            else:
                (tmp / TOKENIZER_FILE).write_text(tokenizer.to_json(), encoding="utf-8")
            tok_entry["sha256"] = hashlib.sha256((tmp / TOKENIZER_FILE).read_bytes()).hexdigest()
        sep = np.asarray([] if separator_id is None else [separator_id], dtype=np.uint32)
        chunks = _chunks(_documents(sources, opts, stats, counts))
        with _encoder(tokenizer, opts.workers) as encoded, \
                progress_bar("tokenizing", show_progress, _total_chars(sources, opts)) as bar:
            for chunk, ids, lengths in encoded(chunks):
                starts = np.concatenate([[0], np.cumsum(lengths)])
                for (split, doc), start, stop in zip(chunk, starts[:-1], starts[1:]):
                    writers[split].add(np.concatenate([ids[start:stop], sep]) if len(sep) else ids[start:stop],
                                       doc.label)
                bar.advance(sum(len(doc.text) for _, doc in chunk))
        splits = {split: writer.close() for split, writer in writers.items()}
        if splits["train"]["documents"] == 0:
            raise DataError(f"no training documents left from {', '.join(opts.sources)} "
                            f"(read {counts.documents_read}: {counts.empty_documents} empty, "
                            f"{counts.too_short} shorter than --min-chars, {counts.duplicates_removed} "
                            f"duplicates, {splits['val']['documents']} in the validation split)")
        if opts.val_fraction > 0 and splits["val"]["documents"] == 0:
            raise DataError(_empty_val_message(opts, counts))
        kept = counts.documents_read - counts.empty_documents - counts.too_short - counts.duplicates_removed
        manifest = {"format": FORMAT, "version": VERSION, "tokenizer": tok_entry, "dtype": dtype.name,
                    "separator_id": separator_id, "settings": settings, "split_rule": SPLIT_RULE,
                    "sources": [source.to_manifest() for source in sources],
                    "stats": {**asdict(stats), **asdict(counts), "documents_kept": kept},
                    "splits": splits}
        write_manifest(tmp, manifest)
    return manifest
