"""Attention: causality, padding, rotary, lazy and residual attention, fused == explicit."""

import math

import pytest
import torch

import configaformer
from configaformer.positional.rotary import RotaryTable, apply_rotary

from .conftest import ATTN, FFN, VOCAB, assert_causal, assert_padding_invariant, tiny

SHIFT = [{"features": 16, "shift": 0}, {"features": 8, "shift": 1}, {"features": 8, "shift": 2}]
INNER = [{"features": 32, "shift": 0}, {"features": 32, "shift": 1}]
# A causal model exercising every core feature: token shift, GLU + inner shift, lazy, residual, gates.
RICH_LAYERS = [
    dict(ATTN, token_shift_config=SHIFT, output_gate={"activation": "sigmoid", "source": "input"}),
    dict(FFN, num_projections=2, num_gelu=1, inner_token_shift_config=INNER, output_sigmoid_gate_bool=True),
    dict(ATTN, previous_attention_bool=True, rotate_v_bool=True),
    dict(ATTN, residual_attention_bool=True, post_norm_bool=True, output_gate={"activation": "gelu", "source": "hidden"}),
    dict(ATTN, residual_attention_bool=True),
    FFN,
]


def build(layers, **kw):
    return configaformer.Transformer(tiny(layers, **kw)).eval()


def capture(module):
    """Record the (input, ctx) a block is called with and its output."""
    seen = {}

    def hook(_m, args, out):
        seen["h"], seen["ctx"], seen["out"] = args[0], args[1], out
        seen["state"] = dict(args[1].state)

    module.register_forward_hook(hook)
    return seen


def split_heads(t, heads):  # (B, L, D) -> (B, H, L, D/H)
    B, L, D = t.shape
    return t.view(B, L, heads, D // heads).transpose(1, 2)


def merge_heads(t):  # (B, H, L, Dh) -> (B, L, H*Dh)
    B, H, L, Dh = t.shape
    return t.transpose(1, 2).reshape(B, L, H * Dh)


@pytest.mark.parametrize("layers", [RICH_LAYERS, [ATTN, FFN]])
def test_causal_future_tokens_do_not_change_earlier_logits(layers):
    assert_causal(build(layers))


def test_bidirectional_layer_sees_the_future():
    model = build([dict(ATTN, causal_mask_bool=False), FFN])
    ids = torch.randint(0, VOCAB, (1, 8))
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] + 1) % VOCAB
    assert not torch.allclose(model(ids)[0][:, 0], model(changed)[0][:, 0])


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("side", ["right", "left"])
def test_padding_does_not_change_real_tokens(causal, side):
    layers = [dict(layer, causal_mask_bool=causal) if layer["type"] == "Attention" else layer for layer in RICH_LAYERS]
    if not causal:
        layers[0] = dict(layers[0], token_shift_config=[{"features": 16, "shift": -1}, {"features": 16, "shift": 1}])
    _, with_pad = assert_padding_invariant(build(layers), 7, 4, side)
    assert torch.isfinite(with_pad).all()


