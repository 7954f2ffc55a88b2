"""Named model configs shipped with the package (`configaformer info seed`)."""

from __future__ import annotations

from pathlib import Path

PRESET_DIR = Path(__file__).parent


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def preset_path(name: str) -> Path | None:
    path = PRESET_DIR / f"{name}.yaml"
    return path if path.is_file() else None
