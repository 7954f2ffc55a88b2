"""The analytic FLOP count (configaformer.flops) against torch.utils.flop_counter on tiny models.

Bias-free configs on the explicit attention path (the fused CPU kernel has no flop formula), so
every FLOP of the count is a matrix product that torch runs and counts: forward, and forward +
backward for a training step.
"""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from configaformer import Transformer
from configaformer.flops import count_flops

DIM, VOCAB, SEQ = 32, 50, 12
ATTN = {"type": "Attention", "num_heads": 4, "bias_bool": False}
FFN = {"type": "FFN", "ff_mult": 2, "bias_bool": False}
GLU = {"type": "FFN", "ff_mult": 2, "num_projections": 2, "num_gelu": 1, "activation": "silu", "bias_bool": False}

CASES = {
    "attention+ffn": [ATTN, FFN],
    "gqa": [{**ATTN, "num_kv_heads": 2}, GLU],
    "lazy": [ATTN, FFN, {**ATTN, "previous_attention_bool": True}, FFN],
    "residual": [ATTN, {**ATTN, "residual_attention_bool": True}],
    "narrow_attn_memory_kv": [{**ATTN, "dim_attn": 16, "num_memory_kv": 3}, FFN],
    "talking_heads": [{**ATTN, "talking_heads_bool": True}, FFN],
    "output_gate": [{**ATTN, "output_gate": {"activation": "sigmoid", "source": "input"}}, FFN],
    "gmlp": [{"type": "gMLP", "ff_mult": 2, "bias_bool": False}],
    "amlp": [{"type": "gMLP", "ff_mult": 2, "dim_tiny_attn": 8, "bias_bool": False}],
    "parallel": [{"type": "Parallel", "attention": {"num_heads": 4, "bias_bool": False},
                  "ffn": {"ff_mult": 2, "bias_bool": False}}],
}


def config(layers, **model):
    explicit = {"attention_impl": "explicit"} if any(layer["type"] in ("Attention", "Parallel") for layer in layers) else {}
    return {"dim_model": DIM, "vocab_size": VOCAB, "dim_rope": 4, "max_seq_len": 16, **explicit,
            "classifiers": [{"num_classes": VOCAB, "head_type": "tied", "bias_bool": False}], "layers": layers,
            **model}


def counted(model, train: bool) -> int:
    ids = torch.randint(0, VOCAB, (2, SEQ), generator=torch.Generator().manual_seed(0))
    with FlopCounterMode(display=False) as counter:
        if train:
            model(ids)[0].sum().backward()
        else:
            with torch.no_grad():
                model(ids)
    return counter.get_total_flops()


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_count_equals_torchs_flop_counter(name):
    cfg = config(CASES[name])
    model = Transformer(cfg)
    flops = count_flops(cfg, SEQ)
    # aMLP's tiny attention always takes the fused kernel, for which torch 2.13 has no CPU formula:
    # its two products (q.k^T and map.v, 2 * L * dim_tiny_attn each) are missing from torch's count
    missed = sum(2 * 2 * SEQ * layer.get("dim_tiny_attn", 0) for layer in CASES[name])
    assert counted(model, train=False) == (flops.forward - missed) * 2 * SEQ
    assert counted(model, train=True) == (flops.train_step - 3 * missed) * 2 * SEQ


@pytest.mark.parametrize("head", [{"head_type": "linear"}, {"head_type": "ffn", "ff_mult": 2}, {"head_type": "tied"}])
def test_heads_and_an_input_projection_are_counted(head):
    cfg = config([ATTN], input_emb_size=16,
                 classifiers=[{"num_classes": VOCAB, "bias_bool": False, **head}, {"num_classes": 3, "head_type": "linear",
                                                                                    "bias_bool": False}])
    if head["head_type"] == "ffn":
        cfg["norm_type"] = "none"  # the ffn head's norms hold parameters, not products
    flops = count_flops(cfg, SEQ)
    assert flops.embedding == 2 * 16 * DIM
    assert counted(Transformer(cfg), train=False) == flops.forward * 2 * SEQ


def test_hand_counts():
    """Small cases written out by hand, so the formulas read as what they claim."""
    # attention: q, k, v, out (4 * 32 * 32 weights) + q.k^T and map.v over 12 keys of width 32
    assert count_flops(config([ATTN]), SEQ).layers[0] == 2 * 4 * DIM * DIM + 2 * 2 * SEQ * DIM
    # 2 kv heads of 4: k and v are 32 x 16; the products are unchanged (each query head reads all keys)
    assert count_flops(config([{**ATTN, "num_kv_heads": 2}]), SEQ).layers[0] == 2 * (2 * DIM * DIM + 2 * DIM * 16) \
        + 2 * 2 * SEQ * DIM
    # lazy: v and out only, and map.v only
    lazy = count_flops(config([ATTN, {**ATTN, "previous_attention_bool": True}]), SEQ).layers[1]
    assert lazy == 2 * 2 * DIM * DIM + 2 * SEQ * DIM
    # FFN ff_mult 2: 32 -> 64 -> 32; the context length does not matter
    assert count_flops(config([FFN]), SEQ).layers[0] == count_flops(config([FFN]), 3).layers[0] == 2 * 2 * DIM * 64
    # gMLP ff_mult 2: up 32 -> 64, spatial over 12 positions of width 32, down 32 -> 32
    gmlp = {"type": "gMLP", "ff_mult": 2, "bias_bool": False}
    assert count_flops(config([gmlp]), SEQ).layers[0] == 2 * (DIM * 64 + 32 * DIM) + 2 * SEQ * 32
    # aMLP's tiny attention of width 8: q, k, v (32 -> 24) and its output (8 -> 32), and its two products
    assert count_flops(config([{**gmlp, "dim_tiny_attn": 8}]), SEQ).layers[0] \
        == count_flops(config([gmlp]), SEQ).layers[0] + 2 * (DIM * 24 + 8 * 32) + 2 * 2 * SEQ * 8
    # a tied head over 50 classes; a training step is 3 forward passes
    flops = count_flops(config([FFN]), SEQ)
    assert flops.heads == (2 * DIM * VOCAB,) and flops.train_step == 3 * flops.forward


def test_moe_counts_its_active_experts_only():
    moe = {"type": "MoE", "num_experts": 8, "top_k": 2, "ff_mult": 1, "bias_bool": False}
    one = count_flops(config([ATTN, moe]), SEQ).layers[1]
    assert one == 2 * (DIM * 8 + 2 * 2 * DIM * DIM)  # the router and two 32 -> 32 -> 32 experts
    assert count_flops(config([ATTN, {**moe, "num_experts": 16}]), SEQ).layers[1] == one + 2 * DIM * 8
