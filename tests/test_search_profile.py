"""configaformer profile (search/profile.py): static figures against hand counts, the attention
paths and their reasons, measured figures from fresh processes, and the command end to end."""

from __future__ import annotations

import json

import pytest

from configaformer.cli import main
from configaformer.flops import count_flops
from configaformer.search.profile import Job, load_target, measure_in_subprocess, profile, profile_static

DIM, VOCAB = 32, 64


def model(layers, **extra) -> dict:
    return {"dim_model": DIM, "vocab_size": VOCAB, "classifiers": [VOCAB], "layers": layers, **extra}


def attn(**keys) -> dict:
    return {"type": "Attention", "num_heads": 4, **keys}


def test_kv_bytes_per_token_are_keys_and_values_of_every_attention_layer():
    # fp32: 4 bytes x (k + v) x kv heads x head size, per attention layer; GQA stores only its groups
    cfg = model([attn(), {"type": "FFN"}, attn(num_kv_heads=2), {"type": "FFN"}])
    dim_head = DIM // 4
    assert profile_static(cfg, 64)["kv_bytes_per_token"] == 4 * 2 * dim_head * (4 + 2)


def test_fixed_size_decode_state_is_not_counted_per_token():
    # a token shift keeps one position whatever the length: it adds nothing per token
    plain = profile_static(model([attn(), {"type": "FFN"}]), 64)["kv_bytes_per_token"]
    shifted = profile_static(model([attn(), {"type": "FFN", "token_shift_config": [{"features": 16, "shift": 0}, {"features": 16, "shift": 1}]}]), 64)["kv_bytes_per_token"]
    assert shifted == plain


def test_a_bidirectional_model_has_no_kv_cache_and_no_inference_figures():
    cfg = model([attn(causal_mask_bool=False), {"type": "FFN"}])
    row = profile(load_target_dict(cfg), measured=False)
    assert row["kv_bytes_per_token"] is None


def load_target_dict(cfg, batch=2, seq_len=16):
    from configaformer.search.profile import Target

    return Target("tiny", cfg, batch, seq_len, threads=1)


def test_parameters_by_block_type_add_up_to_the_layers():
    cfg = model([attn(), {"type": "FFN"}, {"type": "gMLP"}, {"type": "FFN", "ff_mult": 2}],
                max_seq_len=32)
    params = profile_static(cfg, 32)["params"]
    from configaformer.model import Transformer

    built = Transformer(cfg)
    for kind in ("Attention", "FFN", "gMLP"):
        expected = sum(p.numel() for layer, c in zip(built.layers, built.config.layers) if c.type == kind
                       for p in layer.parameters())
        assert params["by_type"][kind] == expected
    assert params["total"] == built.num_parameters()
    assert params["non_embedding"] == params["total"] - VOCAB * DIM


def test_flops_are_the_analytic_count():
    cfg = model([attn(), {"type": "FFN"}])
    flops = profile_static(cfg, 48)["flops_per_token"]
    count = count_flops(cfg, 48)
    assert (flops["forward"], flops["train_step"], flops["layers"]) == (count.forward, count.train_step,
                                                                         list(count.layers))


def test_attention_paths_say_which_layers_leave_the_fused_kernel_and_why():
    cfg = model([attn(), attn(previous_attention_bool=True), attn(talking_heads_bool=True), attn(),
                 attn(residual_attention_bool=True), attn(logit_softcap=30.0)])
    paths = profile_static(cfg, 16)["attention"]
    assert [p["path"] for p in paths] == ["explicit", "reuses a map", "explicit", "explicit", "fused", "explicit"]
    assert "reads its attention map" in paths[0]["reasons"][0]
    assert "talking_heads_bool" in paths[2]["reasons"][0]
    assert "residual attention" in paths[3]["reasons"][0]  # layer 4 adds layer 3's scores to its own (fused, as a bias)
    assert any("logit_softcap" in r for r in paths[5]["reasons"])
    fused = profile_static(model([attn(), {"type": "FFN"}, attn()]), 16)["attention"]
    assert [(p["path"], p["reasons"]) for p in fused] == [("fused", []), ("fused", [])]
    forced = profile_static(model([attn()], attention_impl="explicit"), 16)["attention"]
    assert forced[0]["reasons"] == ["the model's attention_impl is explicit"]


