"""DDP: every rank holds the whole model and optimizer; gradients are averaged by all-reduce
(`torch.nn.parallel.DistributedDataParallel`; Li et al. 2020, arXiv 2006.15704). For models that
fit on one device, it is the fastest engine.

Rank 0 saves the model and the optimizer as a single process would (they are identical on every
rank), so a DDP checkpoint resumes under any engine but DeepSpeed.
"""

from __future__ import annotations

import contextlib

from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .base import DistributedEngine


class DDPEngine(DistributedEngine):
    name = "ddp"

    def ddp_options(self, model: nn.Module) -> dict:
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        # every parameter gets a gradient: the Trainer freezes heads it does not train
        return {"device_ids": device_ids}

    def prepare(self, model: nn.Module, make_optimizer):
        self.ddp = DistributedDataParallel(model, **self.ddp_options(model))
        self.seed_ranks()
        return self.ddp, make_optimizer()

    def accumulating(self, skip_sync: bool):
        # all-reduce once per step: the micro-batches before the last only accumulate locally
        return self.ddp.no_sync() if skip_sync else contextlib.nullcontext()

