"""AdamW with the usual parameter groups, and the learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import TrainSection


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decoupled weight decay on every matrix that multiplies activations: each parameter with two
    or more dimensions (linear and convolution weights, gMLP's spatial weight, talking-heads
    mixes), except tables read like embeddings: nn.Embedding weights (token embeddings, a tied
    output layer that shares one, position tables, T5 bias buckets) and the raw Parameters a
    module lists in its `no_weight_decay` (attention's memory slots). Vectors and scalars (biases,
    norms, residual scales) are never decayed. The rule and its reasons: docs/blocks.md."""
    tables = set()
    for module in model.modules():
        names = ("weight",) if isinstance(module, nn.Embedding) else getattr(module, "no_weight_decay", ())
        tables |= {id(getattr(module, name)) for name in names if getattr(module, name, None) is not None}
    decay, no_decay, seen = [], [], set()
    for p in model.parameters():
        if id(p) in seen or not p.requires_grad:
            continue
        seen.add(id(p))
        (decay if p.ndim >= 2 and id(p) not in tables else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, cfg: TrainSection) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)


def lr_at(step: int, cfg: TrainSection, total_steps: int | None) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warmup, then cosine or linear
    decay to lr * min_lr_ratio at total_steps. Without a step horizon (only max_minutes), the
    rate stays constant after warmup."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant" or not total_steps:
        return cfg.lr
    span = max(total_steps - cfg.warmup_steps, 1)
    progress = min(max(step - cfg.warmup_steps, 0) / span, 1.0)
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if cfg.schedule == "cosine" else 1 - progress
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * shape
