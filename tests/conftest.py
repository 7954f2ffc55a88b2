import pytest
import torch

from configaformer import registry
from configaformer.data import PrepareOptions, prepare
from configaformer.generation import DecodeCache

VOCAB = 50


def tiny(layers, **model):
    """A small model config: width 32, vocab 50, one LM head unless told otherwise."""
    config = {"dim_model": 32, "vocab_size": VOCAB, "dim_rope": 4, "classifiers": [VOCAB], "layers": layers}
    config.update(model)
    return config


ATTN = {"type": "Attention", "num_heads": 4}
FFN = {"type": "FFN", "ff_mult": 2}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
    # Dynamo keeps compiled code per code object across tests: every new model compiled in one
    # worker adds a recompilation of Transformer.forward, and the ninth fails under fullgraph=True.
    torch._dynamo.reset()


@pytest.fixture
def scratch_registry(monkeypatch):
    """Blocks registered in the test are gone after it."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def perturb(model, scale: float = 0.1):
    """Move every parameter off its init: identity-like inits (a conv's single tap, an identity
    head mix, gMLP's near-zero spatial weight) would hide a wrong cache or a leak. Returns model."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)
    return model


def assert_causal(model, length: int = 12, cut: int = 7, batch: int = 2, **inputs):
    """Changing the tokens from position `cut` on leaves every earlier logit unchanged, and does
    change later ones (so the check is not vacuous). `inputs`: more model arguments (context)."""
    ids = torch.randint(0, model.config.vocab_size, (batch, length))
    changed = ids.clone()
    changed[:, cut:] = torch.randint(0, model.config.vocab_size, (batch, length - cut))
    (a,), (b,) = model(ids, **inputs)[:1], model(changed, **inputs)[:1]
    torch.testing.assert_close(a[:, :cut], b[:, :cut], rtol=0, atol=1e-6)
    assert not torch.allclose(a[:, cut:], b[:, cut:])


def assert_padding_invariant(model, length: int, pad: int, side: str, rtol: float = 1e-5, atol: float = 1e-5,
                             batch: int = 1, **inputs):
    """Padding `length` real tokens with `pad` pad tokens (id 0) on `side`, with the padding mask,
    leaves the real tokens' logits as without padding. Returns (padded ids, logits with padding)."""
    ids = torch.randint(1, model.config.vocab_size, (batch, length))
    zeros = torch.zeros(batch, pad, dtype=torch.long)
    padded = torch.cat([ids, zeros] if side == "right" else [zeros, ids], dim=1)
    mask = padded != 0
    (plain,) = model(ids, **inputs)[:1]
    (with_pad,) = model(padded, padding_mask=mask, **inputs)[:1]
    torch.testing.assert_close(with_pad[mask].view(batch, length, -1), plain, rtol=rtol, atol=atol)
    return padded, with_pad


def cached_logits(model, ids, chunks, **inputs):
    """Feed ids (B, L) through a DecodeCache in chunks of the given sizes; (B, L, V) logits."""
    cache = DecodeCache(ids.shape[0], ids.shape[1])
    out, start = [], 0
    for size in chunks:
        out.append(model(ids[:, start: start + size], cache=cache, **inputs)[0])
        start += size
    assert start == ids.shape[1] and cache.offset == ids.shape[1]
    return torch.cat(out, dim=1)


@pytest.fixture(scope="session")
def stdlib_data(tmp_path_factory):
    """A small slice of the embedded python-stdlib corpus, prepared once for the session."""
    out = tmp_path_factory.mktemp("data") / "stdlib"
    prepare(out, PrepareOptions(sources=["python-stdlib"], max_bytes=400_000, val_fraction=0.1))
    return out
