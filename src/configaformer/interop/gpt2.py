"""GPT-2 (Radford et al. 2019; HF `GPT2LMHeadModel`) <-> configaformer.

    HF config.json                     ours
    n_embd, vocab_size, n_positions    dim_model, vocab_size, max_seq_len (+ abs_pos_emb: learned)
    n_layer                            layers: [Attention, FFN] * n_layer
    n_head, attn_pdrop                 Attention num_heads, attn_dropout
    n_inner (None: 4 * n_embd)         FFN ff_mult = n_inner / n_embd
    activation_function                FFN activation (gelu_new: gelu_tanh; gelu, relu, silu)
    resid_pdrop, embd_pdrop            every layer's dropout, emb_dropout
    layer_norm_epsilon                 norm_eps (norm_type layernorm, pre-norm)
    tie_word_embeddings (true)         classifiers: [tied head, no bias]

    HF tensor (transformer.…)          ours                       how
    wte, wpe                           embedding, abs_pos.table
    h.i.ln_1, h.i.ln_2                 layers.2i / 2i+1 .pre_norm
    h.i.attn.c_attn (in, 3 out)        layers.2i.block.qkv        transposed (Conv1D); q, k, v fused alike
    h.i.attn.c_proj, h.i.mlp.c_fc,     layers.2i.block.out_proj,  transposed
    h.i.mlp.c_proj                     layers.2i+1.block.up / out_proj
    ln_f                               final_norm
"""

from __future__ import annotations

from ..config import ModelConfig
from .base import (Family, HFConfig, NotExpressible, TensorMap, block_pair, hf_activation, lm_head, register_family,
                   same, transposed)


def to_config(hf: HFConfig) -> dict:
    for key, value in [("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                       ("add_cross_attention", False), ("tie_word_embeddings", True)]:
        hf.expect(key, [value], value)
    dim, vocab = hf.require("n_embd"), hf.require("vocab_size")
    resid = hf.get("resid_pdrop", 0.1)
    attn = {"type": "Attention", "num_heads": hf.require("n_head"), "attn_dropout": hf.get("attn_pdrop", 0.1),
            "dropout": resid}
    ffn = {"type": "FFN", "ff_mult": hf.get("n_inner", 4 * dim) / dim, "activation": hf.activation("activation_function", "gelu_new"),
           "dropout": resid}
    return {"dim_model": dim, "vocab_size": vocab, "max_seq_len": hf.require("n_positions"),
            "abs_pos_emb": "learned", "norm_type": "layernorm", "norm_eps": hf.get("layer_norm_epsilon", 1e-5),
            "emb_dropout": hf.get("embd_pdrop", 0.1), "init_std": hf.get("initializer_range", 0.02),
            "classifiers": [{"num_classes": vocab, "head_type": "tied", "bias_bool": False}],
            "layers": [attn, ffn] * hf.require("n_layer")}


def to_hf(config: ModelConfig) -> dict:
    attn, ffn = block_pair(config, "gpt2")
    if lm_head(config, "gpt2").head_type != "tied":
        raise NotExpressible("classifiers[0].head_type", "gpt2 ties its output layer to the embedding")
    if config.max_seq_len is None:
        raise NotExpressible("max_seq_len", "gpt2 has learned positions, a table of n_positions = max_seq_len rows")
    return {"n_embd": config.dim_model, "vocab_size": config.vocab_size, "n_positions": config.max_seq_len,
            "n_layer": len(config.layers) // 2, "n_head": attn.num_heads, "n_inner": ffn.dim_hidden(config),
            "activation_function": "gelu_new" if ffn.activation == "gelu_tanh" else hf_activation(ffn, 1, "gpt2"),
            "attn_pdrop": attn.attn_dropout, "resid_pdrop": attn.dropout,
            "embd_pdrop": config.emb_dropout, "layer_norm_epsilon": config.norm_eps,
            "initializer_range": config.init_std, "tie_word_embeddings": True}


def tensors(config: ModelConfig) -> list[TensorMap]:
    table = [same("embedding.weight", "transformer.wte.weight"), same("abs_pos.table.weight", "transformer.wpe.weight")]
    for i in range(len(config.layers) // 2):
        hf, attn, ffn = f"transformer.h.{i}.", f"layers.{2 * i}.", f"layers.{2 * i + 1}."
        for ours, theirs in [(attn + "pre_norm", "ln_1"), (ffn + "pre_norm", "ln_2")]:
            table += [same(f"{ours}.weight", f"{hf}{theirs}.weight"), same(f"{ours}.bias", f"{hf}{theirs}.bias")]
        for ours, theirs in [(attn + "block.qkv", "attn.c_attn"), (attn + "block.out_proj", "attn.c_proj"),
                             (ffn + "block.up", "mlp.c_fc"), (ffn + "block.out_proj", "mlp.c_proj")]:
            table += [transposed(f"{ours}.weight", f"{hf}{theirs}.weight"), same(f"{ours}.bias", f"{hf}{theirs}.bias")]
    return table + [same("final_norm.weight", "transformer.ln_f.weight"), same("final_norm.bias", "transformer.ln_f.bias")]


GPT2 = register_family(Family("gpt2", "GPT2LMHeadModel", to_config, to_hf, tensors,
                              optional_prefix="transformer.", ignored=(".attn.bias", ".attn.masked_bias")))
