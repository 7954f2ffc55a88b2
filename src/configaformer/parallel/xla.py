"""TPU (and other XLA devices) through torch_xla: DDP over the `xla` process-group backend.

THIN PATH, NOT RUN IN THIS PROJECT'S TESTS ON REAL HARDWARE: no TPU is available here. The tests
run everything around it (the checks, and this code against a stand-in torch_xla that maps the
XLA device to the CPU); the torch_xla calls themselves follow its documented DDP recipe
(https://pytorch.org/xla/master/perf/ddp.html):

    dist.init_process_group("xla", init_method="xla://")   # after `import torch_xla.distributed.xla_backend`
    device = torch_xla.device()                            # this process's TPU core
    DDP(model, gradient_as_bucket_view=True)               # gradients all-reduced by XLA collectives
    torch_xla.sync() after each optimizer step             # cut and run the traced graph

On TPUs torch_xla starts one process per chip with `torch_xla.launch(fn)`; the README's
"Scaling out" shows the three-line launcher that runs `configaformer train` under it (with
`PJRT_DEVICE=CUDA`, torchrun works as for the other engines). Checkpoints are the single-process
files (the model and optimizer state are copied to the CPU when saved), so they load anywhere.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import Problem
from ..weights import alias_groups
from .base import FullWeights
from .ddp import DDPEngine


def check(run) -> list[Problem]:
    problems = []
    if run.distributed.backend != "auto":
        problems.append(Problem("distributed.backend", f"{run.distributed.backend!r} cannot run on XLA devices; "
                                                       f"leave it 'auto' (the xla backend)"))
    if run.train.device != "auto":
        problems.append(Problem("train.device", f"is {run.train.device!r}; engine xla trains on the XLA device, "
                                                f"leave it 'auto'"))
    if run.train.precision == "fp16":
        problems.append(Problem("train.precision", "fp16 is not supported on XLA devices; use bf16 or fp32"))
    return problems


class XLAEngine(DDPEngine):
    name = "xla"

    def setup(self, device: torch.device) -> torch.device:
        import torch.distributed as dist
        import torch_xla
        import torch_xla.distributed.xla_backend  # noqa: F401  (registers the "xla" backend)
        import torch_xla.runtime as xr

        self.xla = torch_xla
        # under torch_xla.launch (TPUs) the PJRT runtime, not the environment, knows the ranks
        self.rank, self.world_size, self.local_rank = xr.global_ordinal(), xr.world_size(), xr.local_ordinal()
        if not dist.is_initialized():
            dist.init_process_group("xla", init_method="xla://")
            self._owns_group = True
        self.device = torch_xla.device()
        return self.device

    def ddp_options(self, model: nn.Module) -> dict:
        return {"gradient_as_bucket_view": True}

    def update(self, model: nn.Module, optimizer, max_norm: float) -> float:
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm if max_norm > 0 else math.inf)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        self.xla.sync()  # run the step's graph
        return float(norm)

    def full_weights(self, model: nn.Module):
        return FullWeights(model.config, {k: v.cpu() for k, v in model.state_dict().items()}, alias_groups(model))
