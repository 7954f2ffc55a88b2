"""Attention variants: each test checks the defining property of one per-layer key."""

import pytest
import torch

import configaformer
from configaformer import ConfigError
from configaformer.positional.alibi import alibi_bias, alibi_slopes
from configaformer.positional.relative import relative_buckets

from .conftest import ATTN, FFN, VOCAB, assert_causal, assert_padding_invariant, cached_logits, tiny

VARIANT_LAYERS = [
    dict(ATTN, num_kv_heads=2, qk_norm_bool=True, head_gate_bool=True),
    dict(ATTN, num_kv_heads=1, window_size=3, qkv_conv_kernel=3),
    dict(ATTN, bias_mask_config={"type": "alibi"}, dim_rope=0, num_memory_kv=2),
    dict(ATTN, rel_pos_bias={"num_buckets": 8, "max_distance": 16}, num_memory_kv=2, residual_attention_bool=True),
    dict(ATTN, talking_heads_bool=True, logit_softcap=5.0),
    dict(ATTN, previous_attention_bool=True, num_kv_heads=2, qkv_conv_kernel=2),
    FFN,
]


def build(layers, **kw):
    return configaformer.Transformer(tiny(layers, **kw)).eval()


def perturb(model, names):
    """Move parameters that start at a neutral value (identity mixes, identity convs) off it."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(n in name for n in names):
                p.add_(torch.randn_like(p) * 0.3)


def test_variants_are_causal():
    model = build(VARIANT_LAYERS)
    perturb(model, ["pre_mix", "post_mix", "conv"])
    assert_causal(model, cut=6)


@pytest.mark.parametrize("padded", [False, True])
def test_variants_fused_and_explicit_agree(padded):
    fused = build(VARIANT_LAYERS)
    perturb(fused, ["pre_mix", "post_mix", "conv"])
    explicit = build(VARIANT_LAYERS, attention_impl="explicit")
    explicit.load_state_dict(fused.state_dict())
    ids = torch.randint(1, VOCAB, (3, 10))
    mask = None
    if padded:
        mask = torch.ones_like(ids, dtype=torch.bool)
        mask[0, 7:] = False
    torch.testing.assert_close(fused(ids, padding_mask=mask)[0], explicit(ids, padding_mask=mask)[0], rtol=1e-5, atol=1e-5)
    # The fused path stays the default wherever the matrix is not needed.
    assert [getattr(layer.block, "explicit", None) for layer in fused.layers] == [False, False, True, False, True, False, None]


def test_right_padding_invariance_with_variants():
    assert_padding_invariant(build(VARIANT_LAYERS), 7, 3, "right")


def test_gqa_equals_mha_with_each_kv_head_repeated_over_its_group():
    gqa = build([dict(ATTN, num_kv_heads=2)])
    mha = build([ATTN])
    state = gqa.state_dict()
    w, b = state["layers.0.block.qkv.weight"], state["layers.0.block.qkv.bias"]  # q: 32 rows, k: 16, v: 16
    def repeat(t):  # (2 kv heads * 8) -> (4 heads * 8): head h uses kv head h // 2
        return t.view(2, 8, *t.shape[1:]).repeat_interleave(2, dim=0).reshape(32, *t.shape[1:])
    state["layers.0.block.qkv.weight"] = torch.cat([w[:32], repeat(w[32:48]), repeat(w[48:])])
    state["layers.0.block.qkv.bias"] = torch.cat([b[:32], repeat(b[32:48]), repeat(b[48:])])
    mha.load_state_dict(state)
    ids = torch.randint(0, VOCAB, (2, 9))
    torch.testing.assert_close(gqa(ids)[0], mha(ids)[0], rtol=1e-5, atol=1e-5)
    assert gqa.layers[0].block.qkv.weight.shape == (64, 32) and mha.layers[0].block.qkv.weight.shape == (96, 32)


def test_qk_norm_makes_attention_invariant_to_query_and_key_scale():
    for qk_norm, invariant in [(True, True), (False, False)]:
        model = build([dict(ATTN, qk_norm_bool=qk_norm, bias_bool=False)])
        ids = torch.randint(0, VOCAB, (1, 8))
        (before,) = model(ids)
        with torch.no_grad():
            model.layers[0].block.qkv.weight[:64] *= 7.0  # scale every query and key
        (after,) = model(ids)
        assert torch.allclose(before, after, atol=1e-4) == invariant


def test_talking_heads_start_as_plain_attention_and_mix_heads():
    plain = build([ATTN])
    talking = build([dict(ATTN, talking_heads_bool=True)])
    talking.load_state_dict(plain.state_dict(), strict=False)
    ids = torch.randint(0, VOCAB, (2, 7))
    torch.testing.assert_close(talking(ids)[0], plain(ids)[0], rtol=1e-5, atol=1e-5)
    assert talking.layers[0].block.pre_mix.shape == (4, 4)
    perturb(talking, ["pre_mix"])
    assert not torch.allclose(talking(ids)[0], plain(ids)[0], atol=1e-4)


def test_logit_softcap_bounds_the_scores():
    model = build([dict(ATTN, logit_softcap=2.0), dict(ATTN, residual_attention_bool=True)])
    with torch.no_grad():
        model.layers[0].block.qkv.weight.mul_(50)
    seen = {}
    model.layers[1].block.register_forward_hook(lambda m, args, out: seen.update(scores=args[1].consume("attn_scores")))
    model(torch.randint(0, VOCAB, (2, 8)))
    assert seen["scores"].abs().max() <= 2.0 and seen["scores"].abs().max() > 1.9


def test_sliding_window_ignores_tokens_outside_the_window():
    model = build([dict(ATTN, window_size=3, dim_rope=0)], final_norm_bool=True)
    ids = torch.randint(0, VOCAB, (1, 10))
    far, near = ids.clone(), ids.clone()
    far[0, 5] = (ids[0, 5] + 1) % VOCAB  # 3 positions before position 8: outside a window of 3
    near[0, 6] = (ids[0, 6] + 1) % VOCAB  # 2 positions before: inside
    (out,), (out_far,), (out_near,) = model(ids), model(far), model(near)
    torch.testing.assert_close(out[:, 8], out_far[:, 8])
    assert not torch.allclose(out[:, 8], out_near[:, 8])


def test_alibi_slopes_match_the_paper():
    torch.testing.assert_close(alibi_slopes(8), torch.tensor([2.0 ** -(i + 1) for i in range(8)]))
    expected = [2.0 ** -(i + 1) for i in range(8)] + [2.0 ** -x for x in (0.5, 1.5, 2.5, 3.5)]
    torch.testing.assert_close(alibi_slopes(12), torch.tensor(expected))  # 8 of 2^-k, then odd halves of 16


def test_alibi_bias_forms():
    rel = (torch.arange(5)[None, :] - torch.arange(5)[:, None])[None]  # key - query
    sym = alibi_bias(rel, 4, "symmetric", torch.float32)
    torch.testing.assert_close(sym[0, 0], -0.25 * rel[0].abs().float())
    split = alibi_bias(rel, 4, "split", torch.float32)
    assert torch.isinf(split[0, :2][:, rel[0] > 0]).all() and torch.isinf(split[0, 2:][:, rel[0] < 0]).all()
    torch.testing.assert_close(split[0, 0][rel[0] <= 0], -0.0625 * (-rel[0][rel[0] <= 0]).float())


def test_alibi_model_without_rotary_runs_longer_than_trained():
    model = configaformer.Transformer(tiny([dict(ATTN, bias_mask_config={"type": "alibi"}), FFN] * 2, dim_rope=0))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(3):
        ids = torch.randint(0, VOCAB, (4, 16))
        loss = torch.nn.functional.cross_entropy(model(ids[:, :-1])[0].flatten(0, 1), ids[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    long = torch.randint(0, VOCAB, (1, 200))
    (out,) = model(long)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[:, :16], model(long[:, :16])[0], rtol=1e-5, atol=1e-5)
    assert model.config.layers[0].bias_mask_config.form == "causal"


def test_alibi_split_form_for_bidirectional_layers():
    model = build([dict(ATTN, causal_mask_bool=False, bias_mask_config={"type": "alibi", "form": "split"})])
    assert torch.isfinite(model(torch.randint(0, VOCAB, (1, 6)))[0]).all()
    assert build([dict(ATTN, causal_mask_bool=False, bias_mask_config={"type": "alibi"})]).config.layers[0].bias_mask_config.form == "symmetric"


SPLIT = {"type": "alibi", "form": "split"}


def test_split_alibi_with_talking_heads_is_finite_and_starts_as_plain_split_alibi():
    """Split ALiBi's -inf blocks keys; mixed by talking heads (whose mix has zeros) it gave NaN."""
    issue = {"dim_model": 16, "vocab_size": 11, "classifiers": [11],
             "layers": [dict(ATTN, num_heads=2, causal_mask_bool=False, talking_heads_bool=True, bias_mask_config=SPLIT)]}
    model = configaformer.Transformer(issue)
    (out,) = model(torch.randint(0, 11, (2, 5)))
    out.square().mean().backward()
    assert torch.isfinite(out).all() and all(torch.isfinite(p.grad).all() for p in model.parameters())
    split = dict(ATTN, causal_mask_bool=False, bias_mask_config=SPLIT)
    plain, talking = build([split]), build([dict(split, talking_heads_bool=True)])
    talking.load_state_dict(plain.state_dict(), strict=False)  # identity mixes
    ids = torch.randint(0, VOCAB, (2, 7))
    torch.testing.assert_close(talking(ids)[0], plain(ids)[0], rtol=1e-5, atol=1e-5)
    perturb(talking, ["pre_mix", "post_mix"])
    assert torch.isfinite(talking(ids)[0]).all()


