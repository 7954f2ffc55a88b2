"""The saved-model format (configaformer.weights): one writer for Transformer.save_pretrained and
the engines' gathered weights, each shared tensor stored once, older files still loading."""

import json

import torch
from safetensors import safe_open
from safetensors.torch import save_model

from configaformer import Transformer
from configaformer.parallel.base import FullWeights
from configaformer.weights import alias_groups

from .conftest import ATTN, FFN, VOCAB, tiny

# A tied head, and layers 10 and 11 running the modules of 2 and 3: "layers.10..." sorts before
# "layers.2...", so the first name in state-dict order and the alphabetically first one differ.
SHARED = tiny([ATTN, FFN] * 5 + [dict(ATTN, share_weights_with=2), dict(FFN, share_weights_with=3)],
              classifiers=[{"num_classes": VOCAB, "head_type": "tied"}, 3])


def same_model(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert b.heads[0].out.weight is b.embedding.weight and b.layers[10] is b.layers[2]


def test_save_pretrained_and_gathered_weights_write_the_same_bytes(tmp_path):
    model = Transformer(SHARED)
    model.save_pretrained(tmp_path / "model")
    FullWeights(model.config, model.state_dict(), alias_groups(model)).save_pretrained(tmp_path / "gathered")
    for name in ("model.safetensors", "config.json"):
        assert (tmp_path / "model" / name).read_bytes() == (tmp_path / "gathered" / name).read_bytes()
    with safe_open(str(tmp_path / "model" / "model.safetensors"), "pt") as f:
        stored, metadata = list(f.keys()), f.metadata()
    assert sorted(stored) == sorted(names[0] for names in alias_groups(model)) and metadata == {"format": "pt"}
    assert "layers.2.block.qkv.weight" in stored and "layers.10.block.qkv.weight" not in stored
    for directory in ("model", "gathered"):
        same_model(model, Transformer.from_pretrained(tmp_path / directory))


def test_files_written_by_safetensors_save_model_still_load(tmp_path):
    """What save_pretrained wrote before: save_model's choice of names and its alias metadata."""
    model = Transformer(SHARED)
    (tmp_path / "old").mkdir()
    save_model(model, str(tmp_path / "old" / "model.safetensors"))
    (tmp_path / "old" / "config.json").write_text(json.dumps(model.config.to_dict()))
    with safe_open(str(tmp_path / "old" / "model.safetensors"), "pt") as f:
        assert "layers.10.block.qkv.weight" in f.keys()  # the alphabetically first name of its group
    same_model(model, Transformer.from_pretrained(tmp_path / "old"))
