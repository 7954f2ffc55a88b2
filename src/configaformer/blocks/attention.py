"""Multi-head self-attention, with lazy and residual attention as per-layer options.

Papers:
- Vaswani et al. 2017, "Attention Is All You Need", arXiv 1706.03762.
- Rotary positions: Su et al. 2021, arXiv 2104.09864 (`dim_rope`, `rotate_qk_bool`); rotating
  values as well (`rotate_v_bool`) rotates each value by its key's position and the output back
  by the query's position, so the output too depends only on relative positions.
- Lazy attention: Ying et al. 2021, "LazyFormer", arXiv 2102.12702 (`previous_attention_bool`):
  reuse the attention map of the most recent layer that computed one; no query/key projections.
- Residual attention: He et al. 2020, "RealFormer", arXiv 2012.11747 (`residual_attention_bool`):
  add the previous attention layer's pre-softmax scores to this layer's.

Shapes: input/output (B, L, dim_model); q, k, v (B, H, L, Dh) with Dh = dim_attn / num_heads.
Layers whose map or scores a later layer reads compute attention explicitly; every other layer
calls torch's fused scaled_dot_product_attention. That rule lives in `Attention.__init__`.
"""

from __future__ import annotations

from typing import Literal, Optional

import torch
import torch.nn.functional as F
from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveInt
from torch import nn

from ..config import LayerConfig, LayerPlan, ModelConfig
from ..context import ForwardContext
from ..positional.rotary import apply_rotary
from ..registry import register_block
from .base import Block


class AttentionConfig(LayerConfig):
    type: Literal["Attention"] = "Attention"
    dim_attn: Optional[PositiveInt] = None  # None: dim_model
    num_heads: PositiveInt = 8
    dim_rope: Optional[NonNegativeInt] = None  # None: the model's dim_rope
    rotate_qk_bool: bool = True
    rotate_v_bool: bool = False
    causal_mask_bool: bool = True
    previous_attention_bool: bool = False
    residual_attention_bool: bool = False
    attn_dropout: NonNegativeFloat = Field(0.0, lt=1.0)
    bias_bool: bool = True

    def resolve(self, model: ModelConfig) -> AttentionConfig:
        dim_rope = model.dim_rope if self.dim_rope is None else self.dim_rope
        resolved = self.model_copy(update={"dim_attn": self.dim_attn or model.dim_model, "dim_rope": dim_rope})
        return LayerConfig.resolve(resolved, model)

    @property
    def dim_head(self) -> int:
        return self.dim_attn // self.num_heads

    def block_params(self, model: ModelConfig) -> int:
        dim, da, bias = model.dim_model, self.dim_attn, int(self.bias_bool)
        num_proj = 1 if self.previous_attention_bool else 3  # v only, or q, k, v
        return num_proj * (dim * da + bias * da) + da * dim + bias * dim

    def declared_causal(self) -> bool:
        return self.causal_mask_bool

    def rotary_dim(self) -> int:
        rotates = (self.rotate_qk_bool and not self.previous_attention_bool) or self.rotate_v_bool
        return self.dim_rope if rotates else 0

    def check(self, model: ModelConfig):
        issues = super().check(model)
        if self.dim_attn % self.num_heads:
            options = [h for h in range(1, self.dim_attn + 1) if self.dim_attn % h == 0][:12]
            issues.append(("num_heads", f"dim_attn ({self.dim_attn}) is not divisible by num_heads "
                                        f"({self.num_heads}); valid num_heads: {', '.join(map(str, options))}, ..."))
        elif self.dim_rope and (self.dim_rope % 2 or self.dim_rope > self.dim_head):
            issues.append(("dim_rope", f"{self.dim_rope} (this layer's or the model-wide dim_rope) must be even "
                                       f"and at most the head size dim_attn/num_heads = {self.dim_head}"))
        if self.previous_attention_bool and self.residual_attention_bool:
            issues.append(("residual_attention_bool", "a lazy layer (previous_attention_bool) computes no "
                                                      "scores to add to; set only one of the two"))
        return issues

    def produces(self) -> set[str]:
        return set() if self.previous_attention_bool else {"attn_map", "attn_scores"}

    def consumes(self) -> dict[str, bool]:
        if self.previous_attention_bool:
            return {"attn_map": True}
        return {"attn_scores": False} if self.residual_attention_bool else {}

    def consume_key(self, name: str) -> str:
        return "previous_attention_bool" if name == "attn_map" else "residual_attention_bool"

    def check_source(self, name: str, source: LayerConfig):
        issues = []
        if source.num_heads != self.num_heads:
            issues.append(("num_heads", f"{self.num_heads} heads, but the {name} it reuses has "
                                        f"{source.num_heads}; use num_heads: {source.num_heads}"))
        if name == "attn_map" and self.causal_mask_bool and not source.causal_mask_bool:
            issues.append(("causal_mask_bool", "a causal lazy layer cannot reuse a bidirectional map: "
                                               "it would see future tokens"))
        return issues

    def summary(self) -> str:
        parts = [f"heads={self.num_heads}", f"dim_attn={self.dim_attn}"]
        if self.rotary_dim():
            parts.append(f"rope={self.dim_rope}" + ("+v" if self.rotate_v_bool else ""))
        parts.append("causal" if self.causal_mask_bool else "bidir")
        if self.previous_attention_bool:
            parts.append("lazy")
        if self.residual_attention_bool:
            parts.append("residual")
        rest = super().summary()
        return " ".join(parts) + (" " + rest if rest else "")


