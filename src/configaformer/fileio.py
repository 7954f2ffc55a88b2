"""Small file helpers shared by the package: atomic writes and reading YAML/JSON mappings."""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
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


def sha256_file(path: Path, fsync: bool = False) -> str:
    """The sha256 of a file's bytes (hex); with fsync, the file is first flushed to disk."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        if fsync:
            os.fsync(handle.fileno())
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def temp_tag() -> str:
    """`PID-RANDOM` for a temporary name: `remove_stale_temporaries` reads the writer's PID back."""
    return f"{os.getpid()}-{secrets.token_hex(4)}"


def process_alive(pid: int) -> bool:
    """Whether process `pid` runs on this machine (a process of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def stale_temporaries(directory: Path, pattern: str) -> list[Path]:
    """Entries of `directory` whose whole name matches `pattern` (a regex with a group `pid`, the
    writer's process id from `temp_tag`) and whose writer has gone: left by a killed process.
    A temporary of a running process, ours included, is never listed."""
    if not directory.is_dir():
        return []
    regex = re.compile(pattern)
    found = []
    for path in sorted(directory.iterdir()):
        match = regex.fullmatch(path.name)
        if match and not process_alive(int(match["pid"])):
            found.append(path)
    return found


def remove_path(path: Path) -> None:
    """Delete a file or a directory tree (what a killed writer left); missing is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def read_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """The mapping in a YAML or JSON file; a ConfigError naming the file for anything else. A
    `.json` file is read as JSON: YAML 1.1 (PyYAML) reads JSON's `1e-05` as a string."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(Problem("", f"{what} {str(path)!r} does not exist"))
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(Problem("", f"{path} is not valid YAML/JSON: {exc}")) from None
    if not isinstance(data, dict):
        raise ConfigError(Problem("", f"{path} must hold a mapping of {what} keys, got {type(data).__name__}"))
    return data
