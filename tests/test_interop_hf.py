"""Hugging Face interop (configaformer.interop): tiny random models of every family, built and
saved by transformers itself, imported here with the same logits (a left-padded batch), the
same greedy generation through our cache, and exported back to the same logits again."""

import json

import pytest
import torch

from configaformer import Transformer
from configaformer.interop import FAMILIES, InteropError, export_hf, import_hf

transformers = pytest.importorskip("transformers")

VOCAB = 61
LLAMA_SIZES = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, vocab_size=VOCAB, bos_token_id=None, eos_token_id=None, pad_token_id=None)
LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 64}

# name -> (transformers config class name, its keys). Each case is built to exercise what the
# mapping must get right: GQA, biases, llama3 rope scaling, windows shorter than the sequence
# (LENGTH), soft-caps small enough to bend the scores, a query scale other than 1/sqrt(head_dim).
CASES = {
    "gpt2": ("GPT2Config", dict(n_embd=32, n_layer=2, n_head=4, n_positions=32, vocab_size=VOCAB,
                                bos_token_id=None, eos_token_id=None)),
    "llama": ("LlamaConfig", dict(LLAMA_SIZES, attention_bias=True, mlp_bias=True)),
    "llama3-rope": ("LlamaConfig", dict(LLAMA_SIZES, rope_parameters=LLAMA3_ROPE, tie_word_embeddings=True)),
    "mistral": ("MistralConfig", dict(LLAMA_SIZES, sliding_window=4)),
    "qwen2": ("Qwen2Config", dict(LLAMA_SIZES, num_hidden_layers=3, use_sliding_window=True, sliding_window=4,
                                  max_window_layers=1)),
    "gemma2": ("Gemma2Config", dict(LLAMA_SIZES, num_hidden_layers=3, head_dim=16, sliding_window=4,
                                    query_pre_attn_scalar=24, attn_logit_softcapping=2.0,
                                    final_logit_softcapping=3.0)),
}
LENGTH = 10


def hf_model(name: str, directory, **save):
    """A random transformers model of case `name`, weights moved off their init (unit norms and
    zero biases would hide a swapped or dropped tensor), saved as safetensors in `directory`."""
    cls, keys = CASES[name]
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(getattr(transformers, cls)(**keys),
                                                          attn_implementation="eager")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    model.save_pretrained(directory, safe_serialization=True, **save)
    return model.eval()


def padded_batch():
    torch.manual_seed(1)
    ids = torch.randint(0, VOCAB, (3, LENGTH))
    mask = torch.ones(3, LENGTH, dtype=torch.long)
    mask[1, :3] = 0  # left padding
    mask[2, :6] = 0
    return ids, mask


def hf_logits(model, ids, mask):
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # what generate passes; forward alone would not
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, position_ids=positions).logits


def our_logits(model, ids, mask):
    with torch.no_grad():
        return model.eval()(ids, padding_mask=mask.bool())[0]


def assert_same_real_logits(ours, theirs, mask):
    real = mask.bool()
    torch.testing.assert_close(ours[real], theirs[real], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", list(CASES))
def test_import_generate_and_export_match_transformers(name, tmp_path):
    reference = hf_model(name, tmp_path / "hf")
    ids, mask = padded_batch()
    expected = hf_logits(reference, ids, mask)

    model = Transformer.from_hf(tmp_path / "hf").eval()
    assert_same_real_logits(our_logits(model, ids, mask), expected, mask)

    prompt = ids[:1, :5].repeat(2, 1)
    prompt[1] = ids[2, :5]
    theirs = reference.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=8, do_sample=False,
                                pad_token_id=0)
    assert torch.equal(model.generate(prompt, 8, temperature=0), theirs)

    export_hf(model, tmp_path / "exported")
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "exported", attn_implementation="eager")
    assert type(back) is type(reference)
    assert_same_real_logits(hf_logits(back.eval(), ids, mask), expected, mask)


