"""gMLP / aMLP: causality, near-identity init, max_seq_len handling, right padding, params, compile."""

import pytest
import torch
import torch.nn.functional as F

import configaformer
from configaformer import ConfigError
from configaformer.info import summarize
from configaformer.presets import preset_path

from .conftest import ATTN, FFN, VOCAB, assert_causal, assert_padding_invariant, tiny

N = 16  # max_seq_len of the test models
GMLP = {"type": "gMLP", "ff_mult": 2}
AMLP = dict(GMLP, dim_tiny_attn=8)


def build(layers, **kw):
    return configaformer.Transformer(tiny(layers, **dict({"max_seq_len": N}, **kw))).eval()


def scramble_spatial(model, std=0.3):
    """Give every spatial W (both triangles) large random values, so a test proves the mask and
    not the near-zero init."""
    with torch.no_grad():
        for layer in model.layers:
            if hasattr(layer.block, "spatial_weight"):
                layer.block.spatial_weight.normal_(0.0, std)
    return model


@pytest.mark.parametrize("layers", [[GMLP, GMLP], [AMLP, FFN, GMLP], [ATTN, AMLP]])
def test_causal_future_tokens_do_not_change_earlier_logits(layers):
    assert_causal(scramble_spatial(build(layers)))


@pytest.mark.parametrize("layer", [GMLP, AMLP])
def test_bidirectional_sees_the_future(layer):
    model = scramble_spatial(build([dict(layer, causal_mask_bool=False)]))
    assert not model.config.is_causal
    ids = torch.randint(0, VOCAB, (1, 8))
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] + 1) % VOCAB
    assert not torch.allclose(model(ids)[0][:, 0], model(changed)[0][:, 0])


def test_tiny_attention_alone_sees_the_future_when_bidirectional():
    model = build([dict(AMLP, causal_mask_bool=False)])
    block = model.layers[0].block
    with torch.no_grad():
        block.spatial_weight.zero_()  # only the tiny attention can mix tokens now
    h = torch.randn(1, 6, 32)
    changed = h.clone()
    changed[0, -1] += 1.0
    ctx = model.make_context(6, h.dtype, None)
    assert not torch.allclose(block(h, ctx)[:, 0], block(changed, ctx)[:, 0])


def test_init_is_near_zero_weights_and_unit_bias_so_the_gate_starts_at_one():
    model = build([GMLP])
    block = model.layers[0].block
    assert block.spatial_weight.shape == (N, N) and block.spatial_bias.shape == (N,)
    assert block.spatial_weight.abs().max() <= 1e-3 / N
    assert block.spatial_weight.abs().max() > 0
    torch.testing.assert_close(block.spatial_bias, torch.ones(N))
    h = torch.randn(2, 10, 32)
    u, _ = F.gelu(block.up(h)).chunk(2, dim=-1)
    out = block(h, model.make_context(10, h.dtype, None))
    torch.testing.assert_close(out, block.out_proj(u * 1.0), rtol=0, atol=1e-4)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("length", [5, N])
def test_output_matches_a_hand_computation_on_the_top_left_corner(causal, length):
    model = scramble_spatial(build([dict(GMLP, causal_mask_bool=causal)]))
    block = model.layers[0].block
    with torch.no_grad():
        block.spatial_bias.normal_()
    h = torch.randn(2, length, 32)
    u, v = F.gelu(block.up(h)).chunk(2, dim=-1)
    w = block.spatial_weight[:length, :length]
    w = w.tril() if causal else w
    gate = torch.einsum("ij,bjd->bid", w, block.norm(v)) + block.spatial_bias[:length, None]
    expected = block.out_proj(u * gate)
    torch.testing.assert_close(block(h, model.make_context(length, h.dtype, None)), expected)


def test_shorter_input_works_through_the_model():
    model = build([GMLP, AMLP])
    for length in (1, 3, N):
        assert model(torch.randint(0, VOCAB, (2, length)))[0].shape == (2, length, VOCAB)


def test_longer_input_is_a_clear_error():
    model = build([GMLP])
    with pytest.raises(ValueError, match=f"exceeds max_seq_len {N}"):
        model(torch.randint(0, VOCAB, (1, N + 1)))
    block, h = model.layers[0].block, torch.randn(1, N + 1, 32)  # the block refuses it on its own too
    with pytest.raises(ValueError, match=f"gMLP: sequence length {N + 1} exceeds max_seq_len {N}"):
        block(h, model.make_context(N + 1, h.dtype, None))


