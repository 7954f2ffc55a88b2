"""Training on many processes through engines people already trust, applied to a built model from
outside: the model code stays single-device.

    distributed:
      engine: none | ddp | fsdp | deepspeed | xla
      backend: auto          # auto: nccl on CUDA, gloo on CPU
      fsdp: {reshard_after_forward: true}
      deepspeed: {zero_stage: 2, offload_optimizer: false, offload_param: false, config_path: null}

| engine | what it shards | module |
| --- | --- | --- |
| `ddp` | nothing: gradients all-reduced | ddp.py (torch DistributedDataParallel) |
| `fsdp` | parameters, gradients, optimizer state; each Layer a unit | fsdp.py (FSDP2 fully_shard) |
| `deepspeed` | ZeRO stage 1/2/3 (+ CPU offload) | deepspeed_zero.py (deepspeed.initialize) |
| `xla` | nothing (DDP over XLA collectives); thin, untested on TPUs | xla.py (torch_xla) |

Launch with the engine's usual launcher; the rank and world size come from its environment:

    torchrun --nproc-per-node 2 -m configaformer train RUN.yaml
    deepspeed --num_gpus 2 --module configaformer train RUN.yaml      # DS_ACCELERATOR=cpu on CPUs

Everything about the distributed settings that can be wrong (a missing package, an engine this
machine cannot run, a DeepSpeed option that contradicts the run, inconsistent batch settings) is
a ConfigError naming the setting, raised by `make_engine` before any process group exists.
"""

from __future__ import annotations

import importlib
import importlib.util
import os

import torch

from ..errors import ConfigError, Problem
from .base import CheckpointRequest, DistributedEngine, Engine, launched

ENGINES = {"none": ("base", "Engine"), "ddp": ("ddp", "DDPEngine"), "fsdp": ("fsdp", "FSDPEngine"),
           "deepspeed": ("deepspeed_zero", "DeepSpeedEngine"), "xla": ("xla", "XLAEngine")}
PACKAGES = {"deepspeed": ("deepspeed", "pip install 'configaformer[distributed]'"),
            "xla": ("torch_xla", "on a TPU VM: pip install torch_xla[tpu] matching torch " + torch.__version__)}


def launch_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) set by torchrun / the deepspeed launcher; (0, 1, 0) without one."""
    if not launched():
        return 0, 1, 0
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))


def check_distributed(run, world_size: int, precision: str) -> list[Problem]:
    """Every problem of the run's `distributed` section for this world size and precision (fp32,
    bf16 or fp16: train.precision resolved for the device); no process group needed."""
    section, engine = run.distributed, run.distributed.engine
    problems = [Problem(f"distributed.{key}", f"is set, but distributed.engine is {engine!r}")
                for key in ("fsdp", "deepspeed") if key in section.model_fields_set and engine != key]
    if engine == "none":
        if world_size > 1:
            problems.append(Problem("distributed.engine", f"is 'none', but {world_size} processes were launched: "
                                                          f"choose ddp, fsdp or deepspeed"))
        return problems
    package = PACKAGES.get(engine)
    if package is not None and importlib.util.find_spec(package[0]) is None:
        return problems + [Problem("distributed.engine", f"{engine!r} needs the {package[0]} package, which is not "
                                                         f"installed ({package[1]})")]
    if not torch.distributed.is_available():
        return problems + [Problem("distributed.engine", f"{engine!r} needs torch.distributed, which this torch "
                                                         f"build lacks")]
    if section.backend == "nccl" and not torch.cuda.is_available():
        problems.append(Problem("distributed.backend", "nccl needs CUDA devices; use gloo (or auto) on CPUs"))
    module = importlib.import_module(f".{ENGINES[engine][0]}", __name__)
    if engine == "deepspeed":
        problems += module.check(run, world_size, precision)
    elif hasattr(module, "check"):
        problems += module.check(run)
    return problems


def make_engine(run, precision: str) -> Engine:
    """The engine the run file asks for, for the processes the launcher started and the run's
    resolved precision; a ConfigError naming the setting when it cannot run."""
    rank, world_size, local_rank = launch_env()
    problems = check_distributed(run, world_size, precision)
    if problems:
        raise ConfigError(problems)
    module, name = ENGINES[run.distributed.engine]
    engine_cls = getattr(importlib.import_module(f".{module}", __name__), name)
    return engine_cls(run, precision, rank, world_size, local_rank)


__all__ = ["CheckpointRequest", "DistributedEngine", "ENGINES", "Engine", "check_distributed", "launch_env", "make_engine"]
