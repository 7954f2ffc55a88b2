"""Training-step speed and peak memory: configaformer against lucidrains' x-transformers.

One training step = forward, cross-entropy on next-token targets, backward, AdamW step. The same
GPT-2-like decoder is built both ways (pre-norm LayerNorm, causal fused SDPA attention without
biases, GELU MLP with biases, final norm, untied bias-free output layer, no absolute positions),
and the two are timed in one process, interleaved step by step with the order flipped every
repeat, so drift of the machine (clock, other load) hits both alike.

Peak memory: CPU torch keeps no allocator statistics, so each model runs a few steps in a fresh
subprocess (`--measure-memory NAME`) that reports how much its peak resident set size grew over
those steps: activations, gradients and optimizer state (see `peak_rss_mib` for why Linux reads
VmHWM and not ru_maxrss).

Reproduce (the numbers quoted anywhere should say which command made them):

    pip install -e ".[bench]"
    python benchmarks/bench_train_step.py --threads 2 --json bench_results/train_step.json

`--tiny` runs very small sizes once (the smoke test); `--no-xt` benchmarks configaformer alone.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

CF, XT = "configaformer", "x-transformers"
INSTALL_HINT = 'pip install -e ".[bench]"'

# Sizes when a flag is not given: a small GPT-2-like model, and a tiny one for the smoke test.
DEFAULTS = dict(dim=256, depth=4, heads=8, seq_len=256, batch=8, vocab=8192, repeats=7, warmup=2)
TINY = dict(dim=32, depth=1, heads=2, seq_len=16, batch=2, vocab=64, repeats=1, warmup=1)
MEMORY_STEPS = 3  # training steps run while the subprocess watches its peak RSS
LR = 3e-4


# ---- the two models --------------------------------------------------------------------------
def configaformer_config(a: argparse.Namespace) -> dict:
    """The decoder in configaformer's config language. Attention without biases, as x-transformers
    has none there; the one remaining difference is LayerNorm bias (x-transformers' norms have
    only a gain), (2 * depth + 1) * dim parameters."""
    return {
        "dim_model": a.dim,
        "vocab_size": a.vocab,
        "dim_rope": 0,  # no positions at all, matching use_abs_pos_emb=False below
        "classifiers": [{"num_classes": a.vocab, "head_type": "linear", "bias_bool": False}],
        "layers": [{"type": "Attention", "num_heads": a.heads, "bias_bool": False},
                   {"type": "FFN", "ff_mult": 4}] * a.depth,
    }


def build_configaformer(a: argparse.Namespace) -> tuple[torch.nn.Module, Callable]:
    import configaformer

    model = configaformer.Transformer(configaformer_config(a))
    return model, lambda ids: model(ids)[0]  # one classifier: its (B, L, V) logits


def xtransformers_available() -> bool:
    try:
        import x_transformers  # noqa: F401
    except ImportError:
        return False
    return True


def build_xtransformers(a: argparse.Namespace) -> tuple[torch.nn.Module, Callable]:
    from x_transformers import Decoder, TransformerWrapper

    model = TransformerWrapper(
        num_tokens=a.vocab,
        max_seq_len=a.seq_len,
        use_abs_pos_emb=False,
        attn_layers=Decoder(
            dim=a.dim, depth=a.depth, heads=a.heads,
            attn_dim_head=a.dim // a.heads,  # inner width = dim, as configaformer's dim_attn default
            attn_flash=True,  # torch's fused scaled_dot_product_attention, as configaformer uses
            ff_mult=4,
        ),
    )
    return model, model  # forward returns the (B, L, V) logits


BUILDERS = {CF: build_configaformer, XT: build_xtransformers}


# ---- one training step -----------------------------------------------------------------------
class Trainer:
    """A model, its AdamW optimizer and a fixed batch; `step()` runs one training step."""

    def __init__(self, name: str, a: argparse.Namespace, seed: int = 0):
        torch.manual_seed(seed)
        self.name = name
        self.model, self.logits_fn = BUILDERS[name](a)
        self.model.train()
        self.num_params = sum(p.numel() for p in self.model.parameters())
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=LR)
        generator = torch.Generator().manual_seed(seed)
        self.tokens = torch.randint(0, a.vocab, (a.batch, a.seq_len + 1), generator=generator)  # (B, L+1)

    def step(self) -> float:
        inputs, targets = self.tokens[:, :-1], self.tokens[:, 1:]  # (B, L) each
        logits = self.logits_fn(inputs)  # (B, L, V)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.item()


def timed_step(trainer: Trainer) -> tuple[float, float]:
    """(seconds, loss) of one step. CPU ops run synchronously, so wall time is the step's time."""
    start = time.perf_counter()
    loss = trainer.step()
    return time.perf_counter() - start, loss


