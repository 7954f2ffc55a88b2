"""The engine contract, the one-process engine, and what every multi-process engine shares.

The Trainer (configaformer.train.loop) reaches an engine only through these calls, in this order:

    engine = make_engine(run, precision)      # rank / world size from the launcher's environment
    device = engine.setup(device)             # joins the process group (multi-process engines)
    train_model, optimizer = engine.prepare(model, make_optimizer)
    per micro-batch:  with engine.accumulating(skip_sync): engine.backward(loss)
    per step:         grad_norm = engine.update(model, optimizer, max_norm); engine.mean(loss)
    evaluation:       engine.reduce_sum(totals)
    checkpoints:      engine.save(CheckpointRequest(...)), engine.load(model, optimizer, path, state, optim)
    at the end:       engine.sample_model(model, checkpoint), engine.close()

Everything an engine needs comes through these calls: the arrows run one way (train uses
parallel; nothing here imports configaformer.train). The trainer owns the checkpoint files; an
engine gathers what is sharded and hands it to the trainer's `CheckpointRequest.write` on rank 0.

Checkpoints. Every engine writes the model as one consolidated `model.safetensors` + `config.json`
(rank 0, after gathering), so `Transformer.from_pretrained(checkpoint_dir)` loads it in a single
process. `none`, `ddp`, `fsdp` and `xla` also write the optimizer state gathered into the
single-process format (`optimizer.safetensors`, indexed like `optimizer.state_dict()`), so their
checkpoints resume under any of these engines and any number of processes with the same global
batch. DeepSpeed keeps its optimizer partitions in its own format (see deepspeed_zero.py).
"""

from __future__ import annotations

import contextlib
import math
import shutil
import socket
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..weights import read_weights, write_pretrained


@dataclass
class CheckpointRequest:
    """What the trainer hands `Engine.save` to write one checkpoint (every rank builds one)."""

    model: nn.Module  # the unwrapped model (sharded in place by some engines)
    optimizer: torch.optim.Optimizer  # the one `prepare` returned
    rng: dict[str, torch.Tensor]  # this rank's random states at the last step boundary
    staging: Path  # where every rank may write its part (rank 0 creates it), not yet existing
    # write(weights, optimizer or its state dict or None, every rank's rng, staging or None) -> the
    # checkpoint's path; rank 0 calls it once, with the gathered pieces
    write: Callable[[Any, Any, dict[str, torch.Tensor], Path | None], Path]


