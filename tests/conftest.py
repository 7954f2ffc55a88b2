import pytest
import torch

from configaformer.data import PrepareOptions, prepare

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


def assert_causal(model, length: int = 12, cut: int = 7, batch: int = 2):
    """Changing the tokens from position `cut` on leaves every earlier logit unchanged, and does
    change later ones (so the check is not vacuous)."""
    ids = torch.randint(0, model.config.vocab_size, (batch, length))
    changed = ids.clone()
    changed[:, cut:] = torch.randint(0, model.config.vocab_size, (batch, length - cut))
    (a,), (b,) = model(ids)[:1], model(changed)[:1]
    torch.testing.assert_close(a[:, :cut], b[:, :cut], rtol=0, atol=1e-6)
    assert not torch.allclose(a[:, cut:], b[:, cut:])


def assert_padding_invariant(model, length: int, pad: int, side: str, rtol: float = 1e-5, atol: float = 1e-5):
    """Padding `length` real tokens with `pad` pad tokens (id 0) on `side`, with the padding mask,
    leaves the real tokens' logits as without padding. Returns (padded ids, logits with padding)."""
    ids = torch.randint(1, model.config.vocab_size, (1, length))
    zeros = torch.zeros(1, pad, dtype=torch.long)
    padded = torch.cat([ids, zeros] if side == "right" else [zeros, ids], dim=1)
    mask = padded != 0
    (plain,) = model(ids)[:1]
    (with_pad,) = model(padded, padding_mask=mask)[:1]
    torch.testing.assert_close(with_pad[mask].view(1, length, -1), plain, rtol=rtol, atol=atol)
    return padded, with_pad


@pytest.fixture(scope="session")
def stdlib_data(tmp_path_factory):
    """A small slice of the embedded python-stdlib corpus, prepared once for the session."""
    out = tmp_path_factory.mktemp("data") / "stdlib"
    prepare(out, PrepareOptions(sources=["python-stdlib"], max_bytes=400_000, val_fraction=0.1))
    return out
