"""Parallel attention + FFN (GPT-J / PaLM): one pre-norm, both parts read it, outputs summed."""

import pytest
import torch

import configaformer
from configaformer import ConfigError, Transformer
from configaformer.blocks.attention import Attention
from configaformer.blocks.ffn import FFN as FFNBlock

from .conftest import ATTN, FFN, VOCAB, tiny

PAR = {"type": "Parallel", "attention": {"num_heads": 4}, "ffn": {"ff_mult": 2.0, "num_projections": 2}}


def problems(config):
    with pytest.raises(ConfigError) as info:
        Transformer(config)
    return {p.path: p.message for p in info.value.problems}


def test_output_is_x_plus_attention_plus_ffn_of_one_normed_input():
    model = Transformer(tiny([PAR])).eval()
    layer = model.layers[0]
    block = layer.block
    assert isinstance(block.attention, Attention) and isinstance(block.ffn, FFNBlock)
    assert [type(m).__name__ for m in layer.modules() if "Norm" in type(m).__name__] == ["LayerNorm"]  # one norm
    # The same computation from a plain Attention and a plain FFN layer with the same weights.
    plain = Transformer(tiny([ATTN, dict(FFN, num_projections=2)])).eval()
    plain.layers[0].block.load_state_dict(block.attention.state_dict())
    plain.layers[1].block.load_state_dict(block.ffn.state_dict())
    x = torch.randn(2, 7, 32)
    ctx = model.make_context(7, x.dtype, None)
    h = layer.pre_norm(x)
    expected = x + plain.layers[0].block(h, ctx) + plain.layers[1].block(h, ctx)
    torch.testing.assert_close(layer(x, ctx), expected)


def test_defaults_build_without_nested_keys_and_parts_resolve():
    cfg = configaformer.resolve_config(tiny([{"type": "Parallel", "norm_type": "rmsnorm",
                                              "ffn": {"activation": "swish"}}], norm_type="scalenorm"))
    layer = cfg.layers[0]
    assert layer.attention.num_heads == 8 and layer.attention.dim_attn == 32 and layer.attention.dim_rope == 4
    assert layer.ffn.activation == "silu" and layer.ffn.num_gelu == 1
    assert layer.attention.norm_type == layer.ffn.norm_type == "rmsnorm"  # the Parallel layer's
    data = cfg.to_dict()["layers"][0]
    assert "type" not in data["attention"] and "dropout" not in data["ffn"] and "norm_type" not in data["ffn"]
    assert configaformer.resolve_config(cfg.to_dict()) == cfg


def test_parallel_is_causal_and_counts_both_parts():
    model = Transformer(tiny([PAR, PAR])).eval()
    ids = torch.randint(0, VOCAB, (2, 10))
    changed = ids.clone()
    changed[:, 6:] = (changed[:, 6:] + 1) % VOCAB
    torch.testing.assert_close(model(ids)[0][:, :6], model(changed)[0][:, :6], rtol=0, atol=1e-6)
    cfg = model.config
    layer = cfg.layers[0]
    assert layer.block_params(cfg) == layer.attention.block_params(cfg) + layer.ffn.block_params(cfg)
    assert layer.count_params(cfg) == sum(p.numel() for p in model.layers[0].parameters())
    assert layer.rotary_dim() == 4 and layer.declared_causal() is True
    assert "heads=4" in layer.summary() and "glu2" in layer.summary()


def test_both_output_projections_get_the_scaled_init():
    model = Transformer(tiny([dict(PAR, attention={"num_heads": 4, "dim_rope": 0})] * 16, dim_model=256, dim_rope=0))
    block = model.layers[0].block
    for proj in (block.attention.out_proj, block.ffn.out_proj):
        assert proj.weight.std().item() == pytest.approx(0.02 / 4, rel=0.1)


def test_parallel_attention_feeds_and_reads_other_layers():
    lazy = {"type": "Parallel", "attention": {"num_heads": 4, "previous_attention_bool": True}}
    model = Transformer(tiny([PAR, dict(ATTN, previous_attention_bool=True), lazy])).eval()
    assert model.layers[0].block.attention.keep_map  # read by both later layers
    out = model(torch.randint(0, VOCAB, (2, 5)))[0]
    assert torch.isfinite(out).all()
    found = problems(tiny([{"type": "Parallel", "attention": {"previous_attention_bool": True}}]))
    assert "needs an earlier layer" in found["layers[0].attention.previous_attention_bool"]
    found = problems(tiny([{"type": "Parallel"}, dict(ATTN, previous_attention_bool=True),
                           PAR | {"attention": {"num_heads": 2, "previous_attention_bool": True}}]))
    assert "use num_heads: 8" in found["layers[1].num_heads"]  # the source is layer 0's attention part
    assert "use num_heads: 8" in found["layers[2].attention.num_heads"]


@pytest.mark.parametrize("layer, path, words", [
    (PAR | {"attention": {"num_heads": 5}}, "layers[0].attention.num_heads", "not divisible"),
    (PAR | {"attention": {"num_head": 4}}, "layers[0].attention.num_head", "did you mean 'num_heads'"),
    (PAR | {"ffn": {"num_gelu": 2}}, "layers[0].ffn.num_gelu", "more than num_projections"),
    (PAR | {"ffn": {"activation": "tanh"}}, "layers[0].ffn.activation", "'squared_relu'"),
    (PAR | {"attention": {"dropout": 0.1}}, "layers[0].attention.dropout", "set it on the Parallel layer"),
    (PAR | {"ffn": {"pre_norm_bool": False}}, "layers[0].ffn.pre_norm_bool", "set it on the Parallel layer"),
    (PAR | {"ffn": {"share_weights_with": 0}}, "layers[0].ffn.share_weights_with", "set it on the Parallel layer"),
    (PAR | {"attention": {"type": "FFN"}}, "layers[0].attention.type", "'Attention'"),
    (PAR | {"attention": 4}, "layers[0].attention", "dictionary"),
    (PAR | {"atention": {}}, "layers[0].atention", "did you mean 'attention'"),
])
def test_part_mistakes_name_their_nested_path(layer, path, words):
    found = problems(tiny([layer]))
    assert path in found and words in found[path], found


def test_part_may_repeat_its_type():
    cfg = configaformer.resolve_config(tiny([PAR | {"attention": {"type": "Attention", "num_heads": 2}}]))
    assert cfg.layers[0].attention.num_heads == 2
