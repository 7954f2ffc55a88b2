"""The `configaformer` command.

    configaformer info CONFIG      per-layer table of a config (a YAML/JSON path or a preset name)
    configaformer demo             build the seed example, print its table and run a forward pass
    configaformer data ...         prepare, inspect and verify token datasets (configaformer.data)
    configaformer train RUN        train from a run file; configaformer generate RUN_DIR samples
"""

from __future__ import annotations

import argparse
import sys
import time

from .errors import ConfigError


def print_info(config, batch: int, seq_len: int) -> None:
    from rich.console import Console
    from rich.table import Table

    from .info import summarize

    summary = summarize(config, batch=batch, seq_len=seq_len)
    table = Table(title=f"configaformer model (batch={batch}, seq_len={seq_len})")
    for col, justify in [("layer", "left"), ("type", "left"), ("settings", "left"),
                         ("params", "right"), ("output shape", "right")]:
        table.add_column(col, justify=justify, no_wrap=True)
    for row in summary.rows:
        table.add_row(row.name, row.kind, row.settings, f"{row.params:,}", str(list(row.shape)))
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(table)
    console.print(f"embedding parameters:     {summary.embedding_params:>15,}")
    console.print(f"non-embedding parameters: {summary.non_embedding_params:>15,}")
    console.print(f"total parameters:         {summary.total_params:>15,}")


def cmd_info(args) -> int:
    from .presets import locate

    print_info(locate(args.config, "config"), args.batch, args.seq_len)
    return 0


def cmd_demo(args) -> int:
    import torch

    from .model import Transformer
    from .presets import preset_path

    path = preset_path("seed")
    print(f"Seed example config: {path}\n")
    print_info(path, batch=1, seq_len=args.seq_len)
    torch.manual_seed(0)
    start = time.perf_counter()
    model = Transformer(path).eval()
    built = time.perf_counter() - start
    ids = torch.randint(0, model.config.vocab_size, (1, args.seq_len))
    start = time.perf_counter()
    with torch.no_grad():
        outputs = model(ids)
    took = time.perf_counter() - start
    print(f"\nbuilt in {built:.1f} s; forward of {args.seq_len} tokens in {took * 1000:.0f} ms")
    for name, logits in zip(model.head_names, outputs):
        print(f"  head {name!r}: logits {list(logits.shape)}, argmax of the last token = "
              f"{int(logits[0, -1].argmax())}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="configaformer", description="Highly configurable transformers.")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="print a per-layer table of a model config")
    info.add_argument("config", help="a YAML/JSON config file or a preset name")
    info.add_argument("--batch", type=int, default=1, help="batch size for the shapes column (default 1)")
    info.add_argument("--seq-len", type=int, default=128, help="sequence length for the shapes column (default 128)")
    info.set_defaults(func=cmd_info)
    demo = sub.add_parser("demo", help="build the seed example config, show it, run a forward pass")
    demo.add_argument("--seq-len", type=int, default=128)
    demo.set_defaults(func=cmd_demo)
    from .data.cli import add_data_commands  # configaformer data prepare | info | verify

    add_data_commands(sub)
    from .train.cli import add_train_commands  # configaformer train | generate

    add_train_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "takes_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(args, "batch", 1) < 1 or getattr(args, "seq_len", 1) < 1:
        print("configaformer: --batch and --seq-len must be >= 1", file=sys.stderr)
        return 2
    try:
        return args.func(args, extra) if getattr(args, "takes_overrides", False) else args.func(args)
    except ConfigError as err:  # one problem: one line
        text = str(err.problems[0]) if len(err.problems) == 1 else str(err)
        print(f"configaformer: {text}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
