import pytest
import torch

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
