"""gMLP: an MLP whose hidden features are gated by a learned projection along the sequence.

Paper: Liu, Dai, So, Le 2021, "Pay Attention to MLPs", arXiv 2105.08050
(https://arxiv.org/abs/2105.08050). One gMLP block (the pre-norm and the residual add come
from the `Layer` wrapper, like every block):

    z    = gelu(h @ U)                          # (B, L, D) -> (B, L, hidden)
    u, v = split(z)                             # 2 x (B, L, hidden/2)
    v    = norm(v) * keep                       # padded positions zeroed: they never mix in
    g    = W[:L, :L] @ v + b[:L]                # spatial gating unit, W (n, n), b (n,), n = max_seq_len
    g    = g + tiny_attn(h)                     # aMLP only (dim_tiny_attn > 0)
    y    = (u * g) @ V                          # out_proj: (B, L, hidden/2) -> (B, L, D)

Keys:
- `ff_mult` (6.0, as in every model of the paper): hidden = round(ff_mult * dim_model), even;
  u and v get half each, so the down-projection reads hidden/2 features.
- `causal_mask_bool` (true): W is used lower-triangular (`tril`), so position i mixes only
  positions <= i. The upper triangle stays a parameter (it gets zero gradient) so that one
  config's weights load into the bidirectional variant and back.
- `dim_tiny_attn` (0): 0 = gMLP; > 0 = aMLP (section 4.3 of the paper, which uses 64): a
  single-head attention of this size over h, projected to hidden/2 and added to the gate
  before the product. It honours the causal flag and the padding mask.
- `bias_bool` (true): biases in the up, down and tiny-attention projections (b of the spatial
  unit always exists: it is what makes the gate start at one).

W needs the model-wide `max_seq_len`; shorter inputs use W's top-left L x L corner. W starts
uniform in +-1e-3 / max_seq_len and b at one (the paper's init), so the gate starts at ~1 and
the block at ~ out_proj(u): a plain MLP. The norm on v is the layer's `norm_type` (the paper's
LayerNorm by default; the paper finds normalising v crucial, so avoid `none`).

Padding: padded positions are zeroed before the mixing, so with RIGHT padding real tokens are
unaffected. LEFT padding shifts every real token to a later absolute position, and W is indexed
by absolute position, so left-padded outputs differ: pad gMLP models on the right (the block
declares `padding_sides = ("right",)`, and the model refuses a left-padded mask).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import NonNegativeInt, PositiveFloat
from torch import nn

from ..config import LayerConfig, LayerPlan, ModelConfig
from ..config.layer import norm_params, scaled_width
from ..context import ForwardContext
from ..layers.norms import make_norm
from ..registry import register_block
from .base import Block

SPATIAL_INIT_EPS = 1e-3  # W ~ U(-eps/n, eps/n), as in the paper's "near-zero" init


class GMLPConfig(LayerConfig):
    causal_key = "causal_mask_bool"
    type: Literal["gMLP"] = "gMLP"
    ff_mult: PositiveFloat = 6.0
    causal_mask_bool: bool = True
    dim_tiny_attn: NonNegativeInt = 0  # 0: gMLP; > 0: aMLP with a single head of this size
    bias_bool: bool = True

    def dim_hidden(self, model: ModelConfig) -> int:
        return scaled_width(self.ff_mult, model.dim_model)

    def block_params(self, model: ModelConfig) -> int:
        dim, bias, n = model.dim_model, int(self.bias_bool), model.max_seq_len or 0
        hidden = self.dim_hidden(model)
        half = hidden // 2
        up = dim * hidden + bias * hidden
        norm = norm_params(self.norm_type, half)
        spatial = n * n + n
        down = half * dim + bias * dim
        a = self.dim_tiny_attn
        tiny = (dim * 3 * a + bias * 3 * a + a * half + bias * half) if a else 0
        return up + norm + spatial + down + tiny

    def block_flops(self, model: ModelConfig, seq_len: int) -> int:
        """Per token at context length L: the projections once, the spatial product W[:L, :L] v
        (2 * L * hidden/2, the causal mask's zeros included) and, for aMLP, the tiny attention's
        q.k^T and map.v (2 * L * dim_tiny_attn each). W and the norm's gains are not
        per-token weights."""
        n = model.max_seq_len or 0
        weights = self.block_params(model) - (n * n + n) - norm_params(self.norm_type, self.dim_hidden(model) // 2)
        return 2 * weights + 2 * seq_len * (self.dim_hidden(model) // 2) + 2 * 2 * seq_len * self.dim_tiny_attn

    def uses_norm_type(self) -> bool:
        return True  # the norm on v

    def check(self, model: ModelConfig):
        issues = super().check(model)
        if model.max_seq_len is None:
            issues.append(("type", "gMLP mixes tokens with a learned max_seq_len x max_seq_len projection; "
                                   "set the model-wide max_seq_len (e.g. max_seq_len: 256)"))
        hidden = self.dim_hidden(model)
        if hidden % 2:
            suggestion = (hidden + 1) / model.dim_model
            issues.append(("ff_mult", f"the hidden width round(ff_mult * dim_model) = {hidden} must be even: it "
                                      f"splits into two halves u and v; e.g. ff_mult: {suggestion:g}"))
        return issues

    def summary(self) -> str:
        parts = [f"ff_mult={self.ff_mult:g}", "causal" if self.causal_mask_bool else "bidir"]
        if self.dim_tiny_attn:
            parts.append(f"aMLP(dim_tiny_attn={self.dim_tiny_attn})")
        rest = super().summary()
        return " ".join(parts) + (" " + rest if rest else "")


def cached(ctx: ForwardContext, name: str, t: torch.Tensor, dim: int) -> torch.Tensor:
    """While decoding, write `t` (this call's positions along `dim`) into a buffer kept in the
    layer's decoding state and return every position so far; otherwise return `t`."""
    state = ctx.decode_state()
    if state is None:
        return t
    if name not in state:
        shape = list(t.shape)
        shape[dim] = ctx.cache.max_len
        state[name] = t.new_zeros(shape)
    end = ctx.offset + t.shape[dim]
    state[name].narrow(dim, ctx.offset, t.shape[dim]).copy_(t)
    return state[name].narrow(dim, 0, end)


class TinyAttention(nn.Module):
    """aMLP's single-head attention: (B, L, dim_model) -> (B, L, dim_out)."""

    def __init__(self, dim_model: int, dim_attn: int, dim_out: int, bias: bool):
        super().__init__()
        self.dim_attn = dim_attn
        self.qkv = nn.Linear(dim_model, 3 * dim_attn, bias=bias)
        self.proj = nn.Linear(dim_attn, dim_out, bias=bias)

    def forward(self, h: torch.Tensor, ctx: ForwardContext, causal: bool) -> torch.Tensor:
        B, L, _ = h.shape
        q, k, v = self.qkv(h).view(B, 1, L, 3, self.dim_attn).unbind(3)  # 3 x (B, 1, L, dim_attn)
        k, v = cached(ctx, "tiny_k", k, 2), cached(ctx, "tiny_v", v, 2)  # (B, 1, offset + L, dim_attn)
        mask, is_causal = ctx.fused_mask(causal)  # padded keys masked; (B, 1, L, L) or None
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
        return self.proj(out.squeeze(1))  # (B, L, dim_attn) -> (B, L, dim_out)


@register_block("gMLP", GMLPConfig)
class GMLP(Block):
    padding_sides = ("right",)  # W is indexed by absolute position: left padding moves every token
    def __init__(self, cfg: GMLPConfig, model: ModelConfig, plan: LayerPlan):
        super().__init__(cfg, model, plan)
        hidden = cfg.dim_hidden(model)
        half = hidden // 2
        n = model.max_seq_len
        self.max_seq_len = n
        self.causal = cfg.causal_mask_bool
        self.up = nn.Linear(model.dim_model, hidden, bias=cfg.bias_bool)
        self.norm = make_norm(cfg.norm_type, half, model.norm_eps)
        # Plain parameters, not nn.Linear: the model's init (normal weights, zero biases) must not
        # overwrite the paper's near-zero W and unit b; `reset_parameters` sets those.
        self.spatial_weight = nn.Parameter(torch.empty(n, n))  # (out position, in position)
        self.spatial_bias = nn.Parameter(torch.empty(n))  # one per position
        self.tiny_attn = TinyAttention(model.dim_model, cfg.dim_tiny_attn, half, cfg.bias_bool) \
            if cfg.dim_tiny_attn else None
        self.out_proj = nn.Linear(half, model.dim_model, bias=cfg.bias_bool)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The spatial unit's init (the model's `reset_parameters` calls this; its linear layers
        get the model's init)."""
        eps = SPATIAL_INIT_EPS / self.max_seq_len
        nn.init.uniform_(self.spatial_weight, -eps, eps)
        nn.init.ones_(self.spatial_bias)

    def forward(self, h: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        L = h.shape[1]
        start, end = ctx.offset, ctx.offset + L  # positions of this call (offset > 0 while decoding)
        if end > self.max_seq_len:
            raise ValueError(f"gMLP: sequence length {end} exceeds max_seq_len {self.max_seq_len} "
                             f"(its spatial projection is max_seq_len x max_seq_len)")
        u, v = F.gelu(self.up(h)).chunk(2, dim=-1)  # 2 x (B, L, hidden/2)
        v = self.norm(v)
        if ctx.padding_mask is not None:  # padded positions contribute nothing to the mixing
            v = v * ctx.padding_mask[..., None].to(v.dtype)
        v = cached(ctx, "gmlp_v", v, 1)  # (B, offset + L, hidden/2): earlier positions too when decoding
        weight = self.spatial_weight[start:end, :end]  # (L, offset + L): rows of this call's positions
        if self.causal:
            weight = weight.tril(diagonal=start)  # position i reads positions <= i only
        gate = weight @ v + self.spatial_bias[start:end, None]  # (L, offset+L) @ (B, offset+L, h/2) -> (B, L, h/2)
        if self.tiny_attn is not None:
            gate = gate + self.tiny_attn(h, ctx, self.causal)
        return self.out_proj(u * gate)  # (B, L, hidden/2) -> (B, L, dim_model)
