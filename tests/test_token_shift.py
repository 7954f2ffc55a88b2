"""Token shift moves exactly the configured features by exactly the configured steps."""

import pytest
import torch

import configaformer
from configaformer.layers.token_shift import TokenShift

from .conftest import ATTN, FFN, tiny


def test_each_chunk_moves_by_its_shift_and_zero_fills():
    x = torch.randn(2, 6, 10)
    out = TokenShift([3, 2, 4, 1], [0, 1, 2, -1])(x)
    torch.testing.assert_close(out[:, :, 0:3], x[:, :, 0:3])
    torch.testing.assert_close(out[:, 1:, 3:5], x[:, :-1, 3:5])
    torch.testing.assert_close(out[:, 2:, 5:9], x[:, :-2, 5:9])
    torch.testing.assert_close(out[:, :-1, 9:10], x[:, 1:, 9:10])
    assert out[:, 0, 3:5].abs().sum() == 0 and out[:, :2, 5:9].abs().sum() == 0 and out[:, -1, 9].abs().sum() == 0


def test_shift_longer_than_the_sequence_zeroes_the_chunk():
    x = torch.randn(1, 3, 4)
    out = TokenShift([2, 2], [5, 0])(x)
    assert out[..., :2].abs().sum() == 0
    torch.testing.assert_close(out[..., 2:], x[..., 2:])


@pytest.mark.parametrize("shift", [2 ** 70, 5, 2])
def test_cached_shifts_of_any_length_equal_the_full_shift(shift):
    """Fed in chunks through a decoding state, the shift equals the whole-sequence shift, and its
    history never holds more positions than it has seen (2**70 once tried to allocate them)."""
    x = torch.randn(2, 9, 6)
    layer = TokenShift([2, 2, 2], [0, shift, 1])
    state, out, start = {}, [], 0
    for size in (1, 3, 1, 4):
        out.append(layer(x[:, start: start + size], state))
        start += size
        assert state["shift"].shape[1] <= start
    torch.testing.assert_close(torch.cat(out, dim=1), layer(x))


def test_layer_applies_shift_after_the_pre_norm():
    shift = [{"features": 16, "shift": 0}, {"features": 16, "shift": 1}]
    model = configaformer.Transformer(tiny([dict(ATTN, token_shift_config=shift)]))
    layer = model.layers[0]
    seen = {}
    layer.block.register_forward_hook(lambda m, args, out: seen.update(h=args[0]))
    x = torch.randn(2, 5, 32)
    layer(x, model.make_context(5, x.dtype, None))
    normed = layer.pre_norm(x)
    torch.testing.assert_close(seen["h"][:, :, :16], normed[:, :, :16])
    torch.testing.assert_close(seen["h"][:, 1:, 16:], normed[:, :-1, 16:])
    assert seen["h"][:, 0, 16:].abs().sum() == 0


def test_all_zero_shifts_are_refused_as_a_no_op():
    with pytest.raises(configaformer.ConfigError, match=r"layers\[0\].token_shift_config: every chunk has shift 0"):
        configaformer.Transformer(tiny([dict(FFN, token_shift_config=[{"features": 32, "shift": 0}])]))