def test_rotary_scores_depend_only_on_relative_position():
    table = RotaryTable(8)
    q, k = torch.randn(2, 3, 10, 16), torch.randn(2, 3, 10, 16)
    base = torch.arange(10).expand(2, 10)

    def scores(positions):
        cos, sin = table(10 + 100, positions, torch.float32)
        return apply_rotary(q, cos, sin) @ apply_rotary(k, cos, sin).transpose(-2, -1)

    torch.testing.assert_close(scores(base), scores(base + 37), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(scores(base), scores(base * 2), atol=1e-3)
    cos, sin = table(10, None, torch.float32)
    torch.testing.assert_close(apply_rotary(apply_rotary(q, cos, sin), cos, sin, inverse=True), q)
    torch.testing.assert_close(apply_rotary(q, cos, sin)[..., 8:], q[..., 8:])  # features past dim_rope pass


def test_rotated_values_keep_outputs_relative():
    model = build([dict(ATTN, rotate_v_bool=True, causal_mask_bool=False)], classifiers=[{"num_classes": VOCAB}])
    assert_padding_invariant(model, 6, 3, "left")  # shifts every real position by 3 through the position counter


def test_lazy_layer_has_no_qk_and_reuses_the_map():
    model = build([ATTN, FFN, dict(ATTN, previous_attention_bool=True)])
    lazy = model.layers[2].block
    names = {n for n, _ in lazy.named_parameters()}
    assert names == {"v_proj.weight", "v_proj.bias", "out_proj.weight", "out_proj.bias"}
    first, seen_first, seen_lazy = model.layers[0].block, capture(model.layers[0].block), capture(lazy)
    model(torch.randint(0, VOCAB, (2, 9)))
    # The map layer 0 kept is softmax(q k^T / sqrt(d)) with the causal mask, by hand.
    h0 = seen_first["h"]
    q, k, _ = first.qkv(h0).chunk(3, dim=-1)
    q, k = split_heads(q, 4), split_heads(k, 4)
    cos, sin = seen_first["ctx"].rotary[4]
    q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    scores = q @ k.transpose(-2, -1) / (8 ** 0.5)
    scores = scores.masked_fill(torch.ones(9, 9, dtype=torch.bool).triu(1), float("-inf"))
    attn_map = torch.softmax(scores, -1)
    torch.testing.assert_close(seen_lazy["state"][("attn_map", 0)], attn_map, rtol=1e-5, atol=1e-6)
    # The lazy layer's output is out_proj(map @ v) with its own v.
    v = split_heads(lazy.v_proj(seen_lazy["h"]), 4)
    expected = lazy.out_proj(merge_heads(attn_map @ v))
    torch.testing.assert_close(seen_lazy["out"], expected, rtol=1e-5, atol=1e-6)
    assert first.explicit and first.keep_map and not lazy.explicit


def test_residual_attention_adds_exactly_the_previous_scores():
    model = build([ATTN, dict(ATTN, residual_attention_bool=True, dim_rope=0)])
    first, second = model.layers[0].block, model.layers[1].block
    assert first.keep_scores and not second.explicit  # the consumer itself stays on the fused path
    seen_first, seen_second = capture(first), capture(second)
    model(torch.randint(0, VOCAB, (2, 7)))
    h0 = seen_first["h"]
    q, k, _ = first.qkv(h0).chunk(3, dim=-1)
    cos, sin = seen_first["ctx"].rotary[4]
    q, k = apply_rotary(split_heads(q, 4), cos, sin), apply_rotary(split_heads(k, 4), cos, sin)
    prev = q @ k.transpose(-2, -1) / (8 ** 0.5)
    torch.testing.assert_close(seen_second["state"][("attn_scores", 0)], prev, rtol=1e-5, atol=1e-6)
    q, k, v = (split_heads(t, 4) for t in second.qkv(seen_second["h"]).chunk(3, dim=-1))
    scores = q @ k.transpose(-2, -1) / (8 ** 0.5) + prev
    scores = scores.masked_fill(torch.ones(7, 7, dtype=torch.bool).triu(1), float("-inf"))
    expected = second.out_proj(merge_heads(torch.softmax(scores, -1) @ v))
    torch.testing.assert_close(seen_second["out"], expected, rtol=1e-5, atol=1e-6)


def test_only_layers_read_later_materialise_attention():
    model = build([ATTN, ATTN, dict(ATTN, previous_attention_bool=True), ATTN, dict(ATTN, residual_attention_bool=True)])
    assert [layer.block.explicit for layer in model.layers] == [False, True, False, True, False]


@pytest.mark.parametrize("padded", [False, True])
def test_explicit_and_fused_paths_agree(padded):
    fused = build(RICH_LAYERS + [dict(ATTN, causal_mask_bool=False), ATTN])
    explicit = build(RICH_LAYERS + [dict(ATTN, causal_mask_bool=False), ATTN], attention_impl="explicit")
    explicit.load_state_dict(fused.state_dict())
    assert sum(layer.block.explicit for layer in fused.layers if hasattr(layer.block, "explicit")) == 2
    ids = torch.randint(1, VOCAB, (3, 11))
    mask = None
    if padded:
        mask = torch.ones_like(ids, dtype=torch.bool)
        mask[0, 8:] = False
        mask[1, :3] = False
    (a,), (b,) = fused(ids, padding_mask=mask), explicit(ids, padding_mask=mask)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_attention_dropout_only_in_training():
    model = configaformer.Transformer(tiny([dict(ATTN, attn_dropout=0.5), ATTN, dict(ATTN, previous_attention_bool=True, attn_dropout=0.5)]))
    ids = torch.randint(0, VOCAB, (2, 8))
    model.train()
    assert not torch.allclose(model(ids)[0], model(ids)[0])
    model.eval()
    torch.testing.assert_close(model(ids)[0], model(ids)[0])


def test_llama3_rope_scaling_keeps_short_wavelengths_slows_long_ones_and_blends_between():
    from configaformer.config.model import RopeScalingConfig

    scaling = RopeScalingConfig(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_seq_len=64)
    plain, scaled = RotaryTable(8).inv_freq, RotaryTable(8, scaling=scaling).inv_freq  # 1, 0.1, 0.01, 0.001
    wavelen = 2 * math.pi / plain  # 6.3, 63, 628, 6283; 64 / 4 = 16 and 64 / 1 = 64 are the edges
    assert scaled[0] == plain[0]  # shorter than 16: kept
    torch.testing.assert_close(scaled[2:], plain[2:] / 8)  # longer than 64: divided by factor
    s = 64 / wavelen[1] - 1.0  # between: (1 - s) f / factor + s f, with s = (64 / w - 1) / (4 - 1)
    torch.testing.assert_close(scaled[1], ((1 - s / 3) * plain[1] / 8 + s / 3 * plain[1]))
    with pytest.raises(configaformer.ConfigError, match=r"rope_scaling\.high_freq_factor: 1 must exceed"):
        configaformer.resolve_config(tiny([ATTN], rope_scaling={"low_freq_factor": 1.0, "high_freq_factor": 1.0}))
    with pytest.raises(configaformer.ConfigError, match=r"rope_scaling: no layer rotates"):
        configaformer.resolve_config(tiny([ATTN], dim_rope=0, rope_scaling={}))
