"""`configaformer data prepare | info | verify`: output, corruption reports, one-line errors (exit 2)."""

from __future__ import annotations

import json

import pytest

from configaformer.cli import main
from configaformer.data import verify
from configaformer.data.cli import parse_size

from .test_data_prepare import write_corpus, write_long_text


@pytest.fixture
def prepared(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus", 30)
    out = tmp_path / "ds"
    assert main(["data", "prepare", "--source", str(corpus), "--out", str(out), "--val-fraction", "0.2",
                 "--shard-tokens", "400", "--quiet"]) == 0
    assert capsys.readouterr().out == ""  # --quiet: no bars, no summary
    return out


def test_prepare_prints_a_summary_and_info_shows_the_manifest(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus", 12)
    assert main(["data", "prepare", "--source", str(corpus), "--source", "python-stdlib", "--max-bytes", "30K",
                 "--out", str(tmp_path / "ds"), "--workers", "2", "--min-chars", "3"]) == 0
    captured = capsys.readouterr()
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    train = manifest["splits"]["train"]
    assert f"train {train['tokens']:,} tokens in {train['documents']:,} documents" in captured.out
    assert "tokenizing" in captured.err  # the progress bar, on stderr
    assert [s["kind"] for s in manifest["sources"]] == ["files", "python-stdlib"]
    assert main(["data", "info", str(tmp_path / "ds")]) == 0
    out = capsys.readouterr().out
    assert "byte tokenizer, vocab_size 258" in out and "<|endoftext|>=256" in out
    assert f"{train['tokens']:,}" in out and "python-stdlib" in out and "invalid utf8 documents" in out


def test_verify_passes_then_reports_one_corrupt_byte(prepared, capsys):
    assert main(["data", "verify", str(prepared)]) == 0
    assert "OK (" in capsys.readouterr().out
    shard = sorted(prepared.glob("train-*.bin"))[1]
    data = bytearray(shard.read_bytes())
    data[5] ^= 0x01
    shard.write_bytes(bytes(data))
    assert main(["data", "verify", str(prepared)]) == 1
    err = capsys.readouterr().err
    assert f"{shard}: sha256 differs from the manifest (corrupt)" in err and "1 problem(s)" in err
    assert len(verify(prepared)) == 1


def test_verify_reports_missing_truncated_and_stray_files(prepared):
    shards = sorted(prepared.glob("train-*.bin"))
    shards[0].unlink()
    shards[1].write_bytes(shards[1].read_bytes()[:-2])
    (prepared / "stray.bin").write_bytes(b"x")
    problems = verify(prepared)
    assert f"{shards[0]}: missing" in problems
    assert any(p.startswith(f"{shards[1]}: ") and "the manifest says" in p for p in problems)
    assert f"{prepared / 'stray.bin'}: not listed in the manifest" in problems


@pytest.mark.parametrize("argv, message", [
    (["--workers", "two"], "--workers: expected an integer, got 'two'"),
    (["--workers", "0"], "--workers must be an integer in [1, 256], got 0"),
    (["--val-fraction", "1.5"], "--val-fraction must be in [0, 1), got 1.5"),
    (["--val-fraction", "half"], "--val-fraction: expected a number, got 'half'"),
    (["--max-bytes", "lots"], "--max-bytes: expected a size such as 2000000, 500K or 2M, got 'lots'"),
    (["--shard-tokens", "0"], "--shard-tokens must be >= 1, got 0"),
    (["--split-piece-chars", "0"], "--split-piece-chars must be an integer >= 1, got 0"),
    (["--tokenizer", "bpe", "--vocab-size", "10"], "--vocab-size must be in [258, 2**32] for BPE, got 10"),
    (["--source", "/no/such/path"], "source not found: /no/such/path"),
    (["--source", "/no/such/*.txt"], "--source '/no/such/*.txt': no files match this glob"),
])
def test_bad_prepare_flags_give_one_line_and_exit_2(tmp_path, capsys, argv, message):
    code = main(["data", "prepare", "--out", str(tmp_path / "ds"), "--quiet", "--source", "python-stdlib",
                 "--max-bytes", "1K", *argv])
    err = capsys.readouterr().err
    assert code == 2 and err == f"configaformer: {message}\n"
    assert not (tmp_path / "ds").exists()


def test_one_text_file_gets_a_val_split_or_a_one_line_error_naming_val_fraction(tmp_path, capsys):
    source = str(write_long_text(tmp_path / "input.txt", 100_000))
    argv = ["data", "prepare", "--source", source, "--out", str(tmp_path / "ds")]
    assert main(argv + ["--quiet"]) == 2  # 100,000 characters at 0.05 are fewer than 16Ki / 0.05: not cut, not drawn
    err = capsys.readouterr().err
    assert err.startswith("configaformer: --val-fraction 0.05 gives an empty validation split") and err.count("\n") == 1
    assert not (tmp_path / "ds").exists()
    assert main(argv + ["--split-piece-chars", "4Ki"]) == 0
    out = capsys.readouterr().out
    assert ", val " in out and " in 0 documents" not in out and "1 long document(s) split by pieces" in out


def test_info_and_verify_of_a_non_dataset_exit_2(tmp_path, capsys):
    for command in ("info", "verify"):
        assert main(["data", command, str(tmp_path)]) == 2
        assert capsys.readouterr().err.startswith(f"configaformer: {tmp_path} is not a prepared dataset")
    (tmp_path / "manifest.json").write_text("{broken")
    assert main(["data", "info", str(tmp_path)]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_prepare_refuses_to_replace_a_different_dataset(prepared, tmp_path, capsys):
    argv = ["data", "prepare", "--source", str(tmp_path / "corpus"), "--out", str(prepared), "--quiet"]
    assert main(argv + ["--tokenizer", "bpe", "--vocab-size", "300"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"configaformer: --out {prepared} already holds a different dataset") and "--overwrite" in err
    assert main(argv + ["--tokenizer", "bpe", "--vocab-size", "300", "--overwrite"]) == 0
    assert json.loads((prepared / "manifest.json").read_text())["tokenizer"]["kind"] == "bpe"


def test_interrupt_exits_130_and_names_the_output(tmp_path, capsys, monkeypatch):
    from configaformer.data import pipeline

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "prepare", interrupted)
    assert main(["data", "prepare", "--out", str(tmp_path / "ds"), "--quiet"]) == 130
    assert capsys.readouterr().err == f"configaformer: interrupted; {tmp_path / 'ds'} was left as it was\n"


@pytest.mark.parametrize("text, value", [("2000000", 2_000_000), ("2M", 2_000_000), ("1.5k", 1500),
                                         ("64Mi", 64 * 2 ** 20), ("3 GB", 3 * 10 ** 9), ("10KiB", 10240)])
def test_sizes(text, value):
    assert parse_size("--max-bytes", text) == value
