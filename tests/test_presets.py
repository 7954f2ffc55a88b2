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
