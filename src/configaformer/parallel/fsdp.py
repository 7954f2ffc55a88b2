"""FSDP2: parameters, gradients and optimizer state sharded over the ranks
(`torch.distributed.fsdp.fully_shard`; Zhao et al. 2023, "PyTorch FSDP", arXiv 2304.11277).

Each configaformer `Layer` is one shard unit: its weights are all-gathered just before it runs
and freed after (`reshard_after_forward`), its gradients reduce-scattered right after its backward.
The root unit holds the rest (embedding, heads, final norm), so a tied head shares its weight with
the embedding inside one unit, as FSDP2 requires. A layer that `share_weights_with` another is the
same module, listed twice in `model.layers`: it is sharded once and gathered at each use.

Checkpoints: the model is gathered to rank 0 with
`get_model_state_dict(full_state_dict=True, cpu_offload=True)` and the AdamW moments with
`full_tensor()`, so the files are the single-process format: `Transformer.from_pretrained` loads
the model, and the run resumes under any engine but DeepSpeed, on any number of ranks with the
same global batch. The price: rank 0 holds the whole model and optimizer state in CPU memory
while saving.
"""

from __future__ import annotations

import inspect
import math
import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import Problem
from ..weights import alias_groups, read_weights
from .base import DistributedEngine, FullWeights, check_optimizer_format


def check(run) -> list[Problem]:
    """FSDP2 as this engine uses it: `fully_shard` (public in torch 2.6), `get_total_norm` and
    `clip_grads_with_norm_` (2.6), and `distribute_tensor(..., src_data_rank=None)` for resuming
    (2.7). Checked by feature, not by version number, so a build that has them passes."""
    missing = []
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401
        from torch.distributed.tensor import distribute_tensor
    except ImportError:
        missing.append("torch.distributed.fsdp.fully_shard")
    else:
        if "src_data_rank" not in inspect.signature(distribute_tensor).parameters:
            missing.append("distribute_tensor(src_data_rank=)")
    missing += [f"torch.nn.utils.{name}" for name in ("get_total_norm", "clip_grads_with_norm_")
                if not hasattr(torch.nn.utils, name)]
    if missing:
        return [Problem("distributed.engine", f"'fsdp' needs FSDP2 as in torch >= 2.7; torch {torch.__version__} "
                                              f"lacks {', '.join(missing)}: upgrade torch or use ddp")]
    return []


class FSDPEngine(DistributedEngine):
    name = "fsdp"
    sharded = True

    def prepare(self, model: nn.Module, make_optimizer):
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mesh = init_device_mesh(self.device.type, (self.world_size,))
        options = {"mesh": mesh, "reshard_after_forward": self.section.fsdp.reshard_after_forward}
        if self.run.train.precision == "bf16":  # gather and compute in bf16, reduce gradients in fp32
            options["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        # The heads' logits are views (F.linear on (B, L, D)); the Trainer never changes them in place.
        warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")
        distinct = list({id(layer): layer for layer in model.layers}.values())  # a shared layer once
        for layer in distinct:
            fully_shard(layer, **options)
        fully_shard(model, **options)
        self.seed_ranks()
        return model, make_optimizer()  # after sharding: the optimizer holds the DTensor shards

    def update(self, model: nn.Module, optimizer, max_norm: float) -> float:
        params = [p for p in model.parameters() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        if hasattr(norm, "full_tensor"):  # a DTensor: the shards' norms combined over ranks
            norm = norm.full_tensor()
        if max_norm > 0 and math.isfinite(max_norm):
            torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(norm)

    # -- checkpoints
    def full_weights(self, model: nn.Module):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return FullWeights(model.config, full, alias_groups(model)) if self.is_main else None

    def full_optimizer_state(self, optimizer):
        """AdamW's moments gathered tensor by tensor into the single-process format (rank 0)."""
        state = optimizer.state_dict()
        gathered: dict[int, dict] = {}
        for index, entry in state["state"].items():  # the same order on every rank
            for key, value in entry.items():
                if hasattr(value, "full_tensor"):
                    value = value.full_tensor().cpu()
                gathered.setdefault(index, {})[key] = value
        return {"state": gathered, "param_groups": state["param_groups"]} if self.is_main else None

    def load(self, model: nn.Module, optimizer, path: Path, state: dict, optimizer_state: dict | None) -> None:
        check_optimizer_format(state, self)
        # Every rank reads the whole files and keeps its own shard. (set_model_state_dict would do the
        # same, but leaves the second name of a shared layer's weights undistributed.)
        full = read_weights(path, model)
        tensors = model.state_dict(keep_vars=True)
        with torch.no_grad():
            for names in alias_groups(model):
                tensors[names[0]].copy_(shard_like(full[names[0]], tensors[names[0]]))
        params = [p for group in optimizer.param_groups for p in group["params"]]
        local = {index: {key: shard_like(value, params[index]) for key, value in entry.items()}
                 for index, entry in optimizer_state["state"].items()}
        optimizer.load_state_dict({"state": local, "param_groups": optimizer_state["param_groups"]})


def shard_like(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a full tensor, placed as `like` (a DTensor parameter) is; other values as they are."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if not isinstance(like, DTensor) or full.shape != like.shape:  # e.g. AdamW's scalar step
        return full
    return distribute_tensor(full.to(like.device), like.device_mesh, like.placements, src_data_rank=None)
