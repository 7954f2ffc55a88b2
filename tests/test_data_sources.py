"""configaformer.data.sources: every source kind, read through `prepare`, and every bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from configaformer.data import DataError, PrepareOptions, prepare
from configaformer.data.sources import ReadStats, resolve_source

from .test_data_prepare import read_split_texts

ROWS = ["first row text", "second row, with ünïcödé", "", "third row"]  # the empty one is skipped


def prep(tmp_path: Path, *sources, **kw) -> tuple[dict, list[str]]:
    """Prepare the sources into tmp_path/ds (replacing it), all in the train split; its texts."""
    out = tmp_path / "ds"
    manifest = prepare(out, PrepareOptions(sources=[str(s) for s in sources], val_fraction=0.0, **kw),
                       overwrite=True)
    return manifest, read_split_texts(out, "train")


def keys(spec: str, **kw) -> list[str]:
    return [doc.key for doc in resolve_source(spec, **kw).read(ReadStats())]


def test_text_file_directory_and_glob(tmp_path, monkeypatch):
    root = tmp_path / "corpus"
    (root / "b" / ".hidden").mkdir(parents=True)
    (root / "a.txt").write_text("alpha")
    (root / "b" / "c.md").write_text("gamma")
    (root / "b" / "d.txt").write_text("delta")
    (root / "b" / ".hidden" / "x.txt").write_text("hidden")
    (root / ".dot.txt").write_text("hidden too")
    assert prep(tmp_path, root / "a.txt")[1] == ["alpha"]
    assert prep(tmp_path, root)[1] == ["alpha", "gamma", "delta"]  # sorted, hidden skipped
    assert keys(str(root)) == ["a.txt", "b/c.md", "b/d.txt"]
    monkeypatch.chdir(tmp_path)
    manifest, texts = prep(tmp_path, "corpus/**/*.txt")
    assert texts == ["alpha", "delta"] and manifest["sources"][0]["kind"] == "files"
    assert keys("corpus/**/*.txt") == ["a.txt", "b/d.txt"]  # relative to the glob's fixed prefix
    assert [f[0] for f in manifest["sources"][0]["files"]] == ["a.txt", "b/d.txt"]


def test_jsonl_with_a_named_field_and_forced_kind(tmp_path):
    path = tmp_path / "rows.jsonl"
    lines = [json.dumps({"body": text, "id": i}) for i, text in enumerate(ROWS)]
    path.write_text("\n".join(lines[:2]) + "\n\n" + "\n".join(lines[2:]) + "\n")  # a blank line is no row
    manifest, texts = prep(tmp_path, path, text_field="body")
    assert texts == [ROWS[0], ROWS[1], ROWS[3]] and manifest["stats"]["empty_documents"] == 1
    assert keys(str(path), text_field="body") == ["rows.jsonl#0", "rows.jsonl#1", "rows.jsonl#2", "rows.jsonl#3"]
    plain = tmp_path / "plain.jsonl"
    plain.write_text("not json at all")
    assert prep(tmp_path, f"text:{plain}")[1] == ["not json at all"]


def test_jsonl_invalid_utf8_and_lone_surrogates_are_replaced_and_counted(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"text": "ok \xff bytes"}\n{"text": "lone \\udc80 surrogate"}\n{"text": "clean"}\n')
    manifest, texts = prep(tmp_path, path)
    assert texts == ["ok \ufffd bytes", "lone ? surrogate", "clean"]
    assert manifest["stats"]["invalid_utf8_documents"] == 2


def test_parquet_and_arrow_columns(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.feather
    import pyarrow.parquet

    table = pa.table({"text": ROWS, "n": list(range(len(ROWS)))})
    pyarrow.parquet.write_table(table, tmp_path / "t.parquet", row_group_size=2)
    pyarrow.feather.write_feather(table, tmp_path / "t.arrow")
    for name in ("t.parquet", "t.arrow"):
        manifest, texts = prep(tmp_path, tmp_path / name)
        assert texts == [ROWS[0], ROWS[1], ROWS[3]] and manifest["stats"]["empty_documents"] == 1
    assert keys(str(tmp_path / "t.parquet"))[-1] == "t.parquet#3"
    with pytest.raises(DataError, match=r"t.parquet: no column 'body' \(columns: text, n\); choose the column "
                                        r"with --text-field"):
        prep(tmp_path, tmp_path / "t.parquet", text_field="body")
    with pytest.raises(DataError, match=r"t.arrow: no column 'body'"):
        prep(tmp_path, tmp_path / "t.arrow", text_field="body")
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(DataError, match=r"cannot read .*bad.parquet as parquet"):
        prep(tmp_path, tmp_path / "bad.parquet")


def test_hugging_face_dataset_on_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    single = tmp_path / "hf_single"
    datasets.Dataset.from_dict({"text": ROWS}).save_to_disk(str(single))
    manifest, texts = prep(tmp_path, single)
    assert texts == [ROWS[0], ROWS[1], ROWS[3]] and manifest["sources"][0]["kind"] == "hf"
    assert manifest["sources"][0]["files"]  # the arrow files, hashed
    both = tmp_path / "hf_dict"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"content": ["t1", "t2"]}),
                          "test": datasets.Dataset.from_dict({"content": ["v1"]})}).save_to_disk(str(both))
    assert prep(tmp_path, both, text_field="content")[1] == ["t1", "t2", "v1"]
    assert prep(tmp_path, both, text_field="content", hf_split="test")[1] == ["v1"]
    assert keys(str(both), text_field="content", hf_split="test") == ["hf_dict/test#0"]
    with pytest.raises(DataError, match=r"hf_dict: no split 'valid' \(splits: train, test\); check --hf-split"):
        prep(tmp_path, both, text_field="content", hf_split="valid")
    with pytest.raises(DataError, match=r"hf_dict/train: no column 'text' \(columns: content\)"):
        prep(tmp_path, both)


def test_missing_paths_and_empty_globs(tmp_path):
    with pytest.raises(DataError, match=f"source not found: {tmp_path / 'nope.txt'}"):
        prep(tmp_path, tmp_path / "nope.txt")
    with pytest.raises(DataError, match=r"no files match this glob"):
        prep(tmp_path, tmp_path / "*.nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="source directory has no files: .*empty"):
        prep(tmp_path, tmp_path / "empty")
    with pytest.raises(DataError, match="is a directory, not a jsonl file"):
        prep(tmp_path, f"jsonl:{tmp_path / 'empty'}")
    assert not (tmp_path / "ds").exists()


def test_unreadable_files_are_named(tmp_path, monkeypatch):
    root = tmp_path / "c"
    root.mkdir()
    (root / "good.txt").write_text("fine")
    os.symlink(root / "gone.txt", root / "link.txt")  # a broken link inside a directory source
    with pytest.raises(DataError, match=r"cannot read .*link.txt: No such file or directory"):
        prep(tmp_path, root)
    (root / "link.txt").unlink()
    (root / "locked.txt").write_text("secret")
    real = Path.read_bytes

    def deny(self):
        if self.name == "locked.txt":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", deny)  # chmod 000 would not stop root
    with pytest.raises(DataError, match=r"cannot read .*locked.txt: Permission denied"):
        prep(tmp_path, root)
    assert not (tmp_path / "ds").exists()


def test_bad_jsonl_lines_name_file_and_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "a"}\n{"text": \n')
    with pytest.raises(DataError, match=r"rows.jsonl:2: not valid JSON"):
        prep(tmp_path, path)
    path.write_text('{"text": "a"}\n{"body": "b"}\n')
    with pytest.raises(DataError, match=r"rows.jsonl:2: no field 'text' \(found: body\); choose the field with "
                                        r"--text-field"):
        prep(tmp_path, path)
    path.write_text('{"text": 5}\n')
    with pytest.raises(DataError, match=r"rows.jsonl:1: field 'text' holds int, not text"):
        prep(tmp_path, path)


def test_empty_files_in_every_kind_are_counted(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "a.jsonl").write_bytes(b"")
    (tmp_path / "c" / "b.txt").write_bytes(b"")
    (tmp_path / "c" / "c.txt").write_text("content")
    manifest, texts = prep(tmp_path, tmp_path / "c")
    assert texts == ["content"] and manifest["stats"]["empty_files"] == 2 and manifest["stats"]["files"] == 3
