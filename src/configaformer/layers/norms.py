"""Normalisation layers selectable by name (`norm_type`).

- layernorm: Ba et al. 2016, arXiv 1607.06450 (weight and bias per feature).
- rmsnorm: Zhang & Sennrich 2019, arXiv 1910.07467 (weight per feature, no centring).
- rmsnorm_offset: RMSNorm whose gain is 1 + w, w initialised to 0, computed in float32 and cast
  back (Gemma, arXiv 2403.08295, and Gemma 2, arXiv 2408.00118): the same function as rmsnorm
  at init, but weight decay pulls the gain towards 1 instead of 0.
- scalenorm: Nguyen & Salazar 2019, arXiv 1910.05895: x * g / ||x||, one learned scalar g
  initialised to sqrt(dim), so a unit-variance input keeps its scale at init.
- none: identity.

The parameter counts are `config.layer.norm_params`.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class ScaleNorm(nn.Module):
    """x * g / max(||x||_2, eps) over the last dimension; g is one learned scalar."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.g = nn.Parameter(torch.empty(()))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.constant_(self.g, math.sqrt(self.dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., dim) -> (..., dim)
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp(min=self.eps)
        return x * (self.g / norm)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, eps={self.eps}"


class OffsetRMSNorm(nn.Module):
    """x / rms(x) * (1 + w) over the last dimension, in float32; w starts at 0."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = nn.Parameter(torch.empty(dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., dim) -> (..., dim)
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.square().mean(-1, keepdim=True) + self.eps)
        return (normed * (1.0 + self.weight.float())).to(x.dtype)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, eps={self.eps}"


NORMS = {
    "layernorm": lambda dim, eps: nn.LayerNorm(dim, eps=eps),
    "rmsnorm": lambda dim, eps: nn.RMSNorm(dim, eps=eps),
    "rmsnorm_offset": lambda dim, eps: OffsetRMSNorm(dim, eps=eps),
    "scalenorm": lambda dim, eps: ScaleNorm(dim, eps=eps),
    "none": lambda dim, eps: nn.Identity(),
}


def make_norm(norm_type: str, dim: int, eps: float) -> nn.Module:
    return NORMS[norm_type](dim, eps)
