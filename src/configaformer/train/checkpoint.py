"""Checkpoints: everything needed to continue a run exactly, written atomically, no pickle.

    RUN_DIR/checkpoints/step_000200/
        model.safetensors, config.json      the model (Transformer.from_pretrained reads this dir)
        optimizer.safetensors               AdamW moments per parameter index
        state.json                          step, tokens, optimizer hyperparameters, loader position,
                                            best validation loss, the resolved run config, the run
                                            id, and the sha256 of every other file (`checksums`)
        rng.safetensors                     torch (and CUDA) random states; rank r's as `rank{r}.*`
        deepspeed/                          DeepSpeed runs only: its partitioned optimizer state, in
                                            its own format, instead of optimizer.safetensors
    RUN_DIR/checkpoints/latest              name of the newest complete checkpoint
    RUN_DIR/checkpoints/best                name of the one with the lowest validation loss

A checkpoint is written into a hidden temporary directory, each file fsynced, then renamed into
place; `latest` is replaced atomically afterwards. A run killed at any moment therefore leaves
its previous complete checkpoint as `latest`. Saving a step that already has a checkpoint
replaces it with no moment where a pointer names a missing or incomplete directory.

`verify_checkpoint` re-hashes the files against `checksums` (a flipped bit in the weights is a
CheckpointError naming the file, not a silently different model); resuming and `configaformer
generate` call it. Checkpoints written before checksums existed load unverified.
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

from ..fileio import sha256_file, write_text_atomic

STATE_FILE, OPTIM_FILE, RNG_FILE = "state.json", "optimizer.safetensors", "rng.safetensors"
CHECKSUMS = "checksums"  # state.json's key: {path relative to the checkpoint: sha256} of every other file


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
        checksums = {}
        for f in sorted(tmp.rglob("*")):
            if f.is_file():
                checksums[f.relative_to(tmp).as_posix()] = sha256_file(f, fsync=True)
        text = json.dumps({**state, "optimizer": meta, CHECKSUMS: checksums}, indent=1)
        with open(tmp / STATE_FILE, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
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


def _need(path: Path, name: str) -> Path:
    if not (path / name).is_file():
        raise CheckpointError(f"checkpoint {path} is incomplete: {name} is missing")
    return path / name


def read_state(path: Path) -> dict[str, Any]:
    """A checkpoint's state.json, unverified; CheckpointError if it is missing or unreadable."""
    try:
        state = json.loads(_need(path, STATE_FILE).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        raise CheckpointError(f"checkpoint {path} is unreadable: {STATE_FILE}: {exc}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} is unreadable: {STATE_FILE} does not hold a mapping")
    return state


def verify_checkpoint(path: Path) -> dict[str, Any]:
    """Check every file of checkpoint `path` against the sha256 its state.json records; returns
    the state. CheckpointError naming the first missing or changed file. A checkpoint written
    before checksums were recorded passes unverified (its state has no `checksums`)."""
    path = Path(path)
    state = read_state(path)
    for name, expected in (state.get(CHECKSUMS) or {}).items():
        try:
            found = sha256_file(_need(path, name))
        except OSError as exc:
            raise CheckpointError(f"checkpoint {path} is unreadable: {name}: {exc}") from None
        if found != expected:
            raise CheckpointError(f"checkpoint {path} is corrupt: {name} differs from the sha256 recorded in "
                                  f"{STATE_FILE} (a changed or damaged file)")
    return state


def load_checkpoint_state(path: Path) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, torch.Tensor]]:
    """(state.json, the optimizer state dict, rng tensors) of a checkpoint directory, verified
    (`verify_checkpoint`), with clear errors. The optimizer state is None where a distributed
    engine (DeepSpeed) kept its own."""
    state = verify_checkpoint(path)
    meta = state.get("optimizer")
    try:
        optim = None if meta is None else optimizer_state_dict(load_file(str(_need(path, OPTIM_FILE))), meta)
        rng = load_file(str(_need(path, RNG_FILE)))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"checkpoint {path} is unreadable: {exc}") from None
    return state, optim, rng


def check_engine_state_trusted(path: Path, state: dict[str, Any], run_id: str | None) -> None:
    """Before an engine reads its own state files from checkpoint `path` (DeepSpeed's, which
    torch.load unpickles: loading one runs whatever code it holds): the checkpoint must have been
    written by this run (its `run_id` equals the run directory's) and every one of its files must
    be covered by its checksums (verified by `load_checkpoint_state`). CheckpointError saying why not."""
    why = "; an engine's own state files are unpickled, so only checkpoints this run wrote are loaded"
    if CHECKSUMS not in state:
        raise CheckpointError(f"checkpoint {path} records no checksums (written by an older configaformer){why}")
    if run_id is None or state.get("run_id") != run_id:
        raise CheckpointError(f"checkpoint {path} was written by another run (run id {state.get('run_id')!r}, "
                              f"this run directory's is {run_id!r}){why}")
    files = (f.relative_to(path).as_posix() for f in path.rglob("*") if f.is_file())
    unlisted = sorted(name for name in files if name != STATE_FILE and name not in state[CHECKSUMS])
    if unlisted:
        raise CheckpointError(f"checkpoint {path} holds files its checksums do not cover ({', '.join(unlisted[:3])})"
                              f"{why}")
