"""Mixture of experts (blocks/moe.py, layers/routing.py): one expert is an FFN, routing and gates
match a per-token reference and hand computations, capacity drops the latest assignments,
the balance losses equal their formulas and reach the trainer's gradient, bias balancing evens
the load without touching gradients, and padding, checkpointing, save/load and compile hold."""

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F

import configaformer
from configaformer import ConfigError, Transformer, list_blocks
from configaformer.context import aux_loss
from configaformer.layers.routing import balance_report, dispatch, route
from configaformer.parallel.checkpointing import apply_activation_checkpointing
from configaformer.train import Trainer, load_run_config
from configaformer.train.optim import param_groups

from . import conformance
from .conftest import ATTN, VOCAB, assert_padding_invariant, perturb, tiny

MOE = {"type": "MoE", "num_experts": 4, "top_k": 2, "ff_mult": 1}


def block_model(layer, **model):
    """A one-layer model around `layer`, parameters off their init; (model, its block)."""
    model = perturb(Transformer(tiny([layer], **model)), 0.3)
    return model, model.layers[0].block


def run_block(model, h, padding_mask=None, reports=None):
    """The block alone on h (B, L, D), with the context the model would build."""
    ctx = model.make_context(h.shape[1], h.dtype, padding_mask)
    ctx.reports = reports
    return model.layers[0].block(h, ctx)


def reference(block, h):
    """Per token, the definition: top_k of scores + bias, gates from the scores, the weighted
    sum of the chosen experts' outputs, plus the shared experts (no capacity)."""
    cfg = block.cfg
    out = []
    for x in h.reshape(-1, h.shape[-1]):
        logits = block.router.weight @ x
        s = logits.softmax(-1) if cfg.router_score == "softmax" else logits.sigmoid()
        bias = 0 if block.expert_bias is None else block.expert_bias
        chosen = (s + bias).topk(cfg.top_k).indices
        g = s[chosen] / s[chosen].sum() if cfg.normalize_top_k_bool else s[chosen]
        y = sum(g[j] * block.experts[int(e)](x[None])[0] for j, e in enumerate(chosen))
        out.append(y if block.shared is None else y + block.shared(x[None])[0])
    return torch.stack(out).view_as(h)


def test_moe_is_a_registered_block_the_conformance_suite_checks():
    assert "MoE" in list_blocks()  # so test_blocks.py runs every contract check on its defaults
    for layer in (dict(MOE, num_shared_experts=1, capacity_factor=1.0, router_score="sigmoid",
                       bias_update_rate=0.01, num_projections=2, activation="silu", bias_bool=False),):
        conformance.check_block(layer)


def test_one_expert_and_top_1_is_exactly_an_ffn_with_the_same_weights():
    form = {"ff_mult": 2, "num_projections": 2, "activation": "silu", "bias_bool": True}
    moe = perturb(Transformer(tiny([ATTN, {"type": "MoE", "num_experts": 1, "top_k": 1, **form}])))
    ffn = Transformer(tiny([ATTN, {"type": "FFN", **form}]))
    weights = {k.replace("block.experts.0.", "block."): v for k, v in moe.state_dict().items() if "router" not in k}
    ffn.load_state_dict(weights)
    ids = torch.randint(0, VOCAB, (2, 9))
    for mode in (True, False):
        moe.train(mode), ffn.train(mode)
        torch.testing.assert_close(moe(ids)[0], ffn(ids)[0], rtol=0, atol=0)


def test_routing_on_a_hand_made_router():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0], [0.0, 3.0, 1.0, 0.5]])
    r = route(logits, 2, "softmax", normalize=True)
    assert r.experts.tolist() == [[0, 1], [1, 2]]
    e = math.exp
    torch.testing.assert_close(r.gates, torch.tensor([[e(2) / (e(2) + e(1)), e(1) / (e(2) + e(1))],
                                                      [e(3) / (e(3) + e(1)), e(1) / (e(3) + e(1))]]))
    # sigmoid scores, not normalised; the bias selects (scores + bias: token 0 [0.88, 0.23, 0.5, 0.87],
    # token 1 [0.5, 0.45, 0.73, 1.22]) but the gates are the bare scores
    r = route(logits, 2, "sigmoid", normalize=False, bias=torch.tensor([0.0, -0.5, 0.0, 0.6]))
    assert r.experts.tolist() == [[0, 3], [3, 2]]
    sig = lambda v: 1 / (1 + e(-v))  # noqa: E731
    torch.testing.assert_close(r.gates, torch.tensor([[sig(2), sig(-1)], [sig(0.5), sig(1)]]))


