"""configaformer.data.prepare: splits, filters, shards, determinism, atomic output, the stdlib source.

Small corpora are written by the tests into tmp_path; `write_corpus` and `read_split_texts` are
shared with the other test_data_* files.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from configaformer.data import DataError, PrepareOptions, TokenDataset, prepare, read_manifest, split_of
from configaformer.data import pipeline as prepare_module
from configaformer.data.pipeline import cut_pieces, piece_splits
from configaformer.data import shards as shards_module
from configaformer.data.tokenizer import EOT


def write_corpus(root: Path, count: int = 40, prefix: str = "doc") -> Path:
    """`count` distinct small text files under root/ (one nested folder), returns root."""
    (root / "sub").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        folder = root / "sub" if i % 3 == 0 else root
        (folder / f"{prefix}{i:03d}.txt").write_text(f"{prefix} number {i}: " + "abc xyz " * (i % 7 + 1) + "\n")
    return root


def opts(sources, **kw) -> PrepareOptions:
    return PrepareOptions(sources=[str(s) for s in sources], **kw)


def write_long_text(path: Path, chars: int, seed: int = 0) -> Path:
    """One plain-text document of about `chars` characters in lines of 10-80, all distinct."""
    rng = np.random.default_rng(seed)
    lines, size = [], 0
    while size < chars:
        lines.append(f"{len(lines)} " + "".join(rng.choice(list("abcdefgh "), int(rng.integers(8, 78)))) + "\n")
        size += len(lines[-1])
    path.write_text("".join(lines))
    return path


def read_split_texts(directory: Path, split: str) -> list[str]:
    """Decoded documents of a split (separator stripped), in stored order."""
    dataset = TokenDataset(directory)
    part, tokenizer = dataset.split(split), dataset.tokenizer()
    texts = [tokenizer.decode(part.document(i)) for i in range(part.num_documents)]
    return [t[: -len(EOT)] if t.endswith(EOT) else t for t in texts]


def dir_bytes(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_every_document_lands_in_exactly_one_split_with_its_exact_text(tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    manifest = prepare(tmp_path / "ds", opts([corpus], val_fraction=0.3))
    train, val = read_split_texts(tmp_path / "ds", "train"), read_split_texts(tmp_path / "ds", "val")
    originals = sorted(p.read_text() for p in corpus.rglob("*.txt"))
    assert sorted(train + val) == originals
    assert len(val) == manifest["splits"]["val"]["documents"] > 0 and len(train) > len(val)
    for path in corpus.rglob("*.txt"):  # the split is the documented hash of the relative path
        expected = split_of(path.relative_to(corpus).as_posix(), 0.3)
        assert (path.read_text() in val) == (expected == "val")


def test_split_fraction_is_close_and_adding_files_moves_nothing(tmp_path):
    keys = [f"file{i}.txt" for i in range(4000)]
    share = sum(split_of(k, 0.1) == "val" for k in keys) / len(keys)
    assert 0.08 < share < 0.12
    corpus = write_corpus(tmp_path / "corpus", 30)
    prepare(tmp_path / "before", opts([corpus], val_fraction=0.3))
    write_corpus(corpus, 30, prefix="added")
    prepare(tmp_path / "after", opts([corpus], val_fraction=0.3))
    for split in ("train", "val"):
        before, after = read_split_texts(tmp_path / "before", split), read_split_texts(tmp_path / "after", split)
        assert set(before) <= set(after) and len(after) > len(before)


def test_pieces_take_floor_or_ceil_of_their_share_and_a_whole_document_keeps_its_old_split():
    old_rule = [int.from_bytes(hashlib.sha256(b"configaformer-split-v1:" + f"d{i}".encode()).digest()[:8], "big")
                < 0.1 * 2.0 ** 64 for i in range(2000)]  # the rule datasets were prepared with before pieces
    assert [piece_splits(f"d{i}", 0.1)[0] == "val" for i in range(2000)] == old_rule
    for fraction in (0.01, 0.05, 0.3, 0.7):
        for n in (1, 7, 50, 333):
            splits = piece_splits(f"doc{n}", fraction, n)
            share = splits.count("val")
            assert int(n * fraction) <= share <= -int(-n * fraction // 1)  # floor(n f) .. ceil(n f)
            assert splits[: n // 2] == piece_splits(f"doc{n}", fraction, n // 2)  # appending moves no piece
            assert piece_splits(f"doc{n}", 0.0, n) == ["train"] * n


def test_cut_pieces_end_at_line_ends_and_join_back():
    text = "one\ntwo two\n" + "x" * 25 + "\nlast line without end"
    pieces = cut_pieces(text, 10)
    assert "".join(pieces) == text and all(len(piece) <= 10 for piece in pieces)
    assert pieces[:3] == ["one\n", "two two\n", "x" * 10]  # a line longer than a piece is cut inside
    assert cut_pieces("short", 10) == ["short"]


def test_one_text_file_gets_a_val_split_of_about_the_fraction(tmp_path):
    text = write_long_text(tmp_path / "input.txt", 200_000).read_text()
    manifest = prepare(tmp_path / "ds", opts([tmp_path / "input.txt"], val_fraction=0.1, split_piece_chars=2000))
    train, val = read_split_texts(tmp_path / "ds", "train"), read_split_texts(tmp_path / "ds", "val")
    share = sum(map(len, val)) / len(text)
    assert 0.09 < share < 0.11, share  # ~100 pieces of <= 2000 characters: 10 of them, +-1
    assert manifest["stats"]["documents_cut"] == 1 and manifest["stats"]["documents_kept"] == 1
    assert manifest["settings"]["split_piece_chars"] == 2000 and "split_piece_chars" in manifest["split_rule"]
    pos = 0  # the runs of pieces tile the document, in order, alternating splits, cut at line ends
    while pos < len(text):
        run = next(r for r in (train[:1] + val[:1]) if text.startswith(r, pos))
        (train if train[:1] == [run] else val).pop(0)
        assert run.endswith("\n")
        pos += len(run)
    assert train == val == []
    (tmp_path / "other.txt").write_text("another document\n")  # adding a file moves no piece
    prepare(tmp_path / "ds2", opts([tmp_path / "input.txt", tmp_path / "other.txt"], val_fraction=0.1,
                                   split_piece_chars=2000))
    assert set(read_split_texts(tmp_path / "ds", "val")) <= set(read_split_texts(tmp_path / "ds2", "val"))


def test_pieces_of_a_labelled_record_keep_its_label(tmp_path):
    long_text = write_long_text(tmp_path / "long.txt", 20_000).read_text()
    records = [{"text": long_text, "label": 3}] + [{"text": f"short {i}\n", "label": i % 2} for i in range(30)]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    manifest = prepare(tmp_path / "ds", opts([tmp_path / "rows.jsonl"], label_field="label", val_fraction=0.2,
                                             split_piece_chars=1000))
    assert manifest["stats"]["documents_cut"] == 1
    dataset = TokenDataset(tmp_path / "ds")
    label_of = {r["text"]: r["label"] for r in records}
    for split in ("train", "val"):
        labels = dataset.split(split).doc_labels.tolist()
        texts = read_split_texts(tmp_path / "ds", split)
        assert labels == [3 if text in long_text else label_of[text] for text in texts]
        assert any(text in long_text for text in texts)  # the long record has pieces in both splits


def test_an_empty_val_split_is_an_error_naming_val_fraction_and_its_fixes_work(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("a short document\n")
    write_long_text(corpus / "long.txt", 40_000)
    assert split_of("a.txt", 0.05) == split_of("long.txt", 0.05) == "train"  # neither drawn whole
    with pytest.raises(DataError, match=r"--val-fraction 0.05 gives an empty validation split") as err:
        prepare(tmp_path / "ds", opts([corpus]))
    assert not (tmp_path / "ds").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]
    message = str(err.value)
    fraction = float(message.split("raise --val-fraction to ")[1].split()[0])
    piece = int(message.split("lower --split-piece-chars to ")[1].split()[0].replace(",", ""))
    assert "pass --val-fraction 0 for no validation split" in message
    for fix in (dict(val_fraction=fraction), dict(split_piece_chars=piece)):
        manifest = prepare(tmp_path / "ds", opts([corpus], **fix), overwrite=True)
        assert manifest["splits"]["val"]["documents"] > 0 and manifest["stats"]["documents_cut"] == 1
    assert prepare(tmp_path / "ds", opts([corpus], val_fraction=0.0), overwrite=True)["splits"]["val"]["tokens"] == 0


def test_dedup_min_chars_empty_and_invalid_utf8_are_counted(tmp_path):
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "a.txt").write_text("same text here\n")
    (corpus / "b.txt").write_text("same text here\n")          # exact duplicate of a.txt
    (corpus / "c.txt").write_text("tiny")                       # shorter than min_chars
    (corpus / "d.txt").write_bytes(b"")                         # empty file
    (corpus / "e.txt").write_text("  \n\t ")                    # empty document (whitespace only)
    (corpus / "f.txt").write_bytes(b"caf\xe9 latin-1 bytes\n")  # not UTF-8
    manifest = prepare(tmp_path / "ds", opts([corpus], min_chars=5, val_fraction=0.0))
    stats = manifest["stats"]
    assert (stats["files"], stats["empty_files"], stats["documents_read"]) == (6, 1, 5)
    assert (stats["duplicates_removed"], stats["too_short"], stats["empty_documents"]) == (1, 1, 1)
    assert stats["invalid_utf8_documents"] == 1 and stats["documents_kept"] == 2
    assert read_split_texts(tmp_path / "ds", "train") == ["same text here\n", "caf\ufffd latin-1 bytes\n"]
    kept = prepare(tmp_path / "ds2", opts([corpus], dedup=False, val_fraction=0.0))
    assert kept["stats"]["duplicates_removed"] == 0 and kept["stats"]["documents_kept"] == 4


@pytest.mark.parametrize("tokenizer", ["byte", "bpe"])
def test_reruns_and_worker_counts_give_byte_identical_datasets(tmp_path, monkeypatch, tokenizer):
    monkeypatch.setattr(prepare_module, "_CHUNK_CHARS", 100)  # many small tasks, so workers interleave
    corpus = write_corpus(tmp_path / "corpus", 60)
    write_long_text(corpus / "long.txt", 3000)  # split by pieces: 0.2 * 3000 >= 200
    settings = dict(val_fraction=0.2, tokenizer=tokenizer, vocab_size=300, shard_tokens=500, split_piece_chars=200)
    prepare(tmp_path / "one", opts([corpus], workers=1, **settings))
    prepare(tmp_path / "again", opts([corpus], workers=1, **settings))
    prepare(tmp_path / "two", opts([corpus], workers=2, **settings))
    first = dir_bytes(tmp_path / "one")
    assert json.loads(first["manifest.json"])["stats"]["documents_cut"] == 1
    assert sum(name.endswith(".bin") for name in first) > 2  # several shards, documents never cut
    assert dir_bytes(tmp_path / "again") == first == dir_bytes(tmp_path / "two")


def test_shards_hold_whole_documents_and_the_manifest_hashes_them(tmp_path):
    corpus = write_corpus(tmp_path / "corpus", 40)
    manifest = prepare(tmp_path / "ds", opts([corpus], shard_tokens=300, val_fraction=0.0))
    info = manifest["splits"]["train"]
    assert len(info["shards"]) > 3 and info["tokens"] == sum(s["num_tokens"] for s in info["shards"])
    for shard in info["shards"]:
        tokens = np.fromfile(tmp_path / "ds" / shard["tokens_file"], dtype="<u2")
        offsets = np.fromfile(tmp_path / "ds" / shard["index_file"], dtype="<u8")
        assert hashlib.sha256(tokens.tobytes()).hexdigest() == shard["sha256"]
        assert shard["num_tokens"] <= 300 and offsets[0] == 0 and offsets[-1] == len(tokens)
        assert all(tokens[end - 1] == 256 for end in offsets[1:])  # every document ends with <|endoftext|>
        assert np.count_nonzero(tokens == 256) == shard["num_documents"]
    assert manifest["separator_id"] == 256 and manifest["dtype"] == "uint16"


def test_no_separator_and_source_records(tmp_path):
    corpus = write_corpus(tmp_path / "corpus", 5)
    manifest = prepare(tmp_path / "ds", opts([corpus], separator=None, val_fraction=0.0))
    data = np.fromfile(tmp_path / "ds" / "train-00000.bin", dtype="<u2")
    assert manifest["separator_id"] is None and not np.any(data >= 256)
    files = manifest["sources"][0]["files"]
    assert [f[0] for f in files] == sorted(f[0] for f in files) and len(files) == 5
    for rel, size, digest in files:
        raw = (corpus / rel).read_bytes()
        assert size == len(raw) and digest == hashlib.sha256(raw).hexdigest()


def test_python_stdlib_prepares_a_capped_dataset(tmp_path):
    manifest = prepare(tmp_path / "ds", PrepareOptions(sources=["python-stdlib"], max_bytes=200_000,
                                                       val_fraction=0.1, workers=2))
    source = manifest["sources"][0]
    assert source["kind"] == "python-stdlib" and manifest["stats"]["files"] >= 2
    assert all(f[0].endswith(".py") and "site-packages" not in f[0] for f in source["files"])
    assert [f[0] for f in source["files"]] == sorted(f[0] for f in source["files"])
    text_bytes = manifest["stats"]["bytes_read"]
    assert 200_000 <= text_bytes < 200_000 + max(f[1] for f in source["files"]) + 1
    assert manifest["splits"]["train"]["tokens"] > 100_000
    first = (Path(source["root"]) / source["files"][0][0]).read_text(encoding="utf-8", errors="replace")
    texts = read_split_texts(tmp_path / "ds", "train") + read_split_texts(tmp_path / "ds", "val")
    assert first in texts


def test_interrupted_preparation_leaves_no_dataset_and_keeps_the_old_one(tmp_path, monkeypatch):
    corpus = write_corpus(tmp_path / "corpus", 40)
    calls = {"n": 0}
    original = shards_module.SplitWriter.add

    def add_then_interrupt(self, ids, label=-1):
        calls["n"] += 1
        if calls["n"] == 10:
            raise KeyboardInterrupt
        original(self, ids, label)

    monkeypatch.setattr(shards_module.SplitWriter, "add", add_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        prepare(tmp_path / "ds", opts([corpus]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]  # no output, no temporary left
    monkeypatch.setattr(shards_module.SplitWriter, "add", original)
    prepare(tmp_path / "ds", opts([corpus]))
    before = dir_bytes(tmp_path / "ds")
    write_corpus(corpus, 5, prefix="new")
    calls["n"] = 0
    monkeypatch.setattr(shards_module.SplitWriter, "add", add_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        prepare(tmp_path / "ds", opts([corpus]))
    assert dir_bytes(tmp_path / "ds") == before  # the complete old dataset is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "ds"]


def test_output_directory_rules(tmp_path):
    corpus = write_corpus(tmp_path / "corpus", 10)
    prepare(tmp_path / "ds", opts([corpus]))
    prepare(tmp_path / "ds", opts([corpus]))  # same settings: rebuilt in place
    with pytest.raises(DataError, match=r"ds already holds a different dataset \(it differs in: val_fraction\)"):
        prepare(tmp_path / "ds", opts([corpus], val_fraction=0.5))
    prepare(tmp_path / "ds", opts([corpus], val_fraction=0.5), overwrite=True)
    assert read_manifest(tmp_path / "ds")["settings"]["val_fraction"] == 0.5
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("precious")
    with pytest.raises(DataError, match="other is a non-empty directory that is not a configaformer dataset"):
        prepare(other, opts([corpus]), overwrite=True)
    assert (other / "keep.txt").read_text() == "precious"
    inside = prepare(corpus / "ds", opts([corpus]))
    assert prepare(corpus / "ds", opts([corpus]))["stats"] == inside["stats"]  # its own shards are no source
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="file exists and is not a directory"):
        prepare(tmp_path / "file", opts([corpus]))


@pytest.mark.parametrize("field, value, message", [
    ("workers", 0, "--workers must be an integer in"), ("val_fraction", 1.0, "--val-fraction must be in"),
    ("min_chars", -1, "--min-chars must be >= 0"), ("max_bytes", 0, "--max-bytes must be >= 1"),
    ("shard_tokens", 0, "--shard-tokens must be >= 1"), ("sources", [], "--source must be given"),
])
def test_bad_options_name_their_flag(tmp_path, field, value, message):
    options = opts([write_corpus(tmp_path / "c", 2)])
    setattr(options, field, value)
    with pytest.raises(DataError, match=message):
        prepare(tmp_path / "ds", options)
    assert not (tmp_path / "ds").exists()


def test_nothing_left_and_bad_separator_are_errors(tmp_path):
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "a.txt").write_text("short")
    with pytest.raises(DataError, match="no training documents left .* 1 shorter than --min-chars"):
        prepare(tmp_path / "ds", opts([corpus], min_chars=100))
    with pytest.raises(DataError, match="--separator '<sep>' is not a token of the tokenizer byte"):
        prepare(tmp_path / "ds", opts([corpus], separator="<sep>"))
    assert not (tmp_path / "ds").exists()
    manifest = prepare(tmp_path / "ds", opts([corpus], tokenizer="bpe", vocab_size=300, separator="<sep>",
                                             val_fraction=0.0))
    assert manifest["tokenizer"]["special_tokens"] == {"<|endoftext|>": 0, "<|pad|>": 1, "<sep>": 2}
    assert manifest["separator_id"] == 2
    assert json.loads((tmp_path / "ds" / "tokenizer.json").read_text())["model"]["type"] == "BPE"
