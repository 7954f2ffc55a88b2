"""Cross-attention layers and encoder-decoder models."""

import pytest
import torch

import configaformer
from configaformer import ConfigError, EncoderDecoder

from .conftest import ATTN, FFN, VOCAB, tiny

CROSS = {"type": "CrossAttention", "num_heads": 4}


def encdec(**decoder_keys):
    encoder = tiny([dict(ATTN, causal_mask_bool=False), FFN])
    encoder.pop("classifiers")
    decoder = tiny([ATTN, dict(CROSS, **decoder_keys), FFN])
    return EncoderDecoder({"encoder": encoder, "decoder": decoder}).eval()


def test_decoder_reads_the_encoder_and_stays_causal():
    model = encdec()
    src, tgt = torch.randint(0, VOCAB, (2, 7)), torch.randint(0, VOCAB, (2, 9))
    (logits,) = model(src, tgt)
    changed_src = src.clone()
    changed_src[:, -1] = (src[:, -1] + 1) % VOCAB
    assert not torch.allclose(model(changed_src, tgt)[0][:, 0], logits[:, 0])  # every target sees all sources
    changed_tgt = tgt.clone()
    changed_tgt[:, 5:] = (tgt[:, 5:] + 1) % VOCAB
    torch.testing.assert_close(model(src, changed_tgt)[0][:, :5], logits[:, :5])


def test_padded_source_tokens_are_ignored():
    model = encdec()
    src, tgt = torch.randint(1, VOCAB, (1, 5)), torch.randint(0, VOCAB, (1, 4))
    padded = torch.cat([src, torch.zeros(1, 3, dtype=torch.long)], 1)
    torch.testing.assert_close(model(padded, tgt, src_padding_mask=padded != 0)[0], model(src, tgt)[0],
                               rtol=1e-5, atol=1e-5)


def test_cross_attention_with_gqa_and_its_own_context_width():
    layers = [dict(CROSS, num_kv_heads=2, dim_context=12, qk_norm_bool=True), FFN]
    model = configaformer.Transformer(tiny(layers)).eval()
    assert model(torch.randint(0, VOCAB, (2, 3)), context=torch.randn(2, 4, 12))[0].shape == (2, 3, VOCAB)
    with pytest.raises(ValueError, match="pass the sequence it attends to"):
        model(torch.randint(0, VOCAB, (2, 3)))
    with pytest.raises(ValueError, match="dim_context=12"):
        model(torch.randint(0, VOCAB, (2, 3)), context=torch.randn(2, 4, 32))


def test_encoder_decoder_generate_save_and_load(tmp_path):
    model = encdec()
    src, prompt = torch.randint(0, VOCAB, (2, 6)), torch.randint(0, VOCAB, (2, 2))
    out = model.generate(src, prompt, 5, temperature=0)
    assert torch.equal(out, model.generate(src, prompt, 5, temperature=0, use_cache=False))
    model.save_pretrained(tmp_path / "ed")
    loaded = EncoderDecoder.from_pretrained(tmp_path / "ed").eval()
    assert torch.equal(loaded(src, prompt)[0], model(src, prompt)[0])
    assert loaded.config_dict() == model.config_dict()


def test_encoder_decoder_config_errors_name_their_half():
    encoder = tiny([dict(ATTN, num_heads=5)])
    with pytest.raises(ConfigError) as info:
        EncoderDecoder({"encoder": encoder, "decoder": tiny([ATTN])})
    paths = {p.path for p in info.value.problems}
    assert paths == {"encoder.layers[0].num_heads", "decoder.layers"}
    with pytest.raises(ConfigError, match=r"decoder.layers\[0\].dim_context"):
        EncoderDecoder({"encoder": tiny([ATTN], dim_model=16, dim_rope=0), "decoder": tiny([CROSS])})
    with pytest.raises(ConfigError, match="exactly the keys"):
        EncoderDecoder({"encoder": tiny([ATTN])})


def test_model_without_heads_is_a_trunk():
    model = configaformer.Transformer(tiny([ATTN], classifiers=[]))
    ids = torch.randint(0, VOCAB, (1, 4))
    assert model(ids) == () and model.forward_features(ids).shape == (1, 4, 32)


def test_encoder_decoder_compiles_without_graph_breaks():
    model = encdec()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    src, tgt = torch.randint(1, VOCAB, (2, 6)), torch.randint(0, VOCAB, (2, 5))
    src_mask = torch.ones_like(src, dtype=torch.bool)
    src_mask[0, -2:] = False
    with torch.no_grad():
        torch.testing.assert_close(compiled(src, tgt, src_padding_mask=src_mask)[0],
                                   model(src, tgt, src_padding_mask=src_mask)[0])


def test_cross_attention_layers_with_different_context_widths_are_a_config_error_naming_both():
    with pytest.raises(ConfigError) as info:
        configaformer.Transformer(tiny([dict(CROSS, dim_context=12), {"type": "Nope"}, FFN,
                                        dict(CROSS, dim_context=12), dict(CROSS, dim_context=8)]))
    problems = {p.path: p.message for p in info.value.problems}
    assert set(problems) == {"layers[1].type", "layers[4].dim_context"}
    assert "layers[0].dim_context is 12" in problems["layers[4].dim_context"]
    same = configaformer.Transformer(tiny([dict(CROSS, dim_context=12), dict(CROSS, dim_context=12)]))
    assert same(torch.randint(0, VOCAB, (2, 3)), context=torch.randn(2, 4, 12))[0].shape == (2, 3, VOCAB)