def test_split_alibi_keeps_its_directions_under_a_softcap():
    """tanh of split ALiBi's -inf is a finite -softcap: the backward heads would see later keys."""
    split = dict(ATTN, causal_mask_bool=False, bias_mask_config=SPLIT, logit_softcap=2.0)
    model = build([split, dict(ATTN, causal_mask_bool=False, previous_attention_bool=True)])
    seen = {}
    model.layers[1].block.register_forward_hook(lambda m, args, out: seen.update(probs=args[1].consume("attn_map")))
    model(torch.randint(0, VOCAB, (2, 6)))
    later = torch.ones(6, 6, dtype=torch.bool).triu(1)  # key after query
    assert (seen["probs"][:, :2][..., later] == 0).all() and (seen["probs"][:, 2:][..., later.T] == 0).all()
    assert (seen["probs"][:, :2][..., later.T] > 0).all()


def test_t5_buckets():
    rel = torch.arange(-200, 201)[None]
    causal = relative_buckets(rel, True, 32, 128)[0]
    assert (causal[rel[0] >= 0] == 0).all()  # causal: later keys and self share bucket 0
    back = causal[rel[0] <= 0].flip(0)  # distance 0, 1, 2, ...
    assert (back[:16] == torch.arange(16)).all()  # exact for small distances
    assert (back.diff() >= 0).all() and back.max() == 31 and (back[128:] == 31).all()
    bidir = relative_buckets(rel, False, 32, 128)[0]
    assert set(bidir[rel[0] > 0].tolist()).isdisjoint(bidir[rel[0] < 0].tolist())