def test_attention_inside_a_parallel_layer_is_listed():
    cfg = model([{"type": "Parallel", "attention": {"num_heads": 4}, "ffn": {"ff_mult": 2}}])
    paths = profile_static(cfg, 16)["attention"]
    assert len(paths) == 1 and paths[0]["layer"].startswith("layers[0]") and paths[0]["path"] == "fused"


def test_measured_rates_are_medians_within_their_spread():
    cfg = model([attn(), {"type": "FFN"}])
    train = measure_in_subprocess(Job("train", cfg, 2, 16, threads=1, repeats=3))
    infer = measure_in_subprocess(Job("inference", cfg, 2, 16, threads=1, repeats=3, decode_tokens=4))
    for rates in (train["tokens_per_s"], infer["prefill_tokens_per_s"], infer["decode_tokens_per_s"]):
        assert 0 < rates["min"] <= rates["median"] <= rates["max"] and rates["repeats"] == 3
    assert train["peak_mib"] >= 0 and infer["peak_mib"] >= 0


def test_training_peak_memory_grows_with_the_batch():
    # activations of 64 x 128 tokens through 4 layers are tens of MiB; of 2 x 128, about one
    cfg = model([attn(), {"type": "FFN"}] * 2, max_seq_len=128)
    small = measure_in_subprocess(Job("train", cfg, 2, 128, threads=1, repeats=1, warmup=0))["peak_mib"]
    large = measure_in_subprocess(Job("train", cfg, 64, 128, threads=1, repeats=1, warmup=0))["peak_mib"]
    assert large > small + 20


def test_a_run_file_gives_its_model_batch_seq_len_and_threads(tmp_path):
    cfg = model([attn(), {"type": "FFN"}])
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"model": cfg, "data": {"path": "nowhere"},
                                "train": {"batch_size": 3, "seq_len": 24, "num_threads": 1, "lr": 0.01}}))
    target = load_target(str(path))
    assert (target.model, target.batch, target.seq_len, target.threads, target.lr) == (cfg, 3, 24, 1, 0.01)
    assert (load_target(str(path), batch=5).batch, load_target(str(path), seq_len=8).seq_len) == (5, 8)
    assert load_target("stdlib").seq_len == 256  # a named run
    assert load_target("seed").batch == 8  # a preset: the defaults


def test_the_command_writes_a_table_json_and_a_comparison_plot(tmp_path, capsys):
    deep = tmp_path / ("a-directory-with-a-long-name-" * 4)
    deep.mkdir()
    a, b = deep / "a.json", deep / "b.json"
    a.write_text(json.dumps(model([attn(), {"type": "FFN"}])))
    b.write_text(json.dumps(model([attn(num_kv_heads=1), {"type": "FFN"}, attn(), {"type": "FFN"}])))
    out, png = tmp_path / "p.json", tmp_path / "p.png"
    argv = ["profile", str(a), str(b), "--batch", "2", "--seq-len", "16", "--threads", "1", "--repeats", "1",
            "--decode-tokens", "2", "--json", str(out), "--png", str(png)]
    assert main(argv) == 0
    rows = json.loads(out.read_text())
    assert [r["config"] for r in rows] == [str(a), str(b)]
    assert rows[1]["params"]["total"] > rows[0]["params"]["total"]
    assert all(r["train"]["tokens_per_s"]["median"] > 0 and r["inference"]["decode_tokens_per_s"]["median"] > 0
               for r in rows)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = capsys.readouterr().out
    assert "train tok/s" in text and "decode tok/s" in text


def test_static_profile_measures_nothing(tmp_path, capsys):
    out = tmp_path / "p.json"
    assert main(["profile", "llama", "--static", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())
    assert "train" not in row and "inference" not in row and row["flops_per_token"]["forward"] > 0
    assert "train tok/s" not in capsys.readouterr().out


@pytest.mark.parametrize("bad", [{"dim_model": 30}, {"layers": [attn(num_heads=5)]}])
def test_a_bad_config_is_named_with_its_key_before_anything_runs(tmp_path, capsys, bad):
    good, wrong = tmp_path / "good.json", tmp_path / "wrong.json"
    good.write_text(json.dumps(model([attn()])))
    wrong.write_text(json.dumps({**model([attn()]), **bad}))
    assert main(["profile", str(good), str(wrong), "--repeats", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "wrong.json" in err and "good.json" not in err
