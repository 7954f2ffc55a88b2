"""T5 relative position bias (Raffel et al. 2020, arXiv 1910.10683, section 2.1).

Each head learns one scalar per relative-position bucket, added to its attention scores.
Buckets are exact for small distances and logarithmic up to `max_distance`, beyond which all
distances share the last bucket. Bidirectional layers use separate buckets for earlier and
later keys (half the buckets each); causal layers only see earlier keys.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def relative_buckets(rel: torch.Tensor, causal: bool, num_buckets: int, max_distance: int) -> torch.Tensor:
    """Bucket index (same shape as rel) for rel = key position - query position."""
    buckets = torch.zeros_like(rel)
    if causal:
        n = -rel.clamp(max=0)  # distance to an earlier key, >= 0
    else:
        num_buckets //= 2
        buckets = buckets + (rel > 0).long() * num_buckets
        n = rel.abs()
    exact = num_buckets // 2
    is_small = n < exact
    log_ratio = torch.log(n.float().clamp(min=1) / exact) / math.log(max_distance / exact)
    large = (exact + (log_ratio * (num_buckets - exact)).long()).clamp(max=num_buckets - 1)
    return buckets + torch.where(is_small, n, large)


class RelativePositionBias(nn.Module):
    def __init__(self, num_heads: int, causal: bool, num_buckets: int, max_distance: int):
        super().__init__()
        self.causal, self.num_buckets, self.max_distance = causal, num_buckets, max_distance
        self.bias = nn.Embedding(num_buckets, num_heads)

    def forward(self, rel: torch.Tensor) -> torch.Tensor:
        """rel (B|1, L, L) -> float bias (B|1, H, L, L)."""
        buckets = relative_buckets(rel, self.causal, self.num_buckets, self.max_distance)
        return self.bias(buckets).permute(0, 3, 1, 2)