def test_t5_bias_is_added_per_head_from_relative_position():
    model = build([dict(ATTN, rel_pos_bias={"num_buckets": 8, "max_distance": 16}, dim_rope=0)])
    assert_padding_invariant(model, 6, 2, "left")
    ids = torch.randint(1, VOCAB, (1, 6))
    (before,) = model(ids)
    with torch.no_grad():
        model.layers[0].block.rel_bias.bias.weight[1:] += 3.0
    assert not torch.allclose(model(ids)[0], before)


def test_primer_conv_starts_as_identity_and_stays_causal():
    plain = build([ATTN])
    conv = build([dict(ATTN, qkv_conv_kernel=3)])
    conv.load_state_dict(plain.state_dict(), strict=False)
    ids = torch.randint(0, VOCAB, (2, 8))
    torch.testing.assert_close(conv(ids)[0], plain(ids)[0])
    assert conv.layers[0].block.conv.conv.weight.shape == (96, 1, 3)


def test_head_gate_scales_each_head():
    model = build([dict(ATTN, head_gate_bool=True)])
    block = model.layers[0].block
    x = torch.randn(2, 5, 32)
    ctx = model.make_context(5, x.dtype, None)
    merged = []
    block.out_proj.register_forward_hook(lambda m, args, out: merged.append(args[0]))
    with torch.no_grad():
        block.head_gate.weight.zero_()
        block.head_gate.bias.copy_(torch.tensor([0.0, 50.0, -50.0, 0.0]))  # gates 0.5, 1, 0, 0.5
    block(x, ctx)
    block.head_gate = None
    block(x, ctx)
    heads = torch.tensor([0.5, 1.0, 0.0, 0.5]).repeat_interleave(8)  # one gate per head's 8 features
    torch.testing.assert_close(merged[0], merged[1] * heads)


def test_memory_slots_are_attended_by_every_query():
    model = build([dict(ATTN, num_memory_kv=3, dim_rope=0, bias_bool=False)])
    block = model.layers[0].block
    with torch.no_grad():
        block.memory_k.zero_()
        block.memory_v.zero_()
    x = torch.randn(1, 4, 32)
    ctx = model.make_context(4, x.dtype, None)
    seen = {}
    block.out_proj.register_forward_hook(lambda m, args, out: seen.update(merged=args[0]))
    block(x, ctx)
    q, k, v = block.qkv(x).split([32, 32, 32], -1)
    q0, k0, v0 = (t[0, 0].view(4, 8) for t in (q, k, v))  # first token, per head
    score = (q0 * k0).sum(-1) / 8 ** 0.5  # its only real key is itself
    weight = score.exp() / (3 + score.exp())  # three memory slots with score 0 and value 0
    torch.testing.assert_close(seen["merged"][0, 0].view(4, 8), weight[:, None] * v0)


