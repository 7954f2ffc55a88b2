"""Run metrics: one JSON line per log step, optional TensorBoard events, PNG loss curves."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..fileio import atomic_write, write_text_atomic

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "loss.png"


class MetricsWriter:
    def __init__(self, run_dir: Path, enabled: bool = True, tensorboard: bool = True):
        self.run_dir, self.enabled = run_dir, enabled
        self.train: list[tuple[int, float]] = []  # (tokens, loss)
        self.val: dict[str, list[tuple[int, float]]] = {}  # head -> (tokens, loss)
        self._tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:  # tensorboard is an optional extra
                self._tb = None

    def load_history(self) -> None:
        """After a resume: reread the curves written so far, for the plots."""
        path = self.run_dir / METRICS_FILE
        if not path.is_file():
            return
        for line in read_lines(path):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
            self._remember(record)

    def truncate_after(self, step: int) -> None:
        """Drop records past `step` (written by a run that died after its last checkpoint)."""
        path = self.run_dir / METRICS_FILE
        if not self.enabled or not path.is_file():
            return
        kept = []
        for line in read_lines(path):
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line)
            except json.JSONDecodeError:
                pass
        write_text_atomic(path, "".join(k + "\n" for k in kept))

    def _remember(self, record: dict[str, Any]) -> None:
        if record.get("kind") == "train":
            self.train.append((record["tokens"], record["loss"]))
        elif record.get("kind") == "eval":
            for head, values in record["heads"].items():
                self.val.setdefault(head, []).append((record["tokens"], values["loss"]))

    def log(self, record: dict[str, Any]) -> None:
        self._remember(record)
        if not self.enabled:
            return
        with open(self.run_dir / METRICS_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            step = record["step"]
            if record["kind"] == "train":
                aux = [key for key in record if key.startswith("layers[")]  # layers' auxiliary reports
                for key in ("loss", "lr", "grad_norm", "tokens_per_s", *aux):
                    if isinstance(record.get(key), (int, float)):
                        self._tb.add_scalar(f"train/{key}", record[key], step)
            else:
                for head, values in record["heads"].items():
                    for key, value in values.items():
                        self._tb.add_scalar(f"eval/{head}/{key}", value, step)
            self._tb.flush()

    def plot(self) -> Path | None:
        """Train and validation loss against tokens seen, written atomically to loss.png."""
        if not self.enabled or not (self.train or self.val):
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
        if self.train:
            tokens, loss = zip(*self.train)
            ax.plot(tokens, loss, lw=1, alpha=0.8, label="train")
        for head, points in self.val.items():
            tokens, loss = zip(*points)
            ax.plot(tokens, loss, marker="o", ms=3, lw=1.5, label=f"validation ({head})")
        ax.set_xlabel("tokens seen")
        ax.set_ylabel("loss (nats per token)")
        ax.grid(alpha=0.3)
        ax.legend()
        finite = [v for _, v in self.train if math.isfinite(v)]
        if finite:
            ax.set_ylim(top=min(max(finite), 2.5 * finite[-1]) * 1.05)
        fig.tight_layout()
        path = self.run_dir / PLOT_FILE
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
        plt.close(fig)
        return path

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_lines(path: Path) -> list[str]:
    """The lines of a metrics file; ValueError naming it when it is not UTF-8 text (never
    rewritten then: its records are left as they are for the user to inspect or move aside)."""
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); move it aside to resume") from None
