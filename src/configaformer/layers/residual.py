"""What happens to a layer's branch output before the residual add.

- ReZero (Bachlechner et al. 2020, arXiv 2003.04887): y * a, one learned scalar a initialised
  to 0, so every such layer starts as the identity.
- LayerScale (Touvron et al. 2021, "CaiT", arXiv 2103.17239): y * diag(s), one learned scale
  per feature initialised to a small constant (`layerscale_init`).
- Stochastic depth (Huang et al. 2016, arXiv 1603.09382), per sample as timm's DropPath: in
  training each sample's branch is dropped with probability p and kept ones are scaled by
  1 / (1 - p), so the expected output equals the eval-mode output.
"""

from __future__ import annotations

import torch
from torch import nn


class ResidualScale(nn.Module):
    """y * scale, with `scale` a learned scalar (rezero, init 0) or per-feature vector (layerscale)."""

    def __init__(self, kind: str, dim: int, init: float | None):
        super().__init__()
        self.kind = kind
        self.init = 0.0 if kind == "rezero" else float(init)
        self.scale = nn.Parameter(torch.empty(() if kind == "rezero" else (dim,)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.constant_(self.scale, self.init)

    def forward(self, y: torch.Tensor) -> torch.Tensor:  # (B, L, D) -> (B, L, D)
        return y * self.scale

    def extra_repr(self) -> str:
        return f"{self.kind}, init={self.init:g}"


def make_residual_scale(kind: str, dim: int, init: float | None) -> ResidualScale | None:
    return None if kind == "none" else ResidualScale(kind, dim, init)


def drop_path(y: torch.Tensor, p: float) -> torch.Tensor:
    """Zero each sample's y (B, ...) with probability p and scale the kept ones by 1 / (1 - p).

    A random tensor multiplies y, so there is no data-dependent branch (torch.compile friendly);
    the branch is still computed for dropped samples (no compute is saved)."""
    keep = 1.0 - p
    mask = torch.empty((y.shape[0],) + (1,) * (y.dim() - 1), dtype=y.dtype, device=y.device).bernoulli_(keep)
    return y * (mask / keep)
