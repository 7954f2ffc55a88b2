"""The chunked linear cross-entropy (layers/losses.py) equals cross-entropy on the full logits:
values and gradients in training, and the summed nats, target count and argmax hits an
evaluation adds up."""

import pytest
import torch
import torch.nn.functional as F

from configaformer.layers.losses import IGNORE_INDEX, linear_cross_entropy, linear_cross_entropy_stats


def operands(rows=37, dim=8, classes=11, bias=True):
    h = torch.randn(rows, dim, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(classes, dim, dtype=torch.float64, requires_grad=True)
    b = torch.randn(classes, dtype=torch.float64, requires_grad=True) if bias else None
    targets = torch.randint(0, classes, (rows,))
    targets[::3] = IGNORE_INDEX
    return h, weight, b, targets


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("chunk", [5, 64])
def test_chunked_loss_and_gradients_equal_the_full_logits(bias, chunk):
    h, weight, b, targets = operands(bias=bias)
    params = [t for t in (h, weight, b) if t is not None]
    expected = F.cross_entropy(F.linear(h, weight, b), targets, ignore_index=IGNORE_INDEX)
    want = torch.autograd.grad(expected, params)
    got = linear_cross_entropy(h, weight, b, targets, chunk=chunk)
    torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=1e-6)
    for g, w in zip(torch.autograd.grad(got * 3.0, params), want):  # the upstream gradient scales them
        torch.testing.assert_close(g, 3.0 * w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("chunk", [4, 100])
def test_stats_equal_the_summed_loss_count_and_hits_of_the_full_logits(chunk):
    h, weight, b, targets = operands()
    logits = F.linear(h, weight, b).detach()
    targets[1::2] = logits[1::2].argmax(-1)  # some hits for certain
    valid = targets != IGNORE_INDEX
    nats, count, hits = linear_cross_entropy_stats(h, weight, b, targets, chunk=chunk).tolist()
    assert nats == pytest.approx(float(F.cross_entropy(logits, targets, reduction="sum")), rel=1e-6)
    assert count == int(valid.sum())
    assert hits == int((logits.argmax(-1) == targets)[valid].sum()) >= len(targets) // 3


def test_under_autocast_the_chunks_match_an_autocast_linear_layer():
    h, weight, b, targets = (t.float() if t.is_floating_point() else t for t in operands())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = F.cross_entropy(F.linear(h, weight, b).float(), targets, ignore_index=IGNORE_INDEX)
        got = linear_cross_entropy(h, weight, b, targets, chunk=8)
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-3)
    assert got.dtype == torch.float32


@pytest.mark.parametrize("chunk", [5, 64])
def test_softcapped_loss_gradients_and_stats_equal_those_of_the_capped_logits(chunk):
    h, weight, b, targets = operands()
    cap = 1.5
    params = [h, weight, b]
    logits = cap * torch.tanh(F.linear(h, weight, b) / cap)
    expected = F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)
    want = torch.autograd.grad(expected, params)
    got = linear_cross_entropy(h, weight, b, targets, chunk=chunk, softcap=cap)
    torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=1e-6)
    for g, w in zip(torch.autograd.grad(got, params), want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)
    nats = linear_cross_entropy_stats(h, weight, b, targets, chunk=chunk, softcap=cap)[0]
    assert float(nats) == pytest.approx(float(F.cross_entropy(logits.detach(), targets, reduction="sum")), rel=1e-6)
    assert abs(float(expected.detach()) - float(F.cross_entropy(F.linear(h, weight, b).detach(), targets))) > 1e-2  # the cap matters
