"""Output gating: y <- y * act(W x_src + b), with x_src the layer input or its hidden state."""

from __future__ import annotations

import torch
from torch import nn

from .activations import get_activation


class OutputGate(nn.Module):
    def __init__(self, dim_in: int, dim_out: int, activation: str, source: str, bias: bool = True):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out, bias=bias)
        self.act = get_activation(activation)
        self.activation = activation
        self.source = source  # "input" (residual stream) or "hidden" (after norm and shift)

    def forward(self, y: torch.Tensor, x_input: torch.Tensor, x_hidden: torch.Tensor) -> torch.Tensor:
        src = x_input if self.source == "input" else x_hidden
        return y * self.act(self.proj(src))

    def extra_repr(self) -> str:
        return f"activation={self.activation}, source={self.source}"
