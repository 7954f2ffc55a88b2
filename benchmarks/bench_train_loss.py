"""`configaformer train`'s own training step, chunked cross-entropy against full logits.

    python benchmarks/bench_train_loss.py --threads 2 [--vocabs 8192 32768] [--repeats 7] [--json PATH]

Both sides are the product's `Trainer.train_step()` (loader, forward, loss, backward, clipping,
AdamW) on the main job's model (`configaformer train stdlib`: 8 layers, dim 192, tied head) with
its vocabulary widened to each size. "chunked" is the Trainer as it ships (`model(..., targets=)`,
layers/losses.py); "full logits" overrides only `Trainer.losses` with the computation it replaced:
each head's (B, L, V) logits, then F.cross_entropy. The data is the embedded python-stdlib corpus
(byte tokens, so targets use the first 258 classes; the cost of a V-way softmax does not depend on
which class is the target).

tokens/s: medians (min-max) over interleaved rounds, the order alternating. Peak memory: each
(vocabulary, side) in a fresh process (`benchmarks.memory.run_job`), the growth of peak RSS over 3
training steps after the Trainer is built (activations, logits, gradients, AdamW state).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: make `benchmarks` importable

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from benchmarks.memory import TRAIN_STEPS, peak_rss_mib, run_job  # noqa: E402

SIDES = ("chunked", "full logits")
MAIN_JOB = {"dim_model": 192, "dim_rope": 24, "norm_type": "rmsnorm",
            "layers": [{"type": "Attention", "num_heads": 8, "num_kv_heads": 4, "bias_bool": False},
                       {"type": "FFN", "ff_mult": 2.6667, "num_projections": 2, "num_gelu": 1, "activation": "silu",
                        "bias_bool": False}] * 4}
TINY_MODEL = {"dim_model": 32, "dim_rope": 8, "layers": [{"type": "Attention", "num_heads": 4}, {"type": "FFN"}]}


def full_logit_trainer_class():
    from configaformer.train import Trainer
    from configaformer.train.objectives import IGNORE_INDEX

    class FullLogitTrainer(Trainer):
        """The Trainer with the loss `configaformer train` computed before the chunked path."""

        def losses(self, model, ex):
            inputs = ex.inputs.to(self.device, non_blocking=True)
            mask = None if ex.padding_mask is None else ex.padding_mask.to(self.device)
            with self.autocast():
                outputs = model(inputs, padding_mask=mask)  # one (B, L, classes) tensor per head
            per_head = [F.cross_entropy(outputs[i].float().flatten(0, 1),
                                        ex.head_targets(self.head_kinds[i]).to(self.device).flatten(),
                                        ignore_index=IGNORE_INDEX) for i, _, _ in self.head_plan]
            return sum(w * loss for (_, _, w), loss in zip(self.head_plan, per_head)), per_head, {}

    return FullLogitTrainer


def build(job: dict, out_dir: Path):
    """A Trainer for one side at one vocabulary, as `configaformer train` builds it."""
    from configaformer.train import Trainer, load_run_config

    vocab = job["vocab"]
    model = {**(TINY_MODEL if job["tiny"] else MAIN_JOB), "vocab_size": vocab,
             "classifiers": [{"num_classes": vocab, "head_type": "tied", "bias_bool": False}]}
    run = {"model": model, "data": {"path": job["data"]}, "out_dir": str(out_dir), "sample": {"max_new_tokens": 0},
           "train": {"batch_size": job["batch"], "seq_len": job["seq_len"], "max_steps": 10 ** 6,
                     "progress": False, "num_threads": job["threads"], "seed": 0}}
    cls = Trainer if job["side"] == "chunked" else full_logit_trainer_class()
    return cls(load_run_config(run))


def memory(job: dict) -> dict:
    """In the subprocess: peak RSS growth over TRAIN_STEPS steps of one side."""
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build(job, Path(tmp) / "run")
        before, source = peak_rss_mib()
        for _ in range(TRAIN_STEPS):
            trainer.train_step()
        after, _ = peak_rss_mib()
    return {"increase_mib": after - before, "source": source}


def timed(job: dict, repeats: int, warmup: int) -> tuple[dict[str, list[float]], dict[str, float]]:
    """(tokens/s of each side's train_step, rounds interleaved, the order alternating; each side's
    first-step loss, equal on both sides: the same weights, batch and cross-entropy)."""
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {side: build({**job, "side": side}, Path(tmp) / side.replace(" ", "_")) for side in SIDES}
        first = {side: trainer.train_step()[0] for side, trainer in trainers.items()}  # untimed, as warm-up
        for _ in range(warmup - 1):
            for trainer in trainers.values():
                trainer.train_step()
        speeds: dict[str, list[float]] = {side: [] for side in SIDES}
        for r in range(repeats):
            for side in (SIDES if r % 2 == 0 else SIDES[::-1]):
                start = time.perf_counter()
                trainers[side].train_step()
                speeds[side].append(trainers[side].tokens_per_step / (time.perf_counter() - start))
    return speeds, first


def prepared_data(path: str | None, tiny: bool, tmp: Path) -> str:
    if path:
        return path
    from configaformer.data import PrepareOptions, prepare

    out = tmp / "stdlib"
    prepare(out, PrepareOptions(sources=["python-stdlib"], max_bytes=200_000 if tiny else 2_000_000,
                                val_fraction=0.05))
    return str(out)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocabs", type=int, nargs="+", default=[8192, 32768])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per side (at least 1)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", help="a prepared dataset (default: prepare the stdlib corpus in a temp dir)")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer dim-32 model (the smoke test)")
    parser.add_argument("--json", type=Path)
    a = parser.parse_args(argv)
    torch.set_num_threads(a.threads)
    results: dict = {"settings": {k: v for k, v in vars(a).items() if k != "json"}, "vocabs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        data = prepared_data(a.data, a.tiny, Path(tmp))
        for vocab in a.vocabs:
            job = {"vocab": vocab, "data": data, "batch": a.batch, "seq_len": a.seq_len, "threads": a.threads,
                   "tiny": a.tiny}
            speeds, first = timed(job, a.repeats, a.warmup)
            row = {}
            for side in SIDES:
                mem = run_job({**job, "side": side}, module="benchmarks.bench_train_loss")
                row[side] = {"tokens_per_s": {"median": statistics.median(speeds[side]), "min": min(speeds[side]),
                                              "max": max(speeds[side]), "samples": speeds[side]},
                             "peak_increase_mib": mem["increase_mib"], "first_step_loss": first[side]}
            results["vocabs"][str(vocab)] = row
            print(format_row(vocab, row), flush=True)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return results


def format_row(vocab: int, row: dict) -> str:
    """One markdown row: vocabulary, each side's tokens/s (min-max) and peak MiB, and the ratios."""
    c, f = row["chunked"], row["full logits"]
    speed = lambda s: f"{s['tokens_per_s']['median']:,.0f} ({s['tokens_per_s']['min']:,.0f}–{s['tokens_per_s']['max']:,.0f})"  # noqa: E731
    return (f"| {vocab:,} | {speed(c)} | {speed(f)} | {c['tokens_per_s']['median'] / f['tokens_per_s']['median']:.2f}x "
            f"| {c['peak_increase_mib']:,.0f} | {f['peak_increase_mib']:,.0f} "
            f"| {c['peak_increase_mib'] / max(f['peak_increase_mib'], 1e-9):.2f}x |")


if __name__ == "__main__":
    if len(sys.argv) == 2 and sys.argv[1].startswith("{"):  # a memory job, in its own process
        print(json.dumps(memory(json.loads(sys.argv[1]))))
    else:
        main()
