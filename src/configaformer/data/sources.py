"""Where documents come from: text files, directories, globs, JSON Lines, Parquet/Arrow, Hugging Face
datasets saved on disk, and the embedded default, the Python standard library's own source files.

A source spec is a string, as given to `configaformer data prepare --source`:

    python-stdlib             the .py files of the running interpreter's stdlib (site-packages excluded)
    notes.txt                 one file = one document (any extension not listed below)
    corpus/                   every file under the directory, recursively (hidden files skipped)
    'logs/**/*.md'            a glob (quote it so the shell leaves it alone)
    rows.jsonl                one document per line, the text in --text-field (default "text")
    table.parquet, t.arrow    one document per row of the --text-field column
    my_hf_dataset/            a directory written by `datasets` `save_to_disk` (Dataset or DatasetDict)

A prefix forces a kind: `text:`, `jsonl:`, `parquet:`, `arrow:` or `hf:` (e.g. `text:rows.jsonl`).
Files of a directory or glob are read by their extension as above. Everything is visited in sorted
order, so the document order is the same on every run and machine.

Every document has a key, its identity: the file's path relative to the source root (the directory,
the glob's fixed prefix, the stdlib folder; the file name for a single file), plus `#row` for
row-based files. The train/validation split hashes this key, so adding files never moves an
existing document to the other split.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .errors import DataError

STDLIB = "python-stdlib"
PREFIXES = ("text", "jsonl", "parquet", "arrow", "hf")
EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".arrow": "arrow",
              ".feather": "arrow"}
INSTALL_DATA = "pip install 'configaformer[data]'"
_ROW_BATCH = 1024


@dataclass(frozen=True)
class Document:
    key: str                    # identity: decides the split, stable when other files are added
    text: str
    invalid_utf8: bool = False  # some bytes were not UTF-8 and became U+FFFD
    label: int = -1             # the record's integer label (--label-field), -1 without one


@dataclass
class ReadStats:
    """Counted while reading, over all sources."""

    files: int = 0
    empty_files: int = 0
    bytes_read: int = 0


def _clean(text: str) -> tuple[str, bool]:
    """Text that encodes to UTF-8 (lone surrogates, e.g. from JSON escapes, become '?')."""
    try:
        text.encode("utf-8")
        return text, False
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8"), True


def _decode(raw: bytes) -> tuple[str, bool]:
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace"), True


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}") from None


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}") from None
    return digest.hexdigest()


def _walk(root: Path, suffix: str | None = None, skip: tuple[str, ...] = ()) -> list[Path]:
    """Regular files under root, sorted by relative path; hidden names and `skip` dirs left out."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=None, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in skip)
        for name in filenames:
            if not name.startswith(".") and (suffix is None or name.endswith(suffix)):
                found.append(Path(dirpath, name))
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _kind_of(path: Path) -> str:
    return EXTENSIONS.get(path.suffix.lower(), "text")


