"""Multi-head self-attention and its per-layer variants.

Papers:
- Vaswani et al. 2017, "Attention Is All You Need", arXiv 1706.03762.
- Rotary positions: Su et al. 2021, arXiv 2104.09864 (`dim_rope`, `rotate_qk_bool`); rotating
  values as well (`rotate_v_bool`) rotates each value by its key's position and the output back
  by the query's position, so the output too depends only on relative positions.
- Lazy attention: Ying et al. 2021, "LazyFormer", arXiv 2102.12702 (`previous_attention_bool`).
- Residual attention: He et al. 2020, "RealFormer", arXiv 2012.11747 (`residual_attention_bool`).
- Grouped-query / multi-query attention: Ainslie et al. 2023, arXiv 2305.13245; Shazeer 2019,
  arXiv 1911.02150 (`num_kv_heads`).
- QK normalisation: Henry et al. 2020, arXiv 2010.04245; Dehghani et al. 2023, arXiv 2302.05442
  (`qk_norm_bool`, RMSNorm over each head's features).
- Talking heads: Shazeer et al. 2020, arXiv 2003.02436 (`talking_heads_bool`).
- Logit soft-capping: Gemma 2, arXiv 2408.00118 (`logit_softcap`: s -> c * tanh(s / c)).
- Sliding-window attention: Beltagy et al. 2020, arXiv 2004.05150 (`window_size`).
- T5 relative position bias: Raffel et al. 2020, arXiv 1910.10683 (`rel_pos_bias`).
- ALiBi: Press et al. 2022, arXiv 2108.12409 (`bias_mask_config`).
- Primer's depthwise convolution after the q/k/v projections: So et al. 2021, arXiv 2109.08668
  (`qkv_conv_kernel`).
- Per-head output gates: Qiu et al. 2025, arXiv 2505.06708 (`head_gate_bool`).
- Persistent memory key/values: Sukhbaatar et al. 2019, arXiv 1907.01470 (`num_memory_kv`).
- A score scale other than 1/sqrt(head size): Gemma 2's query_pre_attn_scalar, arXiv 2408.00118
  (`attn_scale`).

Shapes: input/output (B, L, dim_model); q (B, H, L, Dh), k and v (B, G, L + M, Dh) with
Dh = dim_attn / num_heads, G = num_kv_heads, M = num_memory_kv.

The one rule for the attention path (`Attention.__init__`): a layer forms the L x L matrix
explicitly only when a later layer reads its map or scores, or when it mixes or caps scores
(talking heads, soft-capping); every other layer, biased or masked however, calls torch's
fused scaled_dot_product_attention with the biases as an additive float mask.
"""

from __future__ import annotations

from typing import Literal, Optional

import torch
import torch.nn.functional as F
from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from torch import nn

from ..config import LayerConfig, LayerPlan, ModelConfig
from ..config.base import StrictModel
from ..config.layer import indivisible
from ..context import ForwardContext
from ..layers.conv import SequenceDepthwiseConv
from ..positional.alibi import alibi_bias
from ..positional.relative import RelativePositionBias
from ..positional.rotary import apply_rotary
from ..registry import register_block
from .base import Block


class RelPosBiasConfig(StrictModel):
    num_buckets: int = Field(32, ge=4)
    max_distance: PositiveInt = 128


class AlibiConfig(StrictModel):
    type: Literal["alibi"] = "alibi"
    form: Optional[Literal["causal", "symmetric", "split"]] = None  # None: causal or symmetric by the layer


# Keys that act on attention scores, which a lazy layer does not compute.
SCORE_KEYS = ("qk_norm_bool", "talking_heads_bool", "logit_softcap", "window_size", "rel_pos_bias",
              "bias_mask_config", "attn_scale")


