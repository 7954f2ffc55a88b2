"""FFN: GLU family parameter counts and products, inner token shift, sigmoid output gate."""

import math

import pytest
import torch
import torch.nn.functional as F

import configaformer

from .conftest import FFN, tiny


def ffn_block(**keys):
    model = configaformer.Transformer(tiny([dict(FFN, **keys)]))
    return model.layers[0].block, model


@pytest.mark.parametrize("num_projections", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("bias", [True, False])
def test_glu_parameter_count(num_projections, bias):
    block, _ = ffn_block(ff_mult=3, num_projections=num_projections, num_gelu=min(num_projections, 1), bias_bool=bias)
    d, h, n = 32, 96, max(num_projections, 1)
    expected = n * d * h + h * d + bias * (n * h + d)
    assert sum(p.numel() for p in block.parameters()) == expected


@pytest.mark.parametrize("num_projections, num_gelu", [(1, 1), (1, 0), (2, 1), (2, 0), (3, 2), (4, 4)])
def test_glu_output_is_the_product_of_projections(num_projections, num_gelu):
    block, model = ffn_block(num_projections=num_projections, num_gelu=num_gelu)
    h = torch.randn(2, 5, 32)
    parts = block.up(h).chunk(num_projections, dim=-1)
    z = torch.ones_like(parts[0])
    for i, p in enumerate(parts):
        z = z * (F.gelu(p) if i < num_gelu else p)
    expected = block.out_proj(z)
    torch.testing.assert_close(block(h, model.make_context(5, h.dtype, None)), expected)


def test_inner_token_shift_moves_hidden_features():
    block, model = ffn_block(ff_mult=1, inner_token_shift_config=[{"features": 16, "shift": 0}, {"features": 16, "shift": 1}])
    h = torch.randn(1, 4, 32)
    z = F.gelu(block.up(h))
    shifted = torch.cat([z[..., :16], F.pad(z[:, :-1, 16:], (0, 0, 1, 0))], dim=-1)
    torch.testing.assert_close(block(h, model.make_context(4, h.dtype, None)), block.out_proj(shifted))


def test_sigmoid_output_gate_multiplies_by_sigmoid_of_the_input_projection():
    block, model = ffn_block(output_sigmoid_gate_bool=True)
    h = torch.randn(1, 4, 32)
    plain = block.out_proj(F.gelu(block.up(h)))
    gate = torch.sigmoid(block.gate.proj(h))
    torch.testing.assert_close(block(h, model.make_context(4, h.dtype, None)), plain * gate)


@pytest.mark.parametrize("source", ["input", "hidden"])
def test_layer_output_gate_reads_the_configured_source(source):
    model = configaformer.Transformer(tiny([dict(FFN, output_gate={"activation": "gelu", "source": source})]))
    layer = model.layers[0]
    x = torch.randn(2, 3, 32)
    ctx = model.make_context(3, x.dtype, None)
    h = layer.pre_norm(x)
    y = layer.block(h, ctx)
    src = x if source == "input" else h
    torch.testing.assert_close(layer(x, ctx), x + y * F.gelu(layer.gate.proj(src)))


def test_no_residual_and_post_norm():
    model = configaformer.Transformer(tiny([dict(FFN, add_residual=False, post_norm_bool=True, pre_norm_bool=False)]))
    layer = model.layers[0]
    x = torch.randn(2, 3, 32)
    ctx = model.make_context(3, x.dtype, None)
    torch.testing.assert_close(layer(x, ctx), layer.post_norm(layer.block(x, ctx)))
    assert layer.pre_norm is None


REFERENCE_ACTIVATIONS = {
    "gelu": lambda x: 0.5 * x * (1 + torch.erf(x / 2 ** 0.5)),
    "relu": lambda x: x.clamp(min=0),
    "squared_relu": lambda x: x.clamp(min=0) ** 2,  # Primer
    "silu": lambda x: x * torch.sigmoid(x),
    "swish": lambda x: x * torch.sigmoid(x),
    "mish": lambda x: x * torch.tanh(torch.log1p(torch.exp(x))),
    "gelu_tanh": lambda x: 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))),
}


@pytest.mark.parametrize("activation", sorted(REFERENCE_ACTIVATIONS))
@pytest.mark.parametrize("num_projections, num_gelu", [(1, 1), (3, 2)])
def test_activation_applies_to_the_first_num_gelu_projections(activation, num_projections, num_gelu):
    block, model = ffn_block(num_projections=num_projections, num_gelu=num_gelu, activation=activation)
    h = torch.randn(2, 5, 32)
    parts = block.up(h).chunk(num_projections, dim=-1)
    z = torch.ones_like(parts[0])
    for i, p in enumerate(parts):
        z = z * (REFERENCE_ACTIVATIONS[activation](p) if i < num_gelu else p)
    torch.testing.assert_close(block(h, model.make_context(5, h.dtype, None)), block.out_proj(z))


def test_swish_is_an_alias_resolved_to_silu():
    cfg = configaformer.resolve_config(tiny([dict(FFN, activation="swish"), FFN]))
    assert [layer.activation for layer in cfg.layers] == ["silu", "gelu"]


def test_swiglu_is_silu_of_x_w1_times_x_w2_then_w_out():
    """SwiGLU (Shazeer 2020, arXiv 2002.05202) = num_projections 2, num_gelu 1, activation silu."""
    block, model = ffn_block(num_projections=2, num_gelu=1, activation="silu", bias_bool=False)
    w1, w2 = block.up.weight.chunk(2, dim=0)  # each (hidden, dim)
    h = torch.randn(3, 4, 32)
    expected = (F.silu(h @ w1.T) * (h @ w2.T)) @ block.out_proj.weight.T
    torch.testing.assert_close(block(h, model.make_context(4, h.dtype, None)), expected)


def test_unknown_activation_is_a_config_error_listing_the_valid_ones():
    with pytest.raises(configaformer.ConfigError, match=r"layers\[0\]\.activation: .*'squared_relu'.*'mish'"):
        configaformer.Transformer(tiny([dict(FFN, activation="softmax")]))
