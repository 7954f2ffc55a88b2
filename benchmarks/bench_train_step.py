"""The training-step comparison against x-transformers, now part of the suite (`python -m benchmarks`).

Kept so the earlier command (and `make bench`) still works:

    python benchmarks/bench_train_step.py [suite flags] [--json PATH]

runs `python -m benchmarks --archs gpt2 --metrics train [suite flags]` (training steps of the
GPT-2-like model by configaformer, x-transformers and the hand-written GPT, with peak memory) and
also writes the results JSON to PATH.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: make `benchmarks` importable

from benchmarks.suite import main as suite_main  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--json", type=Path)
    known, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    results = suite_main(["--archs", "gpt2", "--metrics", "train", *rest])
    if known.json:
        known.json.parent.mkdir(parents=True, exist_ok=True)
        known.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return results


if __name__ == "__main__":
    main()
