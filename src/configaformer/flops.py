"""Analytic FLOPs of a config, per token, without building the model.

A multiply-add is 2 FLOPs; matrix products only (norms, activations and other elementwise work
are left out, as in Kaplan et al. 2020 and PaLM's MFU). Each layer's count is its block's
`block_flops` (config/layer.py; attention adds q.k^T and map.v over the context, a lazy layer
only map.v, gMLP its spatial product, MoE its active experts) plus the output gate's product;
the heads add theirs. A training step is 3 x the forward pass (the backward pass computes
gradients for inputs and weights: 2 x). `tests/test_flops.py` checks these counts against
`torch.utils.flop_counter` on tiny models.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import ModelConfig
from .config.resolve import resolve_config


@dataclass(frozen=True)
class FlopCount:
    """Forward FLOPs per token at context length `seq_len`, by part."""

    seq_len: int
    layers: tuple[int, ...]  # one per layer, in order
    embedding: int  # the input projection when input_emb_size differs from dim_model (a lookup is free)
    heads: tuple[int, ...]  # one per classifier

    @property
    def forward(self) -> int:
        return sum(self.layers) + self.embedding + sum(self.heads)

    @property
    def train_step(self) -> int:
        """Per token of a training step: forward and backward."""
        return 3 * self.forward


def head_flops(head, model: ModelConfig) -> int:
    dim, classes = model.dim_model, head.num_classes
    if head.head_type == "tied":  # the embedding's weight, back through its projection if there is one
        return 2 * classes * model.emb_size + (2 * dim * model.emb_size if model.emb_size != dim else 0)
    hidden = head.dim_hidden(model) if head.head_type == "ffn" else 0
    return 2 * dim * classes + 2 * 2 * dim * hidden


def count_flops(config, seq_len: int) -> FlopCount:
    """The FlopCount of `config` (anything Transformer accepts) at context length `seq_len`."""
    cfg = config if isinstance(config, ModelConfig) else resolve_config(config)
    dim = cfg.dim_model
    layers = tuple(layer.block_flops(cfg, seq_len) + (2 * dim * dim if layer.output_gate else 0)
                   for layer in cfg.layers)
    embedding = 2 * cfg.emb_size * dim if cfg.emb_size != dim else 0
    return FlopCount(seq_len, layers, embedding, tuple(head_flops(h, cfg) for h in cfg.classifiers))
