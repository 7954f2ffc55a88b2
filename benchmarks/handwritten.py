"""A minimal hand-written GPT: the baseline configaformer has to match (nanoGPT-style, one file).

It covers exactly the benchmark's architectures and nothing more:
- GPT-2 (Radford et al. 2019): learned absolute positions, pre-LayerNorm, GELU MLP.
- LLaMA (Touvron et al. 2023, arXiv 2302.13971): RMSNorm (arXiv 1910.07467), rotary positions on
  the whole head (RoFormer, arXiv 2104.09864, GPT-NeoX "half" layout), SwiGLU (arXiv 2002.05202),
  grouped-query attention (arXiv 2305.13245), no biases.
- Token shift (RWKV, arXiv 2305.13048): the second half of the attention input's features comes
  from the previous position. Lazy attention (LazyFormer, arXiv 2102.12702): every odd block's
  attention reuses the previous block's attention map and computes only its values.

Attention is torch's fused `F.scaled_dot_product_attention`, except in a block whose map the next
(lazy) block reuses, which has to form the map itself. Generation keeps a key/value cache in
buffers preallocated for the whole generation and written in place.

The parameters are laid out as configaformer lays out the same architecture (one fused q/k/v
projection, one up-projection holding both SwiGLU halves, a pre-norm per sub-layer, in the same
order), so the two have equal parameter counts and, after `copy_weights`, equal logits
(tests/test_benchmarks.py checks both).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int
    dim: int
    depth: int  # blocks, each attention + MLP
    num_heads: int
    num_kv_heads: int
    dim_hidden: int  # MLP hidden width (per SwiGLU half)
    max_seq_len: int
    norm: str = "layernorm"  # or "rmsnorm"
    swiglu: bool = False  # False: GELU MLP
    attn_bias: bool = False
    mlp_bias: bool = True
    abs_pos: bool = True  # learned absolute positions
    rope: bool = False  # rotary positions on every head's features
    token_shift: bool = False
    lazy: bool = False  # odd blocks reuse the previous block's attention map
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    init_std: float = 0.02

    @property
    def dim_head(self) -> int:
        return self.dim // self.num_heads

    def is_lazy(self, block: int) -> bool:
        return self.lazy and block % 2 == 1


@dataclass
class KVCache:
    """Per-block decoding state (keys, values, the token shift's last input) and the length so far."""

    max_len: int
    blocks: list[dict] = field(default_factory=list)
    offset: int = 0


def make_norm(cfg: GPTConfig) -> nn.Module:
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
    return nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:  # (B, H, L, Dh)
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def cached(state: dict | None, name: str, t: torch.Tensor, offset: int, max_len: int) -> torch.Tensor:
    """t (B, G, L, Dh) appended to the cache in place; returns all keys so far (B, G, offset + L, Dh)."""
    if state is None:
        return t
    if name not in state:
        state[name] = t.new_zeros(t.shape[0], t.shape[1], max_len, t.shape[3])
    state[name][:, :, offset: offset + t.shape[2]] = t
    return state[name][:, :, : offset + t.shape[2]]


class Attention(nn.Module):
    def __init__(self, cfg: GPTConfig, lazy: bool, keep_map: bool):
        super().__init__()
        self.h, self.g, self.dh = cfg.num_heads, cfg.num_kv_heads, cfg.dim_head
        self.lazy, self.keep_map = lazy, keep_map
        dim_kv = self.g * self.dh
        if lazy:
            self.v_proj = nn.Linear(cfg.dim, dim_kv, bias=cfg.attn_bias)
        else:
            self.qkv = nn.Linear(cfg.dim, cfg.dim + 2 * dim_kv, bias=cfg.attn_bias)
        self.out_proj = nn.Linear(cfg.dim, cfg.dim, bias=cfg.attn_bias)

    def forward(self, x, rope, state, offset, max_len, prev_map):
        """x (B, L, D) -> (B, L, D), and the (B, H, L, offset + L) map when the next block reuses it."""
        B, L, D = x.shape
        attn_map = None
        if self.lazy:
            v = self.v_proj(x).view(B, L, self.g, self.dh).transpose(1, 2)  # (B, G, L, Dh)
            v = cached(state, "v", v, offset, max_len)
            y = prev_map @ self.expand_kv(v)  # (B, H, L, Dh)
        else:
            q, k, v = self.qkv(x).split([D, self.g * self.dh, self.g * self.dh], dim=-1)
            q = q.view(B, L, self.h, self.dh).transpose(1, 2)  # (B, H, L, Dh)
            k = k.view(B, L, self.g, self.dh).transpose(1, 2)  # (B, G, L, Dh)
            v = v.view(B, L, self.g, self.dh).transpose(1, 2)
            if rope is not None:
                q, k = rotate(q, *rope), rotate(k, *rope)
            k, v = cached(state, "k", k, offset, max_len), cached(state, "v", v, offset, max_len)
            # Causal mask aligned bottom-right (query i sits at offset + i); one new query needs none.
            mask = None  # SDPA's is_causal covers a fresh sequence (it aligns top-left)
            if L > 1 and (offset > 0 or self.keep_map):
                mask = torch.ones(L, offset + L, dtype=torch.bool, device=x.device).tril(offset)
            if self.keep_map:  # the next block reads the map, so form it
                k, v = self.expand_kv(k), self.expand_kv(v)
                scores = (q @ k.transpose(-2, -1)) * self.dh ** -0.5  # (B, H, L, offset + L)
                if mask is not None:
                    scores = scores.masked_fill(~mask, float("-inf"))
                attn_map = torch.softmax(scores.float(), dim=-1).to(q.dtype)
                y = attn_map @ v
            else:
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=offset == 0 and L > 1,
                                                   enable_gqa=self.g != self.h)
        return self.out_proj(y.transpose(1, 2).reshape(B, L, D)), attn_map

    def expand_kv(self, t: torch.Tensor) -> torch.Tensor:  # (B, G, S, Dh) -> (B, H, S, Dh)
        return t if self.g == self.h else t.repeat_interleave(self.h // self.g, dim=1)


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.swiglu = cfg.swiglu
        self.up = nn.Linear(cfg.dim, cfg.dim_hidden * (2 if cfg.swiglu else 1), bias=cfg.mlp_bias)
        self.out_proj = nn.Linear(cfg.dim_hidden, cfg.dim, bias=cfg.mlp_bias)

    def forward(self, x):  # (B, L, D) -> (B, L, D)
        u = self.up(x)
        if self.swiglu:
            gate, lin = u.chunk(2, dim=-1)  # (B, L, hidden) each
            return self.out_proj(F.silu(gate) * lin)
        return self.out_proj(F.gelu(u))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig, index: int):
        super().__init__()
        self.token_shift = cfg.token_shift
        keep_map = cfg.lazy and not cfg.is_lazy(index) and index + 1 < cfg.depth
        self.norm1 = make_norm(cfg)
        self.attn = Attention(cfg, cfg.is_lazy(index), keep_map)
        self.norm2 = make_norm(cfg)
        self.mlp = MLP(cfg)

    def forward(self, x, rope, state, offset, max_len, prev_map):
        h = self.norm1(x)
        if self.token_shift:  # second half of the features: from the previous position (zeros at 0)
            half = h.shape[-1] // 2
            prev = state.get("shift") if state is not None else None
            prev = h.new_zeros(h.shape[0], 1, h.shape[-1] - half) if prev is None else prev
            if state is not None:
                state["shift"] = h[:, -1:, half:]
            h = torch.cat([h[..., :half], torch.cat([prev, h[:, :-1, half:]], dim=1)], dim=-1)
        y, attn_map = self.attn(h, rope, state, offset, max_len, prev_map)
        x = x + y
        return x + self.mlp(self.norm2(x)), attn_map


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.wpe = nn.Embedding(cfg.max_seq_len, cfg.dim) if cfg.abs_pos else None
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.depth))
        self.norm_f = make_norm(cfg)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.rope:
            dh = cfg.dim_head
            inv_freq = 1.0 / cfg.rope_base ** (torch.arange(0, dh, 2, dtype=torch.float32) / dh)
            freqs = torch.outer(torch.arange(cfg.max_seq_len, dtype=torch.float32), inv_freq)
            emb = torch.cat([freqs, freqs], dim=-1)  # (max_seq_len, Dh)
            self.register_buffer("cos", emb.cos(), persistent=False)
            self.register_buffer("sin", emb.sin(), persistent=False)
        # GPT-2 init: N(0, 0.02), residual output projections scaled by 1/sqrt(sub-layers).
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() == 2:
                std = cfg.init_std / math.sqrt(2 * cfg.depth) if "out_proj" in name else cfg.init_std
                nn.init.normal_(p, 0.0, std)

    def forward(self, ids: torch.Tensor, cache: KVCache | None = None, last_only: bool = False) -> torch.Tensor:
        """ids (B, L) -> logits (B, L, V) (B, 1, V with last_only); a cache continues from its offset."""
        L = ids.shape[1]
        offset = 0 if cache is None else cache.offset
        x = self.wte(ids)  # (B, L, D)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(offset, offset + L, device=ids.device))
        rope = None
        if self.cfg.rope:
            rope = self.cos[offset: offset + L].to(x.dtype), self.sin[offset: offset + L].to(x.dtype)  # (L, Dh)
        if cache is not None and not cache.blocks:
            cache.blocks = [{} for _ in self.blocks]
        max_len = 0 if cache is None else cache.max_len
        attn_map = None
        for i, block in enumerate(self.blocks):
            x, attn_map = block(x, rope, None if cache is None else cache.blocks[i], offset, max_len, attn_map)
        if cache is not None:
            cache.offset += L
        if last_only:  # nanoGPT's inference trick: only the last position's logits
            x = x[:, -1:]
        return self.lm_head(self.norm_f(x))

    @torch.no_grad()
    def generate(self, ids: torch.Tensor, max_new_tokens: int, use_cache: bool = True) -> torch.Tensor:
        """Greedy continuation of ids (B, P) -> (B, P + max_new_tokens)."""
        cache = KVCache(ids.shape[1] + max_new_tokens) if use_cache else None
        tokens = ids
        logits = self(ids, cache, last_only=True)[:, -1]  # (B, V)
        for step in range(max_new_tokens):
            next_ids = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
            tokens = torch.cat([tokens, next_ids], dim=1)
            if step == max_new_tokens - 1:
                break
            logits = self(next_ids if use_cache else tokens, cache, last_only=True)[:, -1]
        return tokens


@torch.no_grad()
def copy_weights(src: nn.Module, dst: nn.Module) -> None:
    """Copy src's parameters into dst in registration order (a configaformer model and a GPT of the
    same architecture list theirs in the same order); every shape must agree."""
    src_params, dst_params = list(src.parameters()), list(dst.parameters())
    if len(src_params) != len(dst_params):
        raise ValueError(f"{len(src_params)} parameter tensors to copy into {len(dst_params)}")
    for i, (s, d) in enumerate(zip(src_params, dst_params)):
        if s.shape != d.shape:
            raise ValueError(f"parameter {i}: shape {tuple(s.shape)} does not match {tuple(d.shape)}")
        d.copy_(s)
