"""FFN: GLU family parameter counts and products, inner token shift, sigmoid output gate."""

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
