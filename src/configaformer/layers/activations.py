"""Element-wise activations selectable by name (output gates, FFN `activation`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


def squared_relu(x: torch.Tensor) -> torch.Tensor:
    """relu(x)^2, Primer (So et al. 2021, arXiv 2109.08668)."""
    return torch.square(F.relu(x))


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU's tanh approximation 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (Hendrycks &
    Gimpel 2016, arXiv 1606.08415): GPT-2's `gelu_new` and Gemma's `gelu_pytorch_tanh`."""
    return F.gelu(x, approximate="tanh")


ACTIVATIONS = {
    "none": identity,
    "gelu": F.gelu,
    "gelu_tanh": gelu_tanh,
    "sigmoid": torch.sigmoid,
    "silu": F.silu,  # = swish with beta 1 (Ramachandran et al. 2017, arXiv 1710.05941)
    "swish": F.silu,
    "relu": F.relu,
    "squared_relu": squared_relu,
    "mish": F.mish,  # Misra 2019, arXiv 1908.08681
    "tanh": torch.tanh,
}


def get_activation(name: str):
    return ACTIVATIONS[name]
