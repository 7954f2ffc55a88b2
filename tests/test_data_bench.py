"""Smoke test of benchmarks/bench_tokenize.py: the script runs end to end at a tiny size."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_tokenize.py"


def test_tokenize_benchmark_runs_tiny(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_tokenize", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = module.main(["--tiny", "--json", str(tmp_path / "r.json")])
    rows = {(r["tokenizer"], r["workers"]): r for r in results["rows"]}
    assert set(rows) == {("byte", 1), ("byte", 2), ("bpe", 1), ("bpe", 2)}
    assert all(r["mb_per_s"]["median"] > 0 for r in rows.values())
    assert rows[("bpe", 1)]["tokens_per_byte"] < rows[("byte", 1)]["tokens_per_byte"]  # BPE compresses
    assert results["identical_across_workers"] is True
    assert json.loads((tmp_path / "r.json").read_text())["rows"] == results["rows"]
    assert "| bpe | 2 |" in capsys.readouterr().out
