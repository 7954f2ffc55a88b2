"""What a config costs: parameters, FLOPs, peak memory, tokens/s, KV-cache bytes, attention paths.

`profile_static` needs no weights (the model is built on the meta device): parameters by part and
by block type, analytic FLOPs per token (configaformer.flops), KV-cache bytes per token (the
cache's own buffers, read at two lengths so that fixed-size state such as token shifts drops
out), and which attention layers leave the fused kernel and why. It takes milliseconds, which
is what a search's screen needs.

`measure` times and sizes the product's own paths in the current process:
- a training step: `model(ids, targets=)` (the trainer's chunked cross-entropy), backward,
  gradient clipping and the trainer's AdamW (`train.optim.make_optimizer`);
- prefill: the prompt through a `DecodeCache`, then cached decoding one token at a time.
Rates are medians over `repeats` runs after `warmup` runs, with the spread (min and max).
Peak memory on CUDA is `max_memory_allocated` less what the built model held; on the CPU,
torch keeps no allocator statistics, so each phase runs in a fresh subprocess
(`measure_in_subprocess`) and reports its peak resident set size less its peak after building
the model (the weights are in that baseline; activations, gradients, optimizer state or the
KV cache are not).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import ModelConfig
from ..config.resolve import resolve_config
from ..errors import ConfigError, Problem
from ..fileio import read_mapping
from ..flops import count_flops

PHASES = ("train", "inference")


class MeasurementError(ValueError):
    """A measurement that could not finish (out of memory, past its time, a failing subprocess):
    one line for the command line, exit 2."""


@dataclass
class Target:
    """One config to profile: a label, the model config source, and the shapes to measure at."""

    label: str
    model: Any  # a dict or a path, anything Transformer accepts
    batch: int
    seq_len: int
    threads: int | None = None
    lr: float = 1e-3
    grad_clip: float = 1.0
    key_prefix: str = ""  # "model." for a run file's model: where its config problems are


def load_target(value: str, batch: int | None = None, seq_len: int | None = None,
                threads: int | None = None) -> Target:
    """A model config file, a run file (its model, batch, seq_len and threads), a preset name or a
    named run. Shapes given here win over a run file's; otherwise batch 8 x seq_len 256."""
    from ..presets import list_presets, preset_path
    from ..train.config import load_run_config
    from ..train.runtime import model_config_of

    path = Path(value)
    if not path.is_file():
        path = preset_path(value) or preset_path(value, "run")
    if path is None:
        raise ConfigError(Problem("CONFIG", f"{value!r} is neither a file nor a preset ({', '.join(list_presets())}) "
                                            f"nor a named run ({', '.join(list_presets('run'))})"))
    data = read_mapping(path, "config")
    if "layers" in data or "model" not in data:
        return Target(value, str(path), batch or 8, seq_len or 256, threads)
    run = load_run_config(path)
    model = model_config_of(run)
    return Target(value, model if isinstance(model, dict) else str(model), batch or run.train.batch_size,
                  seq_len or run.train.seq_len, threads or run.train.num_threads, run.train.lr, run.train.grad_clip,
                  "model." if isinstance(model, dict) else "")


def check_target(target: Target) -> None:
    """ConfigError unless the target's model config is valid, each problem named by the config
    given on the command line and its key path there."""
    try:
        resolve_config(target.model)
    except ConfigError as err:
        raise ConfigError([Problem(f"{target.label}: {target.key_prefix}{p.path}".rstrip(". "), p.message)
                           for p in err.problems]) from None


def _cache_bytes(model, length: int) -> int:
    """Bytes of a DecodeCache for `length` positions of one sequence, after one token."""
    from ..generation import DecodeCache

    cache = DecodeCache(1, length)
    with torch.no_grad():
        model.forward_features(torch.zeros(1, 1, dtype=torch.long, device="meta"), cache=cache)
    return sum(t.numel() * t.element_size() for state in cache.layers.values() for t in state.values()
               if isinstance(t, torch.Tensor))