def test_missing_max_seq_len_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"layers\[1\]\.type: .*set the model-wide max_seq_len"):
        configaformer.Transformer(tiny([FFN, GMLP]))


@pytest.mark.parametrize("bad, key", [({"ff_mult": 1.5 + 1 / 32}, "ff_mult"), ({"dim_tiny_attn": -1}, "dim_tiny_attn"),
                                      ({"ff_mult": 0}, "ff_mult"), ({"causal_mask_bool": "maybe"}, "causal_mask_bool")])
def test_bad_keys_are_config_errors_naming_the_key(bad, key):
    with pytest.raises(ConfigError, match=rf"layers\[0\]\.{key}"):
        build([dict(GMLP, **bad)])


def test_typo_gets_a_did_you_mean():
    with pytest.raises(ConfigError, match="did you mean 'dim_tiny_attn'"):
        build([dict(GMLP, dim_tiny_atn=8)])


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("layer", [GMLP, AMLP])
def test_right_padding_does_not_change_real_tokens(causal, layer):
    # Right padding only: W is indexed by absolute position, so left padding moves real tokens
    # to other rows of W and cannot be invariant (see the module docstring).
    layers = [dict(kind, causal_mask_bool=causal) for kind in (layer, ATTN, layer)]
    model = scramble_spatial(build(layers))
    padded, with_pad = assert_padding_invariant(model, 7, 5, "right", rtol=0)
    plain = model(padded[:, :7])[0]
    if not causal:  # without the mask, the padding would leak into real tokens
        assert not torch.allclose(model(padded)[0][:, :7], plain, atol=1e-5)


@pytest.mark.parametrize("tiny_attn", [0, 8])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("norm_type", ["layernorm", "rmsnorm", "scalenorm", "none"])
def test_parameter_count_formula(tiny_attn, bias, norm_type):
    model = build([dict(GMLP, ff_mult=3, dim_tiny_attn=tiny_attn, bias_bool=bias, norm_type=norm_type)])
    block = model.layers[0].block
    d, hidden, half, a = 32, 96, 48, tiny_attn
    norm = {"layernorm": 2 * half, "rmsnorm": half, "scalenorm": 1, "none": 0}[norm_type]
    expected = (d * hidden + bias * hidden) + norm + (N * N + N) + (half * d + bias * d)
    if a:
        expected += d * 3 * a + bias * 3 * a + a * half + bias * half
    assert sum(p.numel() for p in block.parameters()) == expected
    cfg = model.config
    assert cfg.layers[0].block_params(cfg) == expected


def test_model_init_keeps_the_spatial_init_and_scales_out_proj():
    model = build([GMLP] * 4)
    for layer in model.layers:
        block = layer.block
        torch.testing.assert_close(block.spatial_bias, torch.ones(N))
        assert block.spatial_weight.abs().max() <= 1e-3 / N
        assert block.out_proj.weight.std() < 0.02  # init_std / sqrt(4) = 0.01


def test_compiles_with_no_graph_break():
    model = build([GMLP, dict(AMLP, causal_mask_bool=False), ATTN])
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    ids = torch.randint(0, VOCAB, (2, 9))
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[0, -3:] = False
    torch.testing.assert_close(compiled(ids)[0], model(ids)[0])
    torch.testing.assert_close(compiled(ids, padding_mask=mask)[0], model(ids, padding_mask=mask)[0])


def test_save_load_round_trip(tmp_path):
    model = scramble_spatial(build([AMLP, GMLP]))
    model.save_pretrained(tmp_path / "m")
    same = configaformer.Transformer.from_pretrained(tmp_path / "m").eval()
    ids = torch.randint(0, VOCAB, (1, 10))
    torch.testing.assert_close(same(ids)[0], model(ids)[0], rtol=0, atol=0)


def test_preset_builds_and_summarises():
    summary = summarize(preset_path("gmlp"), seq_len=64)
    assert sum(row.params for row in summary.rows) == summary.total_params
    assert any(row.kind == "gMLP" and "ff_mult=6" in row.settings for row in summary.rows)
    assert summary.rows[-1].shape == (1, 64, 258)