@pytest.mark.parametrize("layer", [MOE, dict(MOE, router_score="sigmoid", normalize_top_k_bool=False),
                                   dict(MOE, num_shared_experts=2, num_projections=2, top_k=3, bias_bool=False),
                                   dict(MOE, bias_update_rate=0.1)])
def test_the_block_equals_the_per_token_definition(layer):
    model, block = block_model(layer)
    if block.expert_bias is not None:
        block.expert_bias.copy_(torch.tensor([0.3, -0.2, 0.0, 0.1]))
    h = torch.randn(2, 5, 32)
    with torch.no_grad():
        torch.testing.assert_close(run_block(model, h), reference(block, h), rtol=1e-4, atol=1e-5)


def test_shared_experts_add_exactly_their_ffn_output():
    model, block = block_model(dict(MOE, num_shared_experts=2))
    routed_only = Transformer(tiny([MOE]))
    routed_only.load_state_dict({k: v for k, v in model.state_dict().items() if ".shared." not in k})
    h = torch.randn(2, 5, 32)
    with torch.no_grad():
        want = run_block(routed_only, h) + block.shared(h.reshape(-1, 32)).view_as(h)
        torch.testing.assert_close(run_block(model, h), want, rtol=0, atol=1e-6)
    assert block.shared.up.out_features == 2 * block.experts[0].up.out_features  # two experts' width


def skewed(layer, batch=1, length=4):
    """Every token's first choice is expert 0 (feature 0 is 1 and the router reads only it)."""
    model, block = block_model(layer)
    with torch.no_grad():
        block.router.weight.zero_()
        block.router.weight[:, 0] = torch.tensor([5.0, 2.0, 1.0, 0.0])[:block.cfg.num_experts]
    h = torch.randn(batch, length, 32)
    h[..., 0] = 1.0
    return model, block, h


def test_capacity_drops_the_latest_assignments_in_training_only_and_reports_the_fraction():
    layer = dict(MOE, num_experts=2, top_k=1, capacity_factor=1.0)  # capacity ceil(1 * 4 * 1 / 2) = 2
    model, block, h = skewed(layer)
    with torch.no_grad():
        full = reference(block, h)
        reports = {}
        y = run_block(model.train(), h, reports=reports)
        torch.testing.assert_close(y[0, :2], full[0, :2], rtol=0, atol=1e-6)  # positions 0, 1 kept
        assert torch.equal(y[0, 2:], torch.zeros_like(y[0, 2:]))  # 2, 3 dropped: only the residual is left
        assert float(reports["layers[0].dropped"].value) == 0.5
        assert reports["layers[0].load"].value.tolist() == [4.0, 0.0]  # the load counts routed assignments
        torch.testing.assert_close(run_block(model.eval(), h), full, rtol=1e-5, atol=1e-6)  # eval never drops
        # left padding moves no one: the same real tokens are kept, and the capacity counts real tokens
        padded = torch.cat([torch.randn(1, 2, 32), h], 1)
        mask = torch.tensor([[False, False, True, True, True, True]])
        reports = {}
        y_pad = run_block(model.train(), padded, mask, reports)
        torch.testing.assert_close(y_pad[mask][None], y, rtol=0, atol=1e-6)
        assert float(reports["layers[0].dropped"].value) == 0.5


def test_dispatch_orders_each_expert_by_position_then_slot_and_cuts_at_capacity():
    experts = torch.tensor([[0, 1], [0, 1], [1, 0]])  # (N=3, k=2)
    plan = dispatch(experts, torch.tensor([0, 1, 2]), None, 2, torch.tensor(2))
    # assignment = slot * 3 + token. Expert 0 is asked by tokens 0, 1 (first choices: 0, 1) and 2
    # (second choice: 5), expert 1 by tokens 0, 1 (second choices: 3, 4) and 2 (first choice: 2):
    # the earliest tokens keep their place, so token 2 loses both
    assert [g.tolist() for g in plan.kept_groups()] == [[0, 1], [3, 4]]
    assert plan.routed.tolist() == [3, 3] and plan.kept.tolist() == [2, 2]
    plan = dispatch(experts, torch.tensor([0, 1, 2]), torch.tensor([True, False, True]), 2, None)
    assert [g.tolist() for g in plan.kept_groups()] == [[0, 5], [3, 2]]  # token 1 is padding: no expert


