"""ALiBi: attention with linear biases (Press et al. 2022, arXiv 2108.12409).

Instead of position embeddings, each head h adds -m_h * distance to its attention scores. The
slopes m_h form a geometric sequence: for n heads (n a power of two) m_h = 2^(-8h/n), h = 1..n;
for other n, the slopes of the nearest lower power of two followed by every other slope of the
next power of two (the paper's reference code). Nothing depends on absolute position, so a model
trained on short sequences runs on longer ones.

Forms (per layer, `bias_mask_config.form`):
- causal:    bias = -m * (i - j) for keys j <= i (later keys are masked anyway).
- symmetric: bias = -m * |i - j|, for bidirectional layers.
- split:     the original configaformer design for bidirectional layers: the first half of the
             heads look backward only (keys j <= i), the second half forward only (j >= i),
             each half with the slopes of n/2 heads.
"""

from __future__ import annotations

import math

import torch


def alibi_slopes(num_heads: int) -> torch.Tensor:
    """(num_heads,) float32 slopes as in the paper."""
    def power_of_two(n: int) -> list[float]:
        start = 2 ** (-8 / n)
        return [start ** (h + 1) for h in range(n)]

    if num_heads & (num_heads - 1) == 0:
        return torch.tensor(power_of_two(num_heads))
    lower = 2 ** math.floor(math.log2(num_heads))
    extra = power_of_two(2 * lower)[0::2][: num_heads - lower]
    return torch.tensor(power_of_two(lower) + extra)


def alibi_bias(rel: torch.Tensor, num_heads: int, form: str, dtype: torch.dtype) -> torch.Tensor:
    """Float bias (B|1, H, L, L) from relative positions `rel` (B|1, L, L) = key - query."""
    rel = rel[:, None].to(torch.float32)  # (B, 1, L, L)
    if form == "split":
        half = num_heads // 2
        slopes = torch.cat([alibi_slopes(half), alibi_slopes(num_heads - half)]).to(rel.device)
        backward = torch.arange(num_heads, device=rel.device) < half  # (H,)
        backward = backward[None, :, None, None]
        distance = torch.where(backward, -rel, rel)  # >= 0 where the head may look
        bias = -slopes[None, :, None, None] * distance
        bias = bias.masked_fill(distance < 0, float("-inf"))
    else:
        slopes = alibi_slopes(num_heads).to(rel.device)[None, :, None, None]
        bias = -slopes * rel.abs()
    return bias.to(dtype)
