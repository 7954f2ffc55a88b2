"""Classifier heads: each maps final hidden states (B, L, dim_model) to logits (B, L, classes).

Every head is `cap(out(features(x)))` with `out` a linear layer and `cap` the optional logit
soft-cap `c * tanh(z / c)` (`logit_softcap`, Gemma 2, arXiv 2408.00118), so a loss can be
computed from `features(x)`, `out`'s weight and `softcap` without forming all logits
(layers/losses.py).

- "ffn" (default): x + FFN(norm(x)), then norm and a linear layer. The small residual FFN lets
  heads that share one trunk specialise its features.
- "linear": one linear layer.
- "tied": the input embedding table reused as output weights (Press & Wolf 2017,
  arXiv 1608.05859), after a projection to input_emb_size when that differs from dim_model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ClassifierConfig, ModelConfig
from .norms import make_norm


class Head(nn.Module):
    """What every head shares: logits = cap(out(features(x)))."""

    softcap: float | None = None
    out: nn.Linear

    def features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.out(self.features(x))
        return logits if self.softcap is None else self.softcap * torch.tanh(logits / self.softcap)


class FFNHead(Head):
    def __init__(self, cfg: ClassifierConfig, model: ModelConfig):
        super().__init__()
        dim, hidden = model.dim_model, cfg.dim_hidden(model)
        self.norm = make_norm(model.norm_type, dim, model.norm_eps)
        self.up = nn.Linear(dim, hidden, bias=cfg.bias_bool)
        self.down = nn.Linear(hidden, dim, bias=cfg.bias_bool)
        self.out_norm = make_norm(model.norm_type, dim, model.norm_eps)
        self.out = nn.Linear(dim, cfg.num_classes, bias=cfg.bias_bool)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """What the final linear layer `out` reads (see `Transformer.forward(..., targets=)`)."""
        x = x + self.down(F.gelu(self.up(self.norm(x))))
        return self.out_norm(x)


class LinearHead(Head):
    def __init__(self, cfg: ClassifierConfig, model: ModelConfig):
        super().__init__()
        self.out = nn.Linear(model.dim_model, cfg.num_classes, bias=cfg.bias_bool)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x


class TiedHead(Head):
    def __init__(self, cfg: ClassifierConfig, model: ModelConfig, embedding: nn.Embedding):
        super().__init__()
        emb = model.emb_size
        self.proj = nn.Linear(model.dim_model, emb, bias=False) if emb != model.dim_model else None
        self.out = nn.Linear(emb, cfg.num_classes, bias=cfg.bias_bool)
        self.out.weight = embedding.weight  # one shared Parameter, saved once

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.proj is None else self.proj(x)


def make_head(cfg: ClassifierConfig, model: ModelConfig, embedding: nn.Embedding) -> Head:
    if cfg.head_type == "tied":
        head = TiedHead(cfg, model, embedding)
    else:
        head = {"ffn": FFNHead, "linear": LinearHead}[cfg.head_type](cfg, model)
    head.softcap = cfg.logit_softcap
    return head
