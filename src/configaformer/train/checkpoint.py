"""Checkpoints: everything needed to continue a run exactly, written atomically, no pickle.

    RUN_DIR/checkpoints/step_000200/
        model.safetensors, config.json      the model (Transformer.from_pretrained reads this dir)
        optimizer.safetensors               AdamW moments per parameter index
        state.json                          step, tokens, optimizer hyperparameters, loader position,
                                            best validation loss, the resolved run config
        rng.safetensors                     torch (and CUDA) random states; rank r's as `rank{r}.*`
        deepspeed/                          DeepSpeed runs only: its partitioned optimizer state, in
                                            its own format, instead of optimizer.safetensors
    RUN_DIR/checkpoints/latest              name of the newest complete checkpoint
    RUN_DIR/checkpoints/best                name of the one with the lowest validation loss

A checkpoint is written into a hidden temporary directory, each file fsynced, then renamed into
place; `latest` is replaced atomically afterwards. A run killed at any moment therefore leaves
its previous complete checkpoint as `latest`. Saving a step that already has a checkpoint
replaces it with no moment where a pointer names a missing or incomplete directory.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..fileio import write_text_atomic

STATE_FILE, OPTIM_FILE, RNG_FILE = "state.json", "optimizer.safetensors", "rng.safetensors"


class CheckpointError(ValueError):
    pass


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def optimizer_tensors(optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict (or an optimizer's) into tensors (for safetensors) and JSON-able scalars."""
    state = optimizer if isinstance(optimizer, dict) else optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_state_dict(tensors: dict[str, torch.Tensor], meta: dict) -> dict[str, Any]:
    """The optimizer state dict `optimizer_tensors` split, put back together."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    for name, value in meta["scalars"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def staging_dir(run_dir: Path, step: int) -> Path:
    """Where every rank of a distributed run writes its part of a checkpoint (rank 0 empties it first)."""
    return run_dir / "checkpoints" / f".step_{step:07d}.staging"


def save_checkpoint(run_dir: Path, model, optimizer, state: dict[str, Any], rng: dict[str, torch.Tensor],
                    keep_last: int, best: bool, staging: Path | None = None) -> Path:
    """`model`: anything with save_pretrained(dir). `optimizer`: an optimizer, or its (gathered) state
    dict, or None when a distributed engine wrote its own state into `staging` (a directory the
    engine's ranks filled first; by default a fresh temporary one)."""
    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{state['step']:07d}"
    tmp = staging or Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    try:
        model.save_pretrained(tmp)
        meta = None
        if optimizer is not None:
            tensors, meta = optimizer_tensors(optimizer)
            save_file(tensors, str(tmp / OPTIM_FILE))
        save_file(rng, str(tmp / RNG_FILE))
        (tmp / STATE_FILE).write_text(json.dumps({**state, "optimizer": meta}, indent=1), encoding="utf-8")
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as handle:
                    os.fsync(handle.fileno())
        final = root / name
        if final.exists():
            _replace_checkpoint(root, tmp, name)
        else:
            os.replace(tmp, final)
        _fsync_dir(root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    write_text_atomic(root / "latest", name + "\n")
    if best:
        write_text_atomic(root / "best", name + "\n")
    _prune(root, keep_last)
    return final


def _replace_checkpoint(root: Path, tmp: Path, name: str) -> None:
    """Put the complete checkpoint `tmp` in place of the existing root/name (the same step saved
    again) so that `latest` and `best` name a complete checkpoint at every moment: while the old
    directory goes, the pointers naming it name a linked copy of the new one, removed afterwards."""
    pointers = [which for which in ("latest", "best") if _pointer(root, which) == name]
    swap = root / f".{name}.swap"
    shutil.rmtree(swap, ignore_errors=True)
    shutil.copytree(tmp, swap, copy_function=_link_or_copy)
    _fsync_dir(root)
    for which in pointers:
        write_text_atomic(root / which, swap.name + "\n")
    shutil.rmtree(root / name)
    os.replace(tmp, root / name)
    _fsync_dir(root)
    for which in pointers:
        write_text_atomic(root / which, name + "\n")
    shutil.rmtree(swap, ignore_errors=True)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)  # the same files, no copying
    except OSError:
        shutil.copy2(src, dst)


def _pointer(root: Path, which: str) -> str | None:
    path = root / which
    return path.read_text(encoding="utf-8").strip() if path.is_file() else None


def _prune(root: Path, keep_last: int) -> None:
    steps = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_"))
    keep = {p.name for p in steps[-keep_last:]} | {_pointer(root, "best"), _pointer(root, "latest")}
    swaps = [p for p in root.iterdir() if p.is_dir() and p.name.endswith(".swap")]  # left by a kill mid-replace
    for p in steps + swaps:
        if p.name not in keep:
            shutil.rmtree(p, ignore_errors=True)


def latest_checkpoint(run_dir: Path) -> Path | None:
    root = run_dir / "checkpoints"
    name = _pointer(root, "latest")
    return root / name if name else None


def load_checkpoint_state(path: Path) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, torch.Tensor]]:
    """(state.json, the optimizer state dict, rng tensors) of a checkpoint directory, with clear
    errors. The optimizer state is None where a distributed engine (DeepSpeed) kept its own."""
    try:
        state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
        meta = state.get("optimizer")
        optim = None if meta is None else optimizer_state_dict(load_file(str(path / OPTIM_FILE)), meta)
        rng = load_file(str(path / RNG_FILE))
    except FileNotFoundError as exc:
        raise CheckpointError(f"checkpoint {path} is incomplete: {exc.filename} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError, SafetensorError, OSError) as exc:
        raise CheckpointError(f"checkpoint {path} is unreadable: {exc}") from None
    return state, optim, rng