def test_aux_and_z_loss_equal_the_hand_formulas():
    logits = torch.randn(6, 4)
    valid = torch.tensor([True, True, False, True, True, True])
    r = route(logits, 2, "softmax", normalize=True)
    report = balance_report(r, dispatch(r.experts, torch.arange(6), valid, 4, None), valid)
    real = [i for i in range(6) if valid[i]]
    counts = [sum(int(e) == j for i in real for e in r.experts[i]) for j in range(4)]
    probs = logits.softmax(-1)
    mean_prob = [sum(float(probs[i, j]) for i in real) / len(real) for j in range(4)]
    switch = 4 * sum(counts[j] / (2 * len(real)) * mean_prob[j] for j in range(4))
    assert float(report["aux_loss"]) == pytest.approx(switch, rel=1e-6)
    z = sum(float(torch.logsumexp(logits[i], 0)) ** 2 for i in real) / len(real)
    assert float(report["z_loss"]) == pytest.approx(z, rel=1e-6)
    mean = sum(counts) / 4
    assert float(report["load_max"]) == pytest.approx(max(counts) / mean)
    assert float(report["load_min"]) == pytest.approx(min(counts) / mean)
    std = math.sqrt(sum((c - mean) ** 2 for c in counts) / 4)
    assert float(report["load_cv"]) == pytest.approx(std / mean, rel=1e-6)
    assert float(report["dropped"]) == 0.0


def test_padded_tokens_count_in_no_statistic_and_padding_leaves_training_outputs_unchanged():
    model = perturb(Transformer(tiny([ATTN, dict(MOE, capacity_factor=1.0)]))).train()
    for side in ("left", "right"):
        padded, _ = assert_padding_invariant(model, 7, 3, side, rtol=1e-5, atol=1e-6, batch=2)
    ids = torch.randint(1, VOCAB, (2, 7))
    padded = torch.cat([torch.zeros(2, 3, dtype=torch.long), ids], 1)
    (_,), plain = model(ids, aux=True)
    (_,), with_pad = model(padded, padding_mask=padded != 0, aux=True)
    for key, report in plain.items():
        torch.testing.assert_close(with_pad[key].value, report.value, rtol=1e-5, atol=1e-6, msg=key)


def test_bias_balancing_evens_a_skewed_load_and_never_touches_gradients():
    model, block, h = skewed(dict(MOE, top_k=1, bias_update_rate=0.01, aux_loss_weight=0.0), length=64)
    with torch.no_grad():  # tokens differ, but every one prefers expert 0 by a margin of 1 or more
        block.router.weight[:, 1:] = 0.1 * torch.randn(4, 31)
    cvs = []
    for _ in range(150):
        reports = {}
        with torch.no_grad():
            run_block(model, h, reports=reports)
        cvs.append(float(reports["layers[0].load_cv"].value))
        model.after_step({k: r.value for k, r in reports.items()})
    assert cvs[0] == pytest.approx(math.sqrt(3))  # all 64 tokens on one of 4 experts
    # sign steps of a fixed size end in a small oscillation around balance (here cv 0.2 to 0.8)
    assert sum(cvs[-10:]) / 10 < 0.5 * cvs[0] and min(cvs[-10:]) < 0.3
    # a buffer: no parameter, no gradient, no weight decay; saved with the weights
    assert "layers.0.block.expert_bias" in model.state_dict()
    assert all(p is not block.expert_bias for group in param_groups(model, 0.1) for p in group["params"])
    # the bias only selects: shifting it uniformly changes neither outputs nor gradients
    grads = []
    for shift in (0.0, 3.0):
        shifted = copy.deepcopy(model)
        shifted.layers[0].block.expert_bias.add_(shift)
        y = run_block(shifted, h)
        y.square().sum().backward()
        grads.append((y.detach(), {n: p.grad for n, p in shifted.named_parameters() if p.grad is not None}))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=0, atol=0)
    for name, g in grads[0][1].items():
        torch.testing.assert_close(grads[1][1][name], g, rtol=0, atol=0, msg=name)


def test_a_shared_moe_module_balances_on_the_loads_of_all_its_positions():
    layer = dict(MOE, bias_update_rate=1.0)
    model = Transformer(tiny([layer, dict(layer, share_weights_with=0)]))
    bias = model.layers[0].block.expert_bias
    model.after_step({"layers[0].load": torch.tensor([4.0, 0, 0, 0]), "layers[1].load": torch.tensor([0.0, 0, 0, 4])})
    assert bias.tolist() == [-1.0, 1.0, 1.0, -1.0]  # summed loads [4, 0, 0, 4], mean 2 (one at a time: [0, 2, 2, 0])


def test_parameter_counts_total_and_active():
    layer = dict(MOE, num_shared_experts=1, num_projections=2, bias_bool=False)
    model, block = block_model(layer)
    cfg, layer_cfg = model.config, model.config.layers[0]
    size = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert layer_cfg.block_params(cfg) == size(block)
    active = size(block.router) + size(block.shared) + 2 * size(block.experts[0])
    assert layer_cfg.active_block_params(cfg) == active < size(block)
    assert layer_cfg.block_flops(cfg, 64) == 2 * active


