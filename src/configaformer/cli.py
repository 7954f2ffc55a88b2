"""The `configaformer` command.

    configaformer info CONFIG      per-layer table of a config (a YAML/JSON path or a preset name)
    configaformer demo             build the seed example, print its table and run a forward pass
    configaformer data ...         prepare, inspect and verify token datasets (configaformer.data)
    configaformer train RUN        train from a run file; configaformer generate RUN_DIR samples
    configaformer import-hf / export-hf   Hugging Face checkpoints in and out (configaformer.interop)
    configaformer profile CONFIG...       parameters, FLOPs, memory, speed, KV bytes (configaformer.search)

A bad input (a config, file or flag) prints one line `configaformer: <message>` on stderr and
exits with 2; `configaformer --debug ...` shows the traceback instead. Exceptions of other types
are bugs and keep their traceback.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time

from .errors import ConfigError


class UsageError(Exception):
    """A command line that cannot be parsed: one line naming the flag, exit 2 (instead of argparse's
    usage text and message)."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors; the subcommands' parsers are of this class too."""

    def error(self, message: str):
        raise UsageError(f"{message} (see {self.prog} --help)")


def bad_input_types() -> tuple[type[BaseException], ...]:
    """The exceptions that mean a bad input, not a bug: the library's own error types (ConfigError,
    DataError, CheckpointError are ValueErrors; TrainingError), files that cannot be read or
    parsed (OSError, UnicodeError, JSON, YAML, safetensors)."""
    import yaml
    from safetensors import SafetensorError

    from .train.runtime import TrainingError

    return (ValueError, OSError, TrainingError, json.JSONDecodeError, yaml.YAMLError, SafetensorError)


def one_line(err: BaseException) -> str:
    """The message of a bad-input exception as one line."""
    if isinstance(err, ConfigError) and len(err.problems) > 1:
        text = f"invalid config: {len(err.problems)} problems: " + "; ".join(map(str, err.problems))
    elif isinstance(err, ConfigError):
        text = str(err.problems[0])
    elif isinstance(err, OSError) and err.filename is not None:
        text = f"{err.filename}: {err.strerror or err}"
    else:
        text = str(err) or type(err).__name__
    return re.sub(r"\s*\n\s*", " ", text.strip())


def print_info(config, batch: int, seq_len: int) -> None:
    from rich.console import Console
    from rich.table import Table

    from .info import summarize

    summary = summarize(config, batch=batch, seq_len=seq_len)
    table = Table(title=f"configaformer model (batch={batch}, seq_len={seq_len})")
    for col, justify in [("layer", "left"), ("type", "left"), ("settings", "left"),
                         ("params", "right"), ("FLOPs/token", "right"), ("output shape", "right")]:
        table.add_column(col, justify=justify, no_wrap=True)
    for row in summary.rows:
        table.add_row(row.name, row.kind, row.settings, f"{row.params:,}", f"{row.flops:,}" if row.flops else "",
                      str(list(row.shape)))
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(table)
    console.print(f"embedding parameters:     {summary.embedding_params:>15,}")
    console.print(f"non-embedding parameters: {summary.non_embedding_params:>15,}")
    console.print(f"total parameters:         {summary.total_params:>15,}")
    flops = summary.flops
    console.print(f"forward FLOPs per token at seq_len {flops.seq_len}: {flops.forward:,}; "
                  f"a training step's: {flops.train_step:,} (matrix products; configaformer.flops)")


def cmd_info(args) -> int:
    from .presets import locate

    print_info(locate(args.config, "config"), args.batch, args.seq_len)
    return 0


DEMO_MAX_SEQ_LEN = 4096  # the seed example has no max_seq_len; its attention grows with the square


def cmd_demo(args) -> int:
    import torch

    from .model import Transformer
    from .presets import preset_path

    if args.seq_len > DEMO_MAX_SEQ_LEN:
        raise UsageError(f"--seq-len {args.seq_len}: the demo runs at most {DEMO_MAX_SEQ_LEN} tokens")
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
    parser = Parser(prog="configaformer", description="Highly configurable transformers.")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error instead of one line")
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
    from .interop.cli import add_interop_commands  # configaformer import-hf | export-hf
    from .train.cli import checkpoint_dir

    add_interop_commands(sub, run_checkpoint=checkpoint_dir)
    from .search.cli import add_profile_command  # configaformer profile

    add_profile_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = None
    try:
        args, extra = parser.parse_known_args(argv)
        if extra and not getattr(args, "takes_overrides", False):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        if any(value is not None and value < 1 for value in (getattr(args, "batch", None), getattr(args, "seq_len", None))):
            raise UsageError("--batch and --seq-len must be >= 1")
        return args.func(args, extra) if getattr(args, "takes_overrides", False) else args.func(args)
    except UsageError as err:
        print(f"configaformer: {err}", file=sys.stderr)
        return 2
    except bad_input_types() as err:
        if getattr(args, "debug", False):
            raise
        print(f"configaformer: {one_line(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
