"""Rotary position embedding (Su et al. 2021, RoFormer; arXiv 2104.09864).

The first `dim_rope` features of each head are rotated pairwise (GPT-NeoX "half" layout:
feature i pairs with feature i + dim_rope/2) by an angle proportional to the token position,
so q·k depends on positions only through their difference. Remaining features pass through.
Model key `rope_scaling` rescales the frequencies as Llama 3 does (`llama3_frequencies`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from ..config.model import RopeScalingConfig


def llama3_frequencies(inv_freq: torch.Tensor, scaling: RopeScalingConfig) -> torch.Tensor:
    """Llama 3's rescaled frequencies (Grattafiori et al. 2024, arXiv 2407.21783), in the
    arithmetic Hugging Face transformers uses so that imported checkpoints give its logits:
    long wavelengths slowed by `factor`, short ones kept, a linear blend in between."""
    context = scaling.original_max_seq_len
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > context / scaling.low_freq_factor, inv_freq / scaling.factor, inv_freq)
    smooth = (context / wavelen - scaling.low_freq_factor) / (scaling.high_freq_factor - scaling.low_freq_factor)
    blended = (1 - smooth) * scaled / scaling.factor + smooth * scaled
    medium = ~(wavelen < context / scaling.high_freq_factor) & ~(wavelen > context / scaling.low_freq_factor)
    return torch.where(medium, blended, scaled)


class RotaryTable(nn.Module):
    """Caches cos/sin for positions [0, cached) and grows the cache when a longer input comes."""

    def __init__(self, dim_rope: int, base: float = 10000.0, initial_len: int = 256,
                 scaling: RopeScalingConfig | None = None):
        super().__init__()
        self.dim_rope = dim_rope
        inv_freq = 1.0 / (base ** (torch.arange(0, dim_rope, 2, dtype=torch.float32) / dim_rope))
        if scaling is not None:
            inv_freq = llama3_frequencies(inv_freq, scaling)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.register_buffer("cos_cached", torch.empty(0), persistent=False)
        self.register_buffer("sin_cached", torch.empty(0), persistent=False)
        self._build(initial_len)

    def _build(self, length: int) -> None:
        t = torch.arange(length, device=self.inv_freq.device, dtype=torch.float32)
        freqs = torch.outer(t, self.inv_freq.float())  # (L, dim_rope/2)
        emb = torch.cat([freqs, freqs], dim=-1)  # (L, dim_rope)
        self.cos_cached, self.sin_cached = emb.cos(), emb.sin()

    def forward(self, length: int, positions: torch.Tensor | None, dtype: torch.dtype, offset: int = 0):
        """cos, sin broadcastable to (B, H, L, dim_rope): (1, 1, L, d) for positions
        offset..offset+L-1, or (B, 1, L, d) for explicit `positions` (B, L)."""
        end = offset + length
        if end > self.cos_cached.shape[0] or self.cos_cached.device != self.inv_freq.device:
            self._build(max(end, 2 * self.cos_cached.shape[0]))
        if positions is None:
            cos, sin = self.cos_cached[offset:end], self.sin_cached[offset:end]
            return cos[None, None].to(dtype), sin[None, None].to(dtype)
        cos, sin = self.cos_cached[positions], self.sin_cached[positions]  # (B, L, d)
        return cos[:, None].to(dtype), sin[:, None].to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    """Rotate the first cos.shape[-1] features of x (B, H, L, Dh); `inverse` rotates back."""
    d = cos.shape[-1]
    if inverse:
        sin = -sin
    if d == x.shape[-1]:
        return x * cos + rotate_half(x) * sin
    x_rot, x_pass = x[..., :d], x[..., d:]
    return torch.cat([x_rot * cos + rotate_half(x_rot) * sin, x_pass], dim=-1)