class AttentionConfig(LayerConfig):
    causal_key = "causal_mask_bool"
    type: Literal["Attention"] = "Attention"
    dim_attn: Optional[PositiveInt] = None  # None: dim_model
    num_heads: PositiveInt = 8
    num_kv_heads: Optional[PositiveInt] = None  # None: num_heads
    dim_rope: Optional[NonNegativeInt] = None  # None: the model's dim_rope
    rotate_qk_bool: bool = True
    rotate_v_bool: bool = False
    causal_mask_bool: bool = True
    previous_attention_bool: bool = False
    residual_attention_bool: bool = False
    qk_norm_bool: bool = False
    talking_heads_bool: bool = False
    logit_softcap: Optional[PositiveFloat] = None
    window_size: Optional[PositiveInt] = None
    rel_pos_bias: Optional[RelPosBiasConfig] = None
    bias_mask_config: Optional[AlibiConfig] = None
    qkv_conv_kernel: NonNegativeInt = 0
    head_gate_bool: bool = False
    num_memory_kv: NonNegativeInt = 0
    attn_dropout: NonNegativeFloat = Field(0.0, lt=1.0)
    attn_scale: Optional[PositiveFloat] = None  # scores = q.k * attn_scale; None: 1 / sqrt(dim_attn / num_heads)
    bias_bool: bool = True
    out_bias_bool: Optional[bool] = None  # bias of the output projection; None: bias_bool (Qwen2: q/k/v only)

    def resolve(self, model: ModelConfig) -> AttentionConfig:
        update = {"dim_attn": self.dim_attn or model.dim_model,
                  "out_bias_bool": self.bias_bool if self.out_bias_bool is None else self.out_bias_bool,
                  "dim_rope": model.dim_rope if self.dim_rope is None else self.dim_rope,
                  "num_kv_heads": self.num_kv_heads or self.num_heads}
        if self.bias_mask_config is not None and self.bias_mask_config.form is None:
            form = "causal" if self.causal_mask_bool else "symmetric"
            update["bias_mask_config"] = self.bias_mask_config.model_copy(update={"form": form})
        return LayerConfig.resolve(self.model_copy(update=update), model)

    @property
    def dim_head(self) -> int:
        return self.dim_attn // self.num_heads

    @property
    def dim_kv(self) -> int:
        return self.num_kv_heads * self.dim_head

    def rotary_dim(self) -> int:
        rotates = (self.rotate_qk_bool and not self.previous_attention_bool) or self.rotate_v_bool
        return self.dim_rope if rotates else 0

    def block_params(self, model: ModelConfig) -> int:
        dim, da, dkv, bias = model.dim_model, self.dim_attn, self.dim_kv, int(self.bias_bool)
        heads, lazy = self.num_heads, self.previous_attention_bool
        proj = dkv if lazy else da + 2 * dkv  # v only, or q, k, v
        total = dim * proj + bias * proj + da * dim + int(self.out_bias_bool) * dim
        total += 2 * self.dim_head * self.qk_norm_bool + 2 * heads * heads * self.talking_heads_bool
        total += self.rel_pos_bias.num_buckets * heads if self.rel_pos_bias else 0
        total += (self.qkv_conv_kernel + bias) * proj if self.qkv_conv_kernel else 0
        total += (dim * heads + bias * heads) * self.head_gate_bool
        total += (1 if lazy else 2) * self.num_memory_kv * dkv
        return total

    def block_flops(self, model: ModelConfig, seq_len: int) -> int:
        """Per token at context length L: the per-token weights once (not the memory key/values,
        norm gains, bias tables or head-mixing matrices), plus q.k^T (skipped by a lazy layer,
        which reuses a map) and map.v over L + num_memory_kv keys, each 2 * dim_attn FLOPs per key,
        counted over the whole L x L product as torch's kernels and flop counter do (causal masking
        and windows not subtracted); talking heads mix the heads' maps twice. GQA shrinks k/v
        through their weights only: each query head still attends over every key."""
        keys, heads = seq_len + self.num_memory_kv, self.num_heads
        products = 1 if self.previous_attention_bool else 2
        not_per_token = (2 * self.dim_head * self.qk_norm_bool + 2 * heads * heads * self.talking_heads_bool
                         + (self.rel_pos_bias.num_buckets * heads if self.rel_pos_bias else 0)
                         + (1 if self.previous_attention_bool else 2) * self.num_memory_kv * self.dim_kv)
        flops = 2 * (self.block_params(model) - not_per_token) + products * 2 * keys * self.dim_attn
        return flops + 2 * 2 * heads * heads * keys * self.talking_heads_bool

    def check(self, model: ModelConfig):
        issues = super().check(model)
        if self.dim_attn % self.num_heads:
            issues.append(indivisible("num_heads", self.num_heads, "dim_attn", self.dim_attn))
        elif self.dim_rope and (self.dim_rope % 2 or self.dim_rope > self.dim_head):
            issues.append(("dim_rope", f"{self.dim_rope} (this layer's or the model-wide dim_rope) must be even "
                                       f"and at most the head size dim_attn/num_heads = {self.dim_head}"))
        if self.num_heads % self.num_kv_heads:
            issues.append(indivisible("num_kv_heads", self.num_kv_heads, "num_heads", self.num_heads))
        issues += self.check_rotary(model)
        if model.max_seq_len and self.window_size and self.window_size >= model.max_seq_len:
            issues.append(("window_size", f"{self.window_size} is at least max_seq_len ({model.max_seq_len}), so every "
                                          "key is inside the window; use a smaller window_size or leave it out"))
        if self.previous_attention_bool:
            if self.residual_attention_bool:
                issues.append(("residual_attention_bool", "a lazy layer (previous_attention_bool) computes no "
                                                          "scores to add to; set only one of the two"))
            defaults = AttentionConfig.model_fields
            for key in SCORE_KEYS:
                if getattr(self, key) != defaults[key].default:
                    issues.append((key, "acts on attention scores, which a lazy layer (previous_attention_bool) "
                                        "does not compute; set it on the layer whose map is reused"))
        alibi = self.bias_mask_config
        if alibi is not None:
            if self.causal_mask_bool and alibi.form == "split":
                issues.append(("bias_mask_config.form", "'split' looks forward with half the heads; "
                                                        "a causal layer takes 'causal' (or 'symmetric')"))
            if not self.causal_mask_bool and alibi.form == "causal":
                issues.append(("bias_mask_config.form", "a bidirectional layer takes 'symmetric' or 'split'"))
            if alibi.form == "split" and self.num_heads < 2:
                issues.append(("bias_mask_config.form", "'split' needs at least 2 heads"))
        rel = self.rel_pos_bias
        if rel is not None and rel.max_distance <= rel.num_buckets // (2 if self.causal_mask_bool else 4):
            issues.append(("rel_pos_bias.max_distance", "must exceed the exact-distance buckets "
                                                        f"({rel.num_buckets // (2 if self.causal_mask_bool else 4)})"))
        return issues

    def check_rotary(self, model: ModelConfig):
        """Rotary keys that would change nothing (see docs/config-errors.md)."""
        issues = []
        rotates_qk = self.rotate_qk_bool and not self.previous_attention_bool
        if not self.dim_rope:
            if self.rotate_v_bool:
                issues.append(("rotate_v_bool", "is true, but dim_rope is 0 (this layer's or the model-wide), so "
                                                "nothing is rotated; set dim_rope or rotate_v_bool: false"))
            if not self.rotate_qk_bool:
                issues.append(("rotate_qk_bool", "is false, but dim_rope is 0 (this layer's or the model-wide), so "
                                                 "nothing would be rotated anyway; leave rotate_qk_bool out"))
        if self.previous_attention_bool and not self.rotate_qk_bool:
            issues.append(("rotate_qk_bool", "a lazy layer (previous_attention_bool) has no queries or keys to "
                                             "rotate; leave rotate_qk_bool out"))
        if self.dim_rope != model.dim_rope and not (rotates_qk or self.rotate_v_bool):
            why = "a lazy layer rotates no queries or keys" if self.previous_attention_bool else "rotate_qk_bool is false"
            issues.append(("dim_rope", f"{self.dim_rope} here (the model's is {model.dim_rope}), but this layer rotates "
                                       f"nothing: {why} and rotate_v_bool is false; leave dim_rope out"))
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
        if source.num_memory_kv != self.num_memory_kv:
            issues.append(("num_memory_kv", f"{self.num_memory_kv}, but the {name} it reuses covers "
                                            f"{source.num_memory_kv} memory slots; use {source.num_memory_kv}"))
        if name == "attn_map" and self.causal_mask_bool and not source.causal_mask_bool:
            issues.append(("causal_mask_bool", "a causal lazy layer cannot reuse a bidirectional map: "
                                               "it would see future tokens"))
        return issues

    def summary(self) -> str:
        parts = [f"heads={self.num_heads}" + (f"/kv={self.num_kv_heads}" if self.num_kv_heads != self.num_heads else ""),
                 f"dim_attn={self.dim_attn}"]
        if self.rotary_dim():
            parts.append(f"rope={self.dim_rope}" + ("+v" if self.rotate_v_bool else ""))
        parts.append("causal" if self.causal_mask_bool else "bidir")
        flags = {"lazy": self.previous_attention_bool, "residual": self.residual_attention_bool,
                 "qk_norm": self.qk_norm_bool, "talking_heads": self.talking_heads_bool,
                 "head_gate": self.head_gate_bool, "t5_bias": self.rel_pos_bias is not None,
                 "no_out_bias": self.bias_bool and not self.out_bias_bool}
        parts += [name for name, on in flags.items() if on]
        if self.bias_mask_config:
            parts.append(f"alibi={self.bias_mask_config.form}")
        for key, label in [("window_size", "window"), ("logit_softcap", "softcap"), ("qkv_conv_kernel", "conv"),
                           ("num_memory_kv", "mem_kv"), ("attn_scale", "scale")]:
            if getattr(self, key):
                parts.append(f"{label}={getattr(self, key):g}")
        rest = super().summary()
        return " ".join(parts) + (" " + rest if rest else "")