def _is_hf_dir(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (
        (path / "state.json").is_file() and (path / "dataset_info.json").is_file())


@dataclass
class Source:
    """One --source: its spec, kind, root and the files it reads (recorded with size and sha256)."""

    spec: str
    kind: str                   # files, hf or python-stdlib
    root: Path
    paths: list[Path] = field(default_factory=list)
    text_field: str = "text"
    hf_split: str | None = None
    label_field: str | None = None  # integer label per record (--label-field)
    files: list[list] = field(default_factory=list)  # [relative path, bytes, sha256], as read
    documents: int = 0

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix() if self.root != path else path.name

    def read(self, stats: ReadStats) -> Iterator[Document]:
        """Yield every document in order (empty ones too: the caller counts and skips them)."""
        if self.kind == "hf":
            yield from self._read_hf(stats)
            return
        for path in self.paths:
            yield from self._read_file(path, stats)

    def _record(self, path: Path, size: int, digest: str, stats: ReadStats) -> None:
        self.files.append([self._rel(path), size, digest])
        stats.files += 1
        stats.bytes_read += size

    def _read_file(self, path: Path, stats: ReadStats) -> Iterator[Document]:
        kind = _kind_of(path) if self.kind in ("files", STDLIB) else self.kind
        key = (STDLIB + "/" if self.kind == STDLIB else "") + self._rel(path)
        if self.label_field is not None and kind == "text":
            raise DataError(f"--label-field {self.label_field!r}: {path} is a text file; labels come from "
                            f"jsonl, parquet, arrow or Hugging Face records")
        if kind == "text":
            raw = _read_bytes(path)
            self._record(path, len(raw), hashlib.sha256(raw).hexdigest(), stats)
            if not raw:
                stats.empty_files += 1
                return
            text, bad = _decode(raw)
            self.documents += 1
            yield Document(key, text, bad)
            return
        self._record(path, path.stat().st_size, _sha256_file(path), stats)
        if path.stat().st_size == 0:
            stats.empty_files += 1
            return
        rows = (_jsonl_rows(path, self.text_field, self.label_field) if kind == "jsonl"
                else _arrow_rows(path, kind, self.text_field, self.label_field))
        for row, (value, bad, label) in enumerate(rows):
            self.documents += 1
            yield Document(f"{key}#{row}", value, bad, label)

    def _read_hf(self, stats: ReadStats) -> Iterator[Document]:
        for split_name, dataset in _hf_splits(self.root, self.hf_split, self.text_field):
            for cache in dataset.cache_files:
                path = Path(cache["filename"])
                if path.is_file() and path.is_relative_to(self.root):
                    self._record(path, path.stat().st_size, _sha256_file(path), stats)
            prefix = f"{self.root.name}/{split_name}#" if split_name else f"{self.root.name}#"
            row = 0
            columns = [self.text_field] + ([self.label_field] if self.label_field else [])
            missing = [c for c in columns if c not in dataset.column_names]
            if missing:
                raise DataError(f"{self.root}: no column {missing[0]!r} (columns: {', '.join(dataset.column_names)})")
            for batch in dataset.select_columns(columns).iter(batch_size=_ROW_BATCH):
                labels = batch[self.label_field] if self.label_field else [None] * len(batch[self.text_field])
                for value, label in zip(batch[self.text_field], labels):
                    where = f"{self.root} row {row}"
                    text, bad = _value_text(value, where, self.text_field)
                    self.documents += 1
                    yield Document(prefix + str(row), text, bad, _label(label, where, self.label_field))
                    row += 1

    def to_manifest(self) -> dict:
        entry = {"spec": self.spec, "kind": self.kind, "root": str(self.root)}
        if self.kind != STDLIB:
            entry["text_field"] = self.text_field
        if self.label_field is not None:
            entry["label_field"] = self.label_field
        if self.hf_split is not None:
            entry["hf_split"] = self.hf_split
        entry.update(documents=self.documents, files=self.files)
        return entry


def _value_text(value, where: str, text_field: str) -> tuple[str, bool]:
    if value is None:
        return "", False
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _decode(bytes(value))
    if not isinstance(value, str):
        raise DataError(f"{where}: field {text_field!r} holds {type(value).__name__}, not text")
    return _clean(value)


def _label(value, where: str, label_field: str | None) -> int:
    """A record's label: a non-negative integer, or -1 when no label field is read."""
    if label_field is None:
        return -1
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DataError(f"{where}: label field {label_field!r} holds {value!r}; labels are integers >= 0")
    return value


def _jsonl_rows(path: Path, text_field: str, label_field: str | None = None) -> Iterator[tuple[str, bool, int]]:
    try:
        f = open(path, "rb")
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}") from None
    with f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            line, bad = _decode(raw)
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
            for field_name, flag in ((text_field, "--text-field"), (label_field, "--label-field")):
                if field_name is not None and (not isinstance(record, dict) or field_name not in record):
                    keys = ", ".join(map(str, record)) if isinstance(record, dict) else type(record).__name__
                    raise DataError(f"{path}:{lineno}: no field {field_name!r} (found: {keys}); "
                                    f"choose the field with {flag}")
            text, bad_value = _value_text(record[text_field], f"{path}:{lineno}", text_field)
            label = _label(record.get(label_field), f"{path}:{lineno}", label_field)
            yield text, bad or bad_value, label


def _import_pyarrow(what: str):
    try:
        import pyarrow
        import pyarrow.ipc
        import pyarrow.parquet
    except ImportError:
        raise DataError(f"reading {what} needs the optional dependency pyarrow: {INSTALL_DATA}") from None
    return pyarrow


