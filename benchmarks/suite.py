"""The suite: every architecture, built three ways, measured in one process, interleaved.

For each architecture, each metric runs in rounds: one measurement of every implementation per
round, in an order reversed every round, so drift of a shared machine (clock, other load) hits
all alike; ratios are paired per round. The large matmul that the FLOP fraction is taken against
is sampled once per training round too. Peak memory runs last, in fresh subprocesses.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import torch

from . import measure, memory, report
from .archs import ARCH_NAMES, TINY, Sizes, gpt_config, train_step_flops
from .impls import CF, CF_NO_CACHE, COMPILED, HAND, XT, Unavailable, build, without_cache

METRICS = ("train", "forward", "generate")
# (numerator, denominator) of every ratio reported, where both ran.
RATIO_PAIRS = [(CF, XT), (CF, HAND), (CF + COMPILED, HAND + COMPILED), (CF + COMPILED, CF),
               (HAND + COMPILED, HAND), (CF, CF_NO_CACHE)]
SIZE_FLAGS = [f.name for f in dataclasses.fields(Sizes)]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=(__doc__ or "").split("\n")[0])
    p.add_argument("--archs", nargs="+", choices=ARCH_NAMES, default=list(ARCH_NAMES))
    p.add_argument("--metrics", nargs="+", choices=METRICS, default=list(METRICS))
    p.add_argument("--repeats", type=int, help="timed rounds per metric (default 7; --tiny 1)")
    p.add_argument("--warmup", type=int, help="untimed rounds first (default 2; --tiny 1)")
    p.add_argument("--no-xt", action="store_true", help="leave out x-transformers")
    p.add_argument("--compile", action="store_true",
                   help="also time torch.compile'd configaformer and hand-written (~50 s to compile each here)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--matmul-size", type=int, help="n of the n x n matmul for the FLOP fraction (default 2048)")
    p.add_argument("--out", type=Path, default=Path("bench_results"),
                   help="directory for results.json, results.md, results.png (default bench_results)")
    p.add_argument("--tiny", action="store_true", help="tiny sizes, one round (the smoke test)")
    defaults = Sizes()
    for name in SIZE_FLAGS:
        p.add_argument(f"--{name.replace('_', '-')}", type=int, help=f"(default {getattr(defaults, name)})")
    a = p.parse_args(argv)
    base = TINY if a.tiny else defaults
    a.sizes = Sizes(**{name: getattr(a, name) or getattr(base, name) for name in SIZE_FLAGS})
    a.repeats = a.repeats or (1 if a.tiny else 7)
    a.warmup = (1 if a.tiny else 2) if a.warmup is None else a.warmup
    a.matmul_size = a.matmul_size or (256 if a.tiny else 2048)
    if a.sizes.dim % a.sizes.heads:
        p.error(f"--dim ({a.sizes.dim}) must be divisible by --heads ({a.sizes.heads})")
    if min(a.repeats, *dataclasses.astuple(a.sizes)) < 1 or a.warmup < 0:
        p.error("sizes and --repeats must be at least 1, --warmup at least 0")
    return a


def impl_names(a: argparse.Namespace) -> list[str]:
    names = [CF] + ([] if a.no_xt else [XT]) + [HAND]
    return names + ([CF + COMPILED, HAND + COMPILED] if a.compile else [])


def rounds(names: list[str], count: int):
    """Each round's order: as given, then reversed, alternately."""
    for r in range(count):
        yield names if r % 2 == 0 else names[::-1]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_train(impls, a, c, matmul, out) -> list[float]:
    """Times training steps; returns the matmul FLOP/s sampled once per round."""
    trainers = {name: measure.Trainer(impl, a.sizes) for name, impl in impls.items()}
    flops = train_step_flops(c, a.sizes.batch, a.sizes.seq_len)
    for name, trainer in trainers.items():  # first step: compiles, or counts FLOPs (both untimed)
        if name.endswith(COMPILED):
            out[name]["compile_s"], _ = measure.seconds(trainer.step)
        else:
            out[name]["counted_flops_per_step"] = measure.counted_flops(trainer.step)
    for order in rounds(list(trainers), a.warmup):
        for name in order:
            trainers[name].step()
    times = {name: [] for name in trainers}
    peaks = []
    for order in rounds(list(trainers), a.repeats):
        peaks.append(matmul.flops_per_s())
        for name in order:
            elapsed, out[name]["final_loss"] = measure.seconds(trainers[name].step)
            times[name].append(elapsed)
    tokens = a.sizes.batch * a.sizes.seq_len
    for name, ts in times.items():
        out[name]["train"] = {
            "step_s": measure.summarise(ts), "tokens_per_s": measure.summarise([tokens / t for t in ts]),
            "achieved_flops_per_s": measure.summarise([flops / t for t in ts]),
            "matmul_fraction": measure.summarise([flops / t / peak for t, peak in zip(ts, peaks)])}
    return peaks


def run_forward(impls, a, out) -> None:
    ids = measure.forward_ids(a.sizes)
    for impl in impls.values():
        impl.model.eval()
    for name, impl in impls.items():
        if name.endswith(COMPILED):  # compiles the inference graph (untimed)
            out[name]["forward_compile_s"], _ = measure.seconds(measure.forward, impl, ids)
        out[name]["logits_shape"] = list(measure.forward(impl, ids).shape)
    _timed(impls, a, out, "forward", lambda impl: measure.forward(impl, ids), a.sizes.batch * a.sizes.seq_len)


