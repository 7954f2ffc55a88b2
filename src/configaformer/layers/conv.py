"""Depthwise convolution along the sequence (Primer, So et al. 2021, arXiv 2109.08668).

Each channel is convolved with its own `kernel_size` filter over neighbouring positions. In a
causal layer the window ends at the current position (left padding only), so no future leaks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SequenceDepthwiseConv(nn.Module):
    def __init__(self, channels: int, kernel_size: int, causal: bool, bias: bool = True):
        super().__init__()
        self.kernel_size, self.causal = kernel_size, causal
        self.conv = nn.Conv1d(channels, channels, kernel_size, groups=channels, bias=bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Start as the identity (a centred/last tap of one), so adding the conv changes nothing at
        init. The model calls this after its child Conv1d's own (Kaiming) init, which it overrides."""
        k = self.kernel_size
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[:, 0, k - 1 if self.causal else (k - 1) // 2] = 1.0
            if self.conv.bias is not None:
                self.conv.bias.zero_()

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None, state: dict | None = None) -> torch.Tensor:
        """x (B, L, C) -> (B, L, C). With a decoding `state`, the last kernel_size - 1 inputs of
        earlier calls stand in for the zero padding, so chunked calls equal one full call."""
        if padding_mask is not None:
            x = x * padding_mask[..., None].to(x.dtype)
        k = self.kernel_size
        if state is not None and self.causal and k > 1:
            history = state.get("conv")
            if history is None:
                history = x.new_zeros(x.shape[0], k - 1, x.shape[2])
            x = torch.cat([history, x], dim=1)  # (B, k - 1 + L, C)
            state["conv"] = x[:, -(k - 1):]
            return self.conv(x.transpose(1, 2)).transpose(1, 2)
        pad = (k - 1, 0) if self.causal else ((k - 1) // 2, k // 2)
        y = self.conv(F.pad(x.transpose(1, 2), pad))  # (B, C, L)
        return y.transpose(1, 2)
