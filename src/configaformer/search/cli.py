"""`configaformer profile CONFIG... [--batch B] [--seq-len T] [--device D] [--json OUT] [--png OUT]`:
one row per config (a model config, a run file, a preset or a named run), as a table, as JSON
and, for several configs, as a comparison plot."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

DEVICES = ("cpu", "cuda", "auto")


def add_profile_command(sub) -> None:
    p = sub.add_parser("profile", help="parameters, FLOPs, peak memory, tokens/s and KV bytes of configs")
    p.add_argument("configs", nargs="+", metavar="CONFIG",
                   help="model config or run files (YAML/JSON), preset names or named runs")
    p.add_argument("--batch", type=int, default=None, help="sequences per step (default: the run file's, else 8)")
    p.add_argument("--seq-len", type=int, default=None, help="tokens per sequence (default: the run file's, else 256)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the run file's, else torch's)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per figure after the warm-up (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    p.add_argument("--decode-tokens", type=int, default=32, help="tokens decoded per timed run (default 32)")
    p.add_argument("--static", action="store_true", help="only what needs no weights: parameters, FLOPs, KV bytes, "
                                                         "attention paths (milliseconds per config)")
    p.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the rows as JSON to OUT")
    p.add_argument("--png", type=Path, default=None, metavar="OUT", help="write a comparison plot to OUT")
    p.set_defaults(func=cmd_profile)


def _check_args(args) -> str:
    from ..cli import UsageError

    for flag, value, low in [("--repeats", args.repeats, 1), ("--warmup", args.warmup, 0),
                             ("--decode-tokens", args.decode_tokens, 0), ("--threads", 1 if args.threads is None else args.threads, 1)]:
        if value < low:
            raise UsageError(f"{flag} must be >= {low}, got {value}")
    if args.device not in DEVICES:
        raise UsageError(f"--device {args.device!r}: choose one of {', '.join(DEVICES)}")
    for flag, path in [("--json", args.json), ("--png", args.png)]:
        if path is not None and not path.parent.is_dir():
            raise UsageError(f"{flag} {path}: the directory {path.parent} does not exist")
    import torch

    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    device = "cpu" if device == "auto" else device
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available")
    return device


def cmd_profile(args) -> int:
    from ..fileio import write_text_atomic
    from .profile import check_target, load_target, profile

    device = _check_args(args)
    targets = [load_target(value, args.batch, args.seq_len, args.threads) for value in args.configs]  # all, first
    for target in targets:  # every config problem before any measurement starts
        check_target(target)
    rows = []
    for target in targets:
        rows.append(profile(target, device, not args.static, args.warmup, args.repeats, args.decode_tokens))
    print_table(rows)
    if args.json is not None:
        write_text_atomic(args.json, json.dumps(rows, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.png is not None:
        plot(rows, args.png)
        print(f"wrote {args.png}")
    return 0


def _rate(row: dict, phase: str, key: str) -> float | None:
    return (row.get(phase) or {}).get(key, {}).get("median")


def _fmt(value: float | None, spec: str = ",.0f") -> str:
    return "" if value is None else format(value, spec)


def print_table(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    columns = ["config", "B x T", "params", "non-emb", "fwd FLOPs/tok", "KV B/tok", "train tok/s", "train MiB",
               "prefill tok/s", "decode tok/s", "infer MiB", "explicit attention"]
    cells = []
    for row in rows:
        explicit = [f"{a['layer']}: {'; '.join(a['reasons'])}" for a in row["attention"] if a["path"] == "explicit"]
        cells.append([row["config"], f"{row['batch']} x {row['seq_len']}", f"{row['params']['total']:,}",
                      f"{row['params']['non_embedding']:,}", f"{row['flops_per_token']['forward']:,}",
                      _fmt(row["kv_bytes_per_token"]), _fmt(_rate(row, "train", "tokens_per_s")),
                      _fmt((row.get("train") or {}).get("peak_mib"), ",.1f"),
                      _fmt(_rate(row, "inference", "prefill_tokens_per_s")),
                      _fmt(_rate(row, "inference", "decode_tokens_per_s")),
                      _fmt((row.get("inference") or {}).get("peak_mib"), ",.1f"),
                      "\n".join(explicit) or "none"])
    shown = [i for i in range(len(columns)) if any(c[i] for c in cells)]  # --static: no measured columns
    table = Table(title="configaformer profile (tokens/s: medians; memory: peak increase over the built model)")
    for i in shown:
        last = i == len(columns) - 1
        table.add_column(columns[i], justify="left" if i == 0 or last else "right", no_wrap=not (i == 0 or last),
                         overflow="fold")  # long paths and reasons fold; the figures never do
    for c in cells:
        table.add_row(*[c[i] for i in shown])
    console = Console(width=None if sys.stdout.isatty() else 200)
    console.print(table)
    for row in rows:
        by_type = ", ".join(f"{kind} {n:,}" for kind, n in row["params"]["by_type"].items())
        console.print(f"{row['config']}: parameters by block type: {by_type}; a training step's FLOPs per token: "
                      f"{row['flops_per_token']['train_step']:,}")


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Four panels, one bar per config: non-embedding parameters, forward FLOPs per token, tokens/s
    (train, prefill, decode) and peak memory (train, inference)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..fileio import atomic_write

    names = [Path(row["config"]).stem for row in rows]  # file names without folders, unless that confuses two
    if len(set(names)) < len(names):
        names = [row["config"] for row in rows]
    names = [n if len(n) <= 28 else n[:12] + "..." + n[-13:] for n in names]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    panels = [
        (axes[0, 0], "non-embedding parameters", {"": [r["params"]["non_embedding"] for r in rows]}),
        (axes[0, 1], "forward FLOPs per token", {"": [r["flops_per_token"]["forward"] for r in rows]}),
        (axes[1, 0], "tokens/s (median)", {phase: [_rate(r, p, key) for r in rows] for phase, p, key in [
            ("train", "train", "tokens_per_s"), ("prefill", "inference", "prefill_tokens_per_s"),
            ("decode", "inference", "decode_tokens_per_s")]}),
        (axes[1, 1], "peak memory over the built model (MiB)", {
            phase: [(r.get(phase) or {}).get("peak_mib") for r in rows] for phase in ("train", "inference")}),
    ]
    for ax, title, series in panels:
        width = 0.8 / len(series)
        for k, (label, values) in enumerate(series.items()):
            xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(rows))]
            ax.bar(xs, [v if v is not None else 0 for v in values], width, label=label or None)
        ax.set_title(title)
        positive = [v for values in series.values() for v in values if v]
        if positive and max(positive) > 30 * min(positive):  # configs of very different sizes: a log axis
            ax.set_yscale("log")
        ax.set_xticks(range(len(rows)), names, rotation=20, ha="right")
        if len(series) > 1:
            ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
