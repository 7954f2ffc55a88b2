"""Named model configs and run files shipped with the package (`configaformer info seed`,
`configaformer train stdlib`), and the one resolver of "a file path or a shipped name"."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from ..errors import ConfigError, Problem

PRESET_DIR = Path(__file__).parent
RUNS_DIR = PRESET_DIR / "runs"
Kind = Literal["preset", "run"]


def list_presets(kind: Kind = "preset") -> list[str]:
    """The shipped names: model presets, or named run files (`kind="run"`)."""
    folder = PRESET_DIR if kind == "preset" else RUNS_DIR
    return sorted(p.stem for p in folder.glob("*.yaml"))


def preset_path(name: str, kind: Kind = "preset") -> Path | None:
    path = (PRESET_DIR if kind == "preset" else RUNS_DIR) / f"{name}.yaml"
    return path if name and path.is_file() else None


def locate(value: str, key: str, kind: Kind = "preset") -> Path:
    """`value` as an existing file, else the shipped preset (or named run) of that name.
    ConfigError at `key` (the argument or config key that gave `value`) listing the names."""
    path = Path(value)
    if path.is_file():
        return path
    named = preset_path(value, kind)
    if named is not None:
        return named
    what, names = ("a preset name", "presets") if kind == "preset" else ("a named run", "named runs")
    raise ConfigError(Problem(key, f"{value!r} is neither a file nor {what} ({names}: {', '.join(list_presets(kind))})"))
