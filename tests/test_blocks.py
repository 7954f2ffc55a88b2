"""Conformance: every registered block builds from its smallest config, runs forward and
backward, round-trips its config, and has exactly the parameters its formula says."""

import pytest
import torch

import configaformer
from configaformer import ConfigError, list_blocks, register_block
from configaformer.blocks.ffn import FFNConfig

from .conftest import VOCAB, tiny


@pytest.mark.parametrize("name", list_blocks())
@pytest.mark.parametrize("variant", [{}, {"post_norm_bool": True, "output_gate": {"activation": "silu"}},
                                     {"pre_norm_bool": False, "post_norm_bool": True, "norm_type": "rmsnorm",
                                      "dropout": 0.1}])
def test_every_block_conforms(name, variant):
    layers = [{"type": name, **variant}, {"type": name}]
    model = configaformer.Transformer(tiny(layers, max_seq_len=16))  # some blocks (gMLP) need a length
    context = torch.randn(2, 5, 32)  # read only by CrossAttention layers
    out = model(torch.randint(0, VOCAB, (2, 6)), context=context)[0]
    out.sum().backward()
    trainable = [p for p in model.layers.parameters()]
    assert all(p.grad is not None for p in trainable)
    cfg = model.config
    for layer_cfg, layer in zip(cfg.layers, model.layers):
        assert layer_cfg.count_params(cfg) == sum(p.numel() for p in layer.parameters())
    assert configaformer.resolve_config(cfg.to_dict()) == cfg


def test_registering_a_name_twice_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_block("FFN", FFNConfig)(type("Other", (torch.nn.Module,), {}))


def test_unknown_block_lists_the_registered_ones():
    with pytest.raises(ConfigError, match="valid types: " + ", ".join(list_blocks())):
        configaformer.Transformer(tiny([{"type": "Nope"}]))
