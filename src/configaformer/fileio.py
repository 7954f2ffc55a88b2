"""Small file helpers shared by the package: atomic writes and reading YAML/JSON mappings."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import yaml

from .errors import ConfigError, Problem


def atomic_write(path: Path, write: Callable[[str], Any]) -> None:
    """Call write(tmp) on a temporary file beside `path`, fsync it, then rename it over `path`:
    readers see the old file or the new one, never a half-written one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def read_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """The mapping in a YAML or JSON file (JSON is YAML, so one parser serves both); a
    ConfigError naming the file for anything else."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(Problem("", f"{what} {str(path)!r} does not exist"))
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(Problem("", f"{path} is not valid YAML/JSON: {exc}")) from None
    if not isinstance(data, dict):
        raise ConfigError(Problem("", f"{path} must hold a mapping of {what} keys, got {type(data).__name__}"))
    return data
