"""Where the time goes: torch.profiler over training steps and cached decoding steps of one
architecture, configaformer beside the hand-written GPT (the suite's sizes).

    python -m benchmarks.profiling [--arch gpt2] [--steps 3] [--tokens 32] [--top 15] [--threads N]

For each phase it prints the wall time per step, the number of aten operator calls per step (on
a CPU each call costs a few microseconds of dispatch and Python whatever it computes, so at
decoding sizes the count is most of the cost), and the operators with the most self time,
side by side. `--cprofile` adds the Python functions with the most own time in decoding.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time
from collections import Counter

import torch
from torch.profiler import ProfilerActivity, profile

from .archs import ARCH_NAMES, Sizes, gpt_config
from .impls import CF, HAND, build
from .measure import Trainer, prompt_ids


def op_table(prof, steps: int) -> tuple[Counter, Counter]:
    """(self CPU microseconds per step, calls per step) by aten operator."""
    micros, calls = Counter(), Counter()
    for event in prof.key_averages():
        if event.key.startswith("aten::"):
            micros[event.key] += event.self_cpu_time_total / steps
            calls[event.key] += event.count / steps
    return micros, calls


def profiled(fn, steps: int) -> tuple[float, Counter, Counter]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            fn()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    wall = (time.perf_counter() - start) / steps  # without the profiler's own overhead
    return (wall, *op_table(prof, steps))


def show(phase: str, rows: dict[str, tuple[float, Counter, Counter]], top: int) -> None:
    print(f"\n== {phase}")
    for name, (wall, micros, calls) in rows.items():
        print(f"{name:14s} {1000 * wall:8.2f} ms/step  {sum(calls.values()):7.0f} aten calls/step  "
              f"{sum(micros.values()) / 1000:8.2f} ms aten self time/step")
    ops = Counter()
    for _, micros, calls in rows.values():
        ops.update(micros)
    print(f"{'operator (self ms/step, calls/step)':40s}" + "".join(f"{n:>26s}" for n in rows))
    for op, _ in ops.most_common(top):
        print(f"{op:40s}" + "".join(f"{m[op] / 1000:16.3f} ({c[op]:6.0f})" for _, m, c in rows.values()))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profiling", description=__doc__.split("\n")[0])
    p.add_argument("--arch", choices=ARCH_NAMES, default="gpt2")
    p.add_argument("--steps", type=int, default=3, help="training steps profiled (default 3)")
    p.add_argument("--tokens", type=int, default=32, help="tokens decoded (default 32)")
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--threads", type=int)
    p.add_argument("--cprofile", action="store_true", help="also cProfile the decoding")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    sizes = Sizes()
    c = gpt_config(a.arch, sizes)
    impls = {name: build(name, c) for name in (CF, HAND)}
    train = {}
    for name, impl in impls.items():
        trainer = Trainer(impl, sizes)
        trainer.step()  # warm-up: optimizer state, allocator
        train[name] = profiled(trainer.step, a.steps)
    show(f"training step ({a.arch}, batch {sizes.batch} x {sizes.seq_len})", train, a.top)
    prompt, decode = prompt_ids(sizes), {}
    for name, impl in impls.items():
        impl.model.eval()
        impl.generate(prompt, 2)  # warm-up
        wall, micros, calls = profiled(lambda: impl.generate(prompt, a.tokens), 1)
        # per generated token (prefill included, as the suite's generate tok/s)
        decode[name] = (wall / a.tokens, Counter({k: v / a.tokens for k, v in micros.items()}),
                        Counter({k: v / a.tokens for k, v in calls.items()}))
    show(f"cached greedy generation ({a.arch}, batch 1, prompt {sizes.prompt_len}, {a.tokens} tokens), "
         f"per token", decode, a.top)
    if a.cprofile:
        for name, impl in impls.items():
            profiler = cProfile.Profile()
            profiler.runcall(impl.generate, prompt, a.tokens)
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(a.top)
            print(f"\n== cProfile of {name}'s generation ({a.tokens} tokens), by own time\n" +
                  text.getvalue().split("\n\n", 2)[-1])


if __name__ == "__main__":
    main()
