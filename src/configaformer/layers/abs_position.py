"""Absolute position embeddings added to the token embeddings (model key `abs_pos_emb`).

- learned: a table of max_seq_len x dim_model vectors (GPT-2 style), initialised like every
  embedding (normal, init_std).
- sinusoidal: Vaswani et al. 2017, arXiv 1706.03762, section 3.5: feature 2i holds
  sin(pos / 10000^(2i/d)) and feature 2i+1 the matching cos. The paper multiplies the token
  embeddings by sqrt(d) before adding; here the token embeddings stay at init_std, so the table
  is multiplied by 1/sqrt(d) instead (the same ratio up to one overall scale), which keeps each
  feature's spread (~0.7/sqrt(d)) near the embeddings'.

Both take positions (B|1, L) long -- the context's, which count real tokens only, so left padding
leaves every real token's position unchanged -- and return (B|1, L, dim_model).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class LearnedPositions(nn.Module):
    def __init__(self, max_len: int, dim: int):
        super().__init__()
        self.table = nn.Embedding(max_len, dim)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return self.table(positions)


class SinusoidalPositions(nn.Module):
    def __init__(self, dim: int, base: float = 10000.0):
        super().__init__()
        self.dim, self.base = dim, base
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        # Frequencies made in float32 on each call (no buffer a model.to(bfloat16) would round).
        exponent = torch.arange(0, self.dim, 2, dtype=torch.float32, device=positions.device) / self.dim
        inv_freq = 1.0 / (self.base ** exponent)  # (ceil(d/2),)
        angles = positions[..., None].float() * inv_freq  # (B|1, L, ceil(d/2))
        table = torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(-2)  # sin, cos interleaved
        return table[..., : self.dim] * self.scale  # (B|1, L, d)


def make_abs_positions(kind: str, dim: int, max_len: int | None) -> nn.Module | None:
    if kind == "learned":
        return LearnedPositions(max_len, dim)
    if kind == "sinusoidal":
        return SinusoidalPositions(dim)
    return None
