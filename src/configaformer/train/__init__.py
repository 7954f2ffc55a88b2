"""Training: run files, the loop, checkpoints, metrics (`configaformer train RUN.yaml`)."""

from .config import RunConfig, load_run_config
from .loop import Summary, Trainer, TrainingError, train

__all__ = ["RunConfig", "Summary", "Trainer", "TrainingError", "load_run_config", "train"]
