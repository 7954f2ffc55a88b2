"""The README's code runs as written: the quick start (shrunk) and the "Adding a block" example."""

import re
import tempfile
from pathlib import Path

import pytest
import torch

import configaformer

from .conformance import check_block

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_adding_a_block_example_keeps_the_block_contract(scratch_registry):
    (code,) = [b for b in python_blocks() if "register_block(\"CausalConv\"" in b]
    exec(compile(code, "README:adding-a-block", "exec"), {})
    assert "CausalConv" in configaformer.list_blocks()
    for layer in ({"type": "CausalConv"}, {"type": "CausalConv", "kernel_size": 4}, {"type": "CausalConv", "kernel_size": 1}):
        check_block(layer)  # cached decoding, causality, left and right padding, reset
    model = configaformer.Transformer({"dim_model": 16, "vocab_size": 20, "classifiers": [20],
                                       "layers": [{"type": "CausalConv", "kernel_size": 4}, {"type": "FFN"}] * 2})
    cfg = model.config
    assert cfg.layers[0].count_params(cfg) == sum(p.numel() for p in model.layers[0].parameters())
    assert model.layers[0].block.out_proj.weight.std() < 0.02 / 1.5  # the depth-scaled init: 0.02 / sqrt(4)
    with pytest.raises(configaformer.ConfigError, match="did you mean 'kernel_size'"):
        configaformer.Transformer({"dim_model": 16, "vocab_size": 20, "classifiers": [20],
                                   "layers": [{"type": "CausalConv", "kernel_sise": 4}]})


def test_quick_start_runs_shrunk():
    (code,) = [b for b in python_blocks() if "layer_list = " in b]
    code = (code.replace("768", "64").replace("384", "32").replace("50257", "300").replace("512", "32")
            .replace("* 12", "* 2").replace('"num_heads": 12', '"num_heads": 4').replace("dim_rope\": 64", "dim_rope\": 8").replace("128)", "16)"))
    code = code.replace('"my-model"', "SAVE_DIR")
    scope = {}
    with tempfile.TemporaryDirectory() as tmp:
        scope["SAVE_DIR"] = tmp
        exec(compile(code, "README:quick-start", "exec"), scope)
    assert scope["logits_lm"].shape == (2, 16, 300) and scope["logits_cls"].shape == (2, 16, 6)
