"""The large fuzz profile: thousands of configs drawn from the registered schemas (tests/fuzz.py),
each checked for every property, with the figures the README reports.

    python -m benchmarks.fuzz_configs --examples 5000 --out bench_results/fuzz.json

Runs in pieces of `--piece` examples (piece k draws with hypothesis seed k), saving the results
after each piece, so a long run can be stopped and resumed: pieces already in `--out` are kept and
skipped; `--max-seconds` stops after the piece that crosses the limit. Needs the dev extras
(hypothesis) and runs from the repository root (it imports tests/fuzz.py).

The report counts examples drawn, configs checked (each drawn one, and the repair of an invalid
one: tests/fuzz.py, `repair`), valid and invalid configs, and the failures (goal 0 each):
exceptions other than ConfigError (by cause), ConfigErrors with a problem not naming a key path,
non-finite outputs or gradients from valid configs, cache mismatches and reload mismatches.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

import torch
from hypothesis import HealthCheck, Phase, given, seed, settings

from configaformer.fileio import write_text_atomic
from tests.fuzz import Outcome, check_drawn, configs


def run_piece(index: int, examples: int) -> dict:
    """Check `examples` configs drawn with hypothesis seed `index`; counts and failures."""
    counts: collections.Counter = collections.Counter()
    failures: dict[str, dict] = {}

    @seed(index)
    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(configs())
    def piece(config: dict) -> None:
        counts["drawn"] += 1
        for config, outcome in check_drawn(config):  # noqa: B020 (the repaired config, when there is one)
            counts[outcome.kind] += 1
            if outcome.failed:
                entry = failures.setdefault(f"{outcome.kind}: {outcome.detail}", {"count": 0, "example": config})
                entry["count"] += 1

    piece()
    return {"counts": dict(counts), "failures": failures}


def summarize(pieces: dict[str, dict]) -> dict:
    counts: collections.Counter = collections.Counter()
    failures: dict[str, dict] = {}
    for result in pieces.values():
        counts.update(result["counts"])
        for cause, entry in result["failures"].items():
            merged = failures.setdefault(cause, {"count": 0, "example": entry["example"]})
            merged["count"] += entry["count"]
    checked = sum(n for kind, n in counts.items() if kind != "drawn")
    return {"examples": counts["drawn"], "checked": checked, "valid": counts["valid"], "invalid": counts["invalid"],
            **{kind: counts[kind] for kind in Outcome.FAILURES},
            "failures": dict(sorted(failures.items(), key=lambda item: -item[1]["count"]))}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=5000, help="examples in all (default 5000)")
    parser.add_argument("--piece", type=int, default=250, help="examples per saved piece (default 250)")
    parser.add_argument("--out", type=Path, default=Path("bench_results/fuzz.json"))
    parser.add_argument("--max-seconds", type=float, default=None, help="stop after the piece that passes this")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    if args.examples < 1 or args.piece < 1:
        parser.error("--examples and --piece must be at least 1")
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run(args, parser, argv)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser, argv: list[str] | None) -> dict:
    saved = json.loads(args.out.read_text(encoding="utf-8")) if args.out.is_file() else {}
    if saved and saved.get("piece") != args.piece:
        parser.error(f"{args.out} was written with --piece {saved.get('piece')}; use it or another --out")
    pieces: dict[str, dict] = saved.get("pieces", {})
    start = time.perf_counter()
    for index in range(-(-args.examples // args.piece)):
        if str(index) in pieces:
            continue
        size = min(args.piece, args.examples - index * args.piece)
        began = time.perf_counter()
        pieces[str(index)] = dict(run_piece(index, size), seconds=round(time.perf_counter() - began, 1))
        report = {"command": "python -m benchmarks.fuzz_configs " + " ".join(sys.argv[1:] if argv is None else argv),
                  "piece": args.piece, "summary": summarize(pieces), "pieces": pieces}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(args.out, json.dumps(report, indent=1, default=repr))
        done = report["summary"]
        print(f"piece {index}: {done['examples']} examples so far, {done['checked']} configs checked, {done['valid']} valid, "
              f"{sum(done[k] for k in Outcome.FAILURES)} failures", flush=True)
        if args.max_seconds is not None and time.perf_counter() - start > args.max_seconds:
            break
    summary = summarize(pieces)
    print(json.dumps({k: v for k, v in summary.items() if k != "failures"}))
    for cause, entry in summary["failures"].items():
        print(f"{entry['count']:5d}  {cause}\n       e.g. {json.dumps(entry['example'], default=repr)}")
    return summary


if __name__ == "__main__":
    main()