def test_attention_output_gate():
    model = build([dict(ATTN, output_gate={"activation": "sigmoid", "source": "hidden"})])
    layer = model.layers[0]
    x = torch.randn(1, 5, 32)
    ctx = model.make_context(5, x.dtype, None)
    h = layer.pre_norm(x)
    torch.testing.assert_close(layer(x, ctx), x + layer.block(h, ctx) * torch.sigmoid(layer.gate.proj(h)))


def test_variants_compile_without_graph_breaks():
    model = build(VARIANT_LAYERS)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    ids = torch.randint(0, VOCAB, (2, 8))
    torch.testing.assert_close(compiled(ids)[0], model(ids)[0])


@pytest.mark.parametrize("layer, path, words", [
    (dict(ATTN, num_kv_heads=3), "layers[0].num_kv_heads", "valid num_kv_heads near 3: 1, 2, 4"),
    (dict(ATTN, bias_mask_config={"type": "alibi", "form": "split"}), "layers[0].bias_mask_config.form", "causal layer"),
    (dict(ATTN, causal_mask_bool=False, bias_mask_config={"type": "alibi", "form": "causal"}),
     "layers[0].bias_mask_config.form", "symmetric"),
    (dict(ATTN, bias_mask_config={"type": "rope"}), "layers[0].bias_mask_config.type", "'alibi'"),
    (dict(ATTN, rel_pos_bias={"num_buckets": 32, "max_distance": 8}), "layers[0].rel_pos_bias.max_distance", "exceed"),
    (dict(ATTN, rel_pos_bias={"num_buckets": 2}), "layers[0].rel_pos_bias.num_buckets", "greater than or equal to 4"),
    (dict(ATTN, window_size=0), "layers[0].window_size", "greater than 0"),
    (dict(ATTN, logit_softcap=-1.0), "layers[0].logit_softcap", "greater than 0"),
])
def test_variant_mistakes_name_their_key(layer, path, words):
    with pytest.raises(ConfigError) as info:
        build([layer])
    messages = {p.path: p.message for p in info.value.problems}
    assert path in messages and words in messages[path], messages


def test_lazy_layer_refuses_score_keys_and_mismatched_memory():
    with pytest.raises(ConfigError) as info:
        build([ATTN, dict(ATTN, previous_attention_bool=True, window_size=4, talking_heads_bool=True)])
    paths = {p.path for p in info.value.problems}
    assert {"layers[1].window_size", "layers[1].talking_heads_bool"} <= paths
    with pytest.raises(ConfigError, match=r"layers\[1\].num_memory_kv"):
        build([dict(ATTN, num_memory_kv=2), dict(ATTN, previous_attention_bool=True)])


@pytest.mark.parametrize("window", [2 ** 70, 2 ** 62, 7])
def test_a_window_holding_every_key_is_plain_attention_however_large(window):
    plain = build([ATTN])
    windowed = build([dict(ATTN, window_size=window)])
    windowed.load_state_dict(plain.state_dict())
    ids = torch.randint(0, VOCAB, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[0, :2] = False
    for inputs in ({}, {"padding_mask": mask}):
        torch.testing.assert_close(windowed(ids, **inputs)[0], plain(ids, **inputs)[0])
    torch.testing.assert_close(cached_logits(windowed, ids, [3, 1, 3]), plain(ids)[0], rtol=1e-5, atol=1e-5)


def test_attn_scale_replaces_one_over_sqrt_head_size():
    """scores = q.k * attn_scale: with attn_scale s, the layer equals the default layer whose
    query weights are scaled by s * sqrt(head size)."""
    default, scaled = build([ATTN]), build([dict(ATTN, attn_scale=0.7)])
    scaled.load_state_dict(default.state_dict())
    with torch.no_grad():
        default.layers[0].block.qkv.weight[:32].mul_(0.7 * 8 ** 0.5)  # dim 32, 4 heads: head size 8
        default.layers[0].block.qkv.bias[:32].mul_(0.7 * 8 ** 0.5)
    ids = torch.randint(0, VOCAB, (2, 7))
    torch.testing.assert_close(scaled(ids)[0], default(ids)[0])


def test_out_bias_bool_switches_the_output_bias_alone():
    model = build([dict(ATTN, out_bias_bool=False)])
    block = model.layers[0].block
    assert block.out_proj.bias is None and block.qkv.bias is not None
    assert model.config.layers[0].count_params(model.config) == sum(p.numel() for p in model.layers[0].parameters())
    assert configaformer.resolve_config(tiny([dict(ATTN, bias_bool=False)])).layers[0].out_bias_bool is False
