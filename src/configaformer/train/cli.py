"""`configaformer train RUN [--resume] [--section.key value ...]` and `configaformer generate RUN_DIR`."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def cmd_train(args, overrides: list[str]) -> int:
    from ..presets import locate
    from .config import load_run_config
    from .loop import TrainingError, train

    run = load_run_config(locate(args.run, "run", kind="run"), overrides)
    try:
        summary = train(run, resume=args.resume)
    except TrainingError as err:
        print(f"configaformer: {err}", file=sys.stderr)
        return 1
    if os.environ.get("RANK", "0") == "0":  # one summary per run, not one per process
        print_summary(summary)
    return 0 if not summary.stopped_by.startswith("interrupted") else 130


def print_summary(s) -> None:
    from rich.console import Console
    from rich.table import Table

    from .baselines import MIN_TEXT_BYTES

    console = Console(width=None if sys.stdout.isatty() else 120)
    table = Table(title=f"run {s.run_dir} — stopped by {s.stopped_by}", show_header=False)
    table.add_column(justify="left")
    table.add_column(justify="left")
    for head, values in s.val.items():
        table.add_row(f"validation loss ({head})", f"{values['loss']:.4f} nats/token")
        if "bits_per_byte" in values:
            table.add_row(f"validation bits per byte ({head})", f"{values['bits_per_byte']:.3f}")
        if "accuracy" in values:
            table.add_row(f"validation accuracy ({head})", f"{values['accuracy']:.3f}")
    for name, bpb in getattr(s, "baselines", {}).items():
        table.add_row(f"{name} on the same text", f"{bpb:.3f} bits per byte")
    if not getattr(s, "baselines", None) and getattr(s, "eval_text_bytes", 0):
        table.add_row("gzip / xz on the same text", f"not shown: {s.eval_text_bytes:,} bytes are too few (under "
                                                   f"{MIN_TEXT_BYTES:,}, their headers would dominate)")
    table.add_row("steps / tokens", f"{s.steps:,} / {s.tokens:,}")
    table.add_row("training speed", f"{s.tokens_per_s:,.0f} tokens/s over {s.seconds:.0f} s")
    table.add_row("parameters", f"{s.parameters:,}")
    table.add_row("loss curves", str(s.plot))
    table.add_row("checkpoint", f"{s.checkpoint} (Transformer.from_pretrained loads it)")
    console.print(table)
    if s.sample is not None:
        console.print("[bold]sample[/bold] (temperature 0.8):")
        print(s.sample)


def cmd_generate(args) -> int:
    import torch

    from ..data import TokenDataset
    from ..model import Transformer

    run_dir = Path(args.run_dir)
    root = run_dir / "checkpoints"
    pointer = root / args.checkpoint
    if not pointer.is_file():
        print(f"configaformer: {run_dir} has no '{args.checkpoint}' checkpoint (train a run there first)",
              file=sys.stderr)
        return 2
    path = root / pointer.read_text(encoding="utf-8").strip()
    state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    data_path = state["run"]["data"]["path"]
    try:
        tokenizer = TokenDataset(data_path).tokenizer()
    except Exception as err:  # noqa: BLE001 (a moved or deleted dataset)
        print(f"configaformer: the run's dataset {data_path} (for its tokenizer) cannot be read: {err}",
              file=sys.stderr)
        return 2
    from .checkpoint import verify_checkpoint

    verify_checkpoint(path)  # CheckpointError naming a changed or missing file
    model = Transformer.from_pretrained(path).eval()
    prompt = tokenizer.encode(args.prompt)
    if len(prompt) == 0:
        print("configaformer: --prompt must not be empty", file=sys.stderr)
        return 2
    ids = torch.as_tensor(prompt.astype("int64"))[None]
    gen = torch.Generator().manual_seed(args.seed)
    out = model.generate(ids, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                         top_p=args.top_p, min_p=args.min_p, generator=gen, use_cache=not args.no_cache)
    print(tokenizer.decode(out[0].tolist()))
    return 0


def add_train_commands(sub) -> None:
    train = sub.add_parser("train", help="train a model from a run file (overrides: --train.lr 3e-4 ...)")
    train.add_argument("run", help="a run file (YAML/JSON) or a named run (e.g. stdlib)")
    train.add_argument("--resume", action="store_true", help="continue the run in out_dir from its latest checkpoint")
    train.set_defaults(func=cmd_train, takes_overrides=True)
    gen = sub.add_parser("generate", help="sample from a trained run's checkpoint")
    gen.add_argument("run_dir")
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--max-new-tokens", type=int, default=200)
    gen.add_argument("--temperature", type=float, default=0.8)
    gen.add_argument("--top-k", type=int, default=None)
    gen.add_argument("--top-p", type=float, default=None)
    gen.add_argument("--min-p", type=float, default=None)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--checkpoint", choices=["latest", "best"], default="best")
    gen.add_argument("--no-cache", action="store_true", help="recompute the whole sequence every step")
    gen.set_defaults(func=cmd_generate)
