"""The dataset manifest (manifest.json): what a prepared dataset holds and how it was made.

    {"format": "configaformer-dataset", "version": 1,
     "tokenizer": {"kind": "byte" | "bpe" | "file", "vocab_size": 258,
                   "special_tokens": {"<|endoftext|>": 256, "<|pad|>": 257},
                   "path": null | "tokenizer.json", "sha256": null | "<hex>"},
     "dtype": "uint16" | "uint32", "separator_id": 256 | null,
     "settings": {...every option that shaped the data...},
     "split_rule": "<how val_fraction and split_piece_chars assign text to the splits; pipeline.piece_splits>",
     "sources": [{"spec", "kind", "root", "documents", "files": [[path, bytes, sha256], ...]}, ...],
     "stats": {"files", "bytes_read", "empty_files", "documents_read", "empty_documents",
               "invalid_utf8_documents", "duplicates_removed", "too_short", "documents_cut",
               "longest_document_chars", "documents_kept"},
     "splits": {"train": {"documents", "tokens", "max_token_id",
                          "shards": [{"tokens_file", "index_file", "num_tokens", "num_documents",
                                      "sha256", "index_sha256"}, ...]},
                "val": {...}}}

The manifest is written last, so a directory with a manifest.json is complete.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import DataError

MANIFEST_FILE = "manifest.json"
FORMAT = "configaformer-dataset"
VERSION = 1
SPLITS = ("train", "val")


def manifest_path(dataset: str | Path) -> Path:
    path = Path(dataset)
    return path if path.name == MANIFEST_FILE and not path.is_dir() else path / MANIFEST_FILE


def read_manifest(dataset: str | Path) -> dict[str, Any]:
    """The manifest of a dataset directory (or of a manifest.json path), checked for its format."""
    path = manifest_path(dataset)
    if not path.parent.is_dir():
        raise DataError(f"dataset directory not found: {path.parent}")
    if not path.is_file():
        raise DataError(f"{path.parent} is not a prepared dataset: it has no {MANIFEST_FILE} "
                        f"(not prepared, or the preparation did not finish)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"cannot read {path}: {err}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{path} is not a configaformer dataset manifest")
    if manifest.get("version") != VERSION:
        raise DataError(f"{path} has manifest version {manifest.get('version')!r}; this configaformer "
                        f"reads version {VERSION}")
    return manifest


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    text = json.dumps(manifest, indent=1, ensure_ascii=False) + "\n"
    (directory / MANIFEST_FILE).write_text(text, encoding="utf-8")


def check_vocab(dataset: str | Path | dict, model_vocab_size: int) -> int:
    """Refuse a model whose embedding cannot hold every token id of the dataset.

    `dataset` is a dataset directory, its manifest.json, or a manifest dict. Returns the
    tokenizer's vocab_size. Raises ValueError (a DataError) when `model_vocab_size` is smaller.
    """
    manifest = dataset if isinstance(dataset, dict) else read_manifest(dataset)
    tok = manifest["tokenizer"]
    if model_vocab_size < tok["vocab_size"]:
        where = "" if isinstance(dataset, dict) else f" of {dataset}"
        raise DataError(f"the model's vocab_size ({model_vocab_size}) is smaller than the vocabulary of the "
                        f"dataset{where} ({tok['vocab_size']}, {tok['kind']} tokenizer): token ids up to "
                        f"{tok['vocab_size'] - 1} would be out of range; set vocab_size >= {tok['vocab_size']}")
    return tok["vocab_size"]
