"""The benchmark suite (`python -m benchmarks`) runs end to end at tiny sizes, and its hand-written
baseline is honest: the same parameters and logits as configaformer's model of the same
architecture, and cached decoding equal to recomputation.

Only configaformer and the hand-written GPT run (`--no-xt`), so no optional dependency is needed.
"""

from __future__ import annotations

import json

import pytest
import torch

import configaformer
from benchmarks import suite
from benchmarks.archs import ARCH_NAMES, TINY, configaformer_config, gpt_config, train_step_flops
from benchmarks.bench_train_step import main as train_step_main
from benchmarks.handwritten import GPT, copy_weights


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models on a busy 2-core machine run several times slower on 2 threads (each op waits
    for the other core), so these tests run on one; the process-wide setting is restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield ["--threads", "1"]  # for the suite and its memory subprocesses
    torch.set_num_threads(threads)


def test_suite_runs_tiny(tmp_path, one_thread):
    results = suite.main(["--tiny", "--no-xt", "--no-memory", "--out", str(tmp_path), *one_thread])
    assert list(results["archs"]) == list(ARCH_NAMES)
    for arch, res in results["archs"].items():
        impls = res["impls"]
        assert set(impls) == {"configaformer", "hand-written", "configaformer (no cache)"}
        for name in ("configaformer", "hand-written"):
            for metric in ("train", "forward", "generate"):
                assert impls[name][metric]["tokens_per_s"]["median"] > 0, (arch, name, metric)
            assert 0 < impls[name]["train"]["matmul_fraction"]["median"]
        # the hand-written model is the same size and gives logits of the same shape
        assert impls["configaformer"]["params"] == impls["hand-written"]["params"]
        assert impls["configaformer"]["logits_shape"] == impls["hand-written"]["logits_shape"] == [
            TINY.batch, TINY.seq_len, TINY.vocab]
        assert impls["configaformer"]["generate"]["equals_no_cache"] is True
        ratios = res["ratios"]["configaformer / hand-written"]
        assert set(ratios) == {"train", "forward", "generate"} and ratios["train"]["median"] > 0
        assert res["model_flops_per_train_step"] == train_step_flops(gpt_config(arch, TINY), TINY.batch, TINY.seq_len)
    assert json.loads((tmp_path / "results.json").read_text())["archs"]["gpt2"]["impls"]["hand-written"]["params"] > 0
    table = (tmp_path / "results.md").read_text()
    assert "| gpt2 | configaformer |" in table and "| llama | configaformer / hand-written |" in table


def test_train_step_command_measures_memory(tmp_path, one_thread):
    """The earlier command (`benchmarks/bench_train_step.py`) still works; peak memory in subprocesses."""
    out = tmp_path / "train_step.json"
    results = train_step_main(["--tiny", "--no-xt", "--out", str(tmp_path), "--json", str(out), *one_thread])
    impls = results["archs"]["gpt2"]["impls"]
    assert set(impls) == {"configaformer", "hand-written"} and "forward" not in impls["configaformer"]
    for name in impls:
        memory = impls[name]["memory"]["train"]
        assert memory["increase_mib"] >= 0 and memory["peak_after_mib"] > 0
    assert json.loads(out.read_text())["archs"]["gpt2"]["ratios"]["configaformer / hand-written"]["train_memory"] > 0


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_handwritten_equals_configaformer(arch):
    """With configaformer's weights copied in, the hand-written model computes the same logits and
    decodes the same tokens: it is the same architecture, not a cheaper one."""
    c = gpt_config(arch, TINY)
    model = configaformer.Transformer(configaformer_config(c))
    hand = GPT(c)
    assert model.num_parameters() == sum(p.numel() for p in hand.parameters())
    copy_weights(model, hand)
    ids = torch.randint(0, c.vocab_size, (2, 11))
    torch.testing.assert_close(hand(ids), model(ids)[0], rtol=1e-5, atol=1e-5)
    prompt = ids[:1, :3]
    assert torch.equal(hand.generate(prompt, 8), model.generate(prompt, 8, temperature=0))


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_handwritten_cached_generation_equals_recomputation(arch):
    c = gpt_config(arch, TINY)
    hand = GPT(c)
    for p in hand.parameters():  # larger weights than the init, so greedy choices are far from ties
        p.data.normal_(0.0, 0.5)
    prompt = torch.randint(0, c.vocab_size, (2, 5))
    cached = hand.generate(prompt, 10)
    assert cached.shape == (2, 15) and torch.equal(cached[:, :5], prompt)
    assert torch.equal(cached, hand.generate(prompt, 10, use_cache=False))
    # and the cache's logits equal a full forward's, chunk by chunk
    from benchmarks.handwritten import KVCache

    tokens = cached
    cache = KVCache(tokens.shape[1])
    chunks = [hand(tokens[:, a:b], cache) for a, b in ((0, 4), (4, 5), (5, 9), (9, 15))]
    torch.testing.assert_close(torch.cat(chunks, dim=1), hand(tokens), rtol=1e-4, atol=1e-4)


def test_train_loss_bench_times_the_trainers_step_both_ways(stdlib_data, tmp_path, one_thread):
    """benchmarks/bench_train_loss.py runs tiny; both sides are the same model on the same batch."""
    from benchmarks.bench_train_loss import main as train_loss_main

    out = tmp_path / "train_loss.json"
    results = train_loss_main(["--tiny", "--vocabs", "512", "--batch", "2", "--seq-len", "16", "--repeats", "2",
                               "--data", str(stdlib_data), "--json", str(out), *one_thread])
    row = results["vocabs"]["512"]
    assert set(row) == {"chunked", "full logits"}
    for side in row.values():
        assert side["tokens_per_s"]["median"] > 0 and len(side["tokens_per_s"]["samples"]) == 2
        assert side["peak_increase_mib"] >= 0
    assert row["chunked"]["first_step_loss"] == pytest.approx(row["full logits"]["first_step_loss"], rel=1e-5)
    assert json.loads(out.read_text())["vocabs"]["512"]["chunked"]["first_step_loss"] > 0


def test_moe_bench_times_both_layers_with_equal_active_expert_weights(tmp_path, one_thread):
    """benchmarks/bench_moe.py runs tiny; the dense FFN has the MoE's active parameters less its router."""
    from benchmarks.bench_moe import main as moe_main

    out = tmp_path / "moe.json"
    results = moe_main(["--batch", "1", "--seq-len", "8", "--repeats", "2", "--warmup", "1", "--json", str(out),
                        *one_thread])
    rows = results["sides"]
    assert rows["MoE"]["active_params"] - rows["dense FFN"]["active_params"] == 256 * 16  # the router
    assert rows["MoE"]["params"] > rows["MoE"]["active_params"]
    for row in rows.values():
        assert len(row["train_tokens_per_s"]["samples"]) == 2 and row["train_peak_increase_mib"] >= 0
    assert rows["dense FFN"]["train_ratio_to_dense"]["median"] == 1.0
    assert json.loads(out.read_text())["sides"].keys() == rows.keys()
