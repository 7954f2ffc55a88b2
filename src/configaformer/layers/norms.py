"""Normalisation layers selectable by name (`norm_type`)."""

from __future__ import annotations

from torch import nn

NORMS = {
    "layernorm": lambda dim, eps: nn.LayerNorm(dim, eps=eps),
    "rmsnorm": lambda dim, eps: nn.RMSNorm(dim, eps=eps),  # Zhang & Sennrich 2019, arXiv 1910.07467
    "none": lambda dim, eps: nn.Identity(),
}


def make_norm(norm_type: str, dim: int, eps: float) -> nn.Module:
    return NORMS[norm_type](dim, eps)
