"""Every shipped preset builds, runs forward and backward, and decodes with its cache exactly."""

import pytest
import torch

import configaformer
from configaformer.presets import list_presets, preset_path

from .test_generation import assert_cache_matches_full


def test_the_expected_presets_ship():
    assert {"seed", "gpt2", "llama", "alibi", "primer", "gmlp"} <= set(list_presets())


@pytest.mark.parametrize("name", [p for p in list_presets() if p != "seed"])
def test_preset_builds_runs_and_decodes(name):
    model = configaformer.Transformer(preset_path(name))
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (2, 24))
    logits = model(ids)[0]
    assert logits.shape == (2, 24, model.config.classifiers[0].num_classes)
    logits.float().logsumexp(-1).mean().backward()
    model.eval()
    assert_cache_matches_full(model, ids[:1, :20], chunks=[7, 1, 5, 1, 6])


def test_seed_preset_decodes_with_its_cache():
    model = configaformer.Transformer(preset_path("seed")).eval()
    assert_cache_matches_full(model, torch.randint(0, 50257, (1, 9)), chunks=[4, 1, 3, 1])


def test_llama_preset_is_what_it_says():
    cfg = configaformer.resolve_config(preset_path("llama"))
    attn, ffn = cfg.layers[0], cfg.layers[1]
    assert cfg.norm_type == "rmsnorm" and attn.num_kv_heads < attn.num_heads and attn.dim_rope == attn.dim_head
    assert not attn.bias_bool and not ffn.bias_bool and ffn.activation == "silu" and ffn.num_projections == 2


def test_llama_hidden_width_is_eight_thirds_rounded_up_to_16():
    cfg = configaformer.resolve_config(preset_path("llama"))
    hidden = round(cfg.layers[1].ff_mult * cfg.dim_model)
    assert hidden == -(-8 * cfg.dim_model // 3 // 16) * 16 == 688


def test_gmlp_preset_trains_on_byte_level_data():
    from configaformer.data.tokenizer import ByteTokenizer

    cfg = configaformer.resolve_config(preset_path("gmlp"))
    assert cfg.vocab_size == ByteTokenizer().vocab_size == cfg.classifiers[0].num_classes


@pytest.mark.parametrize("name", list_presets())
def test_preset_compiles_without_graph_breaks(name):
    model = configaformer.Transformer(preset_path(name)).eval()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    ids = torch.randint(0, model.config.vocab_size, (1, 8))
    with torch.no_grad():
        for got, want in zip(compiled(ids), model(ids)):
            torch.testing.assert_close(got, want)
