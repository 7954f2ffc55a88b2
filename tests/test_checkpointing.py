"""Activation checkpointing applied from outside the model (configaformer.parallel.checkpointing),
and the cross-layer state it must not disturb: every layer reads its own producer's tensor.

The property: for every cross-layer feature (residual scores, a lazy layer's map, layers that
share one module, Parallel layers), gradients with checkpointing equal those without to 1e-6
relative (they come out identical here; before the fix a residual chain differed by 5e-5 at a
gradient scale of 0.018, because a recomputed layer read the scores the last layer wrote).
"""

import copy

import pytest
import torch

from configaformer import ConfigError, Transformer
from configaformer.blocks.base import Layer
from configaformer.parallel.checkpointing import apply_activation_checkpointing
from configaformer.train import Trainer, load_run_config

from .conftest import ATTN, FFN, VOCAB, tiny

RESIDUAL = dict(ATTN, residual_attention_bool=True)
LAZY = dict(ATTN, previous_attention_bool=True)
PAR = {"type": "Parallel", "attention": {"num_heads": 4}}
CASES = {
    "residual chain": ([RESIDUAL] * 4, True),
    "residual chain with dropout": ([dict(RESIDUAL, dropout=0.1, attn_dropout=0.1)] * 4, True),
    "lazy after residual": ([ATTN, RESIDUAL, LAZY, FFN, RESIDUAL, LAZY], True),
    # module 1 runs at positions 1 and 3 and reads the scores of 0 there, of 2 here
    "shared layers": ([ATTN, RESIDUAL, dict(ATTN, share_weights_with=0), dict(RESIDUAL, share_weights_with=1), LAZY],
                      True),
    "shared module checkpointed at one of its positions": (
        [ATTN, RESIDUAL, dict(ATTN, share_weights_with=0), dict(RESIDUAL, share_weights_with=1), LAZY], [1, 2]),
    "parallel": ([PAR, dict(PAR, attention={"num_heads": 4, "residual_attention_bool": True}), LAZY,
                  dict(PAR, attention={"num_heads": 4, "previous_attention_bool": True})], True),
}


def gradients(model, ids, run=None):
    """{name: gradient} of a loss on model(ids), computed by `run` (e.g. a compiled model) if given."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # the same dropout masks in both runs
    (model if run is None else run)(ids)[0].square().mean().backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("layers, positions", CASES.values(), ids=CASES.keys())
def test_checkpointing_gives_the_gradients_of_the_plain_model(layers, positions):
    plain = Transformer(tiny(layers)).train()
    checkpointed = copy.deepcopy(plain)
    chosen = apply_activation_checkpointing(checkpointed, positions)
    assert chosen == (set(range(len(layers))) if positions is True else set(positions))
    ids = torch.randint(0, VOCAB, (2, 12))
    want, got = gradients(plain, ids), gradients(checkpointed, ids)
    scale = max(g.abs().max() for g in want.values())
    assert want.keys() == got.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-6 * scale, msg=name)


def block_runs(model, ids, grad=True):
    """The positions at which the first layer module's block started, forward and recomputation
    (a pre-hook: a recomputation stops once it has what backward needs)."""
    runs = []
    handle = model.layers[0].block.register_forward_pre_hook(lambda m, args: runs.append(args[1].layer_index))
    with torch.set_grad_enabled(grad):
        out = model(ids)[0].sum()
    if grad:
        out.backward()
    handle.remove()
    return runs


def test_a_position_is_one_use_of_a_shared_module():
    model = Transformer(tiny([ATTN, FFN, dict(ATTN, share_weights_with=0)]))
    ids = torch.randint(0, VOCAB, (2, 6))
    apply_activation_checkpointing(model, [2])
    assert block_runs(model, ids) == [0, 2, 2]  # recomputed at position 2 only
    apply_activation_checkpointing(model, [0])  # adds position 0
    assert block_runs(model, ids) == [0, 2, 2, 0]
    assert block_runs(model, ids, grad=False) == [0, 2]  # nothing to recompute without gradients


def test_checkpointing_keeps_parameter_names_and_saved_models_load(tmp_path):
    model = Transformer(tiny([ATTN, RESIDUAL, dict(ATTN, share_weights_with=0)]))
    names, keys = [n for n, _ in model.named_parameters()], list(model.state_dict())
    apply_activation_checkpointing(model)
    assert [n for n, _ in model.named_parameters()] == names and list(model.state_dict()) == keys
    model.save_pretrained(tmp_path / "m")
    loaded = Transformer.from_pretrained(tmp_path / "m").eval()
    assert type(loaded.layers[0]) is Layer and loaded.layers[2] is loaded.layers[0]
    ids = torch.randint(0, VOCAB, (2, 6))
    torch.testing.assert_close(loaded(ids)[0], model.eval()(ids)[0], rtol=0, atol=0)


def test_positions_outside_the_model_are_refused(stdlib_data, tmp_path):
    model = Transformer(tiny([ATTN, FFN]))
    with pytest.raises(ValueError, match=r"positions \[2, 5\] are outside the model's 2 layers \(valid: 0..1\)"):
        apply_activation_checkpointing(model, [0, 5, 2])
    assert all(type(layer) is Layer for layer in model.layers)  # nothing applied
    run = {"model": tiny([ATTN, FFN], vocab_size=258), "data": {"path": str(stdlib_data)},
           "out_dir": str(tmp_path / "r"), "train": {"max_steps": 1, "activation_checkpointing": [1, 2]}}
    with pytest.raises(ConfigError, match=r"train.activation_checkpointing: positions \[2\] are outside"):
        Trainer(load_run_config(run))
    assert not (tmp_path / "r").exists()


def test_a_cross_layer_tensor_lives_from_its_producer_to_its_last_reader():
    # 1 reads 0's scores, 3 reads 1's scores, 4 reads 3's map; nothing reads 3's scores or 4's.
    model = Transformer(tiny([ATTN, RESIDUAL, FFN, RESIDUAL, LAZY])).eval()
    held = []
    for layer in model.layers:
        layer.register_forward_pre_hook(lambda m, args: held.append(sorted(args[1].state)))
    model(torch.randint(0, VOCAB, (2, 6)))
    assert held == [[], [("attn_scores", 0)], [("attn_scores", 1)], [("attn_scores", 1)], [("attn_map", 3)]]


def test_compiled_checkpointed_model_gives_the_plain_gradients():
    plain = Transformer(tiny([ATTN, RESIDUAL, FFN, LAZY])).train()
    checkpointed = copy.deepcopy(plain)
    apply_activation_checkpointing(checkpointed)
    compiled = torch.compile(checkpointed, backend="eager", fullgraph=True)
    ids = torch.randint(0, VOCAB, (2, 8))
    want, got = gradients(plain, ids), gradients(checkpointed, ids, run=compiled)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-7, msg=name)
