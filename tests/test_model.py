"""The assembled model: heads, embedding, inputs, dtype/device, save/load."""

import json

import pytest
import torch

import configaformer
from configaformer import Transformer

from .conformance import check_reset
from .conftest import ATTN, FFN, VOCAB, assert_padding_invariant, tiny
from .test_attention import RICH_LAYERS


def test_tied_head_shares_the_embedding_and_projects_when_widths_differ():
    model = Transformer(tiny([ATTN], input_emb_size=16, classifiers=[{"num_classes": VOCAB, "head_type": "tied"}]))
    head = model.heads[0]
    assert head.out.weight is model.embedding.weight and head.proj.weight.shape == (16, 32)
    distinct = {id(p) for p in model.parameters()}
    assert model.num_parameters() == sum(p.numel() for p in model.parameters()) and len(distinct) == len(list(model.parameters()))
    before = model.embedding.weight.detach().clone()
    model(torch.randint(0, VOCAB, (1, 4)))[0].sum().backward()
    assert model.embedding.weight.grad is not None and torch.equal(before, model.embedding.weight.detach())


@pytest.mark.parametrize("head_type", ["ffn", "linear", "tied"])
def test_head_types_give_class_count_logits(head_type):
    model = Transformer(tiny([ATTN], classifiers=[{"num_classes": VOCAB, "head_type": head_type, "name": "x"}, 3]))
    out = model(torch.randint(0, VOCAB, (2, 5)))
    assert [o.shape for o in out] == [(2, 5, VOCAB), (2, 5, 3)] and model.head_names == ["x", "head1"]


def test_out_of_range_ids_and_overlong_sequences_are_clear_errors():
    model = Transformer(tiny([ATTN], max_seq_len=8))
    with pytest.raises(ValueError, match=r"token id 50 is out of range for vocab_size 50 \(valid ids: 0..49\)"):
        model(torch.tensor([[1, 50]]))
    with pytest.raises(ValueError, match="token id -1"):
        model(torch.tensor([[-1, 2]]))
    with pytest.raises(ValueError, match="sequence length 9 exceeds max_seq_len 8"):
        model(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="integer tensor of shape"):
        model(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="padding_mask shape"):
        model(torch.zeros(1, 4, dtype=torch.long), padding_mask=torch.ones(1, 5, dtype=torch.bool))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int32, torch.uint16])
def test_any_integer_id_dtype_is_accepted(dtype):
    model = Transformer(tiny([ATTN])).eval()
    ids = torch.randint(0, VOCAB, (1, 5))
    torch.testing.assert_close(model(ids.to(dtype))[0], model(ids)[0])


def test_rotary_tables_grow_past_their_cache():
    model = Transformer(tiny([ATTN])).eval()
    ids = torch.randint(0, VOCAB, (1, 300))  # the initial cache holds 256 positions
    (long,) = model(ids)
    (short,) = model(ids[:, :50])
    torch.testing.assert_close(long[:, :50], short, rtol=1e-5, atol=1e-5)


def test_bfloat16_model_runs_and_follows_its_dtype():
    model = Transformer(tiny(RICH_LAYERS)).to(torch.bfloat16).eval()
    (out,) = model(torch.randint(0, VOCAB, (2, 6)))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


def test_residual_output_projections_get_scaled_init():
    model = Transformer(tiny([ATTN, FFN] * 8, dim_model=256, dim_rope=0))
    assert model.layers[0].block.out_proj.weight.std().item() == pytest.approx(0.02 / 4, rel=0.1)
    assert model.layers[0].block.qkv.weight.std().item() == pytest.approx(0.02, rel=0.1)


# Every kind of parameter a model can own, raw Parameters included.
EVERY_PARAMETER = tiny([
    dict(ATTN, talking_heads_bool=True, num_memory_kv=3, qkv_conv_kernel=3, rel_pos_bias={"num_buckets": 8},
         qk_norm_bool=True, head_gate_bool=True, residual_scale="layerscale", norm_type="scalenorm"),
    dict(ATTN, previous_attention_bool=True, num_memory_kv=3, qkv_conv_kernel=2, residual_scale="rezero"),
    {"type": "gMLP", "ff_mult": 2, "dim_tiny_attn": 8, "output_gate": {"activation": "silu"}},
    {"type": "Parallel", "attention": {"num_heads": 4, "qkv_conv_kernel": 2, "causal_mask_bool": False}, "ffn": {}},
], max_seq_len=16, input_emb_size=16, abs_pos_emb="learned",
    classifiers=[{"num_classes": VOCAB, "head_type": "tied"}, {"num_classes": 3, "head_type": "ffn"}])


