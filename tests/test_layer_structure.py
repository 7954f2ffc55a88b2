"""Layer structure keys: norm types (ScaleNorm, sandwich), biases, residual scaling (ReZero,
LayerScale), stochastic depth, and weight sharing between layers."""

import math

import pytest
import torch
from safetensors import safe_open

import configaformer
from configaformer import ConfigError, Transformer
from configaformer.layers.norms import OffsetRMSNorm, ScaleNorm

from .conftest import ATTN, FFN, VOCAB, tiny


def problems(config):
    with pytest.raises(ConfigError) as info:
        Transformer(config)
    return {p.path: p.message for p in info.value.problems}


def run_layer(model, index, x):
    return model.layers[index](x, model.make_context(x.shape[1], x.dtype, None))


# ---- norms -----------------------------------------------------------------------------------
def test_scalenorm_is_x_times_g_over_its_norm_with_one_parameter():
    norm = ScaleNorm(32)
    assert [p.shape for p in norm.parameters()] == [torch.Size([])] and norm.g.item() == pytest.approx(math.sqrt(32))
    x = torch.randn(2, 5, 32)
    torch.testing.assert_close(norm(x), x * math.sqrt(32) / x.norm(dim=-1, keepdim=True))
    with torch.no_grad():
        norm.g.fill_(3.0)
    torch.testing.assert_close(norm(x).norm(dim=-1), torch.full((2, 5), 3.0))  # every row gets length g
    assert torch.equal(norm(torch.zeros(1, 32)), torch.zeros(1, 32))  # eps guards the zero vector


def test_offset_rmsnorm_is_rmsnorm_with_gain_one_plus_w_starting_as_rmsnorm():
    norm, plain = OffsetRMSNorm(32, eps=1e-6), torch.nn.RMSNorm(32, eps=1e-6)
    x = torch.randn(2, 5, 32)
    torch.testing.assert_close(norm(x), plain(x))  # w = 0 at init: gain 1
    with torch.no_grad():
        norm.weight.normal_()
    rms = x.square().mean(-1, keepdim=True).add(1e-6).sqrt()
    torch.testing.assert_close(norm(x), x / rms * (1 + norm.weight))
    assert norm(x.bfloat16()).dtype == torch.bfloat16  # computed in float32, returned in the input's dtype
    model = Transformer(tiny([dict(ATTN, post_norm_bool=True), FFN], norm_type="rmsnorm_offset"))
    assert sum(isinstance(m, OffsetRMSNorm) for m in model.modules()) == 3 + 1 + 2
    assert model.num_parameters() == Transformer(tiny([dict(ATTN, post_norm_bool=True), FFN],
                                                      norm_type="rmsnorm")).num_parameters()


def test_scalenorm_everywhere_and_its_parameter_count():
    model = Transformer(tiny([dict(ATTN, post_norm_bool=True), FFN], norm_type="scalenorm"))
    norms = [m for m in model.modules() if isinstance(m, ScaleNorm)]
    assert len(norms) == 3 + 1 + 2  # layer norms (pre, post, pre), final norm, the ffn head's two
    assert not any(isinstance(m, (torch.nn.LayerNorm, torch.nn.RMSNorm)) for m in model.modules())
    cfg = model.config
    for layer_cfg, layer in zip(cfg.layers, model.layers):
        assert layer_cfg.count_params(cfg) == sum(p.numel() for p in layer.parameters())
    assert cfg.layers[0].count_params(cfg) == cfg.layers[0].block_params(cfg) + 2  # two scalars


def test_per_layer_norm_type_overrides_the_model_default():
    layers = [dict(ATTN, norm_type="rmsnorm"), dict(FFN, norm_type="none"), FFN]
    model = Transformer(tiny(layers, norm_type="scalenorm"))
    kinds = [type(layer.pre_norm).__name__ for layer in model.layers]
    assert kinds == ["RMSNorm", "Identity", "ScaleNorm"]


def test_unknown_norm_type_lists_the_valid_ones():
    found = problems(tiny([dict(ATTN, norm_type="batchnorm")]))
    assert "'scalenorm'" in found["layers[0].norm_type"] and "'rmsnorm'" in found["layers[0].norm_type"]