def test_sharded_checkpoints_import_like_single_files(tmp_path):
    reference = hf_model("llama", tmp_path / "hf", max_shard_size="20KB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()
    ids, mask = padded_batch()
    assert_same_real_logits(our_logits(Transformer.from_hf(tmp_path / "hf"), ids, mask),
                            hf_logits(reference, ids, mask), mask)


def test_gpt2_checkpoints_without_the_transformer_prefix_and_with_mask_buffers_import_alike(tmp_path):
    """The original GPT-2 files name tensors `h.0.…` (no `transformer.`) and hold the causal-mask
    buffers `h.i.attn.bias`, which are no weights."""
    reference = hf_model("gpt2", tmp_path)

    def older(tensors):
        renamed = {name.removeprefix("transformer."): t for name, t in tensors.items()}
        tensors.clear()
        tensors.update(renamed, **{"h.0.attn.bias": torch.ones(1, 1, 32, 32).tril()})
    rewrite_weights(tmp_path, older)
    ids, mask = padded_batch()
    assert_same_real_logits(our_logits(Transformer.from_hf(tmp_path), ids, mask), hf_logits(reference, ids, mask), mask)


def test_the_features_the_cases_exercise_change_the_logits(tmp_path):
    """Without rope scaling, the window or the soft-caps, the imported models' logits differ:
    the parity above could not pass with the key ignored."""
    ids, mask = padded_batch()
    for name, change in [("llama3-rope", {"rope_scaling": None}), ("mistral", {"window_size": None}),
                         ("gemma2", {"logit_softcap": None})]:
        hf_model(name, tmp_path / name)
        model = Transformer.from_hf(tmp_path / name)
        config = model.config.to_dict()
        if "rope_scaling" in change:
            config.update(change)
        else:
            config["layers"] = [dict(layer, **change) if layer["type"] == "Attention" else layer
                                for layer in config["layers"]]
        other = Transformer(config)
        other.load_state_dict(model.state_dict())
        assert (our_logits(model, ids, mask) - our_logits(other, ids, mask)).abs().max() > 1e-3, name


def test_import_hf_writes_a_model_directory_with_the_same_logits(tmp_path):
    hf_model("qwen2", tmp_path / "hf")
    import_hf(tmp_path / "hf", tmp_path / "ours")
    ids, mask = padded_batch()
    torch.testing.assert_close(our_logits(Transformer.from_pretrained(tmp_path / "ours"), ids, mask),
                               our_logits(Transformer.from_hf(tmp_path / "hf"), ids, mask), atol=0, rtol=0)


def test_export_chooses_the_family_that_expresses_the_config(tmp_path):
    hf_model("qwen2", tmp_path / "hf")
    export_hf(Transformer.from_hf(tmp_path / "hf"), tmp_path / "out")
    assert json.loads((tmp_path / "out" / "config.json").read_text())["model_type"] == "qwen2"
    assert list(FAMILIES) == ["gpt2", "llama", "mistral", "qwen2", "gemma2"]


@pytest.mark.parametrize("preset, family", [("gpt2", "gpt2"), ("llama", "llama")])
def test_our_presets_export_to_the_same_logits_in_transformers(preset, family, tmp_path):
    from configaformer.config import load_config
    from configaformer.presets import preset_path

    config = dict(load_config(preset_path(preset)), dim_model=64, vocab_size=VOCAB, dim_rope=8 if preset == "llama" else 0,
                  layers=load_config(preset_path(preset))["layers"][:4])
    config["classifiers"] = [dict(config["classifiers"][0], num_classes=VOCAB)]
    torch.manual_seed(0)
    model = Transformer(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    export_hf(model, tmp_path / "hf")
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == family
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", attn_implementation="eager").eval()
    ids, mask = padded_batch()
    assert_same_real_logits(hf_logits(back, ids, mask), our_logits(model, ids, mask), mask)


def test_importing_needs_no_transformers(tmp_path):
    """The import reads JSON and safetensors: run in a fresh process, it never loads transformers."""
    import subprocess
    import sys

    hf_model("mistral", tmp_path)
    code = ("import sys; from configaformer import Transformer; Transformer.from_hf(sys.argv[1]); "
            "print('transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---- bad input -----------------------------------------------------------------------------------
def test_a_directory_without_config_json_names_it(tmp_path):
    with pytest.raises(InteropError, match=r"has no config\.json"):
        Transformer.from_hf(tmp_path)


def test_an_unsupported_model_type_lists_the_supported_ones(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(InteropError, match=r"config\.json: model_type 'bert' is not supported; supported: "
                                           r"gpt2, llama, mistral, qwen2, gemma2"):
        Transformer.from_hf(tmp_path)


def test_an_unsupported_setting_names_the_key(tmp_path):
    hf_model("llama", tmp_path)
    edit_config(tmp_path, hidden_act="quick_gelu")
    with pytest.raises(InteropError, match=r'config\.json: hidden_act = "quick_gelu" is not supported .*"silu"'):
        Transformer.from_hf(tmp_path)


def edit_config(directory, **changes):
    path = directory / "config.json"
    path.write_text(json.dumps(dict(json.loads(path.read_text()), **changes)))


def test_a_tensor_whose_shape_disagrees_with_the_config_names_file_and_tensor(tmp_path):
    hf_model("llama", tmp_path)
    edit_config(tmp_path, intermediate_size=64)
    with pytest.raises(InteropError, match=r"model\.safetensors: tensor model\.layers\.0\.mlp\.gate_proj\.weight "
                                           r"has shape \[48, 32\], but .*config\.json implies \[64, 32\]"):
        Transformer.from_hf(tmp_path)


def rewrite_weights(directory, change):
    from safetensors.torch import load_file, save_file

    tensors = load_file(directory / "model.safetensors")
    change(tensors)
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})


def test_a_missing_tensor_is_named_with_the_file(tmp_path):
    hf_model("gpt2", tmp_path)
    rewrite_weights(tmp_path, lambda t: t.pop("transformer.h.1.mlp.c_fc.bias"))
    with pytest.raises(InteropError, match=r"model\.safetensors: tensor transformer\.h\.1\.mlp\.c_fc\.bias is missing"):
        Transformer.from_hf(tmp_path)


def test_a_shard_the_index_names_but_the_directory_lacks_is_named(tmp_path):
    hf_model("llama", tmp_path, max_shard_size="20KB")
    shard = sorted(tmp_path.glob("model-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(InteropError, match=rf"index\.json names the shard '{shard.name}', which is not a file"):
        Transformer.from_hf(tmp_path)


def test_a_tensor_no_mapping_uses_is_refused(tmp_path):
    hf_model("mistral", tmp_path)
    rewrite_weights(tmp_path, lambda t: t.update({"model.layers.0.self_attn.q_norm.weight": torch.ones(8)}))
    with pytest.raises(InteropError, match=r"tensor model\.layers\.0\.self_attn\.q_norm\.weight is not part of the "
                                           r"mistral mapping"):
        Transformer.from_hf(tmp_path)


def test_a_config_no_family_expresses_names_the_first_key(tmp_path):
    hf_model("llama", tmp_path / "hf")
    config = Transformer.from_hf(tmp_path / "hf").config.to_dict()
    config["layers"][2] = dict(config["layers"][2], qk_norm_bool=True)
    with pytest.raises(InteropError, match=r"no exact Hugging Face equivalent; gpt2: .*; llama: layers\[2\]\.qk_norm_bool: "
                                           r"true here, but llama can only give false; mistral: "):
        export_hf(Transformer(config), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_import_export_and_their_bad_inputs(tmp_path, capsys):
    from configaformer.cli import main

    reference = hf_model("gemma2", tmp_path / "hf")
    assert main(["import-hf", str(tmp_path / "hf"), str(tmp_path / "ours")]) == 0
    # A run directory: its checkpoint pointer names a model directory, as `configaformer train` leaves it.
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    Transformer.from_pretrained(tmp_path / "ours").save_pretrained(tmp_path / "run" / "checkpoints" / "step-1")
    (tmp_path / "run" / "checkpoints" / "best").write_text("step-1\n")
    assert main(["export-hf", str(tmp_path / "run"), str(tmp_path / "exported")]) == 0
    ids, mask = padded_batch()
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "exported", attn_implementation="eager")
    assert_same_real_logits(hf_logits(back.eval(), ids, mask), hf_logits(reference, ids, mask), mask)
    capsys.readouterr()
    for argv, message in [(["import-hf", str(tmp_path / "run"), str(tmp_path / "x")], "has no config.json"),
                          (["export-hf", str(tmp_path / "ours"), str(tmp_path / "x"), "--family", "gpt2"],
                           "gpt2: max_seq_len: gpt2 has learned positions")]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("configaformer: ") and message in err and err.count("\n") == 1
