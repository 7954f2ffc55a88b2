"""Writing the results: results.json (everything, with every sample), results.md (the tables the
README quotes) and results.png (bar charts; needs matplotlib, from the `bench` extra)."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

SPEED_COLUMNS = [("train", "train tok/s"), ("forward", "forward tok/s"), ("generate", "generate tok/s")]
MEMORY_COLUMNS = [("train", "train peak MiB"), ("generate", "generate peak MiB")]


def _version(dist: str) -> str | None:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def settings(a, argv) -> dict:
    return {"sizes": dataclasses.asdict(a.sizes), "repeats": a.repeats, "warmup": a.warmup, "archs": a.archs,
            "metrics": a.metrics, "compile": a.compile, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "matmul_size": a.matmul_size, "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "processor": _cpu_name(),
            "configaformer": _version("configaformer"), "x_transformers": _version("x-transformers"),
            "argv": list(sys.argv[1:] if argv is None else argv)}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def headline(s: dict) -> str:
    z = s["sizes"]
    return (f"width {z['dim']}, {z['depth']} blocks, {z['heads']} heads, vocab {z['vocab']}; train/forward "
            f"{z['batch']} x {z['seq_len']} tokens; generate batch 1, prompt {z['prompt_len']} + {z['new_tokens']} "
            f"new tokens (greedy); {s['warmup']} warm-up + {s['repeats']} timed rounds; torch {s['torch']}, "
            f"{s['threads']} threads, {s['cpus']} CPUs ({s['processor']})")


def _speed(m: dict | None) -> str:
    if not m:
        return "-"
    t = m["tokens_per_s"]
    return f"{t['median']:,.0f} ({t['min']:,.0f}–{t['max']:,.0f})"


def _ratio(r: dict | float | None) -> str:
    if r is None:
        return "-"
    if isinstance(r, float):
        return f"{r:.2f}"
    return f"{r['median']:.2f} ({r['min']:.2f}–{r['max']:.2f})"


def markdown(results: dict) -> str:
    s = results["settings"]
    lines = [f"`{' '.join(['python -m benchmarks', *s['argv']])}`", "", headline(s) + ".", ""]
    head = ["arch", "model", "params"] + [c for _, c in SPEED_COLUMNS] + [c for _, c in MEMORY_COLUMNS]
    head += ["train FLOP/s (of matmul)"]
    lines += ["| " + " | ".join(head) + " |", "| --- | --- |" + " ---: |" * (len(head) - 2)]
    notes = []
    for arch, res in results["archs"].items():
        for name, o in res["impls"].items():
            if not o["available"]:
                notes.append(f"{arch}, {name}: n/a ({o['reason']})")
                continue
            mem = o.get("memory", {})
            cells = [arch, name, f"{o['params']:,}"] + [_speed(o.get(m)) for m, _ in SPEED_COLUMNS]
            cells += [f"{mem[m]['increase_mib']:.1f}" if m in mem else "-" for m, _ in MEMORY_COLUMNS]
            train = o.get("train")
            cells.append(f"{train['achieved_flops_per_s']['median'] / 1e9:.1f} G "
                         f"({100 * train['matmul_fraction']['median']:.0f}%)" if train else "-")
            lines.append("| " + " | ".join(cells) + " |")
            if "compile_s" in o:
                notes.append(f"{arch}, {name}: compiling took {o['compile_s']:.0f} s (training)"
                             + (f" + {o['forward_compile_s']:.0f} s (forward)" if "forward_compile_s" in o else ""))
    lines += ["", "Ratios, paired per round: speed = tokens/s of the first over the second (> 1: first faster); "
                  "memory = peak growth of the first over the second (< 1: first smaller).", ""]
    head = ["arch", "ratio"] + [c for _, c in SPEED_COLUMNS] + ["train memory", "generate memory"]
    lines += ["| " + " | ".join(head) + " |", "| --- | --- |" + " ---: |" * (len(head) - 2)]
    for arch, res in results["archs"].items():
        for pair, r in res.get("ratios", {}).items():
            cells = [arch, pair] + [_ratio(r.get(m)) for m, _ in SPEED_COLUMNS]
            cells += [_ratio(r.get(f"{m}_memory")) for m, _ in MEMORY_COLUMNS]
            lines.append("| " + " | ".join(cells) + " |")
    peaks = [res["matmul_flops_per_s"]["median"] for res in results["archs"].values() if "matmul_flops_per_s" in res]
    if peaks:
        n = s["matmul_size"]
        notes.append(f"{n}x{n} float32 matmul: {min(peaks) / 1e9:.1f}–{max(peaks) / 1e9:.1f} GFLOP/s "
                     f"(median over each architecture's training rounds)")
    return "\n".join(lines + [""] + [f"- {n}" for n in notes]) + "\n"


def chart(results: dict, path: Path) -> bool:
    """Grouped bars (one group per architecture, one bar per model, whiskers min–max). False when
    matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    archs = list(results["archs"])
    names = list(dict.fromkeys(name for res in results["archs"].values()
                               for name, o in res["impls"].items() if o["available"]))
    panels = SPEED_COLUMNS + [("memory", "train peak MiB (growth)")]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.5))
    width = 0.8 / max(1, len(names))
    for ax, (metric, title) in zip(axes, panels):
        for j, name in enumerate(names):
            xs, ys, lo, hi = [], [], [], []
            for i, arch in enumerate(archs):
                o = results["archs"][arch]["impls"].get(name, {})
                if metric == "memory":
                    m = o.get("memory", {}).get("train")
                    stat = dict.fromkeys(("median", "min", "max"), m["increase_mib"]) if m else None
                else:
                    stat = o.get(metric, {}).get("tokens_per_s")
                if stat:
                    xs.append(i + (j - (len(names) - 1) / 2) * width)
                    ys.append(stat["median"])
                    lo.append(stat["median"] - stat["min"])
                    hi.append(stat["max"] - stat["median"])
            if xs:  # one colour per model in every panel
                ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=name, color=f"C{j}")
        ax.set_title(title)
        ax.set_xticks(range(len(archs)), archs)
    handles = {label: h for ax in axes for h, label in zip(*ax.get_legend_handles_labels())}
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=len(handles), fontsize=8)
    fig.suptitle(headline(results["settings"]), fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    table = markdown(results)
    (out / "results.md").write_text(table, encoding="utf-8")
    print(table)
    if chart(results, out / "results.png"):
        print(f"written: {out / 'results.json'}, {out / 'results.md'}, {out / 'results.png'}")
    else:
        print(f"written: {out / 'results.json'}, {out / 'results.md'} (no chart: matplotlib is not installed; "
              f'pip install -e ".[bench]")')