def test_sandwich_norm_applies_both_norms():
    model = Transformer(tiny([dict(FFN, pre_norm_bool=True, post_norm_bool=True)]))
    layer = model.layers[0]
    with torch.no_grad():  # make both norms non-trivial so each one visibly matters
        for norm in (layer.pre_norm, layer.post_norm):
            norm.weight.uniform_(0.5, 2.0)
            norm.bias.normal_()
    x = torch.randn(2, 4, 32)
    ctx = model.make_context(4, x.dtype, None)
    out = layer(x, ctx)
    torch.testing.assert_close(out, x + layer.post_norm(layer.block(layer.pre_norm(x), ctx)))
    assert not torch.allclose(out, x + layer.block(layer.pre_norm(x), ctx))  # the post-norm acted
    assert not torch.allclose(out, x + layer.post_norm(layer.block(x, ctx)))  # the pre-norm acted


# ---- biases ----------------------------------------------------------------------------------
PARALLEL_NO_BIAS = {"type": "Parallel", "attention": {"bias_bool": False, "num_heads": 4},
                    "ffn": {"bias_bool": False, "num_projections": 2, "output_sigmoid_gate_bool": True}}


@pytest.mark.parametrize("bias", [True, False])
def test_bias_bool_switches_every_linear_layer_of_the_layer(bias):
    gate = {"activation": "sigmoid"}
    layers = [dict(ATTN, bias_bool=bias, output_gate=gate),
              dict(FFN, bias_bool=bias, num_projections=3, num_gelu=2, output_sigmoid_gate_bool=True, output_gate=gate),
              {"type": "Parallel", "output_gate": gate,
               "attention": {"bias_bool": bias, "num_heads": 4},
               "ffn": {"bias_bool": bias, "output_sigmoid_gate_bool": True}}]
    model = Transformer(tiny(layers))
    linears = [m for m in model.layers.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 2 + 1 + 3 + 1 + (2 + 3) + 1  # qkv/out, gate; up/out/gate, gate; parallel's, gate
    assert all((m.bias is not None) == bias for m in linears)
    cfg = model.config
    for layer_cfg, layer in zip(cfg.layers, model.layers):
        assert layer_cfg.count_params(cfg) == sum(p.numel() for p in layer.parameters())


# ---- residual scaling ------------------------------------------------------------------------
@pytest.mark.parametrize("layer", [ATTN, FFN, {"type": "Parallel"}])
def test_rezero_layer_is_the_identity_at_init(layer):
    model = Transformer(tiny([dict(layer, residual_scale="rezero")] * 3)).eval()
    x = torch.randn(2, 6, 32)
    assert torch.equal(run_layer(model, 0, x), x)
    assert [p.numel() for p in model.layers[0].residual_scale.parameters()] == [1]
    ids = torch.randint(0, VOCAB, (2, 6))
    features = model.forward_features(ids)  # every layer the identity: final_norm(embedding)
    torch.testing.assert_close(features, model.final_norm(model.embedding(ids)))
    model.layers[0].residual_scale.scale.data.fill_(0.5)
    branch = model.layers[0].block(model.layers[0].pre_norm(x), model.make_context(6, x.dtype, None))
    torch.testing.assert_close(run_layer(model, 0, x), x + 0.5 * branch)


@pytest.mark.parametrize("init, expected", [(None, 1e-4), (0.3, 0.3)])
def test_layerscale_scales_each_feature_exactly(init, expected):
    keys = {"residual_scale": "layerscale"} | ({"layerscale_init": init} if init else {})
    model = Transformer(tiny([dict(FFN, **keys)])).eval()
    assert model.config.layers[0].layerscale_init == expected
    scale = model.layers[0].residual_scale.scale
    assert scale.shape == (32,) and torch.equal(scale.detach(), torch.full((32,), expected))
    scale.data = torch.linspace(-1, 1, 32)
    x = torch.randn(2, 3, 32)
    layer = model.layers[0]
    branch = layer.block(layer.pre_norm(x), model.make_context(3, x.dtype, None))
    torch.testing.assert_close(run_layer(model, 0, x), x + branch * torch.linspace(-1, 1, 32))
    model.reset_parameters()  # back to the init
    assert torch.equal(model.layers[0].residual_scale.scale.detach(), torch.full((32,), expected))


@pytest.mark.parametrize("layer, path, words", [
    (dict(FFN, layerscale_init=0.1), "layers[0].layerscale_init", "only applies with residual_scale: layerscale"),
    (dict(FFN, residual_scale="rezero", add_residual=False), "layers[0].residual_scale", "add_residual is false"),
    (dict(FFN, residual_scale="fixup"), "layers[0].residual_scale", "'rezero'"),
    (dict(FFN, residual_scale="layerscale", layerscale_init=0.0), "layers[0].layerscale_init", "greater than 0"),
    (dict(FFN, layer_drop=1.0), "layers[0].layer_drop", "less than 1"),
    (dict(FFN, layer_drop=-0.1), "layers[0].layer_drop", "greater than or equal to 0"),
    (dict(FFN, layer_drop=0.2, add_residual=False), "layers[0].layer_drop", "add_residual is false"),
])
def test_residual_key_mistakes_are_config_errors(layer, path, words):
    found = problems(tiny([layer]))
    assert path in found and words in found[path], found


# ---- stochastic depth ------------------------------------------------------------------------
def test_layer_drop_does_nothing_in_eval_mode():
    dropped = Transformer(tiny([dict(ATTN, layer_drop=0.5), dict(FFN, layer_drop=0.9)])).eval()
    plain = Transformer(tiny([ATTN, FFN])).eval()
    plain.load_state_dict(dropped.state_dict())
    ids = torch.randint(0, VOCAB, (4, 7))
    assert torch.equal(dropped(ids)[0], plain(ids)[0])


def test_layer_drop_drops_or_rescales_each_sample_in_training():
    p = 0.5
    model = Transformer(tiny([dict(FFN, layer_drop=p)]))
    x = torch.randn(64, 3, 32)
    branch = run_layer(model.eval(), 0, x) - x
    out = run_layer(model.train(), 0, x)
    dropped = [torch.equal(out[b], x[b]) for b in range(64)]
    for b in range(64):
        if not dropped[b]:
            torch.testing.assert_close(out[b], x[b] + branch[b] / (1 - p))
    assert 10 < sum(dropped) < 54  # both outcomes happen (a chance of about 1e-6 of failing)


def test_layer_drop_zero_changes_nothing_in_training():
    model = Transformer(tiny([dict(FFN, layer_drop=0.0)]))
    x = torch.randn(8, 3, 32)
    assert torch.equal(run_layer(model.train(), 0, x), run_layer(model.eval(), 0, x))


# ---- weight sharing --------------------------------------------------------------------------
SHARED = [ATTN, FFN, dict(ATTN, share_weights_with=0), dict(FFN, share_weights_with=1),
          dict(FFN, share_weights_with=3)]


def test_shared_layers_run_one_module_and_count_its_parameters_once():
    model = Transformer(tiny(SHARED))
    assert [layer.share_weights_with for layer in model.config.layers] == [None, None, 0, 1, 1]  # 4 -> 3 -> 1
    assert model.layers[2] is model.layers[0] and model.layers[4] is model.layers[3] is model.layers[1]
    unshared = Transformer(tiny([ATTN, FFN]))
    assert model.num_parameters() == unshared.num_parameters()
    cfg = model.config
    for layer_cfg, layer in zip(cfg.layers, model.layers):  # each layer reports the module it runs
        assert layer_cfg.count_params(cfg) == sum(p.numel() for p in layer.parameters())


def test_shared_layers_equal_an_unshared_model_with_copied_weights():
    shared = Transformer(tiny(SHARED)).eval()
    copies = Transformer(tiny([ATTN, FFN, ATTN, FFN, FFN])).eval()
    state = shared.state_dict()  # holds every layer's names, the shared ones pointing to one tensor
    copies.load_state_dict(state)
    ids = torch.randint(0, VOCAB, (2, 6))
    torch.testing.assert_close(shared(ids)[0], copies(ids)[0], rtol=0, atol=0)
    shared(ids)[0].sum().backward()  # one gradient, accumulated over every use
    assert shared.layers[0].block.qkv.weight.grad is not None


def test_shared_layers_save_once_and_load_shared(tmp_path):
    par = {"type": "Parallel", "residual_scale": "rezero"}
    model = Transformer(tiny(SHARED + [par, dict(par, share_weights_with=5)])).eval()
    model.save_pretrained(tmp_path / "m")
    with safe_open(str(tmp_path / "m" / "model.safetensors"), "pt") as f:
        saved = list(f.keys())
    assert sum(t.numel() for t in (model.state_dict()[k] for k in saved)) == model.num_parameters()
    loaded = Transformer.from_pretrained(tmp_path / "m").eval()
    assert loaded.layers[2] is loaded.layers[0] and loaded.layers[6] is loaded.layers[5]
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ids = torch.randint(0, VOCAB, (2, 5))
    assert torch.equal(model(ids)[0], loaded(ids)[0])


def test_a_shared_producer_keeps_its_map_for_a_later_lazy_layer():
    lazy = dict(ATTN, previous_attention_bool=True)
    shared = Transformer(tiny([ATTN, FFN, dict(ATTN, share_weights_with=0), lazy])).eval()
    assert shared.layers[0].block.keep_map  # layer 2's map is read, so the shared module keeps it
    copies = Transformer(tiny([ATTN, FFN, ATTN, lazy])).eval()
    copies.load_state_dict(shared.state_dict())
    ids = torch.randint(0, VOCAB, (2, 6))
    torch.testing.assert_close(shared(ids)[0], copies(ids)[0], rtol=1e-6, atol=1e-6)


def test_a_shared_consumer_reads_the_producer_of_each_position_it_runs_at():
    residual = dict(ATTN, residual_attention_bool=True)  # module 1 reads layer 0's scores, then layer 2's
    shared = Transformer(tiny([ATTN, residual, dict(ATTN, share_weights_with=0), dict(residual, share_weights_with=1)]))
    copies = Transformer(tiny([ATTN, residual, ATTN, residual])).eval()
    copies.load_state_dict(shared.state_dict())
    ids = torch.randint(0, VOCAB, (2, 6))
    torch.testing.assert_close(shared.eval()(ids)[0], copies(ids)[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("layers, words", [
    ([dict(ATTN, share_weights_with=0)], "valid: none: layers[0] has no earlier layer"),
    ([ATTN, dict(ATTN, share_weights_with=1)], "1 is not an earlier layer; valid: the index of an earlier layer, 0..0"),
    ([ATTN, FFN, dict(ATTN, share_weights_with=5)], "valid: the index of an earlier layer, 0..1"),
    ([ATTN, dict(FFN, share_weights_with=0)], "layers[0] is a Attention layer, this one a FFN layer"),
    ([ATTN, dict(ATTN, num_heads=8, share_weights_with=0)], "num_heads: 8 here, 4 there"),
    ([FFN, dict(FFN, residual_scale="rezero", share_weights_with=0)], "residual_scale: 'rezero' here, 'none' there"),
    ([{"type": "Parallel"}, {"type": "Parallel", "ffn": {"ff_mult": 2.0}, "share_weights_with": 0}], "ffn:"),
])
def test_bad_sharing_is_a_config_error_naming_share_weights_with(layers, words):
    found = problems(tiny(layers))
    path = f"layers[{len(layers) - 1}].share_weights_with"
    assert path in found and words in found[path], found


def test_default_and_explicit_settings_count_as_identical():
    model = Transformer(tiny([ATTN, dict(ATTN, dim_attn=32, norm_type="layernorm", share_weights_with=0)]))
    assert model.layers[1] is model.layers[0]


# ---- everything together compiles --------------------------------------------------------------
def test_new_layer_keys_compile_with_no_graph_break():
    layers = [dict(ATTN, residual_scale="rezero", layer_drop=0.2), dict(FFN, activation="squared_relu", layer_drop=0.3),
              {"type": "Parallel", "residual_scale": "layerscale", "norm_type": "scalenorm"},
              dict(ATTN, residual_scale="rezero", layer_drop=0.2, share_weights_with=0)]
    model = Transformer(tiny(layers, abs_pos_emb="sinusoidal"))
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    ids = torch.randint(0, VOCAB, (2, 9))
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[0, :2] = False
    model.train()
    torch.manual_seed(1)
    a = compiled(ids, padding_mask=mask)[0]
    torch.manual_seed(1)
    torch.testing.assert_close(a, model(ids, padding_mask=mask)[0])
    model.eval()
    torch.testing.assert_close(compiled(ids)[0], model(ids)[0])