def test_reset_parameters_reaches_every_parameter_and_restores_the_documented_init():
    model = Transformer(EVERY_PARAMETER)
    check_reset(model)  # perturbs every parameter, resets, compares with a reset of a clean copy
    attn, lazy, gmlp, parallel = (layer.block for layer in model.layers)
    eye = torch.eye(4)
    assert torch.equal(attn.pre_mix, eye) and torch.equal(attn.post_mix, eye)
    for conv in (attn.conv, lazy.conv, parallel.attention.conv):  # causal: the last tap; bidirectional: the centre
        k = conv.kernel_size
        delta = torch.zeros(k)
        delta[k - 1 if conv.causal else (k - 1) // 2] = 1.0
        assert torch.equal(conv.conv.weight, delta.expand_as(conv.conv.weight)) and not conv.conv.bias.any()
    memory = torch.cat([attn.memory_k.flatten(), attn.memory_v.flatten(), lazy.memory_v.flatten()])
    assert memory.std().item() == pytest.approx(0.02, rel=0.25) and abs(memory.mean().item()) < 0.01
    assert gmlp.spatial_weight.abs().max() <= 1e-3 / 16 and torch.equal(gmlp.spatial_bias, torch.ones(16))
    assert torch.equal(model.layers[0].residual_scale.scale, torch.full((32,), 1e-4))
    assert model.layers[1].residual_scale.scale.item() == 0.0
    assert model.layers[0].pre_norm.g.item() == pytest.approx(32 ** 0.5)


def test_save_load_round_trip_is_exact(tmp_path):
    config = tiny(RICH_LAYERS, input_emb_size=16, classifiers=[{"num_classes": VOCAB, "head_type": "tied"}, 4])
    model = Transformer(config).eval()
    model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    assert json.loads((tmp_path / "m" / "config.json").read_text()) == model.config.to_dict()
    loaded = Transformer.from_pretrained(tmp_path / "m").eval()
    assert loaded.config == model.config
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert loaded.heads[0].out.weight is loaded.embedding.weight
    ids = torch.randint(0, VOCAB, (2, 7))
    for x, y in zip(model(ids), loaded(ids)):
        assert torch.equal(x, y)


def test_bad_checkpoints_get_clear_messages(tmp_path):
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        Transformer.from_pretrained(tmp_path)
    Transformer(tiny([ATTN])).save_pretrained(tmp_path / "a")
    Transformer(tiny([ATTN, FFN])).save_pretrained(tmp_path / "b")
    (tmp_path / "a" / "model.safetensors").replace(tmp_path / "x.safetensors")
    (tmp_path / "b" / "model.safetensors").replace(tmp_path / "a" / "model.safetensors")
    with pytest.raises(ValueError, match="does not match"):
        Transformer.from_pretrained(tmp_path / "a")
    (tmp_path / "a" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        Transformer.from_pretrained(tmp_path / "a")
    (tmp_path / "a" / "config.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        Transformer.from_pretrained(tmp_path / "a")
    (tmp_path / "a" / "config.json").write_text(json.dumps(tiny([dict(ATTN, num_heads=5)])))
    with pytest.raises(configaformer.ConfigError, match=r"layers\[0\].num_heads"):
        Transformer.from_pretrained(tmp_path / "a")


def test_meta_device_build_allocates_nothing():
    with torch.device("meta"):
        model = Transformer(tiny([ATTN, FFN]))
    assert all(p.device.type == "meta" for p in model.parameters())


def test_compiles_with_no_graph_break():
    model = Transformer(tiny(RICH_LAYERS)).eval()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    ids = torch.randint(0, VOCAB, (2, 9))
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[0, :2] = False
    torch.testing.assert_close(compiled(ids)[0], model(ids)[0])
    torch.testing.assert_close(compiled(ids, padding_mask=mask)[0], model(ids, padding_mask=mask)[0])


# ---- absolute position embeddings (abs_pos_emb) ------------------------------------------------
NO_ROPE = dict(ATTN, dim_rope=0)


def test_learned_positions_need_max_seq_len():
    with pytest.raises(configaformer.ConfigError, match=r"abs_pos_emb: learned positions need max_seq_len"):
        Transformer(tiny([ATTN], abs_pos_emb="learned"))
    with pytest.raises(configaformer.ConfigError, match=r"abs_pos_emb: .*'sinusoidal'"):
        Transformer(tiny([ATTN], abs_pos_emb="rotary"))
    model = Transformer(tiny([ATTN], abs_pos_emb="learned", max_seq_len=12))
    assert model.num_parameters() == Transformer(tiny([ATTN])).num_parameters() + 12 * 32


def test_sinusoidal_table_is_vaswanis_scaled_by_one_over_sqrt_dim():
    model = Transformer(tiny([NO_ROPE], abs_pos_emb="sinusoidal"))
    pos, i = torch.arange(7)[:, None].float(), torch.arange(16)[None].float()
    angle = pos / 10000 ** (2 * i / 32)
    expected = torch.stack([angle.sin(), angle.cos()], dim=-1).flatten(-2) / 32 ** 0.5  # (7, 32): sin, cos, sin, ...
    torch.testing.assert_close(model.abs_pos(torch.arange(7)[None])[0], expected)


@pytest.mark.parametrize("kind", ["learned", "sinusoidal"])
def test_absolute_positions_are_added_after_the_embedding(kind):
    model = Transformer(tiny([NO_ROPE], abs_pos_emb=kind, max_seq_len=16, input_emb_size=16)).eval()
    seen = {}
    model.layers[0].register_forward_hook(lambda m, args, out: seen.update(x=args[0]))
    ids = torch.full((1, 5), 3)
    model(ids)
    expected = model.emb_proj(model.embedding(ids)) + model.abs_pos(torch.arange(5)[None])
    torch.testing.assert_close(seen["x"], expected)
    assert not torch.allclose(seen["x"][0, 0], seen["x"][0, 1])  # the same token differs by position


@pytest.mark.parametrize("kind", ["learned", "sinusoidal"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_absolute_positions_count_real_tokens_so_padding_changes_nothing(kind, side):
    model = Transformer(tiny([NO_ROPE, FFN, NO_ROPE], abs_pos_emb=kind, max_seq_len=16, dim_rope=0)).eval()
    assert_padding_invariant(model, 6, 5, side)


@pytest.mark.parametrize("head_type", ["ffn", "linear", "tied"])
def test_loss_from_targets_equals_cross_entropy_of_the_logits(head_type):
    model = Transformer(tiny([ATTN, FFN], input_emb_size=16, classifiers=[{"num_classes": VOCAB, "head_type": head_type}, 5]))
    ids = torch.randint(0, VOCAB, (3, 9))
    targets = torch.randint(0, VOCAB, (3, 9))
    targets[0, :4] = -100
    small = torch.randint(0, 5, (3, 9))
    logits = model(ids)
    expected = torch.nn.functional.cross_entropy(logits[0].flatten(0, 1), targets.flatten())
    expected.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    (loss,) = model(ids, targets=targets)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    for n, p in model.named_parameters():
        if n in grads:
            torch.testing.assert_close(p.grad, grads[n], rtol=1e-4, atol=1e-6)
    first, second = model(ids, targets={0: targets, 1: small})  # each head its own targets
    torch.testing.assert_close(first, expected)
    torch.testing.assert_close(second, torch.nn.functional.cross_entropy(logits[1].flatten(0, 1), small.flatten()))


def test_emb_scale_multiplies_the_token_embeddings():
    ids = torch.randint(0, VOCAB, (2, 5))
    plain = Transformer(tiny([ATTN, FFN], input_emb_size=16))
    scaled = Transformer(tiny([ATTN, FFN], input_emb_size=16, emb_scale=3.0))
    scaled.load_state_dict(plain.state_dict())
    with torch.no_grad():
        plain.embedding.weight.mul_(3.0)  # the same as scaling the table (the head is not tied)
    torch.testing.assert_close(scaled(ids)[0], plain(ids)[0])


def test_a_head_logit_softcap_bounds_the_logits_and_the_loss_path_agrees():
    config = tiny([ATTN, FFN], classifiers=[{"num_classes": VOCAB, "head_type": "linear", "logit_softcap": 0.5}])
    model = Transformer(config)
    with torch.no_grad():
        model.heads[0].out.weight.mul_(50)
    ids, targets = torch.randint(0, VOCAB, (2, 6)), torch.randint(0, VOCAB, (2, 6))
    (logits,) = model(ids)
    assert logits.abs().max() <= 0.5 and logits.abs().max() > 0.45
    (loss,) = model(ids, targets=targets)
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten()))