def _arrow_rows(path: Path, kind: str, text_field: str, label_field: str | None = None) -> Iterator[tuple[str, bool, int]]:
    pa = _import_pyarrow(f"{kind} file {path}")
    try:
        if kind == "parquet":
            parquet = pa.parquet.ParquetFile(path)
            names, batches = parquet.schema_arrow.names, None
        else:
            source = pa.memory_map(str(path))
            try:
                reader = pa.ipc.open_file(source)
                batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
            except pa.ArrowInvalid:
                source.seek(0)
                reader = pa.ipc.open_stream(source)
                batches = iter(reader)
            names = reader.schema.names
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"cannot read {path} as {kind}: {err}") from None
    for field_name, flag in ((text_field, "--text-field"), (label_field, "--label-field")):
        if field_name is not None and field_name not in names:
            raise DataError(f"{path}: no column {field_name!r} (columns: {', '.join(names)}); "
                            f"choose the column with {flag}")
    columns = [text_field] + ([label_field] if label_field else [])
    if batches is None:
        batches = parquet.iter_batches(batch_size=_ROW_BATCH, columns=columns)
    row = 0
    for batch in batches:
        texts = batch.column(batch.schema.get_field_index(text_field)).to_pylist()
        labels = (batch.column(batch.schema.get_field_index(label_field)).to_pylist() if label_field
                  else [None] * len(texts))
        for value, label in zip(texts, labels):
            where = f"{path} row {row}"
            yield (*_value_text(value, where, text_field), _label(label, where, label_field))
            row += 1


def _hf_splits(root: Path, split: str | None, text_field: str):
    try:
        import datasets
    except ImportError:
        raise DataError(f"reading the Hugging Face dataset {root} needs the optional dependency "
                        f"`datasets`: {INSTALL_DATA}") from None
    try:
        loaded = datasets.load_from_disk(str(root))
    except Exception as err:  # noqa: BLE001  (datasets raises many types; report them all cleanly)
        raise DataError(f"cannot load the Hugging Face dataset {root}: {err}") from None
    if isinstance(loaded, datasets.DatasetDict):
        names = list(loaded)
        if split is not None and split not in names:
            raise DataError(f"{root}: no split {split!r} (splits: {', '.join(names)}); check --hf-split")
        chosen = [(name, loaded[name]) for name in ([split] if split is not None else names)]
    else:
        if split is not None:
            raise DataError(f"--hf-split {split!r} given, but {root} holds a single Dataset without splits")
        chosen = [("", loaded)]
    for name, dataset in chosen:
        if text_field not in dataset.column_names:
            raise DataError(f"{root}{'/' + name if name else ''}: no column {text_field!r} (columns: "
                            f"{', '.join(dataset.column_names)}); choose the column with --text-field")
    return chosen


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"]).resolve()


def resolve_source(spec: str, text_field: str = "text", hf_split: str | None = None) -> Source:
    """Turn a --source string into a Source (checks that the path exists; reads nothing yet)."""
    if spec == STDLIB:
        root = stdlib_root()
        return Source(spec, STDLIB, root, _walk(root, ".py", skip=("site-packages", "dist-packages",
                                                                  "__pycache__")))
    kind, _, rest = spec.partition(":")
    forced = kind if rest and kind in PREFIXES else None
    target = rest if forced else spec
    if not target:
        raise DataError(f"--source {spec!r}: empty path")
    if forced is None and glob.has_magic(target):
        paths = sorted(Path(os.path.abspath(p)) for p in glob.glob(target, recursive=True)
                       if not os.path.isdir(p))
        if not paths:
            raise DataError(f"--source {spec!r}: no files match this glob")
        parts = Path(target).parts
        fixed = next(i for i, part in enumerate(parts) if glob.has_magic(part))
        root = Path(os.path.abspath(Path(*parts[:fixed]) if fixed else "."))
        return Source(spec, "files", root, paths, text_field)
    path = Path(target)
    if not os.path.lexists(path):
        raise DataError(f"source not found: {path}")
    path = path.resolve()
    if path.is_dir():
        if forced == "hf" or (forced is None and _is_hf_dir(path)):
            return Source(spec, "hf", path, [], text_field, hf_split)
        if forced not in (None, "text"):
            raise DataError(f"--source {spec!r}: {path} is a directory, not a {forced} file")
        paths = _walk(path)
        if not paths:
            raise DataError(f"source directory has no files: {path}")
        return Source(spec, "files" if forced is None else "text", path, paths, text_field)
    if forced == "hf":
        raise DataError(f"--source {spec!r}: a Hugging Face dataset is a directory, {path} is not")
    if not path.exists():
        raise DataError(f"cannot read {path}: broken symbolic link")
    return Source(spec, forced or "files", path, [path], text_field)
