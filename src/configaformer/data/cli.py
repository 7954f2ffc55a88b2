"""`configaformer data ...`: prepare, info and verify, hooked into the main parser by
`add_data_commands(subparsers)`.

Bad inputs print `configaformer: <message>` on stderr and exit with 2; `verify` exits with 1 when it
finds corruption. Numeric flags are parsed here (not by argparse) so that a bad value gets the same
one-line message naming the flag.
"""

from __future__ import annotations

import argparse
import re
import sys

from .errors import DataError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?)b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 10 ** 3, "m": 10 ** 6, "g": 10 ** 9, "t": 10 ** 12,
          "ki": 2 ** 10, "mi": 2 ** 20, "gi": 2 ** 30, "ti": 2 ** 40}


def parse_size(flag: str, text: str) -> int:
    """'2000000', '2M', '2MB', '1.5G', '64Ki' -> bytes (K/M/G decimal, Ki/Mi/Gi binary)."""
    match = _SIZE.match(text)
    if not match:
        raise DataError(f"{flag}: expected a size such as 2000000, 500K or 2M, got {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def parse_int(flag: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise DataError(f"{flag}: expected an integer, got {text!r}") from None


def parse_float(flag: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise DataError(f"{flag}: expected a number, got {text!r}") from None


def _fail(message: str) -> int:
    print(f"configaformer: {message}", file=sys.stderr)
    return 2


def cmd_prepare(args) -> int:
    from .pipeline import PrepareOptions, prepare

    try:
        options = PrepareOptions(
            sources=args.source or ["python-stdlib"], tokenizer=args.tokenizer,
            vocab_size=parse_int("--vocab-size", args.vocab_size),
            bpe_train_bytes=None if args.bpe_train_bytes is None else parse_size("--bpe-train-bytes",
                                                                                 args.bpe_train_bytes),
            val_fraction=parse_float("--val-fraction", args.val_fraction),
            split_piece_chars=parse_size("--split-piece-chars", args.split_piece_chars),
            separator=None if args.separator.lower() == "none" else args.separator,
            dedup=args.dedup, min_chars=parse_int("--min-chars", args.min_chars),
            max_bytes=None if args.max_bytes is None else parse_size("--max-bytes", args.max_bytes),
            text_field=args.text_field, hf_split=args.hf_split, label_field=args.label_field,
            shard_tokens=parse_size("--shard-tokens", args.shard_tokens),
            workers=parse_int("--workers", args.workers))
        manifest = prepare(args.out, options, overwrite=args.overwrite, show_progress=not args.quiet)
    except DataError as err:
        return _fail(str(err))
    except KeyboardInterrupt:
        return _fail(f"interrupted; {args.out} was left as it was") + 128  # 130, as for SIGINT
    if not args.quiet:
        splits = manifest["splits"]
        print(f"prepared {args.out}: " + ", ".join(f"{name} {info['tokens']:,} tokens in {info['documents']:,} "
                                                    f"documents" for name, info in splits.items())
              + f"; vocab_size {manifest['tokenizer']['vocab_size']:,} ({manifest['tokenizer']['kind']})"
              + (f"; {cut:,} long document(s) split by pieces" if (cut := manifest["stats"]["documents_cut"]) else ""))
    return 0


def _table(title: str, columns: list[str], rows: list[list]):
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for i, name in enumerate(columns):
        table.add_column(name, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*[f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v) for v in row])
    return table


def cmd_info(args) -> int:
    from rich.console import Console

    from .manifest import read_manifest

    try:
        manifest = read_manifest(args.dataset)
    except DataError as err:
        return _fail(str(err))
    tok, console = manifest["tokenizer"], Console(width=None if sys.stdout.isatty() else 160)
    specials = ", ".join(f"{name}={i}" for name, i in tok["special_tokens"].items())
    console.print(f"[bold]{args.dataset}[/bold]: {tok['kind']} tokenizer, vocab_size {tok['vocab_size']:,} "
                  f"({specials}), {manifest['dtype']} tokens, separator id {manifest['separator_id']}"
                  + (f", tokenizer file {tok['path']}" if tok.get("path") else ""))
    itemsize = 2 if manifest["dtype"] == "uint16" else 4
    console.print(_table("splits", ["split", "documents", "tokens", "shards", "MB on disk"], [
        [name, info["documents"], info["tokens"], len(info["shards"]), f"{info['tokens'] * itemsize / 1e6:.1f}"]
        for name, info in manifest["splits"].items()]))
    console.print(_table("sources", ["source", "kind", "files", "documents", "MB read"], [
        [s["spec"], s["kind"], len(s["files"]), s["documents"], f"{sum(f[1] for f in s['files']) / 1e6:.1f}"]
        for s in manifest["sources"]]))
    console.print(_table("reading", ["count", "value"], [[k.replace("_", " "), v]
                                                          for k, v in manifest["stats"].items()]))
    settings = manifest["settings"]
    console.print("settings: " + ", ".join(f"{k}={v}" for k, v in settings.items() if k != "sources"))
    return 0


def cmd_verify(args) -> int:
    from .manifest import read_manifest
    from .shards import verify

    try:
        problems = verify(args.dataset)
        manifest = read_manifest(args.dataset)
    except DataError as err:
        return _fail(str(err))
    if problems:
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        print(f"configaformer: {args.dataset} is corrupt: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    shards = sum(len(info["shards"]) for info in manifest["splits"].values())
    tokens = sum(info["tokens"] for info in manifest["splits"].values())
    print(f"{args.dataset}: OK ({shards} shards, {tokens:,} tokens, every sha256 matches the manifest)")
    return 0


def add_data_commands(subparsers) -> argparse.ArgumentParser:
    """Add `data prepare|info|verify` to the main parser's subparsers."""
    data = subparsers.add_parser("data", help="prepare, inspect and verify token datasets")
    sub = data.add_subparsers(dest="data_command", required=True)
    prep = sub.add_parser("prepare", help="raw sources -> token shards and a manifest",
                          description="Turn raw sources into a dataset directory of token shards and a "
                                      "manifest (see configaformer.data.sources for the source kinds).")
    prep.add_argument("--out", required=True, help="dataset directory to create (replaced atomically)")
    prep.add_argument("--source", action="append", metavar="SRC",
                      help="python-stdlib, a file, directory, glob, .jsonl, .parquet, .arrow or a saved Hugging "
                           "Face dataset; repeatable; prefixes text: jsonl: parquet: arrow: hf: force a kind "
                           "(default: python-stdlib)")
    prep.add_argument("--tokenizer", default="byte", help="byte (default), bpe, or a path to a tokenizer.json")
    prep.add_argument("--vocab-size", default="8192", help="BPE vocabulary size (default 8192)")
    prep.add_argument("--bpe-train-bytes", help="train the BPE on at most this much text, e.g. 50M (default: all)")
    prep.add_argument("--val-fraction", default="0.05",
                      help="share of the text in the val split, drawn by document (default 0.05; 0: no val split)")
    prep.add_argument("--split-piece-chars", default="16Ki",
                      help="a document of at least this / --val-fraction characters is split by pieces of at "
                           "most this many characters, cut at line ends (default 16Ki; docs/data-splits.md)")
    prep.add_argument("--separator", default="<|endoftext|>",
                      help="special token appended to every document, or 'none' (default <|endoftext|>)")
    prep.add_argument("--no-dedup", dest="dedup", action="store_false", help="keep exact duplicate documents")
    prep.add_argument("--min-chars", default="0", help="drop documents shorter than this (default 0)")
    prep.add_argument("--max-bytes", help="stop after this much document text, e.g. 2M (default: no cap)")
    prep.add_argument("--text-field", default="text", help="text field/column of jsonl, parquet, arrow, hf")
    prep.add_argument("--label-field", default=None,
                      help="integer label field/column per record (jsonl, parquet, arrow, hf), for classifier heads")
    prep.add_argument("--hf-split", help="the one split of a saved DatasetDict to read (default: all)")
    prep.add_argument("--shard-tokens", default="64Mi", help="tokens per shard file at most (default 64Mi)")
    prep.add_argument("--workers", default="1",
                      help="tokenizing processes for bpe or a tokenizer.json (default 1; byte-level encoding "
                           "always runs in-process); the output never depends on it")
    prep.add_argument("--overwrite", action="store_true", help="replace an existing dataset with other settings")
    prep.add_argument("--quiet", action="store_true", help="no progress bars or summary")
    prep.set_defaults(func=cmd_prepare)
    info = sub.add_parser("info", help="print a dataset's manifest as tables")
    info.add_argument("dataset", help="dataset directory")
    info.set_defaults(func=cmd_info)
    verify = sub.add_parser("verify", help="re-hash every shard and report corruption (exit 1)")
    verify.add_argument("dataset", help="dataset directory")
    verify.set_defaults(func=cmd_verify)
    return data
