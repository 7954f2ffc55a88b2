"""The benchmark's architectures, each written once as a hand-written `GPTConfig` and translated
into a configaformer config and x-transformers options (or the reason x-transformers has none).

- gpt2: pre-LayerNorm, GELU MLP (4x, with biases), learned absolute positions, attention without
  biases, untied head.
- llama: RMSNorm, SwiGLU (hidden 2.6875x, the `llama` preset's), rotary on the whole head, GQA
  (heads / 4 kv heads), no biases.
- shift_lazy: gpt2 plus token shift before every attention (half the features from the previous
  position), and every odd block's attention lazy (reuses the previous block's map).

Attention has no biases in gpt2 because x-transformers' has none; the remaining difference there
is LayerNorm's bias, which x-transformers' LayerNorm lacks ((2 * 2 * depth + 2) * dim parameters).
"""

from __future__ import annotations

from dataclasses import dataclass

from .handwritten import GPTConfig

ARCH_NAMES = ("gpt2", "llama", "shift_lazy")
LLAMA_FF_MULT = 2.6875  # the llama preset's; 43/16, so hidden = ff_mult * dim is whole for dim % 16 == 0


@dataclass(frozen=True)
class Sizes:
    dim: int = 256
    depth: int = 4  # blocks of attention + MLP
    heads: int = 8
    vocab: int = 8192
    seq_len: int = 256  # training and forward sequences
    batch: int = 8
    prompt_len: int = 16  # generation, batch 1
    new_tokens: int = 128

    @property
    def max_seq_len(self) -> int:
        return max(self.seq_len, self.prompt_len + self.new_tokens)


TINY = Sizes(dim=32, depth=2, heads=4, vocab=64, seq_len=16, batch=2, prompt_len=4, new_tokens=8)


def gpt_config(arch: str, s: Sizes) -> GPTConfig:
    common = dict(vocab_size=s.vocab, dim=s.dim, depth=s.depth, num_heads=s.heads, max_seq_len=s.max_seq_len)
    if arch == "gpt2":
        return GPTConfig(**common, num_kv_heads=s.heads, dim_hidden=4 * s.dim)
    if arch == "llama":
        return GPTConfig(**common, num_kv_heads=max(1, s.heads // 4), dim_hidden=round(LLAMA_FF_MULT * s.dim),
                         norm="rmsnorm", swiglu=True, mlp_bias=False, abs_pos=False, rope=True)
    if arch == "shift_lazy":
        return GPTConfig(**common, num_kv_heads=s.heads, dim_hidden=4 * s.dim, token_shift=True, lazy=True)
    raise ValueError(f"unknown architecture {arch!r}; valid: {', '.join(ARCH_NAMES)}")


def configaformer_config(c: GPTConfig) -> dict:
    """The same model in configaformer's config language."""
    attn = {"type": "Attention", "num_heads": c.num_heads, "num_kv_heads": c.num_kv_heads, "bias_bool": c.attn_bias}
    if c.token_shift:
        half = c.dim // 2
        attn["token_shift_config"] = [{"features": half, "shift": 0}, {"features": c.dim - half, "shift": 1}]
    ffn = {"type": "FFN", "ff_mult": c.dim_hidden / c.dim, "bias_bool": c.mlp_bias}
    if c.swiglu:
        ffn.update(num_projections=2, num_gelu=1, activation="silu")
    layers = []
    for i in range(c.depth):
        layers += [{**attn, "previous_attention_bool": True} if c.is_lazy(i) else attn, ffn]
    return {
        "dim_model": c.dim, "vocab_size": c.vocab_size, "max_seq_len": c.max_seq_len,
        "abs_pos_emb": "learned" if c.abs_pos else "none", "dim_rope": c.dim_head if c.rope else 0,
        "rope_base": c.rope_base, "norm_type": c.norm, "norm_eps": c.norm_eps, "init_std": c.init_std,
        "classifiers": [{"num_classes": c.vocab_size, "head_type": "linear", "bias_bool": False}],
        "layers": layers,
    }


def xtransformers_unsupported(c: GPTConfig) -> str | None:
    """Why x-transformers cannot build this architecture, or None."""
    if c.lazy:
        return "x-transformers has no lazy attention, which reuses an earlier layer's attention map"
    return None


def xtransformers_kwargs(c: GPTConfig) -> dict:
    """TransformerWrapper options; attn_layers holds the Decoder's."""
    if c.token_shift or c.lazy:
        raise ValueError("only gpt2 and llama are translated to x-transformers")
    decoder = dict(dim=c.dim, depth=c.depth, heads=c.num_heads, attn_dim_head=c.dim_head,
                   attn_flash=True,  # torch's fused scaled_dot_product_attention
                   ff_mult=c.dim_hidden / c.dim, ff_no_bias=not c.mlp_bias)
    if c.num_kv_heads != c.num_heads:
        decoder["attn_kv_heads"] = c.num_kv_heads
    if c.norm == "rmsnorm":
        decoder["use_rmsnorm"] = True
    if c.swiglu:
        decoder.update(ff_glu=True, ff_swish=True)  # note: x-transformers' GLU up-projection keeps its bias
    if c.rope:
        decoder.update(rotary_pos_emb=True, rotary_emb_dim=c.dim_head)
    return dict(num_tokens=c.vocab_size, max_seq_len=c.max_seq_len, use_abs_pos_emb=c.abs_pos, attn_layers=decoder)


def matmul_params(c: GPTConfig) -> int:
    """Weights that multiply every token (all linear layers and the head; not the embedding lookups)."""
    dim_kv = c.num_kv_heads * c.dim_head
    attn = sum(c.dim * (dim_kv if c.is_lazy(i) else c.dim + 2 * dim_kv) + c.dim * c.dim for i in range(c.depth))
    mlp = c.depth * (c.dim * c.dim_hidden * (2 if c.swiglu else 1) + c.dim_hidden * c.dim)
    return attn + mlp + c.dim * c.vocab_size


def train_step_flops(c: GPTConfig, batch: int, seq_len: int) -> int:
    """Model FLOPs of one training step (forward + backward = 3 x forward), counted the usual way
    (as nanoGPT's and PaLM's MFU): 2 per weight per token, plus 2 * L * dim for each of q.k and
    map.v per token and layer, counting the causally masked half too. Lazy layers skip q.k."""
    tokens = batch * seq_len
    score_products = sum(1 if c.is_lazy(i) else 2 for i in range(c.depth))  # q.k and/or map.v
    forward = 2 * matmul_params(c) * tokens + score_products * 2 * seq_len * c.dim * tokens
    return 3 * forward