@pytest.mark.parametrize("keys, path", [({"top_k": 5}, "top_k"), ({"num_experts": 0}, "num_experts"),
                                        ({"capacity_factor": 0.0}, "capacity_factor"),
                                        ({"top_k": 4, "bias_update_rate": 0.01}, "bias_update_rate"),
                                        ({"num_gelu": 3}, "num_gelu")])
def test_config_mistakes_name_their_keys(keys, path):
    with pytest.raises(ConfigError, match=rf"layers\[1\]\.{path}"):
        configaformer.resolve_config(tiny([ATTN, dict(MOE, **keys)]))


def test_activation_checkpointing_gives_the_plain_gradients_with_the_aux_losses():
    moe = dict(MOE, capacity_factor=1.25, z_loss_weight=0.1)
    layers = [ATTN, moe, ATTN, dict(moe, share_weights_with=1)]
    plain = perturb(Transformer(tiny(layers))).train()
    checkpointed = copy.deepcopy(plain)
    apply_activation_checkpointing(checkpointed)
    ids = torch.randint(0, VOCAB, (2, 12))
    grads = []
    for model in (plain, checkpointed):
        (logits,), reports = model(ids, aux=True)
        assert {"layers[1].aux_loss", "layers[3].aux_loss", "layers[3].dropped"} <= set(reports)
        (logits.square().mean() + aux_loss(reports)).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=0, atol=1e-7, msg=name)


def test_save_and_load_keep_the_balancing_bias(tmp_path):
    model = perturb(Transformer(tiny([ATTN, dict(MOE, bias_update_rate=0.01)]))).eval()
    model.layers[1].block.expert_bias.copy_(torch.tensor([0.5, -0.25, 0.0, 1.0]))
    model.save_pretrained(tmp_path / "m")
    loaded = Transformer.from_pretrained(tmp_path / "m").eval()
    assert torch.equal(loaded.layers[1].block.expert_bias, model.layers[1].block.expert_bias)
    ids = torch.randint(0, VOCAB, (2, 8))
    torch.testing.assert_close(loaded(ids)[0], model(ids)[0], rtol=0, atol=0)


@pytest.mark.parametrize("training", [False, True])
def test_fullgraph_compile_gives_the_eager_outputs_and_reports(training):
    model = perturb(Transformer(tiny([ATTN, dict(MOE, capacity_factor=1.0, bias_update_rate=0.01)]))).train(training)
    compiled = torch.compile(model, backend="aot_eager" if training else "eager", fullgraph=True)
    for length in (8, 11):  # new group sizes and a new length: no graph break either time
        ids = torch.randint(0, VOCAB, (2, length))
        (want,), want_reports = model(ids, aux=True)
        (got,), got_reports = compiled(ids, aux=True)
        torch.testing.assert_close(got, want)
        for key, report in want_reports.items():
            torch.testing.assert_close(got_reports[key].value, report.value, msg=key)


def trainer_run(data, out, **train):
    model = {"dim_model": 32, "vocab_size": 258, "dim_rope": 8, "classifiers": [{"num_classes": 258}],
             "layers": [{"type": "Attention", "num_heads": 4},
                        {"type": "MoE", "num_experts": 4, "top_k": 2, "ff_mult": 1, "capacity_factor": 1.0,
                         "aux_loss_weight": 0.5, "z_loss_weight": 0.1, "bias_update_rate": 0.01}]}
    settings = {"batch_size": 2, "seq_len": 16, "max_steps": 2, "eval_interval": 2, "eval_batches": 1,
                "log_interval": 1, "progress": False, "num_threads": 1, **train}
    return load_run_config({"model": model, "data": {"path": str(data)}, "train": settings, "out_dir": str(out),
                            "sample": {"max_new_tokens": 0}})


def test_the_trainer_adds_the_weighted_aux_losses_to_the_loss_and_gradient(stdlib_data, tmp_path):
    trainer = Trainer(trainer_run(stdlib_data, tmp_path / "r"))
    model = trainer.model.train()
    ex = trainer.example(next(trainer.loader), 0)

    def grads(part):
        model.zero_grad(set_to_none=True)
        total, heads, reports = trainer.losses(model, ex)
        {"total": total, "heads": heads[0], "aux": aux_loss(reports)}[part].backward()
        return total, heads, reports, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    total, heads, reports, g_total = grads("total")
    hand = 0.5 * reports["layers[1].aux_loss"].value + 0.1 * reports["layers[1].z_loss"].value
    torch.testing.assert_close(total - heads[0], hand)
    *_, g_heads = grads("heads")
    *_, g_aux = grads("aux")
    router = "layers.1.block.router.weight"
    assert g_aux[router].abs().sum() > 0  # the balance losses read the router (and what feeds it), no expert
    assert not any(".experts." in name or name.startswith("heads.") for name in g_aux)
    for name, g in g_total.items():
        torch.testing.assert_close(g, g_heads[name] + g_aux.get(name, 0), rtol=1e-5, atol=1e-8, msg=name)
    trainer.close()


