"""Cross-attention to a context sequence (Vaswani et al. 2017, arXiv 1706.03762, the decoder's
encoder-decoder attention). Queries come from the layer input; keys and values from the context
the caller passes as `model(ids, context=states, context_mask=mask)`, e.g. an encoder's output
(see `configaformer.EncoderDecoder`). Every query may attend every real context token, so
causality of the layer input is untouched.

Shapes: input/output (B, L, dim_model); context (B, S, dim_context); q (B, H, L, Dh),
k and v (B, G, S, Dh).
"""

from __future__ import annotations

from typing import Literal, Optional

import torch
import torch.nn.functional as F
from pydantic import Field, NonNegativeFloat, PositiveInt
from torch import nn

from ..config import LayerConfig, LayerPlan, ModelConfig
from ..config.layer import indivisible
from ..context import ForwardContext
from ..registry import register_block
from .base import Block


class CrossAttentionConfig(LayerConfig):
    type: Literal["CrossAttention"] = "CrossAttention"
    dim_attn: Optional[PositiveInt] = None  # None: dim_model
    num_heads: PositiveInt = 8
    num_kv_heads: Optional[PositiveInt] = None  # None: num_heads
    dim_context: Optional[PositiveInt] = None  # None: dim_model
    qk_norm_bool: bool = False
    attn_dropout: NonNegativeFloat = Field(0.0, lt=1.0)
    bias_bool: bool = True

    def resolve(self, model: ModelConfig) -> CrossAttentionConfig:
        update = {"dim_attn": self.dim_attn or model.dim_model, "num_kv_heads": self.num_kv_heads or self.num_heads,
                  "dim_context": self.dim_context or model.dim_model}
        return LayerConfig.resolve(self.model_copy(update=update), model)

    @property
    def dim_head(self) -> int:
        return self.dim_attn // self.num_heads

    def block_params(self, model: ModelConfig) -> int:
        dim, da, bias = model.dim_model, self.dim_attn, int(self.bias_bool)
        dkv = self.num_kv_heads * self.dim_head
        return (dim * da + bias * da) + 2 * (self.dim_context * dkv + bias * dkv) + da * dim + bias * dim \
            + 2 * self.dim_head * self.qk_norm_bool

    def check(self, model: ModelConfig):
        issues = super().check(model)
        if self.dim_attn % self.num_heads:
            issues.append(indivisible("num_heads", self.num_heads, "dim_attn", self.dim_attn))
        if self.num_heads % self.num_kv_heads:
            issues.append(indivisible("num_kv_heads", self.num_kv_heads, "num_heads", self.num_heads))
        return issues

    def summary(self) -> str:
        rest = super().summary()
        return f"heads={self.num_heads} dim_attn={self.dim_attn} context={self.dim_context}" + (" " + rest if rest else "")


@register_block("CrossAttention", CrossAttentionConfig)
class CrossAttention(Block):
    reads_context = True
    def __init__(self, cfg: CrossAttentionConfig, model: ModelConfig, plan: LayerPlan):
        super().__init__(cfg, model, plan)
        bias = cfg.bias_bool
        self.num_heads, self.num_kv_heads, self.dim_head = cfg.num_heads, cfg.num_kv_heads, cfg.dim_head
        self.dim_attn, self.dim_context, self.attn_dropout = cfg.dim_attn, cfg.dim_context, cfg.attn_dropout
        self.layer_index = plan.index
        self.q_proj = nn.Linear(model.dim_model, cfg.dim_attn, bias=bias)
        self.kv_proj = nn.Linear(cfg.dim_context, 2 * cfg.num_kv_heads * cfg.dim_head, bias=bias)
        self.q_norm = nn.RMSNorm(self.dim_head, eps=model.norm_eps) if cfg.qk_norm_bool else None
        self.k_norm = nn.RMSNorm(self.dim_head, eps=model.norm_eps) if cfg.qk_norm_bool else None
        self.out_proj = nn.Linear(cfg.dim_attn, model.dim_model, bias=bias)

    def forward(self, h: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        if ctx.context is None:
            raise ValueError(f"layers[{self.layer_index}] is a CrossAttention layer: pass the sequence it "
                             f"attends to as model(token_ids, context=..., context_mask=...)")
        context = ctx.context
        if context.dim() != 3 or context.shape[0] != h.shape[0] or context.shape[-1] != self.dim_context:
            raise ValueError(f"context must have shape (batch={h.shape[0]}, length, dim_context={self.dim_context}), "
                             f"got {tuple(context.shape)}")
        B, L, _ = h.shape
        S = context.shape[1]
        q = self.q_proj(h).view(B, L, self.num_heads, self.dim_head).transpose(1, 2)  # (B, H, L, Dh)
        kv = self.kv_proj(context.to(h.dtype)).view(B, S, 2, self.num_kv_heads, self.dim_head)
        k, v = kv.permute(2, 0, 3, 1, 4)  # 2 x (B, G, S, Dh)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        mask = None if ctx.context_mask is None else ctx.context_mask[:, None, None, :].to(torch.bool)  # (B, 1, 1, S)
        dropout = self.attn_dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout,
                                             enable_gqa=self.num_kv_heads != self.num_heads)
        return self.out_proj(out.transpose(1, 2).reshape(B, L, self.dim_attn))
