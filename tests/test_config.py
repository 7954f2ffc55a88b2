"""The config language: the seed example, resolution, loading, and every documented mistake."""

import json
import math
import time

import pytest
import torch

import configaformer
from configaformer import ConfigError, resolve_config
from configaformer.config.resolve import size_parts

from .conftest import ATTN, FFN, VOCAB, tiny


def seed_example(dim=64, heads=4, vocab=300, repeat=2):
    """The README example, shrunk: same keys and structure, small sizes."""
    layer_list = [{"type": "Attention", "dim_attn": dim, "num_heads": heads,
                   "token_shift_config": [{"features": dim // 2, "shift": 0}, {"features": dim // 2, "shift": 1}]},
                  {"type": "FFN", "ff_mult": 4, "num_projections": 2, "num_gelu": 1}] * repeat
    return {"dim_model": dim, "vocab_size": vocab, "dim_rope": 8,
            "classifiers": [vocab, 6], "input_emb_size": dim // 2, "layers": layer_list}


def test_seed_example_builds_and_returns_one_tensor_per_classifier():
    model = configaformer.Transformer(seed_example())
    token_ids = torch.randint(0, 300, (2, 9))
    logits_lm, logits_cls = model(token_ids)
    assert logits_lm.shape == (2, 9, 300) and logits_cls.shape == (2, 9, 6)
    assert model.head_names == ["lm", "head1"]
    assert model.emb_proj is not None  # input_emb_size != dim_model


@pytest.mark.parametrize("heads", [[{"num_classes": 3}, {"num_classes": 4, "name": "head0"}],
                                   [{"num_classes": VOCAB, "name": "head1"}, VOCAB, {"num_classes": 5, "name": "lm"}],
                                   [3, 4, {"num_classes": 5, "name": "head1_1"}, {"num_classes": 6, "name": "head1"}]])
def test_default_head_names_never_collide_and_the_model_reloads(heads, tmp_path):
    model = configaformer.Transformer(tiny([ATTN], classifiers=heads))
    explicit = [h["name"] for h in heads if isinstance(h, dict) and "name" in h]
    assert len(set(model.head_names)) == len(heads) and set(explicit) <= set(model.head_names)
    model.save_pretrained(tmp_path)
    again = configaformer.Transformer.from_pretrained(tmp_path)
    ids = torch.randint(0, 3, (1, 4))
    assert again.head_names == model.head_names
    assert all(torch.equal(a, b) for a, b in zip(model(ids), again(ids)))


def test_resolved_config_has_every_default_and_is_a_fixed_point():
    cfg = resolve_config(seed_example())
    data = cfg.to_dict()
    assert data["input_emb_size"] == 32
    attn = data["layers"][0]
    assert attn["dim_rope"] == 8 and attn["dim_attn"] == 64 and attn["causal_mask_bool"] is True
    assert attn["pre_norm_bool"] is True and attn["post_norm_bool"] is False and attn["norm_type"] == "layernorm"
    assert data["layers"][1]["num_gelu"] == 1
    assert data["classifiers"][1] == {"num_classes": 6, "name": "head1", "head_type": "ffn",
                                      "bias_bool": True, "ff_mult": 1.0, "logit_softcap": None}
    assert resolve_config(json.loads(json.dumps(data))).to_dict() == data
    assert len(data["layers"]) == 4


def test_yaml_and_json_files_load(tmp_path):
    config = seed_example()
    (tmp_path / "m.json").write_text(json.dumps(config))
    yaml_text = "dim_model: 32\nvocab_size: 50\nclassifiers: [50]\nlayers:\n  - {type: Attention, num_heads: 2}\n"
    (tmp_path / "m.yaml").write_text(yaml_text)
    assert resolve_config(tmp_path / "m.json").to_dict() == resolve_config(config).to_dict()
    assert configaformer.Transformer(str(tmp_path / "m.yaml")).config.layers[0].num_heads == 2


def test_layer_may_override_model_dim_rope():
    cfg = resolve_config(tiny([dict(ATTN, dim_rope=0), ATTN], dim_rope=4))
    assert [layer.dim_rope for layer in cfg.layers] == [0, 4]


def _problems(config):
    with pytest.raises(ConfigError) as info:
        configaformer.Transformer(config)
    assert isinstance(info.value, ValueError)
    return {p.path: p.message for p in info.value.problems}


@pytest.mark.parametrize("config, path, words", [
    (tiny([dict(ATTN, num_head=4)]), "layers[0].num_head", "did you mean 'num_heads'"),
    (tiny([ATTN], vocab_sise=3), "vocab_sise", "did you mean 'vocab_size'"),
    (tiny([dict(ATTN, num_heads="4")]), "layers[0].num_heads", "valid integer"),
    (tiny([dict(ATTN, causal_mask_bool=1)]), "layers[0].causal_mask_bool", "valid boolean"),
    (tiny([dict(ATTN, num_heads=5)]), "layers[0].num_heads", "not divisible"),
    (tiny([dict(ATTN, dim_attn=30, num_heads=4)]), "layers[0].num_heads", "valid num_heads near 4: 1, 2, 3, 5, 6, 10"),
    (tiny([dict(ATTN, dim_rope=10)]), "layers[0].dim_rope", "at most the head size"),
    (tiny([dict(ATTN, dim_rope=3)]), "layers[0].dim_rope", "even"),
    (tiny([ATTN], dim_rope=12), "layers[0].dim_rope", "model-wide"),
    (tiny([dict(ATTN, token_shift_config=[{"features": 16, "shift": 0}, {"features": 8, "shift": 1}])]),
     "layers[0].token_shift_config", "sum to dim_model (32)"),
    (tiny([dict(FFN, num_projections=2, num_gelu=3)]), "layers[0].num_gelu", "more than num_projections"),
    (tiny([dict(ATTN, previous_attention_bool=True)]), "layers[0].previous_attention_bool", "earlier layer"),
    (tiny([ATTN, dict(ATTN, previous_attention_bool=True, num_heads=2)]), "layers[1].num_heads", "4"),
    (tiny([ATTN, dict(ATTN, residual_attention_bool=True, num_heads=8)]), "layers[1].num_heads", "4"),
    (tiny([dict(ATTN, causal_mask_bool=False), dict(ATTN, previous_attention_bool=True)]),
     "layers[1].causal_mask_bool", "future"),
    (tiny([]), "layers", "empty"),
    (tiny([ATTN], classifiers=[0]), "classifiers[0].num_classes", ">= 1"),
    (tiny([dict(ATTN, token_shift_config=[{"features": 16, "shift": 0}, {"features": 16, "shift": -1}])]),
     "layers[0].token_shift_config[1].shift", "looks ahead"),
    (tiny([FFN, dict(FFN, token_shift_config=[{"features": 32, "shift": -1}])]),
     "layers[1].token_shift_config[0].shift", "looks ahead"),
    (tiny([dict(FFN, inner_token_shift_config=[{"features": 60, "shift": 1}])]),
     "layers[0].inner_token_shift_config", "hidden width"),
    (tiny([{"type": "Atention"}]), "layers[0].type", "did you mean 'Attention'"),
    (tiny([{"num_heads": 4}]), "layers[0].type", "valid types: Attention, CrossAttention, FFN"),
    (tiny([ATTN], classifiers=[{"num_classes": 7, "head_type": "tied"}]), "classifiers[0].head_type", "vocab_size"),
    (tiny([dict(ATTN, output_gate={"activation": "softmax"})]), "layers[0].output_gate.activation", "'sigmoid'"),
    (tiny([dict(ATTN, dropout=1.5)]), "layers[0].dropout", "less than 1"),
    ({"vocab_size": 5, "classifiers": [5], "layers": [ATTN]}, "dim_model", "missing"),
])
def test_each_mistake_is_a_config_error_naming_its_key(config, path, words):
    problems = _problems(config)
    assert path in problems, problems
    assert words in problems[path], problems[path]


def test_a_lazy_first_layer_is_told_it_is_first():
    problems = _problems(tiny([dict(ATTN, previous_attention_bool=True), ATTN]))
    message = problems["layers[0].previous_attention_bool"]
    assert "this is the first layer" in message and "layers[0..-1]" not in message
    later = _problems(tiny([FFN, dict(ATTN, previous_attention_bool=True)]))["layers[1].previous_attention_bool"]
    assert later.endswith("none of layers[0..0] does")


@pytest.mark.parametrize("part, typo, meant", [("attention", "dropot", "dropout"), ("ffn", "pre_norm_boo", "pre_norm_bool"),
                                               ("attention", "output_gat", "output_gate")])
def test_a_parallel_part_suggests_only_keys_a_part_takes(part, typo, meant):
    """The keys every layer takes belong to the Parallel layer itself, and a part refuses them."""
    problems = _problems(tiny([{"type": "Parallel", part: {typo: 1}}]))
    message = problems[f"layers[0].{part}.{typo}"]
    assert f"did you mean '{meant}'" not in message
    valid = set(message.split("valid keys: ")[1].split(", "))
    assert not valid & {"dropout", "pre_norm_bool", "output_gate", "norm_type", "share_weights_with", "type"}
    assert {"attention": "num_heads", "ffn": "ff_mult"}[part] in valid


NOOPS = [  # (config, the key that would change nothing, the other key its message must name)
    (tiny([dict(ATTN, rotate_v_bool=True)], dim_rope=0), "layers[0].rotate_v_bool", "dim_rope"),
    (tiny([dict(ATTN, rotate_qk_bool=False, dim_rope=0)]), "layers[0].rotate_qk_bool", "dim_rope"),
    (tiny([ATTN, dict(ATTN, previous_attention_bool=True, rotate_qk_bool=False)]), "layers[1].rotate_qk_bool",
     "previous_attention_bool"),
    (tiny([dict(ATTN, rotate_qk_bool=False, dim_rope=2)]), "layers[0].dim_rope", "rotate_qk_bool"),
    (tiny([dict(ATTN, window_size=16)], max_seq_len=16), "layers[0].window_size", "max_seq_len"),
    (tiny([dict(ATTN, post_norm_bool=True, norm_type="none")]), "layers[0].post_norm_bool", "norm_type"),
    (tiny([dict(FFN, pre_norm_bool=False, norm_type="rmsnorm")]), "layers[0].norm_type", "pre_norm_bool"),
    (tiny([dict(FFN, pre_norm_bool=False, output_gate={"source": "hidden"})]), "layers[0].output_gate.source",
     "pre_norm_bool"),
    (tiny([dict(FFN, token_shift_config=[{"features": 16, "shift": 0}, {"features": 16, "shift": 0}])]),
     "layers[0].token_shift_config", "shift 0"),
    (tiny([dict(FFN, inner_token_shift_config=[{"features": 64, "shift": 0}])]), "layers[0].inner_token_shift_config",
     "shift 0"),
    (tiny([dict(FFN, num_gelu=0, activation="silu")]), "layers[0].activation", "num_gelu"),
    (tiny([ATTN], classifiers=[{"num_classes": VOCAB, "head_type": "linear", "ff_mult": 2}]), "classifiers[0].ff_mult",
     "head_type"),
    (tiny([ATTN], dim_rope=0, rope_base=500.0), "rope_base", "dim_rope"),
    (tiny([FFN], attention_impl="explicit"), "attention_impl", "no layer computes"),
    (tiny([dict(FFN, layerscale_init=0.1)]), "layers[0].layerscale_init", "residual_scale"),
    (tiny([{"type": "Parallel", "attention": {"num_heads": 4, "dim_rope": 0, "rotate_v_bool": True}}]),
     "layers[0].attention.rotate_v_bool", "dim_rope"),
]


@pytest.mark.parametrize("config, path, other", NOOPS)
def test_a_key_that_would_change_nothing_is_an_error_naming_the_key_that_makes_it_so(config, path, other):
    problems = _problems(config)
    assert path in problems and other in problems[path], problems


@pytest.mark.parametrize("config", [
    tiny([ATTN], dim_rope=0),  # the defaults of every key above, and explicitly written defaults
    tiny([dict(ATTN, rotate_qk_bool=True, rotate_v_bool=False, dim_rope=0)], rope_base=10000.0),
    tiny([dict(FFN, pre_norm_bool=False, norm_type="layernorm", output_gate={"source": "input"})]),
    tiny([dict(FFN, num_gelu=0, activation="gelu")], classifiers=[{"num_classes": VOCAB, "head_type": "linear",
                                                                   "ff_mult": 1.0}]),
    tiny([dict(FFN, pre_norm_bool=False, token_shift_config=[{"features": 32, "shift": 1}],
               output_gate={"source": "hidden"})]),
    tiny([{"type": "gMLP", "pre_norm_bool": False, "norm_type": "rmsnorm"}], max_seq_len=8),  # gMLP norms v with it
])
def test_keys_at_their_defaults_or_with_an_effect_are_not_errors(config):
    cfg = resolve_config(config)
    assert resolve_config(cfg.to_dict()) == cfg  # a resolved config (every key written out) builds too


def test_bidirectional_model_may_look_ahead():
    shift = [{"features": 16, "shift": -1}, {"features": 16, "shift": 1}]
    config = tiny([dict(ATTN, causal_mask_bool=False, token_shift_config=shift), dict(FFN, token_shift_config=shift)])
    configaformer.Transformer(config)


def test_all_problems_are_reported_together():
    config = tiny([dict(ATTN, num_head=4), {"type": "FFN", "num_gelu": 3, "num_projections": 2},
                   dict(ATTN, num_heads=5), dict(ATTN, dim_rope=3)], classifiers=[0])
    problems = _problems(config)
    assert set(problems) == {"layers[0].num_head", "layers[1].num_gelu", "layers[2].num_heads",
                             "layers[3].dim_rope", "classifiers[0].num_classes"}


def test_errors_come_before_any_tensor(monkeypatch):
    built = []
    monkeypatch.setattr(torch.nn.Linear, "__init__", lambda *a, **k: built.append(1))
    with pytest.raises(ConfigError):
        configaformer.Transformer(tiny([dict(ATTN, num_heads=5)]))
    assert not built


def test_missing_or_broken_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("layers: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        resolve_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        resolve_config(tmp_path / "list.yaml")


def test_layer_list_repetition_shares_no_state():
    layers = [ATTN, FFN] * 3
    model = configaformer.Transformer(tiny(layers))
    assert len(model.layers) == 6
    assert model.layers[0].block.qkv.weight.data_ptr() != model.layers[2].block.qkv.weight.data_ptr()
    assert layers[0] == ATTN  # the caller's dicts are not modified
    assert VOCAB == model.config.vocab_size


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
@pytest.mark.parametrize("config, path", [
    (lambda v: tiny([dict(FFN, ff_mult=v)]), "layers[0].ff_mult"),
    (lambda v: tiny([FFN], init_std=v), "init_std"),
    (lambda v: tiny([dict(FFN, residual_scale="layerscale", layerscale_init=v)]), "layers[0].layerscale_init"),
    (lambda v: tiny([dict(ATTN, logit_softcap=v)]), "layers[0].logit_softcap"),
    (lambda v: tiny([FFN], classifiers=[{"num_classes": 3, "ff_mult": v}]), "classifiers[0].ff_mult"),
    (lambda v: tiny([{"type": "Parallel", "attention": {"num_heads": 4, "logit_softcap": v}}]),
     "layers[0].attention.logit_softcap"),
])
def test_a_float_key_refuses_inf_and_nan_naming_the_key(config, path, value):
    problems = _problems(config(value))
    assert list(problems) == [path] and "finite" in problems[path]


@pytest.mark.parametrize("config, path", [
    (tiny([dict(ATTN, logit_softcap=5e-324)]), "layers[0].logit_softcap"),  # found by the fuzz suite: NaN gradients
    (tiny([FFN], init_std=1e-45), "init_std"),
    (tiny([dict(FFN, residual_scale="layerscale", layerscale_init=1e-45)]), "layers[0].layerscale_init"),
    (tiny([ATTN], rope_base=1e39), "rope_base"),
    (tiny([{"type": "Parallel", "attention": {"num_heads": 4, "logit_softcap": 1e-40}}]), "layers[0].attention.logit_softcap"),
])
def test_a_float_that_float32_cannot_hold_is_refused_naming_the_key(config, path):
    problems = _problems(config)
    assert list(problems) == [path] and "float32" in problems[path]


FUZZ_ZERO_INPUT = {"dim_model": 12, "vocab_size": 11, "classifiers": [3], "max_seq_len": 1, "norm_type": "none",
                   "layers": [{"type": "gMLP", "add_residual": False, "bias_bool": False},
                              {"type": "CrossAttention", "add_residual": False, "attn_dropout": 0.92, "norm_type": "rmsnorm",
                               "num_heads": 1},
                              {"type": "CrossAttention", "attn_dropout": 0.5, "norm_type": "rmsnorm", "num_heads": 1}]}


def test_norm_eps_small_enough_to_overflow_a_zero_inputs_gradient_is_refused():
    """Found by the fuzz suite: attention dropout zeroes a layer's whole output, the next layer's
    RMSNorm sees an all-zero input, and with norm_eps 1e-30 the gradients overflow."""
    assert list(_problems(dict(FUZZ_ZERO_INPUT, norm_eps=1e-30))) == ["norm_eps"]
    model = configaformer.Transformer(dict(FUZZ_ZERO_INPUT, norm_eps=1e-12))
    torch.manual_seed(0)
    model(torch.randint(0, 11, (2, 1)), context=torch.randn(2, 3, 12))[0].square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


FUZZ_LARGE_INIT = json.loads('{"classifiers": [{"num_classes": 1}], "dim_model": 8, "dim_rope": 2, "emb_dropout": 0.9, "init_std": 3.5112288533818132, "layers": [{"add_residual": false, "bias_bool": true, "causal_mask_bool": true, "dim_tiny_attn": 4, "dropout": 0.5, "ff_mult": 3.5, "norm_type": null, "output_gate": {}, "post_norm_bool": false, "pre_norm_bool": false, "residual_scale": "none", "share_weights_with": null, "type": "gMLP"}, {"activation": "silu", "add_residual": true, "bias_bool": false, "dropout": 0.1, "ff_mult": 1.849659927897155, "layer_drop": 0.834329011910672, "layerscale_init": null, "norm_type": null, "num_projections": 0, "output_gate": null, "output_sigmoid_gate_bool": true, "post_norm_bool": false, "pre_norm_bool": false, "residual_scale": "rezero", "share_weights_with": null, "type": "FFN"}, {"activation": "gelu", "add_residual": true, "bias_bool": false, "ff_mult": 1e-06, "inner_token_shift_config": null, "layer_drop": 0.1348689895595636, "layerscale_init": null, "norm_type": "layernorm", "num_gelu": 0, "num_projections": 3, "output_gate": null, "output_sigmoid_gate_bool": true, "post_norm_bool": true, "pre_norm_bool": false, "residual_scale": "rezero", "share_weights_with": null, "token_shift_config": null, "type": "FFN"}, {"add_residual": false, "attn_dropout": 0.30158713992130104, "bias_bool": false, "dim_attn": null, "dim_context": 8, "dropout": 0.4160651409808545, "layerscale_init": null, "norm_type": "rmsnorm", "num_heads": 1, "num_kv_heads": null, "output_gate": {}, "post_norm_bool": true, "pre_norm_bool": true, "qk_norm_bool": false, "type": "CrossAttention"}], "max_seq_len": 16, "vocab_size": 11}')


def test_an_init_std_that_overflows_a_norm_free_stack_is_refused():
    """Found by the fuzz suite: with init_std 3.5 a gMLP without residual and a three-projection
    FFN grow activations to 4e20, whose square overflows the next layer norm (NaN everywhere).
    init_std is at most 1, and at 1 the same stack trains with finite gradients."""
    assert list(_problems(FUZZ_LARGE_INIT)) == ["init_std"]
    model = configaformer.Transformer(dict(FUZZ_LARGE_INIT, init_std=1.0)).train()
    torch.manual_seed(0)
    ids = torch.randint(0, 11, (2, 8))
    sum(o.square().mean() for o in model(ids, context=torch.randn(2, 3, 8))).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_a_float32_sized_softcap_keeps_gradients_finite():
    model = configaformer.Transformer(tiny([dict(ATTN, logit_softcap=1.2e-38)]))
    model(torch.randint(0, VOCAB, (2, 5)))[0].square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("config, path", [
    (tiny([dict(FFN, ff_mult=1e300)]), "layers[0]"),
    (tiny([dict(FFN, ff_mult=1e308)], dim_model=2 ** 40), "layers[0]"),
    (tiny([FFN], dim_model=2 ** 40, dim_rope=0), "layers[0]"),
    (tiny([FFN], vocab_size=2 ** 40), "vocab_size"),
    (tiny([ATTN], max_seq_len=2 ** 40), "max_seq_len"),
    (tiny([{"type": "gMLP"}], max_seq_len=2 ** 21), "layers[0]"),
    (tiny([FFN], classifiers=[2 ** 40]), "classifiers[0]"),
])
def test_an_absurd_size_is_a_config_error_with_the_estimate_before_any_tensor(config, path, monkeypatch):
    built = []
    monkeypatch.setattr(torch.nn.Linear, "__init__", lambda *a, **k: built.append(1))
    problems = _problems(config)
    assert list(problems) == [path] and "bytes in float32" in problems[path] and not built


@pytest.mark.parametrize("extra", [{}, {"abs_pos_emb": "learned", "input_emb_size": 16, "norm_type": "rmsnorm",
                                       "final_norm_bool": False,
                                       "classifiers": [{"num_classes": VOCAB, "head_type": "tied"},
                                                       {"num_classes": 3, "head_type": "linear"},
                                                       {"num_classes": 4, "ff_mult": 1.5}]}])
def test_the_size_estimate_counts_exactly_what_the_model_allocates(extra):
    layers = [ATTN, {"type": "gMLP", "dim_tiny_attn": 8}, {"type": "Parallel"}, FFN,
              dict(FFN, share_weights_with=3), {"type": "CrossAttention", "dim_context": 12}]
    model = configaformer.Transformer(tiny(layers, max_seq_len=16, **extra))
    allocated = model.num_parameters() + sum(b.numel() for b in model.buffers())
    assert sum(n for _, n in size_parts(model.config)) == allocated


@pytest.mark.parametrize("layer, path", [(dict(ATTN, dim_attn=2 ** 34, num_heads=3), "layers[0].num_heads"),
                                         (dict(ATTN, dim_attn=2 ** 34, num_heads=2 ** 33, num_kv_heads=3),
                                          "layers[0].num_kv_heads"),
                                         ({"type": "CrossAttention", "dim_attn": 2 ** 34, "num_heads": 3},
                                          "layers[0].num_heads")])
def test_an_indivisible_head_count_lists_divisors_near_it_quickly(layer, path):
    start = time.perf_counter()
    problems = _problems(tiny([layer], dim_model=1, vocab_size=2, classifiers=[{"num_classes": 2, "head_type": "linear"}]))
    assert time.perf_counter() - start < 2.0
    listed = [int(v) for v in problems[path].rsplit(": ", 1)[1].split(", ")]
    total = 2 ** 34 if "num_heads" == path.rsplit(".", 1)[1] else 2 ** 33
    assert len(listed) == 6 and listed == sorted(listed) and all(total % v == 0 for v in listed) and 2 in listed


def test_a_saved_config_json_loads_with_its_exponent_floats(tmp_path):
    """json.dumps writes 1e-05, which YAML 1.1 reads as a string: a .json file is read as JSON."""
    config = tiny([ATTN], norm_eps=1e-6)
    (tmp_path / "config.json").write_text(json.dumps(resolve_config(config).to_dict()))
    assert resolve_config(tmp_path / "config.json").norm_eps == 1e-6