@register_block("Attention", AttentionConfig)
class Attention(Block):
    no_weight_decay = ("memory_k", "memory_v")  # learned key/value slots, like embedding rows
    def __init__(self, cfg: AttentionConfig, model: ModelConfig, plan: LayerPlan):
        super().__init__(cfg, model, plan)
        dim, bias = model.dim_model, cfg.bias_bool
        self.num_heads, self.num_kv_heads, self.dim_head = cfg.num_heads, cfg.num_kv_heads, cfg.dim_head
        self.dim_attn, self.dim_kv = cfg.dim_attn, cfg.dim_kv
        self.causal, self.window = cfg.causal_mask_bool, cfg.window_size
        self.lazy, self.residual = cfg.previous_attention_bool, cfg.residual_attention_bool
        self.dim_rope = cfg.dim_rope
        self.rotate_qk = bool(cfg.dim_rope) and cfg.rotate_qk_bool and not self.lazy
        self.rotate_v = bool(cfg.dim_rope) and cfg.rotate_v_bool
        self.keep_map, self.keep_scores = "attn_map" in plan.keep, "attn_scores" in plan.keep
        self.softcap = cfg.logit_softcap
        self.alibi = cfg.bias_mask_config.form if cfg.bias_mask_config else None
        self.num_memory = cfg.num_memory_kv
        # The one rule for the attention path: materialise the L x L matrix only when a later
        # layer reads it, when scores are mixed or capped, or when the user asked for it.
        reasons = [("a later layer reads its attention map", self.keep_map),
                   ("a later layer reads its scores (residual attention)", self.keep_scores),
                   ("talking_heads_bool mixes the scores", cfg.talking_heads_bool),
                   ("logit_softcap caps the scores", self.softcap is not None),
                   ("the model's attention_impl is explicit", model.attention_impl == "explicit")]
        self.explicit_reasons = tuple(why for why, applies in reasons if applies)  # shown by configaformer profile
        self.explicit = bool(self.explicit_reasons)
        self.attn_dropout = cfg.attn_dropout
        self.scale = self.dim_head ** -0.5 if cfg.attn_scale is None else cfg.attn_scale

        proj = cfg.dim_kv if self.lazy else cfg.dim_attn + 2 * cfg.dim_kv
        if self.lazy:
            self.v_proj = nn.Linear(dim, proj, bias=bias)
        else:
            self.qkv = nn.Linear(dim, proj, bias=bias)  # q, k, v in one matmul
        self.conv = SequenceDepthwiseConv(proj, cfg.qkv_conv_kernel, self.causal, bias) if cfg.qkv_conv_kernel else None
        self.q_norm = nn.RMSNorm(self.dim_head, eps=model.norm_eps) if cfg.qk_norm_bool else None
        self.k_norm = nn.RMSNorm(self.dim_head, eps=model.norm_eps) if cfg.qk_norm_bool else None
        self.talking_heads = cfg.talking_heads_bool
        if self.talking_heads:
            self.pre_mix = nn.Parameter(torch.empty(cfg.num_heads, cfg.num_heads))  # (H out, H in)
            self.post_mix = nn.Parameter(torch.empty(cfg.num_heads, cfg.num_heads))
        self.rel_bias = (RelativePositionBias(cfg.num_heads, self.causal, cfg.rel_pos_bias.num_buckets,
                                              cfg.rel_pos_bias.max_distance) if cfg.rel_pos_bias else None)
        self.head_gate = nn.Linear(dim, cfg.num_heads, bias=bias) if cfg.head_gate_bool else None
        if self.num_memory:
            shape = (1, cfg.num_kv_heads, self.num_memory, self.dim_head)
            self.memory_k = None if self.lazy else nn.Parameter(torch.empty(shape))
            self.memory_v = nn.Parameter(torch.empty(shape))
        self.init_std = model.init_std
        self.out_proj = nn.Linear(cfg.dim_attn, dim, bias=cfg.out_bias_bool)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The raw Parameters' init (the model inits the linear layers): talking-heads mixes start
        as the identity (no mixing), memory slots as Normal(0, init_std), like embeddings."""
        if self.talking_heads:
            nn.init.eye_(self.pre_mix)
            nn.init.eye_(self.post_mix)
        for memory in (getattr(self, "memory_k", None), getattr(self, "memory_v", None)):
            if memory is not None:
                nn.init.normal_(memory, 0.0, self.init_std)

    # ---- forward -------------------------------------------------------------------------------
    def forward(self, h: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        B, L, _ = h.shape
        rotary = ctx.rotary.get(self.dim_rope) if (self.rotate_qk or self.rotate_v) else None
        if self.lazy:
            v = self.v_proj(h)  # (B, L, dim_kv)
            if self.conv is not None:
                v = self.conv(v, ctx.padding_mask, ctx.decode_state())
            v = self._heads(v, self.num_kv_heads)  # (B, G, L, Dh)
            if self.rotate_v:
                v = apply_rotary(v, *rotary)
            v = self._keys(v, "memory_v", ctx)
            probs = ctx.consume("attn_map")  # (B, H, L, M + L), masked and normalised by its producer
            out = self._dropout(probs) @ self._expand_kv(v)
        else:
            qkv = self.qkv(h)  # (B, L, dim_attn + 2 * dim_kv)
            if self.conv is not None:
                qkv = self.conv(qkv, ctx.padding_mask, ctx.decode_state())
            q, k, v = qkv.split([self.dim_attn, self.dim_kv, self.dim_kv], dim=-1)
            q, k, v = self._heads(q, self.num_heads), self._heads(k, self.num_kv_heads), self._heads(v, self.num_kv_heads)
            if self.q_norm is not None:
                q, k = self.q_norm(q), self.k_norm(k)
            if self.rotate_qk:
                q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
            if self.rotate_v:
                v = apply_rotary(v, *rotary)
            k, v = self._keys(k, "memory_k", ctx), self._keys(v, "memory_v", ctx)  # (B, G, M + offset + L, Dh)
            bias = self._position_bias(ctx, h.dtype)
            prev = ctx.consume("attn_scores") if self.residual else None
            if prev is not None:
                bias = prev if bias is None else bias + prev
            attend = self._explicit if self.explicit else self._fused
            out = attend(q, k, v, bias, ctx)  # (B, H, L, Dh)
        if self.head_gate is not None:
            out = out * torch.sigmoid(self.head_gate(h)).transpose(1, 2)[..., None]
        if self.rotate_v:  # rotate each output back by its query position
            out = apply_rotary(out, *rotary, inverse=True)
        out = out.transpose(1, 2).reshape(B, L, self.dim_attn)  # (B, L, dim_attn)
        return self.out_proj(out)

    def _heads(self, t: torch.Tensor, heads: int) -> torch.Tensor:  # (B, L, heads*Dh) -> (B, heads, L, Dh)
        B, L, _ = t.shape
        return t.view(B, L, heads, self.dim_head).transpose(1, 2)

    def _expand_kv(self, t: torch.Tensor) -> torch.Tensor:  # (B, G, S, Dh) -> (B, H, S, Dh)
        groups = self.num_heads // self.num_kv_heads
        return t if groups == 1 else t.repeat_interleave(groups, dim=1)

    def _keys(self, t: torch.Tensor, memory_name: str, ctx: ForwardContext) -> torch.Tensor:
        """The keys (or values) every query sees: M learned memory slots, then any cached
        positions, then this call's (B, G, L, Dh). While decoding, they are written in place into
        a buffer preallocated for the whole generation."""
        memory = getattr(self, memory_name).to(t.dtype).expand(t.shape[0], -1, -1, -1) if self.num_memory else None
        if ctx.cache is None:
            return t if memory is None else torch.cat([memory, t], dim=2)
        state, name = ctx.decode_state(), memory_name[-1]  # "k" or "v"
        if name not in state:
            B, G, _, Dh = t.shape
            state[name] = t.new_zeros(B, G, self.num_memory + ctx.cache.max_len, Dh)
            if memory is not None:
                state[name][:, :, : self.num_memory] = memory
        start = self.num_memory + ctx.offset
        state[name][:, :, start: start + t.shape[2]] = t
        return state[name][:, :, : start + t.shape[2]]

    def _position_bias(self, ctx: ForwardContext, dtype: torch.dtype) -> torch.Tensor | None:
        """Additive (B|1, H, L, M + L) bias from ALiBi and/or the T5 relative bias (zero for the
        memory slots); None if neither."""
        bias = None
        if self.alibi is not None:
            bias = ctx.memo(("alibi", self.num_heads, self.alibi, dtype),
                            lambda: alibi_bias(ctx.relative_positions(), self.num_heads, self.alibi, dtype))
        if self.rel_bias is not None:
            rel = self.rel_bias(ctx.relative_positions()).to(dtype)
            bias = rel if bias is None else bias + rel
        if bias is not None and self.num_memory:
            bias = F.pad(bias, (self.num_memory, 0))
        return bias

    def _mask(self, ctx: ForwardContext) -> torch.Tensor | None:
        """The boolean mask (B|1, 1, L, M + L), memory slots always visible; None if none."""
        mask = ctx.attn_mask(self.causal, self.window)
        if self.num_memory and mask is not None:
            mask = F.pad(mask, (self.num_memory, 0), value=True)
        return mask

    def _dropout(self, probs: torch.Tensor) -> torch.Tensor:
        if self.training and self.attn_dropout > 0:
            return F.dropout(probs, self.attn_dropout)
        return probs

    def _explicit(self, q, k, v, bias, ctx: ForwardContext) -> torch.Tensor:
        k, v = self._expand_kv(k), self._expand_kv(v)
        scores = (q @ k.transpose(-2, -1)) * self.scale  # (B, H, L, M + L), before masking
        blocked = None
        if bias is not None:
            # A bias may block keys with -inf (split ALiBi's directions, and scores reused from such
            # a layer): it is a mask, applied after the mix and the cap, so that -inf never meets a
            # mix weight of 0 (NaN) nor tanh (which would turn it into a finite -softcap).
            blocked = torch.isneginf(bias)
            scores = scores + bias.masked_fill(blocked, 0.0)
        if self.talking_heads:
            scores = torch.einsum("bhij,gh->bgij", scores, self.pre_mix)
        if self.softcap is not None:
            scores = self.softcap * torch.tanh(scores / self.softcap)
        if blocked is not None:
            scores = scores.masked_fill(blocked, float("-inf"))
        if self.keep_scores:
            ctx.produce("attn_scores", scores)
        mask = self._mask(ctx)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
        if self.talking_heads:
            probs = torch.einsum("bhij,gh->bgij", probs, self.post_mix)
        if self.keep_map:
            ctx.produce("attn_map", probs)
        return self._dropout(probs) @ v

    def _fused(self, q, k, v, bias, ctx: ForwardContext) -> torch.Tensor:
        if bias is None and not self.num_memory:
            mask, is_causal = ctx.fused_mask(self.causal, self.window)
        else:
            mask, is_causal = self._mask(ctx), False
            if bias is not None:  # biases (and residual scores) enter as an additive float mask
                mask = bias if mask is None else bias.masked_fill(~mask, float("-inf"))
        dropout = self.attn_dropout if self.training else 0.0
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=is_causal,
                                              scale=self.scale, enable_gqa=self.num_kv_heads != self.num_heads)
