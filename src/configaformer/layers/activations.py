"""Element-wise activations selectable by name."""

from __future__ import annotations

import torch
import torch.nn.functional as F

ACTIVATIONS = {
    "none": lambda x: x,
    "gelu": F.gelu,
    "sigmoid": torch.sigmoid,
    "silu": F.silu,
    "relu": F.relu,
    "tanh": torch.tanh,
}


def get_activation(name: str):
    return ACTIVATIONS[name]