class Engine:
    """One process: what `configaformer train` does without `distributed` (engine `none`)."""

    name = "none"
    sharded = False  # parameters live partly on other ranks: sample from the saved checkpoint
    unpickles_own_state = False  # `load` reads files in the engine's own, pickled format (DeepSpeed)

    def __init__(self, run, precision: str, rank: int = 0, world_size: int = 1, local_rank: int = 0):
        self.run, self.section, self.precision = run, run.distributed, precision  # precision: resolved, not auto
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> dict[str, Any]:
        """What a checkpoint records about the engine that wrote it (state.json `distributed`)."""
        return {"engine": self.name, "world_size": self.world_size}

    # -- setting up
    def setup(self, device: torch.device) -> torch.device:
        self.device = device
        return device

    def prepare(self, model: nn.Module, make_optimizer: Callable[[], torch.optim.Optimizer]):
        """(the module to run forward/backward on, the optimizer)."""
        return model, make_optimizer()

    # -- one step
    def accumulating(self, skip_sync: bool):
        """Context around one micro-batch's forward and backward; skip_sync: not the last of the step."""
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def update(self, model: nn.Module, optimizer, max_norm: float) -> float:
        """Clip, step, zero the gradients; the gradient norm before clipping."""
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm if max_norm > 0 else math.inf)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(norm)

    def reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def mean(self, value: float) -> float:
        """The mean of a per-rank number over ranks (the logged training loss)."""
        return value

    # -- checkpoints
    def save(self, request: CheckpointRequest) -> Path | None:
        """Write a checkpoint (every rank enters); its path on rank 0."""
        return request.write(request.model, request.optimizer, request.rng, None)

    def load(self, model: nn.Module, optimizer, path: Path, state: dict, optimizer_state: dict | None) -> None:
        """Restore `model` and the `optimizer` from `prepare` out of checkpoint `path` (every rank):
        `state` is its state.json, `optimizer_state` its optimizer state in the single-process
        format (None where an engine kept its own)."""
        check_optimizer_format(state, self)
        model.load_state_dict(read_weights(path, model))
        optimizer.load_state_dict(optimizer_state)

    def own_rng(self, rng: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """This rank's random states out of a checkpoint's rng file."""
        return {k: v for k, v in rng.items() if "." not in k}

    def sample_model(self, model: nn.Module, checkpoint: Path | None) -> nn.Module:
        """A model rank 0 can generate with alone."""
        if not self.sharded:
            return model
        from ..model import Transformer

        return Transformer.from_pretrained(checkpoint, device=self.device)

    def close(self) -> None:
        pass


class DistributedEngine(Engine):
    """A process group over torch.distributed; rank 0 writes files, every rank runs each collective."""

    def backend(self, device: torch.device) -> str:
        chosen = self.section.backend
        return ("nccl" if device.type == "cuda" else "gloo") if chosen == "auto" else chosen

    def setup(self, device: torch.device) -> torch.device:
        import torch.distributed as dist

        if device.type == "cuda":
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        self.device = device
        if not dist.is_initialized():
            options: dict[str, Any] = {"timeout": timedelta(minutes=self.section.timeout_minutes)}
            if not launched():  # one process without a launcher: a private group on a free port
                options.update(init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
                print(f"configaformer: distributed.engine {self.name!r} without a launcher: training in one "
                      f"process (launch with torchrun or deepspeed for more)", file=sys.stderr)
            dist.init_process_group(self.backend(device), **options)
            self._owns_group = True
        return device

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()

    def reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        out = tensor.to(self.device)
        dist.all_reduce(out)
        return out.to(tensor.device)

    def mean(self, value: float) -> float:
        return float(self.reduce_sum(torch.tensor([value], dtype=torch.float64))[0]) / self.world_size

    def seed_ranks(self) -> None:
        """After the identical initialisation on every rank, give each rank its own dropout masks."""
        torch.manual_seed(self.run.train.seed * 1_000_003 + self.rank)

    # -- checkpoints: every rank enters, rank 0 writes
    def full_weights(self, model: nn.Module):
        """Something with save_pretrained(dir) holding the whole model, on rank 0 (None elsewhere)."""
        return model

    def full_optimizer_state(self, optimizer):
        """The optimizer state in the single-process format on rank 0; None when the engine keeps its own."""
        return optimizer

    def save_engine_state(self, staging: Path) -> None:
        """Write what only the engine can write (its sharded state) into the staging directory."""

    def save(self, request: CheckpointRequest) -> Path | None:
        staging = request.staging
        if self.is_main:
            shutil.rmtree(staging, ignore_errors=True)  # left by a run killed while saving
            staging.mkdir(parents=True)
        self.barrier()
        self.save_engine_state(staging)
        weights = self.full_weights(request.model)
        optim = self.full_optimizer_state(request.optimizer)
        rng = self.gather_rng(request.rng)
        path = None
        if self.is_main:
            path = request.write(weights, optim, rng, staging)
        self.barrier()  # no rank goes on (or reads `latest`) before the checkpoint is in place
        return path

    def gather_rng(self, rng: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every rank's random states: rank 0's under their own names, rank r's as `rank{r}.name`."""
        import torch.distributed as dist

        gathered = {}
        for key, value in sorted(rng.items()):
            parts = [torch.empty_like(value, device=self.device) for _ in range(self.world_size)]
            dist.all_gather(parts, value.to(self.device))
            gathered[key] = value
            gathered.update({f"rank{r}.{key}": part.cpu() for r, part in enumerate(parts) if r})
        return gathered

    def own_rng(self, rng: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.rank == 0:
            return super().own_rng(rng)
        prefix = f"rank{self.rank}."
        return {k[len(prefix):]: v for k, v in rng.items() if k.startswith(prefix)}  # {} from fewer ranks

    def close(self) -> None:
        import torch.distributed as dist

        if getattr(self, "_owns_group", False) and dist.is_initialized():
            dist.destroy_process_group()
            self._owns_group = False


# ---- the consolidated model ----------------------------------------------------------------------
class FullWeights:
    """A gathered model state (`tensors`: at least the first name of each alias group) that writes
    itself as Transformer.save_pretrained does."""

    def __init__(self, config, tensors: dict[str, torch.Tensor], groups: list[list[str]]):
        self.config, self.tensors, self.groups = config, tensors, groups

    def save_pretrained(self, directory: str | Path) -> Path:
        return write_pretrained(directory, self.config, self.tensors, self.groups)


def check_optimizer_format(state: dict, engine: Engine) -> None:
    """A checkpoint whose optimizer state an engine kept in its own format resumes only under it."""
    written = state.get("distributed") or {"engine": "none", "world_size": 1}
    if state.get("optimizer") is None and written["engine"] != engine.name:
        raise ValueError(f"the checkpoint's optimizer state is in {written['engine']}'s own format; resume it "
                         f"with distributed.engine: {written['engine']} (this run has {engine.name!r})")


# ---- launching -----------------------------------------------------------------------------------
def launched() -> bool:
    """Started by torchrun, the deepspeed launcher or another that sets the torch.distributed variables."""
    import os

    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
