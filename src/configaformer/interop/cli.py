"""`configaformer import-hf HF_DIR OUT_DIR` and `configaformer export-hf RUN_OR_MODEL_DIR OUT_DIR`."""

from __future__ import annotations

from pathlib import Path
from typing import Callable


def add_interop_commands(sub, run_checkpoint: Callable[[Path, str], Path]) -> None:
    """Register the commands. `run_checkpoint(run_dir, which)`: the checkpoint directory of a run
    (what `configaformer generate` reads), handed in by the CLI so this package imports no tool."""
    imp = sub.add_parser("import-hf", help="convert a local Hugging Face model directory (GPT-2, Llama, Mistral, "
                                           "Qwen2, Gemma 2) into a configaformer model directory")
    imp.add_argument("hf_dir", help="directory with config.json and model.safetensors (or a sharded index)")
    imp.add_argument("out_dir", help="where to write config.json + model.safetensors")
    imp.set_defaults(func=cmd_import)
    exp = sub.add_parser("export-hf", help="write a model (or a run's checkpoint) as a Hugging Face model directory")
    exp.add_argument("source", help="a model directory (save_pretrained) or a run directory (configaformer train)")
    exp.add_argument("out_dir")
    exp.add_argument("--family", default=None, help="the HF family to write (default: the first that fits exactly)")
    exp.add_argument("--checkpoint", choices=["latest", "best"], default="best", help="for a run directory")
    exp.set_defaults(func=lambda args: cmd_export(args, run_checkpoint))


def cmd_import(args) -> int:
    from .hf import load_hf

    model = load_hf(args.hf_dir)
    out = model.save_pretrained(args.out_dir)
    print(f"wrote {out} ({model.num_parameters():,} parameters, {len(model.config.layers)} layers)")
    return 0


def cmd_export(args, run_checkpoint: Callable[[Path, str], Path]) -> int:
    from .hf import export_hf

    source = Path(args.source)
    if (source / "checkpoints").is_dir():  # a run directory: its checkpoint, as `generate` reads it
        source = run_checkpoint(source, args.checkpoint)
    out = export_hf(source, args.out_dir, family=args.family)
    print(f"wrote {out} (Hugging Face format; transformers' from_pretrained loads it)")
    return 0