def summarise(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "samples": values}


# ---- peak memory, in a fresh process ---------------------------------------------------------
def peak_rss_mib() -> tuple[float, str]:
    """(peak resident set size of this process so far in MiB, where the number came from).

    On Linux this reads VmHWM from /proc/self/status rather than ru_maxrss: Linux carries
    ru_maxrss over across execve, so a subprocess started by a parent that once held 1.5 GiB
    reports 1.5 GiB from its first line on and the increase over the steps reads as zero.
    VmHWM belongs to the address space, which exec replaces, so it starts afresh."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10, "VmHWM"  # kB
    import resource  # elsewhere: ru_maxrss (fine as long as the parent's peak stays below ours)

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (peak / 2**20 if sys.platform == "darwin" else peak / 2**10), "ru_maxrss"  # macOS: bytes


def measure_memory(name: str, a: argparse.Namespace) -> dict:
    """Run in the subprocess: build, then peak RSS before and after MEMORY_STEPS steps."""
    trainer = Trainer(name, a)
    before, source = peak_rss_mib()
    for _ in range(MEMORY_STEPS):
        trainer.step()
    after, _ = peak_rss_mib()
    return {"peak_rss_before_mib": before, "peak_rss_after_mib": after, "peak_rss_increase_mib": after - before,
            "source": source}


def memory_in_subprocess(name: str, a: argparse.Namespace) -> dict:
    sizes = [f"--{key.replace('_', '-')}={getattr(a, key)}" for key in ("dim", "depth", "heads", "seq_len",
                                                                          "batch", "vocab")]
    threads = [f"--threads={a.threads}"] if a.threads else []
    cmd = [sys.executable, str(Path(__file__).resolve()), "--measure-memory", name, *sizes, *threads]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"memory measurement of {name} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---- the benchmark ---------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dim", type=int, help=f"model width (default {DEFAULTS['dim']})")
    p.add_argument("--depth", type=int, help=f"attention+FFN pairs (default {DEFAULTS['depth']})")
    p.add_argument("--heads", type=int, help=f"attention heads (default {DEFAULTS['heads']})")
    p.add_argument("--seq-len", type=int, help=f"tokens per sequence (default {DEFAULTS['seq_len']})")
    p.add_argument("--batch", type=int, help=f"sequences per step (default {DEFAULTS['batch']})")
    p.add_argument("--vocab", type=int, help=f"vocabulary size (default {DEFAULTS['vocab']})")
    p.add_argument("--repeats", type=int, help=f"timed steps per model (default {DEFAULTS['repeats']})")
    p.add_argument("--warmup", type=int, help=f"untimed steps per model first (default {DEFAULTS['warmup']})")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON here")
    p.add_argument("--tiny", action="store_true", help="very small sizes, one repeat (smoke test); "
                                                       "explicit size flags still win")
    p.add_argument("--no-xt", action="store_true", help="benchmark configaformer alone")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--measure-memory", choices=[CF, XT], metavar="MODEL", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    for key, value in (TINY if a.tiny else DEFAULTS).items():
        if getattr(a, key) is None:
            setattr(a, key, value)
    for key in ("dim", "depth", "heads", "seq_len", "batch", "vocab", "repeats"):
        if getattr(a, key) < 1:
            p.error(f"--{key.replace('_', '-')} must be at least 1, got {getattr(a, key)}")
    if a.warmup < 0:
        p.error(f"--warmup must be at least 0, got {a.warmup}")
    if a.dim % a.heads:
        p.error(f"--dim ({a.dim}) must be divisible by --heads ({a.heads})")
    return a


def main(argv: list[str] | None = None) -> dict:
    a = parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.measure_memory:
        print(json.dumps(measure_memory(a.measure_memory, a)))
        return {}

    names = [CF]
    if not a.no_xt and xtransformers_available():
        names.append(XT)
    elif not a.no_xt:
        print(f"x-transformers is not installed, so configaformer is benchmarked alone. "
              f"For the side-by-side comparison run: {INSTALL_HINT}")

    tokens_per_step = a.batch * a.seq_len
    print(f"train step: batch {a.batch} x seq_len {a.seq_len} = {tokens_per_step} tokens, dim {a.dim}, "
          f"depth {a.depth}, heads {a.heads}, vocab {a.vocab}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {a.warmup} warmup + {a.repeats} timed steps each")
    trainers = {name: Trainer(name, a) for name in names}
    for name, trainer in trainers.items():
        print(f"  {name:15s} {trainer.num_params:>12,d} parameters")
    if len(names) == 2:
        diff = trainers[CF].num_params - trainers[XT].num_params
        print(f"  difference      {diff:>+12,d} (configaformer's LayerNorm biases)")

    # Interleave: one step of each model per repeat, the order flipped every repeat.
    for i in range(a.warmup):
        for name in names if i % 2 == 0 else names[::-1]:
            trainers[name].step()
    seconds: dict[str, list[float]] = {name: [] for name in names}
    losses: dict[str, float] = {}
    for r in range(a.repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            elapsed, losses[name] = timed_step(trainers[name])
            seconds[name].append(elapsed)

    results: dict = {
        "settings": {key: getattr(a, key) for key in DEFAULTS} | {
            "threads": torch.get_num_threads(), "tokens_per_step": tokens_per_step, "lr": LR,
            "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
            "x_transformers": _version("x-transformers") if XT in names else None,
            "argv": list(sys.argv[1:] if argv is None else argv),
        },
        "models": {},
    }
    for name in names:
        results["models"][name] = {
            "params": trainers[name].num_params,
            "step_s": summarise(seconds[name]),
            "tokens_per_s": summarise([tokens_per_step / s for s in seconds[name]]),
            "final_loss": losses[name],
            "peak_rss_increase_mib": None,
        }
    del trainers  # free both models before the memory subprocesses run

    if not a.no_memory:
        for name in names:
            memory = memory_in_subprocess(name, a)
            results["models"][name].update(peak_rss_increase_mib=memory["peak_rss_increase_mib"], memory=memory)

    if len(names) == 2:
        # Paired per repeat: each ratio compares two steps taken back to back, so drift cancels.
        paired = [x / c for c, x in zip(seconds[CF], seconds[XT])]  # = tokens/s cf / tokens/s xt
        results["ratios"] = {"tokens_per_s": summarise(paired)}
        mem = [results["models"][n]["peak_rss_increase_mib"] for n in names]
        results["ratios"]["peak_rss_increase"] = mem[0] / mem[1] if None not in mem and mem[1] > 0 else None

    print()
    print(markdown_table(results))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"\nresults written to {a.json}")
    return results


def markdown_table(results: dict) -> str:
    rows = ["| model | params | step ms (median) | tokens/s median | tokens/s min-max | peak RSS increase MiB |",
            "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, m in results["models"].items():
        tps, mem = m["tokens_per_s"], m["peak_rss_increase_mib"]
        rows.append(f"| {name} | {m['params']:,} | {1000 * m['step_s']['median']:.1f} | {tps['median']:,.0f} | "
                    f"{tps['min']:,.0f}-{tps['max']:,.0f} | {'-' if mem is None else f'{mem:.1f}'} |")
    ratios = results.get("ratios")
    if ratios:
        r, mem = ratios["tokens_per_s"], ratios["peak_rss_increase"]
        rows.append(f"| ratio configaformer / x-transformers | | | {r['median']:.3f} (paired) | "
                    f"{r['min']:.3f}-{r['max']:.3f} | {'-' if mem is None else f'{mem:.3f}'} |")
    return "\n".join(rows)


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
