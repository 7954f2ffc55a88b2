"""The block contract (docs/blocks.md) as checks on a layer dict. `tests/test_blocks.py` runs
them over every registered block, `tests/test_readme.py` over the README's example, and
`test_blocks.py` proves that they catch a block that breaks the contract.

What a block declares, read here and nowhere else: its config's `causal_key` (both settings are
checked), `declared_causal()`, the block's `padding_sides` and `reads_context`."""

from __future__ import annotations

import copy

import torch

import configaformer
from configaformer.registry import get_block

from .conftest import VOCAB, assert_causal, assert_padding_invariant, cached_logits, perturb, tiny

CHUNKS = [1, 4, 1, 3, 2, 1]  # a 12-token prompt fed through the cache in chunks of mixed sizes
BATCH = 2


def settings(name: str) -> list[dict]:
    """The layer dicts to check: the block's defaults and, for a layer type with a causal flag,
    each setting of it."""
    key = get_block(name).config_cls.causal_key
    if key is None:
        return [{"type": name}]
    out = []
    for causal in (True, False):
        layer: dict = {"type": name}
        *parents, last = key.split(".")
        inner = layer
        for part in parents:
            inner = inner.setdefault(part, {})
        inner[last] = causal
        out.append(layer)
    return out


def build(layer: dict) -> configaformer.Transformer:
    """Two such layers in a tiny model, every parameter moved off its init."""
    return perturb(configaformer.Transformer(tiny([layer, layer], max_seq_len=32)).eval())


def model_inputs(model: configaformer.Transformer) -> dict:
    """Arguments besides the ids: a context for blocks that read one (`reads_context`)."""
    for layer in model.config.layers:
        if get_block(layer.type).block_cls.reads_context:
            return {"context": torch.randn(BATCH, 5, getattr(layer, "dim_context", model.config.dim_model))}
    return {}


def check_cache(model, **inputs) -> None:
    """Decoding through a DecodeCache in chunks of mixed sizes equals the full forward."""
    ids = torch.randint(0, VOCAB, (BATCH, sum(CHUNKS)))
    with torch.no_grad():
        full = model(ids, **inputs)[0]
        torch.testing.assert_close(cached_logits(model, ids, CHUNKS, **inputs), full, rtol=1e-4, atol=1e-4)


def check_causal(model, **inputs) -> None:
    with torch.no_grad():
        assert_causal(model, batch=BATCH, **inputs)


def check_sees_the_future(model, **inputs) -> None:
    """A layer declared bidirectional does look ahead (so its causal flag is the real one)."""
    ids = torch.randint(0, VOCAB, (BATCH, 12))
    changed = ids.clone()
    changed[:, -1] = (changed[:, -1] + 1) % VOCAB
    with torch.no_grad():
        assert not torch.allclose(model(ids, **inputs)[0][:, :-1], model(changed, **inputs)[0][:, :-1])


def check_padding(model, sides, **inputs) -> None:
    """Padding on each side in `sides` (with the mask) leaves real tokens' outputs unchanged."""
    with torch.no_grad():
        for side in sides:
            assert_padding_invariant(model, 7, 4, side, rtol=1e-4, atol=1e-4, batch=BATCH, **inputs)


def check_reset(model) -> None:
    """`reset_parameters()` reaches every parameter: after perturbing them all, a reset equals a
    reset of an unperturbed copy from the same random state."""
    fresh = copy.deepcopy(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    for m in (model, fresh):
        torch.manual_seed(1)
        m.reset_parameters()
    for (name, a), b in zip(model.named_parameters(), fresh.parameters()):
        assert torch.equal(a, b), f"reset_parameters() does not reach {name}"


def check_block(layer: dict) -> None:
    """Every contract check that applies to this layer dict."""
    model = build(layer)
    inputs = model_inputs(model)
    causal = model.config.layers[0].declared_causal()
    if causal is False:
        check_sees_the_future(model, **inputs)
    else:  # True, or None: a layer without a flag must not mix in later positions either
        check_causal(model, **inputs)
        check_cache(model, **inputs)
    check_padding(model, get_block(layer["type"]).block_cls.padding_sides, **inputs)
    check_reset(model)
