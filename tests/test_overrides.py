"""Command-line overrides (config/overrides.py): every key reachable, values read by their key's schema."""

import json

import pytest

from configaformer import ConfigError, resolve_config
from configaformer.cli import main
from configaformer.presets import preset_path
from configaformer.train.config import load_run_config, override_run
from configaformer.train.runtime import model_config_of

from .conftest import ATTN, FFN, tiny


def resolved_model(model, *args):
    run = load_run_config({"model": model, "data": {"path": "unused"}}, list(args))
    return resolve_config(model_config_of(run))


@pytest.mark.parametrize("source", ["preset", "file", "inline"])
def test_layer_overrides_reach_one_layer_of_a_preset_a_file_and_an_inline_config(source, tmp_path):
    """llama's layers are YAML aliases of one dict: an override of layers[0] must not reach layers[2]."""
    path = preset_path("llama")
    if source == "file":
        path = tmp_path / "m.yaml"
        path.write_text(preset_path("llama").read_text())
    model = resolve_config(path).to_dict() if source == "inline" else str(path)
    cfg = resolved_model(model, "--model.layers.0.num_heads", "4", "--model.layers[-1].ff_mult=2")
    heads = [layer.num_heads for layer in cfg.layers if layer.type == "Attention"]
    assert heads == [4] + [8] * 5
    assert [layer.ff_mult for layer in cfg.layers if layer.type == "FFN"] == [2.6875] * 5 + [2.0]


def test_a_type_selects_every_layer_of_that_type_and_star_selects_all():
    model = tiny([ATTN, FFN, ATTN, {"type": "Parallel", "attention": {"num_heads": 2}}], dim_rope=4)
    by_type = resolved_model(model, "--model.layers[Attention].dim_rope", "8", "--model.layers.*.dropout", "0.1")
    assert [getattr(layer, "dim_rope", None) for layer in by_type.layers] == [8, None, 8, None]
    assert by_type.layers[3].attention.dim_rope == 4  # a Parallel layer's part is reached by its own path
    assert [layer.dropout for layer in by_type.layers] == [0.1] * 4
    dotted = resolved_model(model, "--model.layers.Attention.dim_rope", "8", "--model.layers.3.attention.dim_rope", "8")
    assert [layer.dim_rope for layer in dotted.layers[:3:2]] == [8, 8] and dotted.layers[3].attention.dim_rope == 8


def test_values_are_read_by_the_schema_of_the_key_they_set():
    run = load_run_config({"model": tiny([ATTN]), "data": {"path": "d"}},
                          ["--sample.prompt", "123", "--out_dir", "1e3", "--train.lr", "3e-4", "--train.max_steps",
                           "1e3", "--train.max_minutes", "null", "--train.activation_checkpointing", "[0]",
                           "--distributed.deepspeed.zero_stage", "2", "--distributed.deepspeed.config_path", "7",
                           "--heads.lm.labels", "lm", "--model.classifiers.0.head_type", "linear",
                           "--model.layers.0.causal_mask_bool", "false", "--model.dim_model", "64"])
    assert run.sample.prompt == "123" and run.out_dir == "1e3"
    assert run.train.lr == 3e-4 and run.train.max_steps == 1000 and run.train.max_minutes is None
    assert run.train.activation_checkpointing == [0] and run.distributed.deepspeed.zero_stage == 2
    assert run.distributed.deepspeed.config_path == "7" and run.heads["lm"].labels == "lm"
    cfg = resolve_config(model_config_of(run))
    assert cfg.classifiers[0].head_type == "linear" and cfg.classifiers[0].num_classes == 50  # `[50]` shorthand
    assert cfg.layers[0].causal_mask_bool is False and cfg.dim_model == 64


def test_override_run_leaves_its_input_alone():
    run = {"model": tiny([ATTN]), "data": {"path": "d"}}
    before = json.dumps(run)
    changed = override_run(run, ["model.layers.0.num_heads=2", ("train.lr", "0.1")])
    assert json.dumps(run) == before
    assert changed["model"]["layers"][0]["num_heads"] == 2 and changed["train"] == {"lr": 0.1}


@pytest.mark.parametrize("flag, words", [
    ("--model.layers.9.num_heads", "index 9 is out of range: model.layers has 2 entries (valid: 0..1, or -2..-1)"),
    ("--model.layers[Atention].num_heads", "did you mean 'Attention'? valid types: Attention, CrossAttention"),
    ("--model.layers[gMLP].ff_mult", "no gMLP layer in model.layers (its types: Attention, FFN)"),
    ("--model.layers.0.num_head", "unknown key 'num_head' in model.layers[0] (type Attention); did you mean "
                                  "'num_heads'?"),
    ("--model.layers.1.num_heads", "unknown key 'num_heads' in model.layers[1] (type FFN)"),
    ("--model.dim_modell", "did you mean 'dim_model'?"),
    ("--train.lrr", "unknown key 'lrr' in train; did you mean 'lr'?"),
    ("--train.lr.x", "train.lr has no keys below it"),
    ("--model..x", "not a key path"),
])
def test_a_bad_override_is_a_config_error_naming_its_flag(flag, words):
    with pytest.raises(ConfigError) as info:
        load_run_config({"model": tiny([ATTN, FFN]), "data": {"path": "d"}}, [flag, "2"])
    (problem,) = info.value.problems
    assert problem.path == flag and words in problem.message, problem


def test_every_bad_override_is_reported_at_once():
    with pytest.raises(ConfigError) as info:
        load_run_config({"model": tiny([ATTN]), "data": {"path": "d"}}, ["--train.lrr", "1", "--model.layers.5.x", "1"])
    assert [p.path for p in info.value.problems] == ["--train.lrr", "--model.layers.5.x"]


def test_the_cli_applies_layer_overrides_and_names_a_bad_one(tmp_path, capsys):
    run = tmp_path / "run.json"
    run.write_text(json.dumps({"model": "llama", "data": {"path": str(tmp_path / "none")}}))
    assert main(["train", str(run), "--model.layers.2.num_heads", "2", "--train.max_steps", "1"]) != 0
    err = capsys.readouterr().err
    assert "model.layers" not in err and "data.path" in err  # the override applied; the missing data stopped it
    assert main(["train", str(run), "--model.layers.12.num_heads", "2"]) == 2
    assert capsys.readouterr().err.startswith("configaformer: --model.layers.12.num_heads: index 12 is out of range")