def attention_paths(model) -> list[dict[str, Any]]:
    """Each self-attention module (also inside Parallel layers): its layer, 'fused' or 'explicit',
    'reuses a map' (a lazy layer: no scores of its own), and why it forms the L x L matrix
    (Attention.explicit_reasons)."""
    found = []
    for i, layer in enumerate(model.layers):
        for name, module in layer.named_modules():
            reasons = getattr(module, "explicit_reasons", None)
            if reasons is not None:
                where = f"layers[{i}]" + (f".{name.removeprefix('block.')}" if name not in ("", "block") else "")
                path = "reuses a map" if getattr(module, "lazy", False) else "explicit" if reasons else "fused"
                found.append({"layer": where, "path": path, "reasons": list(reasons)})
    return found


def profile_static(source: Any, seq_len: int) -> dict[str, Any]:
    """Parameters, FLOPs per token at `seq_len`, KV-cache bytes per token and attention paths of a
    config, with no weights allocated. ConfigError for an invalid config."""
    from ..info import summarize
    from ..model import Transformer

    cfg: ModelConfig = resolve_config(source)
    summary = summarize(cfg, seq_len=seq_len)
    by_type: dict[str, int] = {}
    for row in summary.rows:
        if row.name.startswith("layers["):
            by_type[row.kind] = by_type.get(row.kind, 0) + row.params
    flops = count_flops(cfg, summary.flops.seq_len)
    with torch.device("meta"):
        model = Transformer(cfg).eval()
    kv = None
    if cfg.is_causal:
        short = 64 if cfg.max_seq_len is None else max(1, min(64, cfg.max_seq_len // 2))
        kv = (_cache_bytes(model, 2 * short) - _cache_bytes(model, short)) / short
    return {"params": {"total": summary.total_params, "embedding": summary.embedding_params,
                       "non_embedding": summary.non_embedding_params, "by_type": by_type},
            "flops_per_token": {"seq_len": flops.seq_len, "forward": flops.forward, "train_step": flops.train_step,
                                "layers": list(flops.layers), "heads": list(flops.heads)},
            "kv_bytes_per_token": kv,  # fp32 buffers; None for a model that cannot decode
            "attention": attention_paths(model)}


def _rates(times: list[float], tokens: int) -> dict[str, float]:
    rates = [tokens / t for t in times]
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates), "repeats": len(rates)}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device) -> float:
    _synchronize(device)
    start = time.perf_counter()
    fn()
    _synchronize(device)
    return time.perf_counter() - start


