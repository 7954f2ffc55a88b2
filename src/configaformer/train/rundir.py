"""The run directory (`out_dir`) before training starts: where a run may write, who holds it, and
what a killed earlier run left there.

    RUN_DIR/.lock          held (fcntl) by the training process (rank 0) while it runs: a second
                           process training into the same directory is refused
    RUN_DIR/run_id         a random id made when the run starts afresh; every checkpoint records
                           it, and an engine's pickled state is loaded only from checkpoints whose
                           id matches (train/checkpoint.py, check_engine_state_trusted)

`claim_run_dir` takes the lock, then removes the temporaries of checkpoint writes a kill
interrupted (`checkpoints/.step_*`, none of which a live writer can hold: the writer holds the
lock), and on a fresh start moves the metrics of an earlier run that never reached a checkpoint
aside (metrics.jsonl -> metrics.stale-TIME.jsonl, likewise tensorboard/ and loss.png), so its records
are kept but no longer mix with the new run's (moved rather than deleted: nothing is lost silently).
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

from ..data.manifest import read_manifest
from ..errors import ConfigError, Problem
from ..fileio import remove_path, write_text_atomic
from .runtime import TrainingError

LOCK_FILE, RUN_ID_FILE = ".lock", "run_id"
STALE = ("metrics.jsonl", "tensorboard", "loss.png")  # an earlier run's curves, moved aside on a fresh start


def check_out_dir(out_dir: str) -> None:
    """ConfigError naming out_dir for a directory training must not write into: an existing file,
    or a prepared dataset (or a directory inside one) whose verification the run's files would break."""
    path = Path(out_dir)
    existing = next(p for p in [path, *path.parents] if p.exists() or p == Path(p.anchor or "."))
    if existing.exists() and not existing.is_dir():
        what = "is a file" if existing == path else f"is inside {str(existing)!r}, a file"
        raise ConfigError(Problem("out_dir", f"{out_dir!r} {what}, not a directory; choose another out_dir"))
    for parent in [path.resolve(), *path.resolve().parents]:
        try:
            read_manifest(parent)
        except ValueError:  # no manifest, or a manifest.json of something else
            continue
        where = "is a prepared dataset" if parent == path.resolve() else f"is inside the prepared dataset {parent}"
        raise ConfigError(Problem("out_dir", f"{out_dir!r} {where}: the run's files would break its verification; "
                                             f"choose another out_dir"))


class RunDirLock:
    """An exclusive lock on the run directory, released by close() or when the process ends."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / LOCK_FILE
        self.file = open(self.path, "a+", encoding="utf-8")
        try:
            import fcntl
        except ImportError:  # no fcntl (Windows): no lock
            return
        try:
            fcntl.lockf(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.file.seek(0)
            holder = self.file.read().strip() or "another process"
            self.file.close()
            raise TrainingError(f"{run_dir} is in use by a training process ({holder}); wait for it to end, "
                                f"or choose another out_dir") from None
        self.file.truncate(0)
        self.file.write(f"pid {os.getpid()}\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def claim_run_dir(run_dir: Path, resume: bool) -> tuple[RunDirLock, str]:
    """Lock the run directory (it exists), clean what killed runs left, on a fresh start set the
    earlier run's metrics aside and make a new run id (also for a resumed run from before run ids).
    Returns (the lock, the run id)."""
    lock = RunDirLock(run_dir)
    try:
        root = run_dir / "checkpoints"
        if root.is_dir():
            pointed = {(root / p).read_text(encoding="utf-8").strip() for p in ("latest", "best")
                       if (root / p).is_file()}
            for path in root.iterdir():  # a write killed part-way: a temporary, staging or swap directory
                if path.name.startswith(".step_") and path.name not in pointed:
                    remove_path(path)
        if not resume:
            for name in STALE:
                if (run_dir / name).exists():
                    os.replace(run_dir / name, _aside(run_dir, name))
        if not resume or run_id(run_dir) is None:
            write_text_atomic(run_dir / RUN_ID_FILE, secrets.token_hex(8) + "\n")
        return lock, run_id(run_dir)
    except BaseException:
        lock.close()
        raise


def _aside(run_dir: Path, name: str) -> Path:
    """A free name for `name` set aside: metrics.jsonl -> metrics.stale-20260102-030405.jsonl (-2, ...)."""
    stem, dot, ext = name.partition(".")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1, 1000):
        path = run_dir / f"{stem}.stale-{stamp}{'' if n == 1 else f'-{n}'}{dot}{ext}"
        if not path.exists():
            return path
    raise TrainingError(f"{run_dir}: too many {stem}.stale-* files; remove some")


def run_id(run_dir: Path) -> str | None:
    """The run directory's id (see claim_run_dir), or None if it has none."""
    path = run_dir / RUN_ID_FILE
    return path.read_text(encoding="utf-8").strip() if path.is_file() else None
