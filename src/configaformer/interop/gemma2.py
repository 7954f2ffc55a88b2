"""Gemma 2 (Gemma Team 2024, arXiv 2408.00118; HF `Gemma2ForCausalLM`) <-> configaformer.

The Llama layout (llama.py) plus what Gemma 2 adds, each an ordinary key of ours:

    HF config.json                       ours
    (embeddings * sqrt(hidden_size))     emb_scale = sqrt(dim_model)
    (RMSNorm gain 1 + w)                 norm_type: rmsnorm_offset
    (pre- and post-norm around both)     pre_norm_bool and post_norm_bool on every layer
    query_pre_attn_scalar                Attention attn_scale = query_pre_attn_scalar ** -0.5
    attn_logit_softcapping               Attention logit_softcap
    layer_types, sliding_window          Attention window_size on the sliding_attention layers
    final_logit_softcapping              classifiers[0].logit_softcap (tied head)
    hidden_activation gelu_pytorch_tanh  FFN activation gelu_tanh (GeGLU: gate activated, times up)
                                         (as llama.py: gelu, relu, silu too)

    HF tensor (model.layers.i.…)         ours
    input_layernorm                      layers.2i.pre_norm
    post_attention_layernorm             layers.2i.post_norm (after attention, before the residual add)
    pre_feedforward_layernorm            layers.2i+1.pre_norm
    post_feedforward_layernorm           layers.2i+1.post_norm
    (the rest as llama.py)
"""

from __future__ import annotations

import math

from ..config import ModelConfig
from .base import Family, HFConfig, InteropError, NotExpressible, TensorMap, register_family
from .llama import decoder_config, decoder_tensors, decoder_to_hf, windows


def to_config(hf: HFConfig) -> dict:
    hf.expect("use_bidirectional_attention", [None, False])
    count, window = hf.require("num_hidden_layers"), hf.get("sliding_window")
    kinds = hf.get("layer_types", ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(count)])
    if len(kinds) != count:
        raise InteropError(f"{hf.path}: layer_types has {len(kinds)} entries for {count} layers")
    heads = hf.require("num_attention_heads")
    scalar, head_dim = hf.get("query_pre_attn_scalar", 256), hf.get("head_dim", hf.require("hidden_size") // heads)
    attention = {"bias_bool": hf.get("attention_bias", False), "post_norm_bool": True,
                 "attn_scale": None if scalar == head_dim else scalar ** -0.5,  # None: 1 / sqrt(head_dim)
                 "logit_softcap": hf.get("attn_logit_softcapping")}
    activation = hf.activation("hidden_activation", hf.get("hidden_act", "gelu_pytorch_tanh"))
    config = decoder_config(hf, attention, [window if kind == "sliding_attention" else None for kind in kinds],
                            activation)
    ffn = dict(config["layers"][1], post_norm_bool=True)
    config["layers"][1::2] = [ffn] * count
    head = dict(config["classifiers"][0], logit_softcap=hf.get("final_logit_softcapping"))
    return dict(config, norm_type="rmsnorm_offset", emb_scale=math.sqrt(hf.require("hidden_size")),
                classifiers=[head])


def to_hf(config: ModelConfig) -> dict:
    hf = decoder_to_hf(config, "gemma2")
    hf["hidden_activation"] = hf.pop("hidden_act")
    attn, head = config.layers[0], config.classifiers[0]
    sizes = {w for w in windows(config) if w is not None}
    if len(sizes) > 1:
        raise NotExpressible("layers", f"gemma2 has one sliding_window; these layers use {sorted(sizes)}")
    scalar = (attn.attn_scale or attn.dim_head ** -0.5) ** -2
    scalar = round(scalar) if abs(scalar - round(scalar)) < 1e-6 * scalar else scalar
    return dict(hf, attention_bias=attn.bias_bool,
                query_pre_attn_scalar=scalar, attn_logit_softcapping=attn.logit_softcap,
                final_logit_softcapping=head.logit_softcap, sliding_window=next(iter(sizes), None),
                layer_types=["sliding_attention" if w else "full_attention" for w in windows(config)])


def tensors(config: ModelConfig) -> list[TensorMap]:
    return decoder_tensors(config, post_norms=True)


GEMMA2 = register_family(Family("gemma2", "Gemma2ForCausalLM", to_config, to_hf, tensors,
                                limit_keys=("max_seq_len",), ignored=("rotary_emb.inv_freq",)))
