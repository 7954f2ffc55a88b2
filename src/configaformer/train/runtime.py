"""Where and how a run executes: device and precision choice, the model section of a run file,
RNG snapshots, memory readings, the progress bar."""

from __future__ import annotations

import os
import resource
from typing import Any

import torch

from ..presets import locate
from .config import RunConfig


class TrainingError(RuntimeError):
    """A run that cannot start or cannot go on; the message says why and what to change."""


def model_config_of(run: RunConfig) -> Any:
    """The run's model section: an inline dict, a YAML/JSON path, or a preset name."""
    return run.model if isinstance(run.model, dict) else locate(run.model, "model")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("train.device is 'cuda' but no CUDA device is available")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise TrainingError("train.device is 'mps' but MPS is not available")
    return torch.device(name)


def pick_precision(name: str, device: torch.device) -> str:
    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return "bf16"
        return "fp32"
    if name == "fp16" and device.type != "cuda":
        raise TrainingError("train.precision fp16 needs a CUDA device (use bf16 or fp32)")
    return name


class ProgressBar:
    """A rich progress bar with loss and tokens/s (stays quiet when output is not a terminal)."""

    def __init__(self, total: int | None, done: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 TextColumn("{task.fields[info]}"), transient=False)
        self.task = self.progress.add_task("train", total=total, completed=done, info="")
        self.progress.start()

    def update(self, loss: float, speed: float, step: int) -> None:
        self.progress.update(self.task, completed=step, info=f"loss {loss:.3f}  {speed:,.0f} tok/s")

    def close(self) -> None:
        self.progress.stop()


def rng_state() -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state.update({f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return state


def memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return peak / 1024 if os.name == "posix" else float("nan")
