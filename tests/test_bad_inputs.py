"""Bad inputs (issue 14): `Transformer.generate` refuses an invalid sampling option by name."""

from __future__ import annotations

import pytest

MODEL = {"dim_model": 16, "vocab_size": 258, "dim_rope": 4, "max_seq_len": 64,
         "classifiers": [{"num_classes": 258, "head_type": "linear"}],
         "layers": [{"type": "Attention", "num_heads": 2}, {"type": "FFN", "ff_mult": 2}]}


@pytest.mark.parametrize("option, value", [("max_new_tokens", -1), ("max_new_tokens", 2.5), ("temperature", -1.0),
                                           ("temperature", float("nan")), ("temperature", float("inf")),
                                           ("top_k", 0), ("top_k", True), ("top_p", 0.0), ("top_p", float("nan")),
                                           ("min_p", 2.0), ("min_p", -0.1)])
def test_generate_refuses_an_invalid_sampling_option_by_name(option, value):
    import torch

    from configaformer import Transformer

    model = Transformer(MODEL)
    options = {"max_new_tokens": 2, option: value}
    with pytest.raises(ValueError, match=f"^{option} must be "):
        model.generate(torch.tensor([[1, 2]]), **options)
    options[option] = 2 if option == "max_new_tokens" else None if option != "temperature" else 1.0
    assert model.generate(torch.tensor([[1, 2]]), **options).shape == (1, 4)  # the same call, a valid value


def test_generate_says_which_option_does_not_fit_in_memory():
    """A model without max_seq_len: 10**12 positions fail at the first allocation, as a ValueError."""
    import torch

    from configaformer import Transformer

    model = Transformer({k: v for k, v in MODEL.items() if k != "max_seq_len"})
    with pytest.raises(ValueError, match=r"^max_new_tokens 1000000000000: .* do not fit in memory"):
        model.generate(torch.tensor([[1, 2]]), 10 ** 12)