def run_generate(impls, a, out) -> None:
    prompt = measure.prompt_ids(a.sizes)
    gens = {name: impl for name, impl in impls.items() if impl.generate is not None}
    for impl in gens.values():
        impl.model.eval()
    _timed(gens, a, out, "generate", lambda impl: impl.generate(prompt, a.sizes.new_tokens), a.sizes.new_tokens)
    if CF in gens and CF_NO_CACHE in gens:  # the same model and greedy decoding: the same tokens
        cached, recomputed = (gens[name].generate(prompt, a.sizes.new_tokens) for name in (CF, CF_NO_CACHE))
        out[CF]["generate"]["equals_no_cache"] = bool(torch.equal(cached, recomputed))


def _timed(impls, a, out, metric, call, tokens) -> None:
    for order in rounds(list(impls), a.warmup):
        for name in order:
            call(impls[name])
    times = {name: [] for name in impls}
    for order in rounds(list(impls), a.repeats):
        for name in order:
            times[name].append(measure.seconds(call, impls[name])[0])
    for name, ts in times.items():
        out[name][metric] = {"seconds": measure.summarise(ts),
                             "tokens_per_s": measure.summarise([tokens / t for t in ts])}


def run_arch(arch: str, a: argparse.Namespace, matmul: measure.Matmul) -> dict:
    c = gpt_config(arch, a.sizes)
    impls, out = {}, {}
    for name in impl_names(a):
        try:
            impls[name] = build(name, c)
        except Unavailable as exc:
            out[name] = {"available": False, "reason": str(exc)}
            continue
        out[name] = {"available": True, "params": impls[name].num_params}
    if CF in impls and "generate" in a.metrics:  # the same model, decoding without its cache
        impls[CF_NO_CACHE] = without_cache(impls[CF])
        out[CF_NO_CACHE] = {"available": True, "params": impls[CF].num_params}
    log(f"[{arch}] " + ", ".join(f"{n}: {o['params']:,} params" if o["available"] else f"{n}: n/a"
                                 for n, o in out.items()))
    model_impls = {n: i for n, i in impls.items() if n != CF_NO_CACHE}
    peaks = None
    if "train" in a.metrics:
        log(f"[{arch}] training steps")
        peaks = run_train(model_impls, a, c, matmul, out)
    if "forward" in a.metrics:
        log(f"[{arch}] forward passes")
        run_forward(model_impls, a, out)
    if "generate" in a.metrics:
        log(f"[{arch}] generation")
        run_generate(impls, a, out)
    result = {"config": dataclasses.asdict(c), "model_flops_per_train_step": train_step_flops(
        c, a.sizes.batch, a.sizes.seq_len), "impls": out}
    if peaks:
        result["matmul_flops_per_s"] = measure.summarise(peaks)
    return result


def memory_jobs(results: dict) -> list[tuple[str, str, str]]:
    """(arch, impl, phase) for every eager model that ran the phase's metric."""
    jobs = []
    for arch, res in results["archs"].items():
        for name, o in res["impls"].items():
            if not o["available"] or name.endswith(COMPILED) or name == CF_NO_CACHE:
                continue
            jobs += [(arch, name, phase) for phase in ("train", "generate") if phase in o]
    return jobs


def run_memory(a: argparse.Namespace, results: dict) -> None:
    jobs = memory_jobs(results)
    log(f"peak memory: {len(jobs)} subprocesses")
    specs = [{"arch": arch, "impl": name, "phase": phase, "threads": a.threads,
              "sizes": dataclasses.asdict(a.sizes)} for arch, name, phase in jobs]
    for (arch, name, phase), got in zip(jobs, memory.run_jobs(specs, parallel=min(2, os.cpu_count() or 1))):
        results["archs"][arch]["impls"][name].setdefault("memory", {})[phase] = got


def add_ratios(results: dict) -> None:
    """Per architecture: speed ratios paired per round (numerator tokens/s over denominator's, from
    back-to-back measurements) and peak-memory ratios."""
    for res in results["archs"].values():
        impls, ratios = res["impls"], {}
        for num, den in RATIO_PAIRS:
            if not (impls.get(num, {}).get("available") and impls.get(den, {}).get("available")):
                continue
            entry = {}
            for metric in METRICS:
                if metric in impls[num] and metric in impls[den]:
                    n_s, d_s = (impls[x][metric].get("step_s") or impls[x][metric]["seconds"] for x in (num, den))
                    entry[metric] = measure.summarise([d / n for n, d in zip(n_s["samples"], d_s["samples"])])
                n_mem, d_mem = impls[num].get("memory", {}).get(metric), impls[den].get("memory", {}).get(metric)
                if n_mem and d_mem and d_mem["increase_mib"] > 0:
                    entry[f"{metric}_memory"] = n_mem["increase_mib"] / d_mem["increase_mib"]
            if entry:
                ratios[f"{num} / {den}"] = entry
        res["ratios"] = ratios


def main(argv: list[str] | None = None) -> dict:
    a = parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    start = time.perf_counter()
    results = {"settings": report.settings(a, argv), "archs": {}}
    log(report.headline(results["settings"]))
    matmul = measure.Matmul(a.matmul_size)
    for arch in a.archs:
        results["archs"][arch] = run_arch(arch, a, matmul)
    if not a.no_memory:
        run_memory(a, results)
    add_ratios(results)
    results["settings"]["wall_s"] = time.perf_counter() - start
    report.write(results, a.out)
    return results


if __name__ == "__main__":
    main()
