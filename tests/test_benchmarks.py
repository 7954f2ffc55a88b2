"""Smoke test of benchmarks/bench_train_step.py: the script runs end to end at tiny sizes.

The benchmark is a script, not a package module, so it is loaded from its file path. Only
configaformer is run (`--no-xt`), so the test needs no optional dependency.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_train_step.py"


def load_script():
    spec = importlib.util.spec_from_file_location("bench_train_step", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_step_benchmark_runs_tiny(tmp_path):
    out = tmp_path / "results.json"
    results = load_script().main(["--tiny", "--no-xt", "--json", str(out)])
    cf = results["models"]["configaformer"]
    assert list(results["models"]) == ["configaformer"]
    assert cf["tokens_per_s"]["median"] > 0 and cf["params"] > 0
    assert cf["peak_rss_increase_mib"] >= 0  # measured in a fresh subprocess
    assert json.loads(out.read_text())["models"]["configaformer"]["params"] == cf["params"]
