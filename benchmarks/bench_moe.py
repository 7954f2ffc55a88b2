"""An MoE layer against the dense FFN of equal active parameters: speed and memory.

    python benchmarks/bench_moe.py --threads 2 [--repeats 9] [--batch 8 --seq-len 256] [--json PATH]

The MoE side is the `moe` preset's layer (width 256, 16 SwiGLU experts of hidden 128, 4 chosen
by sigmoid scores, 1 shared expert, bias balancing, the balance losses reported as the trainer
collects them). The dense side is a SwiGLU FFN whose hidden width is (top_k + shared) x 128 = 640,
so both run the same expert weights per token (the MoE also has its router, 256 x 16). A second
MoE row adds `capacity_factor: 1.25` (training mode: it drops). Each side is the block alone on
(batch, seq_len, 256) inputs inside a one-layer model, timed as "train" (forward with the reports,
the loss plus the weighted auxiliary losses, backward) and "forward" (eval, no_grad).

Timings: medians (min-max) over interleaved rounds, the order reversed each round, and the
MoE / dense ratio paired per round (above 1: the MoE is slower). Peak memory: each side in a
fresh process (`benchmarks.memory.run_job`), the growth of peak RSS over 3 training passes
(activations and gradients; the weights are in the baseline).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: make `benchmarks` importable

import torch  # noqa: E402

from benchmarks.memory import TRAIN_STEPS, peak_rss_mib, run_job  # noqa: E402

SWIGLU = {"num_projections": 2, "num_gelu": 1, "activation": "silu", "bias_bool": False}
MOE = {"type": "MoE", "num_experts": 16, "top_k": 4, "num_shared_experts": 1, "ff_mult": 0.5, **SWIGLU,
       "router_score": "sigmoid", "bias_update_rate": 0.001, "aux_loss_weight": 0.0001, "z_loss_weight": 0.0}
SIDES = {"dense FFN": {"type": "FFN", "ff_mult": 2.5, **SWIGLU}, "MoE": MOE,
         "MoE, capacity 1.25": dict(MOE, capacity_factor=1.25)}


def build(layer: dict, dim: int):
    """(the block, a context maker, the layer's total and active parameters)."""
    from configaformer import Transformer

    model = Transformer({"dim_model": dim, "vocab_size": 16, "classifiers": [16], "layers": [layer]})
    cfg, layer_cfg = model.config, model.config.layers[0]
    return model, model.layers[0].block, layer_cfg.block_params(cfg), layer_cfg.active_block_params(cfg)


def train_pass(model, block, h: torch.Tensor) -> None:
    from configaformer.context import aux_loss

    ctx = model.make_context(h.shape[1], h.dtype, None)
    ctx.reports = {}
    y = block(h, ctx)
    (y.square().mean() + aux_loss(ctx.reports)).backward()


def forward_pass(model, block, h: torch.Tensor) -> None:
    with torch.no_grad():
        block(h, model.make_context(h.shape[1], h.dtype, None))


def memory(job: dict) -> dict:
    """In the subprocess: peak RSS growth over TRAIN_STEPS training passes of one side."""
    torch.set_num_threads(job["threads"])
    model, block, _, _ = build(SIDES[job["side"]], job["dim"])
    h = torch.randn(job["batch"], job["seq_len"], job["dim"], requires_grad=True)
    before, source = peak_rss_mib()
    for _ in range(TRAIN_STEPS):
        model.zero_grad(set_to_none=True)
        train_pass(model.train(), block, h)
    after, _ = peak_rss_mib()
    return {"increase_mib": after - before, "source": source}


def timed(sides: dict, h: torch.Tensor, phase: str, repeats: int, warmup: int) -> dict[str, list[float]]:
    run = train_pass if phase == "train" else forward_pass
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    for r in range(warmup + repeats):
        for name in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
            model, block = sides[name]
            model.train(phase == "train")
            model.zero_grad(set_to_none=True)
            start = time.perf_counter()
            run(model, block, h)
            if r >= warmup:
                seconds[name].append(time.perf_counter() - start)
    return seconds


def summary(samples: list[float]) -> dict:
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples), "samples": samples}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--json", type=Path)
    a = parser.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    built = {name: build(layer, a.dim) for name, layer in SIDES.items()}
    sides = {name: (model, block) for name, (model, block, _, _) in built.items()}
    h = torch.randn(a.batch, a.seq_len, a.dim, requires_grad=True)
    results: dict = {"settings": {k: v for k, v in vars(a).items() if k != "json"}, "sides": {}}
    times = {phase: timed(sides, h, phase, a.repeats, a.warmup) for phase in ("train", "forward")}
    tokens = a.batch * a.seq_len
    dense = "dense FFN"
    for name, (_, _, total, active) in built.items():
        row: dict = {"params": total, "active_params": active}
        for phase, seconds in times.items():
            row[f"{phase}_tokens_per_s"] = summary([tokens / s for s in seconds[name]])
            row[f"{phase}_ratio_to_dense"] = summary([s / d for s, d in zip(seconds[name], seconds[dense])])
        if not a.no_memory:
            job = {"side": name, "dim": a.dim, "batch": a.batch, "seq_len": a.seq_len, "threads": a.threads}
            row["train_peak_increase_mib"] = run_job(job, module="benchmarks.bench_moe")["increase_mib"]
        results["sides"][name] = row
    print(table(results))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(results, indent=2))
    return results


def table(results: dict) -> str:
    lines = ["| layer | params | active | train tok/s | train time / dense | forward tok/s | forward time / dense "
             "| train peak MiB |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, row in results["sides"].items():
        cells = [name, f"{row['params']:,}", f"{row['active_params']:,}"]
        for phase in ("train", "forward"):
            speed, ratio = row[f"{phase}_tokens_per_s"], row[f"{phase}_ratio_to_dense"]
            cells += [f"{speed['median']:,.0f} ({speed['min']:,.0f}-{speed['max']:,.0f})",
                      f"{ratio['median']:.2f} ({ratio['min']:.2f}-{ratio['max']:.2f})"]
        cells.append(f"{row['train_peak_increase_mib']:.0f}" if "train_peak_increase_mib" in row else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) == 2 and sys.argv[1].startswith("{"):  # a memory job, in its own process
        print(json.dumps(memory(json.loads(sys.argv[1]))))
    else:
        main()
