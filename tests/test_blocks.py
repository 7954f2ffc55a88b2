"""Conformance: every registered block builds from its smallest config, runs forward and
backward, round-trips its config, has exactly the parameters its formula says, and keeps the
block contract (docs/blocks.md): cached decoding equals recomputation, causality, padding
invariance, a reset that reaches every parameter. Blocks that break the contract are caught."""

from typing import Literal

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import configaformer
from configaformer import ConfigError, list_blocks, register_block
from configaformer.blocks import Block
from configaformer.blocks.ffn import FFNConfig
from configaformer.config import LayerConfig

from . import conformance
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


@pytest.mark.parametrize("layer", [layer for name in list_blocks() for layer in conformance.settings(name)],
                         ids=lambda layer: "-".join(f"{v}" if k == "type" else f"{k}={v}" for k, v in layer.items()))
def test_every_block_keeps_the_contract(layer):
    conformance.check_block(layer)


# ---- the checks catch blocks that break the contract ------------------------------------------
class ConvConfig(LayerConfig):
    type: Literal["BrokenConv"] = "BrokenConv"
    kernel_size: int = 3

    def declared_causal(self):
        return True

    def block_params(self, model):
        return model.dim_model * self.kernel_size + model.dim_model


def register_conv(forward_pad):
    """A depthwise conv block that pads the sequence as `forward_pad(kernel_size)` says and
    ignores the context entirely (the README's example before the contract was written down)."""
    class BrokenConv(Block):
        def __init__(self, cfg, model, plan):
            super().__init__(cfg, model, plan)
            self.pad = forward_pad(cfg.kernel_size)
            self.conv = nn.Conv1d(model.dim_model, model.dim_model, cfg.kernel_size, groups=model.dim_model)

        def forward(self, h, ctx):
            return self.conv(F.pad(h.transpose(1, 2), self.pad)).transpose(1, 2)

    register_block("BrokenConv", ConvConfig)(BrokenConv)
    return conformance.build({"type": "BrokenConv"})


def test_a_block_ignoring_decode_state_and_padding_is_caught(scratch_registry):
    model = register_conv(lambda k: (k - 1, 0))  # causal, but no ctx.decode_state(), no ctx.padding_mask
    conformance.check_causal(model)  # causality alone does not catch it
    with pytest.raises(AssertionError):
        conformance.check_cache(model)
    with pytest.raises(AssertionError):
        conformance.check_padding(model, ["left"])


def test_a_block_declared_causal_that_looks_ahead_is_caught(scratch_registry):
    model = register_conv(lambda k: ((k - 1) // 2, k // 2))  # centred window
    with pytest.raises(AssertionError):
        conformance.check_causal(model)


def test_raw_parameters_without_a_reset_are_refused_and_a_partial_reset_is_caught(scratch_registry):
    class Scaled(Block):
        def __init__(self, cfg, model, plan):
            super().__init__(cfg, model, plan)
            self.scale = nn.Parameter(torch.ones(model.dim_model))
            self.shift = nn.Parameter(torch.zeros(model.dim_model))

        def forward(self, h, ctx):
            return h * self.scale + self.shift

    class ScaledConfig(LayerConfig):
        type: Literal["Scaled"] = "Scaled"

        def block_params(self, model):
            return 2 * model.dim_model

    register_block("Scaled", ScaledConfig)(Scaled)
    with pytest.raises(TypeError, match=r"Scaled owns parameters \(scale, shift\) but defines no reset_parameters"):
        configaformer.Transformer(tiny([{"type": "Scaled"}]))
    Scaled.reset_parameters = lambda self: nn.init.ones_(self.scale)  # forgets `shift`
    model = configaformer.Transformer(tiny([{"type": "Scaled"}]))
    with pytest.raises(AssertionError, match="does not reach layers.0.block.shift"):
        conformance.check_reset(model)


def test_registering_a_name_twice_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_block("FFN", FFNConfig)(type("Other", (torch.nn.Module,), {}))


def test_unknown_block_lists_the_registered_ones():
    with pytest.raises(ConfigError, match="valid types: " + ", ".join(list_blocks())):
        configaformer.Transformer(tiny([{"type": "Nope"}]))


def test_a_model_refuses_padding_on_a_side_one_of_its_blocks_does_not_honour():
    model = configaformer.Transformer(tiny([{"type": "gMLP", "ff_mult": 2}, {"type": "FFN"}], max_seq_len=16))
    assert model.padding_sides == {"right"}
    ids = torch.randint(1, VOCAB, (2, 6))
    left = torch.tensor([[False, True, True, True, True, True], [True] * 6])
    with pytest.raises(ValueError, match="pads on the left .* but gMLP layers give the same outputs only with padding on the right"):
        model(ids, padding_mask=left)
    model(ids, padding_mask=left.flip(-1))  # right padding is fine
    everywhere = configaformer.Transformer(tiny([{"type": "Attention", "num_heads": 4}]))
    assert everywhere.padding_sides == {"left", "right"}
    everywhere(ids, padding_mask=left)
