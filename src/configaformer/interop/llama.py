"""Llama (Touvron et al. 2023, arXiv 2302.13971; Llama 3, arXiv 2407.21783), Mistral (Jiang et
al. 2023, arXiv 2310.06825) and Qwen2 (Yang et al. 2024, arXiv 2407.10671) <-> configaformer.
The three share one layout; they differ in biases and sliding windows.

    HF config.json                       ours
    hidden_size, vocab_size              dim_model, vocab_size
    num_hidden_layers                    layers: [Attention, FFN] * num_hidden_layers
    num_attention_heads, num_key_value_heads, head_dim
                                         Attention num_heads, num_kv_heads, dim_attn = heads * head_dim
    rope_parameters (rope_theta, llama3) dim_rope = head_dim, rope_base, rope_scaling
    attention_bias (llama)               Attention bias_bool (q/k/v and output)
    qwen2: q/k/v biases, none on o_proj  Attention bias_bool: true, out_bias_bool: false
    sliding_window (mistral: every layer; qwen2: layers whose layer_types entry is sliding_attention)
                                         Attention window_size
    intermediate_size, hidden_act, mlp_bias
                                         FFN ff_mult = intermediate / hidden, a GLU (num_projections 2,
                                         num_gelu 1; hidden_act silu: SwiGLU), bias_bool
    rms_norm_eps                         norm_eps (norm_type rmsnorm, pre-norm)
    tie_word_embeddings                  classifiers: [tied or linear head, no bias]

    HF tensor (model.…)                  ours                          how
    embed_tokens, norm, lm_head          embedding, final_norm, heads.0.out
    layers.i.input_layernorm             layers.2i.pre_norm
    layers.i.self_attn.q/k/v_proj        layers.2i.block.qkv           stacked q, k, v (rows)
    layers.i.self_attn.o_proj            layers.2i.block.out_proj
    layers.i.post_attention_layernorm    layers.2i+1.pre_norm
    layers.i.mlp.gate_proj, up_proj      layers.2i+1.block.up          stacked gate, up (gate is activated)
    layers.i.mlp.down_proj               layers.2i+1.block.out_proj

Rotary: HF rotates with rotate_half (feature i pairs with i + head_dim/2), as we do, so q and k
need no permutation.
"""

from __future__ import annotations

from ..config import ModelConfig
from .base import (Family, HFConfig, InteropError, NotExpressible, TensorMap, block_pair, fused, hf_activation,
                   lm_head, register_family, rope_to_hf, same)


