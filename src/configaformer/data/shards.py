"""Token shards on disk: writing them (atomically, with hashes) and verifying them.

A split is a list of shards. Shard `train-00000` is two raw little-endian files:

    train-00000.bin   the tokens of whole documents, back to back (uint16, or uint32 for a vocabulary
                      above 65,536), each document ending with the separator token when there is one
    train-00000.idx   uint64 document offsets into the .bin: num_documents + 1 entries, 0 first,
                      num_tokens last; document i is tokens[idx[i]:idx[i + 1]]

Raw files (no pickle, no header) are read with numpy.memmap; dtype and sizes are in the manifest,
and the manifest's sha256 of each file lets `verify` find corruption.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from ..fileio import remove_path, sha256_file, stale_temporaries, temp_tag
from .manifest import MANIFEST_FILE, read_manifest

INDEX_DTYPE = np.dtype("<u8")


LABEL_DTYPE = np.dtype("<i4")  # per-document labels, -1 = none


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


class _HashedFile:
    def __init__(self, path: Path):
        self.path, self.digest, self.size = path, hashlib.sha256(), 0
        self.file = open(path, "wb")

    def write(self, data: bytes) -> None:
        self.file.write(data)
        self.digest.update(data)
        self.size += len(data)

    def close(self) -> str:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        return self.digest.hexdigest()


class SplitWriter:
    """Appends documents to the shards of one split; a shard closes before it would pass
    `shard_tokens` (a document is never cut; a longer one gets a shard of its own)."""

    def __init__(self, directory: Path, split: str, dtype: np.dtype, shard_tokens: int):
        self.directory, self.split, self.dtype, self.shard_tokens = directory, split, dtype, shard_tokens
        self.shards: list[dict] = []
        self.documents = self.tokens = 0
        self.max_token_id = -1
        self._file: _HashedFile | None = None
        self._offsets: list[int] = []
        self._labels: list[int] = []  # one per document, -1 = none

    def add(self, ids: np.ndarray, label: int = -1) -> None:
        if self._file is not None and self._offsets[-1] + len(ids) > self.shard_tokens:
            self._close_shard()
        if self._file is None:
            name = f"{self.split}-{len(self.shards):05d}"
            self._file, self._offsets = _HashedFile(self.directory / f"{name}.bin"), [0]
        if len(ids):
            self.max_token_id = max(self.max_token_id, int(ids.max()))
        self._file.write(np.ascontiguousarray(ids, dtype=self.dtype).tobytes())
        self._offsets.append(self._offsets[-1] + len(ids))
        self._labels.append(label)
        self.documents += 1
        self.tokens += len(ids)

    def _close_shard(self) -> None:
        sha = self._file.close()
        index = _HashedFile(self._file.path.with_suffix(".idx"))
        index.write(np.asarray(self._offsets, dtype=INDEX_DTYPE).tobytes())
        self.shards.append({"tokens_file": self._file.path.name, "index_file": index.path.name,
                            "num_tokens": self._offsets[-1], "num_documents": len(self._offsets) - 1,
                            "sha256": sha, "index_sha256": index.close()})
        self._file = None

    def close(self) -> dict:
        if self._file is not None:
            self._close_shard()
        info = {"documents": self.documents, "tokens": self.tokens, "max_token_id": self.max_token_id,
                "shards": self.shards}
        if any(label >= 0 for label in self._labels):  # documents' labels, in document order
            labels = _HashedFile(self.directory / f"{self.split}-labels.bin")
            labels.write(np.asarray(self._labels, dtype=LABEL_DTYPE).tobytes())
            info["labels"] = {"file": labels.path.name, "sha256": labels.close(),
                              "num_classes": max(self._labels) + 1}
        return info


def clean_stale_temporaries(out: Path) -> list[Path]:
    """Remove what killed `atomic_directory(out)` runs left beside `out`: `.NAME.tmp-PID-*` (a
    half-written dataset) and `.NAME.old-PID-*` (the dataset being replaced), only where process PID
    has gone, so another running preparation (of this output or another) keeps its own. A run
    killed between its two renames left `out` missing and the complete old dataset in `.old-`: that
    one is put back as `out`. Returns the paths removed."""
    removed = []
    for path in stale_temporaries(out.parent, re.escape(f".{out.name}.") + r"(tmp|old)-(?P<pid>\d+)-[0-9a-f]+"):
        if ".old-" in path.name and not out.exists() and (path / MANIFEST_FILE).is_file():
            os.rename(path, out)
            continue
        remove_path(path)
        removed.append(path)
    return removed


@contextmanager
def atomic_directory(out: Path) -> Iterator[Path]:
    """Yield a fresh temporary directory beside `out`; on success it replaces `out` by rename, on
    any exception (KeyboardInterrupt included) it is deleted and `out` is left as it was. Its name
    holds this process's id, by which `clean_stale_temporaries` tells a killed run's from a live one's."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tag = temp_tag()
    tmp = out.parent / f".{out.name}.tmp-{tag}"
    tmp.mkdir()
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if out.exists():
            old = out.parent / f".{out.name}.old-{tag}"
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def verify(dataset: str | Path) -> list[str]:
    """Re-hash every shard, index and the tokenizer file against the manifest. Returns the problems
    found (an empty list: the dataset is intact). A missing or unreadable manifest raises DataError."""
    directory = Path(dataset)
    manifest = read_manifest(directory)
    problems: list[str] = []
    itemsize = np.dtype(manifest["dtype"]).itemsize
    tok = manifest["tokenizer"]
    if tok.get("path"):
        path = directory / tok["path"]
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif sha256_file(path) != tok["sha256"]:
            problems.append(f"{path}: sha256 differs from the manifest (file changed or corrupt)")
    for split, info in manifest["splits"].items():
        if "labels" in info:
            path = directory / info["labels"]["file"]
            size = info["documents"] * LABEL_DTYPE.itemsize
            if not path.is_file():
                problems.append(f"{path}: missing")
            elif path.stat().st_size != size or sha256_file(path) != info["labels"]["sha256"]:
                problems.append(f"{path}: does not match the manifest (corrupt)")
        for shard in info["shards"]:
            for key, hash_key, size in (("tokens_file", "sha256", shard["num_tokens"] * itemsize),
                                        ("index_file", "index_sha256", (shard["num_documents"] + 1) * 8)):
                path = directory / shard[key]
                if not path.is_file():
                    problems.append(f"{path}: missing")
                elif path.stat().st_size != size:
                    problems.append(f"{path}: {path.stat().st_size} bytes, the manifest says {size}")
                elif sha256_file(path) != shard[hash_key]:
                    problems.append(f"{path}: sha256 differs from the manifest (corrupt)")
            index_path = directory / shard["index_file"]
            if index_path.is_file() and index_path.stat().st_size == (shard["num_documents"] + 1) * 8:
                offsets = np.fromfile(index_path, dtype=INDEX_DTYPE).astype(np.int64)
                if offsets[0] != 0 or offsets[-1] != shard["num_tokens"] or np.any(np.diff(offsets) < 0):
                    problems.append(f"{index_path}: document offsets are not increasing from 0 to "
                                    f"{shard['num_tokens']}")
    known = {MANIFEST_FILE, tok.get("path")} | {s[k] for info in manifest["splits"].values()
                                                for s in info["shards"] for k in ("tokens_file", "index_file")}
    known |= {info["labels"]["file"] for info in manifest["splits"].values() if "labels" in info}
    problems += [f"{p}: not listed in the manifest" for p in sorted(directory.iterdir()) if p.name not in known]
    return problems