def peak_mib(device: torch.device) -> float:
    """The peak memory so far: CUDA's allocator peak, else this process's peak RSS (Linux VmHWM,
    which a fresh process does not inherit from its parent, unlike ru_maxrss)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2 ** 10
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2 ** 20 if sys.platform == "darwin" else peak / 2 ** 10


@dataclass
class Job:
    """One measurement: a phase of a target on a device (what a subprocess receives as JSON)."""

    phase: str  # "train" or "inference"
    model: Any
    batch: int
    seq_len: int
    device: str = "cpu"
    threads: int | None = None
    lr: float = 1e-3
    grad_clip: float = 1.0
    warmup: int = 1
    repeats: int = 5
    decode_tokens: int = 32
    seed: int = 0
    extra: dict = field(default_factory=dict)


def measure(job: Job) -> dict[str, Any]:
    """Run `job` here: peak memory over the phase and its rates (see the module docstring)."""
    from ..model import Transformer

    device = torch.device(job.device)
    if job.threads:
        torch.set_num_threads(job.threads)
    torch.manual_seed(job.seed)
    model = Transformer(job.model).to(device)
    cfg = model.config
    seq_len = job.seq_len if cfg.max_seq_len is None else min(job.seq_len, cfg.max_seq_len)
    vocab = cfg.vocab_size
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result: dict[str, Any] = {"phase": job.phase, "device": str(device), "threads": torch.get_num_threads(),
                              "batch": job.batch, "seq_len": seq_len}
    if job.phase == "train":
        from ..train.config import TrainSection
        from ..train.optim import make_optimizer

        optimizer = make_optimizer(model, TrainSection(lr=job.lr))
        ids = torch.randint(0, vocab, (job.batch, seq_len + 1), device=device)
        inputs, targets = ids[:, :-1], ids[:, 1:]
        model.train()

        def step():
            (loss,) = model(inputs, targets={0: targets})
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), job.grad_clip if job.grad_clip > 0 else math.inf)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        before = peak_mib(device) if device.type != "cuda" else torch.cuda.memory_allocated(device) / 2 ** 20
        times = [_timed(step, device) for _ in range(job.warmup + job.repeats)][job.warmup:]
        result["tokens_per_s"] = _rates(times, job.batch * seq_len)
    else:
        if not cfg.is_causal:
            raise ValueError("inference is measured by cached decoding, which needs a causal model")
        from ..generation import DecodeCache

        model.eval()
        new = job.decode_tokens
        prompt_len = seq_len if cfg.max_seq_len is None else max(1, min(seq_len, cfg.max_seq_len - new))
        prompt = torch.randint(0, vocab, (job.batch, prompt_len), device=device)
        head = model.heads[0]
        before = peak_mib(device) if device.type != "cuda" else torch.cuda.memory_allocated(device) / 2 ** 20
        prefill_times, decode_times = [], []
        for run in range(job.warmup + job.repeats):
            cache = DecodeCache(job.batch, prompt_len + new)
            with torch.no_grad():
                logits: list[torch.Tensor] = []
                prefill_times.append(_timed(
                    lambda: logits.append(head(model.forward_features(prompt, cache=cache)[:, -1:])), device))

                def decode():
                    nxt = logits[-1].argmax(-1)  # (B, 1)
                    for _ in range(new):
                        nxt = head(model.forward_features(nxt, cache=cache)).argmax(-1)

                decode_times.append(_timed(decode, device))
        result["prompt_len"], result["decode_tokens"] = prompt_len, new
        result["prefill_tokens_per_s"] = _rates(prefill_times[job.warmup:], job.batch * prompt_len)
        if new:
            result["decode_tokens_per_s"] = _rates(decode_times[job.warmup:], job.batch * new)
    after = peak_mib(device)
    result["peak_mib"] = after - before
    result["memory_source"] = "cuda max_memory_allocated" if device.type == "cuda" else "peak RSS of a fresh process"
    return result


def measure_in_subprocess(job: Job, timeout: float | None = None) -> dict[str, Any]:
    """`measure(job)` in a fresh Python process (so that its peak RSS is its own)."""
    src = str(Path(__file__).resolve().parents[2])  # the directory holding the configaformer package
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])))
    payload = json.dumps(job.__dict__)
    try:
        done = subprocess.run([sys.executable, "-m", "configaformer.search.profile"], input=payload,
                              capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise MeasurementError(f"the {job.phase} measurement ran past {timeout:g} s") from None
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        raise MeasurementError(f"the {job.phase} measurement failed: {lines[-1] if lines else done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def profile(target: Target, device: str = "cpu", measured: bool = True, warmup: int = 1, repeats: int = 5,
            decode_tokens: int = 32) -> dict[str, Any]:
    """One profile row: the static figures and, if `measured`, a training step's and inference's."""
    row: dict[str, Any] = {"config": target.label, "batch": target.batch, "seq_len": target.seq_len}
    row.update(profile_static(target.model, target.seq_len))
    if not measured:
        return row
    for phase in PHASES:
        if phase == "inference" and row["kv_bytes_per_token"] is None:
            row[phase] = {"skipped": "not a causal model: no cached decoding"}
            continue
        job = Job(phase, target.model, target.batch, target.seq_len, device, target.threads, target.lr,
                  target.grad_clip, warmup, repeats, decode_tokens)
        row[phase] = measure(job) if device.startswith("cuda") else measure_in_subprocess(job)
    return row


if __name__ == "__main__":  # the measuring subprocess: a Job as JSON on stdin, the result as JSON on stdout
    print(json.dumps(measure(Job(**json.loads(sys.stdin.read())))))