def decoder_config(hf: HFConfig, attention: dict, windows: list[int | None], activation: str) -> dict:
    """Our config of a Llama-layout model; `attention`: the family's attention keys, `windows`
    each layer's window_size, `activation` the GLU's."""
    dim, vocab, heads = hf.require("hidden_size"), hf.require("vocab_size"), hf.require("num_attention_heads")
    head_dim = hf.get("head_dim", dim // heads)
    theta, scaling = hf.rope()
    attn = {"type": "Attention", "num_heads": heads, "num_kv_heads": hf.get("num_key_value_heads", heads),
            "dim_attn": heads * head_dim, "attn_dropout": float(hf.get("attention_dropout", 0.0)), **attention}
    ffn = {"type": "FFN", "ff_mult": hf.require("intermediate_size") / dim, "num_projections": 2, "num_gelu": 1,
           "activation": activation, "bias_bool": hf.get("mlp_bias", False)}
    tied = hf.get("tie_word_embeddings", False)
    config = {"dim_model": dim, "vocab_size": vocab, "dim_rope": head_dim, "rope_base": theta,
              "norm_type": "rmsnorm", "norm_eps": hf.get("rms_norm_eps", 1e-6),
              "init_std": hf.get("initializer_range", 0.02), "init_scale_residual_bool": False,
              "classifiers": [{"num_classes": vocab, "head_type": "tied" if tied else "linear", "bias_bool": False}],
              "layers": [layer for window in windows for layer in (dict(attn, window_size=window), ffn)]}
    return config if scaling is None else dict(config, rope_scaling=scaling)


def decoder_to_hf(config: ModelConfig, family: str) -> dict:
    """The HF config keys the Llama-layout families share (`hidden_act`: the GLU's activation)."""
    attn, ffn = block_pair(config, family)
    if ffn.num_projections != 2:
        raise NotExpressible("layers[1].num_projections", f"{family}'s FFN is a GLU (num_projections 2, num_gelu 1); "
                                                          f"here {ffn.num_projections}")
    return {"hidden_size": config.dim_model, "vocab_size": config.vocab_size,
            "num_hidden_layers": len(config.layers) // 2, "num_attention_heads": attn.num_heads,
            "num_key_value_heads": attn.num_kv_heads, "head_dim": attn.dim_head, "rope_parameters": rope_to_hf(config),
            "attention_dropout": attn.attn_dropout, "intermediate_size": ffn.dim_hidden(config),
            "hidden_act": hf_activation(ffn, 1, family), "rms_norm_eps": config.norm_eps, "initializer_range": config.init_std,
            "tie_word_embeddings": lm_head(config, family).head_type == "tied",
            "max_position_embeddings": config.max_seq_len or 2048}


def decoder_tensors(config: ModelConfig, post_norms: bool = False) -> list[TensorMap]:
    """The tensor table of a Llama-layout model (with Gemma 2's post-norms where `post_norms`)."""
    table = [same("embedding.weight", "model.embed_tokens.weight"), same("final_norm.weight", "model.norm.weight")]
    if config.classifiers[0].head_type != "tied":
        table.append(same("heads.0.out.weight", "lm_head.weight"))
    for i in range(len(config.layers) // 2):
        hf, a, f = f"model.layers.{i}.", f"layers.{2 * i}.", f"layers.{2 * i + 1}."
        attn, ffn = config.layers[2 * i], config.layers[2 * i + 1]
        q, kv, hidden = attn.dim_attn, attn.dim_kv, ffn.dim_hidden(config)
        proj = [(f"{hf}self_attn.{n}_proj", rows) for n, rows in (("q", q), ("k", kv), ("v", kv))]
        table += [fused(f"{a}block.qkv.weight", *[(f"{n}.weight", rows) for n, rows in proj]),
                  same(f"{a}block.out_proj.weight", f"{hf}self_attn.o_proj.weight"),
                  fused(f"{f}block.up.weight", (f"{hf}mlp.gate_proj.weight", hidden), (f"{hf}mlp.up_proj.weight", hidden)),
                  same(f"{f}block.out_proj.weight", f"{hf}mlp.down_proj.weight")]
        if attn.bias_bool:
            table.append(fused(f"{a}block.qkv.bias", *[(f"{n}.bias", rows) for n, rows in proj]))
        if attn.out_bias_bool:
            table.append(same(f"{a}block.out_proj.bias", f"{hf}self_attn.o_proj.bias"))
        if ffn.bias_bool:
            table += [fused(f"{f}block.up.bias", (f"{hf}mlp.gate_proj.bias", hidden), (f"{hf}mlp.up_proj.bias", hidden)),
                      same(f"{f}block.out_proj.bias", f"{hf}mlp.down_proj.bias")]
        norms = ([("input_layernorm", a + "pre_norm"), ("post_attention_layernorm", a + "post_norm"),
                  ("pre_feedforward_layernorm", f + "pre_norm"), ("post_feedforward_layernorm", f + "post_norm")]
                 if post_norms else [("input_layernorm", a + "pre_norm"), ("post_attention_layernorm", f + "pre_norm")])
        table += [same(f"{ours}.weight", f"{hf}{theirs}.weight") for theirs, ours in norms]
    return table


def windows(config: ModelConfig) -> list[int | None]:
    """The window_size of each HF block's attention (our even layers; a layer of another type,
    which the exactness comparison then names, counts as no window)."""
    return [getattr(layer, "window_size", None) for layer in config.layers[::2]]


def silu(hf: HFConfig) -> str:
    """The GLU's activation: silu (SwiGLU) unless hidden_act names another."""
    return hf.activation("hidden_act", "silu")


# ---- Llama -------------------------------------------------------------------------------------
def llama_config(hf: HFConfig) -> dict:
    bias = hf.get("attention_bias", False)
    return decoder_config(hf, {"bias_bool": bias}, [None] * hf.require("num_hidden_layers"), silu(hf))


def llama_to_hf(config: ModelConfig) -> dict:
    hf = decoder_to_hf(config, "llama")
    attn, ffn = config.layers[0], config.layers[1]
    return dict(hf, attention_bias=attn.bias_bool, mlp_bias=ffn.bias_bool)


# ---- Mistral: one sliding window for every layer ------------------------------------------------
def mistral_config(hf: HFConfig) -> dict:
    return decoder_config(hf, {"bias_bool": False}, [hf.get("sliding_window")] * hf.require("num_hidden_layers"),
                          silu(hf))


def mistral_to_hf(config: ModelConfig) -> dict:
    return dict(decoder_to_hf(config, "mistral"), sliding_window=windows(config)[0])


# ---- Qwen2: q/k/v biases, sliding windows on the layers layer_types names -------------------------
def qwen2_config(hf: HFConfig) -> dict:
    count, window = hf.require("num_hidden_layers"), hf.get("sliding_window")
    if not hf.get("use_sliding_window", False):
        window = None
    first = hf.get("max_window_layers", count)
    kinds = hf.get("layer_types", ["sliding_attention" if window and i >= first else "full_attention"
                                   for i in range(count)])
    if len(kinds) != count:
        raise InteropError(f"{hf.path}: layer_types has {len(kinds)} entries for {count} layers")
    return decoder_config(hf, {"bias_bool": True, "out_bias_bool": False},
                          [window if kind == "sliding_attention" else None for kind in kinds], silu(hf))


def qwen2_to_hf(config: ModelConfig) -> dict:
    sizes = {w for w in windows(config) if w is not None}
    if len(sizes) > 1:
        raise NotExpressible("layers", f"qwen2 has one sliding_window; these layers use {sorted(sizes)}")
    window = next(iter(sizes), None)
    kinds = ["sliding_attention" if w else "full_attention" for w in windows(config)]
    first = kinds.index("sliding_attention") if window else len(kinds)
    return dict(decoder_to_hf(config, "qwen2"), use_sliding_window=window is not None, sliding_window=window,
                max_window_layers=first, layer_types=kinds)


LLAMA = register_family(Family("llama", "LlamaForCausalLM", llama_config, llama_to_hf, decoder_tensors,
                               limit_keys=("max_seq_len",), ignored=("rotary_emb.inv_freq",)))
MISTRAL = register_family(Family("mistral", "MistralForCausalLM", mistral_config, mistral_to_hf, decoder_tensors,
                                 limit_keys=("max_seq_len",), ignored=("rotary_emb.inv_freq",)))
QWEN2 = register_family(Family("qwen2", "Qwen2ForCausalLM", qwen2_config, qwen2_to_hf, decoder_tensors,
                               limit_keys=("max_seq_len",), ignored=("rotary_emb.inv_freq",)))
