"""Tokenization throughput of `configaformer data prepare` (MB of source text per second), for the
byte-level and the BPE tokenizer with 1 and 2 worker processes, on the embedded python-stdlib corpus.

Each timed run is a whole `prepare` (read the files, tokenize, write and hash the shards) into a
fresh directory. The BPE is trained once first (its training time is reported on its own) and then
given to every timed run as a tokenizer.json, so the runs time tokenization only. Runs are
interleaved (byte/1, byte/2, bpe/1, bpe/2, then again) so drift of a shared machine hits all alike;
the table gives the median and the range over repeats. Every run's shards are also checked to be
byte-identical across worker counts. The byte tokenizer always encodes in-process (a copy is cheaper
than sending text to a worker), so its two rows time the same code.

Reproduce (the numbers quoted anywhere should say which command made them):

    python benchmarks/bench_tokenize.py --max-bytes 8M --repeats 5 --json bench_results/tokenize.json

`--tiny` runs a very small size once (the smoke test).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from configaformer.data import PrepareOptions, prepare
from configaformer.data.cli import parse_size


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-bytes", default="8M", help="stdlib text per run (default 8M; the whole is ~30M)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per setting (default 3)")
    parser.add_argument("--vocab-size", type=int, default=8192, help="BPE vocabulary (default 8192)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts (default 1 2)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes, one repeat (smoke test)")
    args = parser.parse_args(argv)
    if args.tiny:
        args.max_bytes, args.repeats, args.vocab_size = "40K", 1, 300
    args.max_bytes = parse_size("--max-bytes", args.max_bytes)
    return args


def shards_digest(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(directory.glob("*-*.bin")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_tokenize_") as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        trained = prepare(tmp / "bpe", PrepareOptions(tokenizer="bpe", vocab_size=args.vocab_size,
                                                      max_bytes=args.max_bytes, val_fraction=0.0))
        train_s = time.perf_counter() - start
        tokenizers = {"byte": "byte", "bpe": str(tmp / "bpe" / "tokenizer.json")}
        settings = [(name, workers) for name in tokenizers for workers in args.workers]
        times = {s: [] for s in settings}
        digests, info = {}, {}
        for _ in range(args.repeats):
            for name, workers in settings:
                out = tmp / f"{name}-{workers}"
                options = PrepareOptions(tokenizer=tokenizers[name], max_bytes=args.max_bytes,
                                         val_fraction=0.0, workers=workers)
                start = time.perf_counter()
                manifest = prepare(out, options, overwrite=True)
                times[(name, workers)].append(time.perf_counter() - start)
                digests.setdefault(name, set()).add(shards_digest(out))
                info[name] = (manifest["stats"]["bytes_read"], manifest["splits"]["train"]["tokens"])
    rows = []
    for name, workers in settings:
        mb = info[name][0] / 1e6
        speeds = sorted(mb / t for t in times[(name, workers)])
        rows.append({"tokenizer": name, "workers": workers, "mb": round(mb, 3),
                     "tokens_per_byte": round(info[name][1] / info[name][0], 4),
                     "mb_per_s": {"median": round(statistics.median(speeds), 3), "min": round(speeds[0], 3),
                                  "max": round(speeds[-1], 3)}})
    results = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                           "platform": platform.platform()},
               "max_bytes": args.max_bytes, "repeats": args.repeats, "vocab_size": trained["tokenizer"]["vocab_size"],
               "bpe_train_s": round(train_s, 3), "identical_across_workers": all(len(d) == 1 for d in digests.values()),
               "rows": rows}
    print(f"python-stdlib, {rows[0]['mb']:.2f} MB of text per run, {args.repeats} repeats, "
          f"{os.cpu_count()} CPUs; BPE (vocab {results['vocab_size']}) trained in {train_s:.1f} s")
    print("| tokenizer | workers | tokens/byte | MB/s (median) | MB/s (min–max) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        s = row["mb_per_s"]
        print(f"| {row['tokenizer']} | {row['workers']} | {row['tokens_per_byte']:.3f} | {s['median']:.2f} | "
              f"{s['min']:.2f}–{s['max']:.2f} |")
    print(f"shards identical across worker counts: {results['identical_across_workers']}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