def test_training_logs_the_reports_per_layer_and_balances_after_each_step(stdlib_data, tmp_path):
    trainer = Trainer(trainer_run(stdlib_data, tmp_path / "r", grad_accum=2))
    bias = trainer.model.layers[1].block.expert_bias
    trainer.fit()
    trainer.close()
    records = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert len(train) == 2
    for record in train:
        assert {"layers[1].aux_loss", "layers[1].z_loss", "layers[1].dropped", "layers[1].load_cv",
                "layers[1].load_max", "layers[1].load_min"} <= set(record)
        assert "layers[1].load" not in record  # vectors are not logged
        assert 0 <= record["layers[1].dropped"] < 1 and record["layers[1].aux_loss"] >= 1 - 1e-6
    # two updates of +-0.01 per expert: each bias entry moved by a multiple of 0.01 up to 0.02
    assert bias.abs().max() > 0 and torch.allclose(bias / 0.01, (bias / 0.01).round(), atol=1e-4)
    assert float(bias.abs().max()) <= 0.02 + 1e-6


def test_moe_preset_is_a_small_deepseek_style_model():
    from configaformer.presets import preset_path

    cfg = configaformer.resolve_config(preset_path("moe"))
    moe = [layer for layer in cfg.layers if layer.type == "MoE"]
    assert moe and all(layer.num_shared_experts >= 1 and layer.bias_update_rate > 0 for layer in moe)
    assert cfg.layers[1].type == "FFN" and cfg.layers[0].type == "Attention"  # the first FFN dense, as DeepSeek's
    assert sum(layer.active_block_params(cfg) for layer in moe) < sum(layer.block_params(cfg) for layer in moe)


def test_gelu_form_keys_have_the_ffn_meaning():
    """The expert form reuses FFN's keys: an expert's up-projection is the FFN's at equal keys."""
    form = {"ff_mult": 1.5, "num_projections": 3, "num_gelu": 2, "activation": "squared_relu", "bias_bool": False}
    moe = Transformer(tiny([{"type": "MoE", **form}])).layers[0].block.experts[0]
    ffn = Transformer(tiny([{"type": "FFN", **form}])).layers[0].block
    assert moe.up.weight.shape == ffn.up.weight.shape and moe.up.bias is None
    x = torch.randn(3, 32)
    moe.load_state_dict({k: v for k, v in ffn.state_dict().items()})
    torch.testing.assert_close(moe(x), ffn.out_proj(ffn.glu_hidden(x)), rtol=0, atol=0)


def test_mixed_precision_keeps_the_router_in_float32_and_matches_float32():
    model = perturb(Transformer(tiny([ATTN, dict(MOE, num_shared_experts=1, capacity_factor=2.0)]))).train()
    ids = torch.randint(0, VOCAB, (2, 9))
    (want,), _ = model(ids, targets=ids, aux=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the experts run in bf16, the router in float32
        (got,), reports = model(ids, targets=ids, aux=True)
    assert all(r.value.dtype == torch.float32 for r in reports.values())
    torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2)
    (got + aux_loss(reports)).backward()
    assert torch.isfinite(model.layers[1].block.router.weight.grad).all()


def test_a_resumed_run_continues_with_the_saved_bias_exactly(stdlib_data, tmp_path):
    from configaformer.train import train

    def run(out, steps, resume=False):
        config = trainer_run(stdlib_data, out, max_steps=steps, schedule="constant", warmup_steps=0, eval_interval=2)
        summary = train(config, resume=resume)
        return Transformer.from_pretrained(summary.checkpoint).layers[1].block.expert_bias

    straight = run(tmp_path / "a", 4)
    run(tmp_path / "b", 2)
    resumed = run(tmp_path / "b", 4, resume=True)
    assert straight.abs().max() > 0 and torch.equal(resumed, straight)
    losses = [{r["step"]: r["loss"] for r in map(json.loads, (tmp_path / d / "metrics.jsonl").read_text().splitlines())
               if r["kind"] == "train"} for d in ("a", "b")]
    assert losses[0] == losses[1]
