"""The saved-model format, `config.json` + `model.safetensors`, written and read in one place: by
`Transformer.save_pretrained` / `from_pretrained` and by the distributed engines, which gather a
sharded model's tensors and write them here.

A tensor that several state-dict names share (a layer with `share_weights_with`, a tied head) is
stored once, under its first name in state-dict order; reading fills in the other names from the
model's own sharing (`alias_groups`), so the file needs no alias metadata. Files written before
(by safetensors' `save_model`, which keeps the alphabetically first name of each group) load the
same way: any one name of a group is enough.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from .fileio import atomic_write, write_text_atomic

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def alias_groups(model: nn.Module) -> list[list[str]]:
    """State-dict names grouped by the tensor they name, in state-dict order."""
    groups: dict[int, list[str]] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        groups.setdefault(id(tensor), []).append(name)
    return list(groups.values())


def write_pretrained(directory: str | Path, config, tensors: Mapping[str, torch.Tensor],
                     groups: list[list[str]]) -> Path:
    """Write `config` (a ModelConfig) and one tensor per alias group, `tensors[names[0]]`, into
    `directory`, each file atomically."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stored = {names[0]: tensors[names[0]].detach().cpu().contiguous() for names in groups}
    atomic_write(directory / WEIGHTS_FILE, lambda tmp: save_file(stored, tmp, metadata={"format": "pt"}))
    write_text_atomic(directory / CONFIG_FILE, json.dumps(config.to_dict(), indent=2) + "\n")
    return directory


def read_weights(directory: str | Path, model: nn.Module) -> dict[str, torch.Tensor]:
    """`directory`'s model.safetensors as a full state dict for `model`, every shared name filled
    in. ValueError when the file is unreadable or holds other tensors than the model has."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(directory) / WEIGHTS_FILE
    try:
        stored = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{path} is not a readable safetensors file: {exc}") from None
    full, missing = {}, []
    for names in alias_groups(model):
        found = [n for n in names if n in stored]
        if found:
            full.update({n: stored[found[0]] for n in names})
        else:
            missing.append(names[0])
    unexpected = sorted(set(stored) - set(full))
    if missing or unexpected:
        raise ValueError(f"{path} does not match {Path(directory) / CONFIG_FILE}: missing {missing}, "
                         f"unexpected {unexpected}")
    return full