@register_block("Attention", AttentionConfig)
class Attention(Block):
    def __init__(self, cfg: AttentionConfig, model: ModelConfig, plan: LayerPlan):
        super().__init__(cfg, model, plan)
        self.num_heads, self.dim_head, self.dim_attn = cfg.num_heads, cfg.dim_head, cfg.dim_attn
        self.causal = cfg.causal_mask_bool
        self.lazy = cfg.previous_attention_bool
        self.residual = cfg.residual_attention_bool
        self.dim_rope = cfg.dim_rope
        self.rotate_qk = bool(cfg.dim_rope) and cfg.rotate_qk_bool and not self.lazy
        self.rotate_v = bool(cfg.dim_rope) and cfg.rotate_v_bool
        self.keep_map = "attn_map" in plan.keep
        self.keep_scores = "attn_scores" in plan.keep
        # The one rule for the attention path: materialise the L x L matrix only when a later
        # layer reads it (or the user asked for the explicit path); otherwise use fused SDPA.
        self.explicit = self.keep_map or self.keep_scores or model.attention_impl == "explicit"
        self.attn_dropout = cfg.attn_dropout
        self.scale = self.dim_head ** -0.5
        if self.lazy:
            self.v_proj = nn.Linear(model.dim_model, cfg.dim_attn, bias=cfg.bias_bool)
        else:
            self.qkv = nn.Linear(model.dim_model, 3 * cfg.dim_attn, bias=cfg.bias_bool)
        self.out_proj = nn.Linear(cfg.dim_attn, model.dim_model, bias=cfg.bias_bool)

    def forward(self, h: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        B, L, _ = h.shape
        H, Dh = self.num_heads, self.dim_head
        rotary = ctx.rotary.get(self.dim_rope) if (self.rotate_qk or self.rotate_v) else None
        if self.lazy:
            v = self.v_proj(h).view(B, L, H, Dh).transpose(1, 2)  # (B, H, L, Dh)
            if self.rotate_v:
                v = apply_rotary(v, *rotary)
            probs = ctx.state["attn_map"]  # (B, H, L, L), already masked and normalised
            out = self._dropout(probs) @ v
        else:
            q, k, v = self.qkv(h).view(B, L, 3, H, Dh).permute(2, 0, 3, 1, 4)  # 3 x (B, H, L, Dh)
            if self.rotate_qk:
                q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
            if self.rotate_v:
                v = apply_rotary(v, *rotary)
            prev = ctx.state.get("attn_scores") if self.residual else None
            if self.explicit:
                out = self._explicit(q, k, v, prev, ctx)
            else:
                out = self._fused(q, k, v, prev, ctx)
        if self.rotate_v:  # rotate each output back by its query position
            out = apply_rotary(out, *rotary, inverse=True)
        out = out.transpose(1, 2).reshape(B, L, self.dim_attn)  # (B, L, dim_attn)
        return self.out_proj(out)

    def _dropout(self, probs: torch.Tensor) -> torch.Tensor:
        if self.training and self.attn_dropout > 0:
            return F.dropout(probs, self.attn_dropout)
        return probs

    def _explicit(self, q, k, v, prev, ctx: ForwardContext) -> torch.Tensor:
        scores = (q @ k.transpose(-2, -1)) * self.scale  # (B, H, L, L), before masking
        if prev is not None:
            scores = scores + prev
        if self.keep_scores:
            ctx.state["attn_scores"] = scores
        mask = ctx.attn_mask(self.causal)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
        if self.keep_map:
            ctx.state["attn_map"] = probs
        return self._dropout(probs) @ v

    def _fused(self, q, k, v, prev, ctx: ForwardContext) -> torch.Tensor:
        mask, is_causal = ctx.fused_mask(self.causal)
        if prev is not None:  # residual scores enter as an additive float mask
            dense = ctx.attn_mask(self.causal)
            mask = prev if dense is None else prev.masked_fill(~dense, float("-inf"))
            is_causal = False
        dropout = self.attn_dropout if self.training else 0.0
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout,
                                              is_causal=is_causal, scale=self.scale)
