"""KV-cache decoding equals full recomputation, for every block type; sampling filters."""

import random

import pytest
import torch

import configaformer
from configaformer.generation import DecodeCache, filter_logits, sample

from .conftest import ATTN, FFN, VOCAB, cached_logits, perturb, tiny

SHIFT = [{"features": 16, "shift": 0}, {"features": 8, "shift": 1}, {"features": 8, "shift": 3}]
# One entry per block feature that keeps decoding state or depends on absolute position.
CATALOGUE = [
    ATTN, FFN,
    dict(ATTN, token_shift_config=SHIFT),
    dict(FFN, num_projections=2, inner_token_shift_config=[{"features": 32, "shift": 1}, {"features": 32, "shift": 2}]),
    dict(ATTN, num_kv_heads=2, qk_norm_bool=True, rotate_v_bool=True),
    dict(ATTN, num_kv_heads=1, window_size=3),
    dict(ATTN, bias_mask_config={"type": "alibi"}, dim_rope=0),
    dict(ATTN, rel_pos_bias={"num_buckets": 8, "max_distance": 16}, num_memory_kv=2),
    dict(ATTN, talking_heads_bool=True, logit_softcap=4.0),
    dict(ATTN, qkv_conv_kernel=3, head_gate_bool=True),
    dict(ATTN, residual_attention_bool=True),
    dict(ATTN, previous_attention_bool=True),
    {"type": "gMLP", "ff_mult": 2, "dim_tiny_attn": 8},
    {"type": "Parallel", "attention": {"num_heads": 4, "qkv_conv_kernel": 2}, "ffn": {"ff_mult": 2}},
    dict(FFN, output_sigmoid_gate_bool=True, output_gate={"activation": "silu", "source": "hidden"}),
]


def assert_cache_matches_full(model, ids, chunks):
    with torch.no_grad():
        full = model(ids)[0]
        torch.testing.assert_close(cached_logits(model, ids, chunks), full, rtol=1e-4, atol=1e-4)
        greedy = model.generate(ids[:, :3], 8, temperature=0)
        assert torch.equal(greedy, model.generate(ids[:, :3], 8, temperature=0, use_cache=False))


@pytest.mark.parametrize("index", range(len(CATALOGUE)))
def test_each_block_feature_decodes_exactly(index):
    layers = [ATTN, CATALOGUE[index], FFN] if index > 1 else [CATALOGUE[index], FFN]
    model = configaformer.Transformer(tiny(layers, max_seq_len=32)).eval()
    perturb(model)
    assert_cache_matches_full(model, torch.randint(0, VOCAB, (2, 13)), chunks=[1, 4, 1, 1, 3, 2, 1])


@pytest.mark.parametrize("seed", range(6))
def test_random_configs_decode_exactly(seed):
    rng = random.Random(seed)
    layers = [ATTN] + [rng.choice(CATALOGUE) for _ in range(5)]
    model_keys = rng.choice([{}, {"abs_pos_emb": "learned"}, {"abs_pos_emb": "sinusoidal"}, {"norm_type": "rmsnorm"}])
    model = configaformer.Transformer(tiny(layers, max_seq_len=32, **model_keys)).eval()
    perturb(model)
    ids = torch.randint(0, VOCAB, (2, 17))
    cut = sorted(rng.sample(range(1, 17), 4))
    chunks = [b - a for a, b in zip([0] + cut, cut + [17])]
    assert_cache_matches_full(model, ids, chunks)


def test_shared_layers_keep_one_cache_each():
    layers = [dict(ATTN, token_shift_config=SHIFT), FFN, dict(ATTN, token_shift_config=SHIFT, share_weights_with=0)]
    model = configaformer.Transformer(tiny(layers)).eval()
    assert model.layers[0] is model.layers[2]
    assert_cache_matches_full(model, torch.randint(0, VOCAB, (1, 10)), chunks=[3, 1, 1, 5])


def test_cross_attention_decoder_decodes_with_a_fixed_context():
    layers = [ATTN, {"type": "CrossAttention", "num_heads": 4, "dim_context": 24}, FFN]
    model = configaformer.Transformer(tiny(layers)).eval()
    context = torch.randn(2, 6, 24)
    ids = torch.randint(0, VOCAB, (2, 9))
    with torch.no_grad():
        full = model(ids, context=context)[0]
        cache = DecodeCache(2, 9)
        parts = [model(ids[:, a:b], context=context, cache=cache)[0] for a, b in [(0, 4), (4, 5), (5, 9)]]
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-5, atol=1e-5)


def test_generate_continues_the_prompt_and_stops_at_eos():
    model = configaformer.Transformer(tiny([ATTN, FFN])).eval()
    prompt = torch.randint(0, VOCAB, (3, 4))
    out = model.generate(prompt, 6, temperature=0.8, top_k=5, generator=torch.Generator().manual_seed(1))
    assert out.shape == (3, 10) and torch.equal(out[:, :4], prompt)
    first = model.generate(prompt, 1, temperature=0)[:, -1]
    stopped = model.generate(prompt, 6, temperature=0, eos_token_id=int(first[0]))
    assert (stopped[0, 4:] == first[0]).all()
    assert model.training is False


def test_sampling_filters():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]])
    assert torch.isfinite(filter_logits(logits, top_k=2)).sum() == 2
    probs = torch.softmax(logits, -1)  # 0.64, 0.24, 0.09, ...
    assert torch.isfinite(filter_logits(logits, top_p=0.5)).sum() == 1
    assert torch.isfinite(filter_logits(logits, top_p=0.8)).sum() == 2
    kept = torch.isfinite(filter_logits(logits, min_p=0.1))
    assert kept.tolist() == (probs >= 0.1 * probs.max()).tolist()
    assert sample(logits, temperature=0).item() == 0
    draws = {sample(logits, 1.0, top_k=2, generator=torch.Generator().manual_seed(s)).item() for s in range(30)}
    assert draws == {0, 1}


def test_generation_refuses_what_it_cannot_do():
    bidir = configaformer.Transformer(tiny([dict(ATTN, causal_mask_bool=False)]))
    with pytest.raises(ValueError, match="causal model"):
        bidir.generate(torch.zeros(1, 2, dtype=torch.long), 2)
    two_heads = configaformer.Transformer(tiny([ATTN], classifiers=[3, VOCAB]))
    with pytest.raises(ValueError, match="num_classes == vocab_size"):
        two_heads.generate(torch.zeros(1, 2, dtype=torch.long), 2)
    assert two_heads.generate(torch.zeros(1, 2, dtype=torch.long), 2, head="lm").shape == (1, 4)
    short = configaformer.Transformer(tiny([ATTN], max_seq_len=8))
    with pytest.raises(ValueError, match="exceeds max_seq_len 8"):
        short.generate(torch.zeros(1, 5, dtype=torch.long), 4)
    model = configaformer.Transformer(tiny([ATTN]))
    cache = DecodeCache(1, 4)
    with pytest.raises(ValueError, match="no padding_mask"):
        model(torch.zeros(1, 2, dtype=torch.long), padding_mask=torch.ones(1, 2, dtype=torch.bool), cache=cache)
    with pytest.raises(ValueError, match="holds 4 positions"):
        model(torch.zeros(1, 5, dtype=torch.long), cache=cache)
