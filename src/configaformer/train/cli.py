"""`configaformer train RUN [--resume] [--section.key value ...]` and `configaformer generate RUN_DIR`."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def cmd_train(args, overrides: list[str]) -> int:
    from ..presets import locate
    from .config import load_run_config
    from .loop import train

    run = load_run_config(locate(args.run, "run", kind="run"), overrides)
    summary = train(run, resume=args.resume)  # TrainingError: one line from configaformer.cli.main
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
    from ..errors import ConfigError
    from ..generation import check_sampling
    from ..model import Transformer
    from .checkpoint import CheckpointError, verify_checkpoint

    check_sampling(args.max_new_tokens, args.temperature, args.top_k, args.top_p, args.min_p,
                   name=lambda option: "--" + option.replace("_", "-"))
    try:
        args.prompt.encode("utf-8")
    except UnicodeError:  # undecodable bytes of the command line arrive as lone surrogates
        raise ValueError(f"--prompt {args.prompt!r} is not valid UTF-8 text") from None
    if not args.prompt:
        raise ValueError("--prompt must not be empty")
    path = checkpoint_dir(Path(args.run_dir), args.checkpoint)
    data_path = _state_data_path(path)
    try:
        tokenizer = TokenDataset(data_path).tokenizer()
    except (ValueError, OSError) as err:  # a moved or deleted dataset (DataError), an unreadable tokenizer
        raise CheckpointError(f"the run's dataset {data_path} (for its tokenizer) cannot be read: {err}") from None
    verify_checkpoint(path)  # CheckpointError naming a changed or missing file
    try:
        model = Transformer.from_pretrained(path).eval()
    except ConfigError as err:
        raise CheckpointError(f"{path / 'config.json'}: " + "; ".join(map(str, err.problems))) from None
    prompt = tokenizer.encode(args.prompt)
    if len(prompt) == 0:
        raise ValueError("--prompt must not be empty")
    ids = torch.as_tensor(prompt.astype("int64"))[None]
    limit = model.config.max_seq_len
    if limit is not None and len(prompt) + args.max_new_tokens > limit:
        raise ValueError(f"--max-new-tokens {args.max_new_tokens}: the prompt's {len(prompt)} tokens and the new ones "
                         f"exceed the model's max_seq_len {limit} (at most {max(limit - len(prompt), 0)} new tokens)")
    gen = torch.Generator().manual_seed(args.seed)
    try:
        out = model.generate(ids, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                             top_p=args.top_p, min_p=args.min_p, generator=gen, use_cache=not args.no_cache)
    except ValueError as err:  # the model's own checks: a non-causal model, too long a prompt, memory
        raise ValueError(f"checkpoint {path}: {err}") from None
    print(tokenizer.decode(out[0].tolist()))
    return 0


def checkpoint_dir(run_dir: Path, which: str) -> Path:
    """The checkpoint directory the pointer `which` (latest, best) of `run_dir` names, checked to
    be one plain name of an existing directory; CheckpointError naming the pointer file if not."""
    from .checkpoint import CheckpointError

    root = run_dir / "checkpoints"
    pointer = root / which
    if not pointer.is_file():
        raise CheckpointError(f"{run_dir} has no '{which}' checkpoint (no file {pointer}; train a run there first)")
    try:
        name = pointer.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeError) as err:
        raise CheckpointError(f"{pointer} cannot be read: {err}") from None
    if not name or Path(name).name != name or name in (".", "..") or not (root / name).is_dir():
        raise CheckpointError(f"{pointer} names {name!r}, which is not a checkpoint directory in {root}")
    return root / name


def _state_data_path(path: Path) -> str:
    """The dataset path recorded in a checkpoint's state.json (for its tokenizer)."""
    from .checkpoint import STATE_FILE, CheckpointError

    state_file = path / STATE_FILE
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
        data_path = state["run"]["data"]["path"]
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} is incomplete: {state_file} is missing") from None
    except (OSError, ValueError) as err:  # unreadable, not UTF-8, not JSON
        raise CheckpointError(f"{state_file} cannot be read: {err}") from None
    except (KeyError, TypeError):
        raise CheckpointError(f"{state_file} has no run.data.path (edited by hand?)") from None
    if not isinstance(data_path, str) or not data_path:
        raise CheckpointError(f"{state_file}: run.data.path is {data_path!r}, not a dataset path")
    return data_path


def _seed(text: str) -> int:
    import argparse

    try:
        seed = int(text)
    except ValueError:
        seed = -1
    if not 0 <= seed < 2 ** 64:
        raise argparse.ArgumentTypeError(f"expected an integer in [0, 2**64), got {text!r}")
    return seed


def add_train_commands(sub) -> None:
    train = sub.add_parser("train", help="train a model from a run file (overrides: --train.lr 3e-4 ...)")
    train.add_argument("run", help="a run file (YAML/JSON) or a named run (e.g. stdlib)")
    train.add_argument("--resume", action="store_true", help="continue the run in out_dir from its latest checkpoint")
    train.set_defaults(func=cmd_train, takes_overrides=True)
    gen = sub.add_parser("generate", help="sample from a trained run's checkpoint")
    gen.add_argument("run_dir")
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--max-new-tokens", type=int, default=200)  # ranges: generation.check_sampling
    gen.add_argument("--temperature", type=float, default=0.8)
    gen.add_argument("--top-k", type=int, default=None)
    gen.add_argument("--top-p", type=float, default=None)
    gen.add_argument("--min-p", type=float, default=None)
    gen.add_argument("--seed", type=_seed, default=0, help="random seed, 0 <= seed < 2**64 (default 0)")
    gen.add_argument("--checkpoint", choices=["latest", "best"], default="best")
    gen.add_argument("--no-cache", action="store_true", help="recompute the whole sequence every step")
    gen.set_defaults(func=cmd_generate)
