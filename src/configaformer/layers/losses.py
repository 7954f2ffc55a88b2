"""Cross-entropy of a linear output layer without materialising all the logits.

`linear_cross_entropy(h, weight, bias, targets)` equals
`F.cross_entropy(h @ weight.T + bias, targets, ignore_index=-100)` but walks the rows in chunks:
each chunk's logits (chunk x V, float32) exist only while that chunk's loss and gradients are
computed, and the gradients with respect to h, weight and bias are accumulated right there, so
the backward pass has nothing left to recompute. For a vocabulary of V and N tokens this avoids
holding the N x V logits, their log-softmax and their gradient (3 x 64 MiB for 2048 tokens of
8192 classes in float32), at the cost of no extra matmuls: the same three products a plain
forward and backward do. `linear_cross_entropy_stats` walks the same chunks without gradients
and sums what an evaluation reports (nats, count of targets, argmax hits). The idea is the fused
linear cross-entropy of Liger-Kernel (Hsu et al. 2024, arXiv 2410.10989) and Cut Cross-Entropy
(Wijmans et al. 2024, arXiv 2411.09009).
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100


def _chunk_logits(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
                  chunk: int, softcap: float | None = None):
    """(start, h rows, their targets, their float32 logits (n, V)) for each chunk of rows, soft-capped
    to softcap * tanh(z / softcap) when `softcap` is given."""
    for start in range(0, h.shape[0], chunk):
        hc, tc = h[start:start + chunk], targets[start:start + chunk]
        logits = (hc @ weight.t()).float()  # (n, V)
        if bias is not None:
            logits = logits + bias.float()
        if softcap is not None:
            logits = softcap * torch.tanh(logits / softcap)
        yield start, hc, tc, logits


def _nats(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-row cross-entropy, 0 where the target is -100; the rows' log-sum-exp)."""
    lse = torch.logsumexp(logits, dim=-1)  # (n,)
    picked = logits.gather(1, targets.clamp(min=0)[:, None])[:, 0]
    return torch.where(valid, lse - picked, 0.0), lse


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, bias, targets, chunk: int, softcap: float | None):  # h (N, D), weight (V, D), targets (N,)
        valid = targets != IGNORE_INDEX
        count = valid.sum().clamp(min=1).to(torch.float32)
        want_grads = ctx.needs_input_grad[0] or ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        grad_h = torch.empty_like(h) if want_grads else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_grads else None
        grad_b = torch.zeros(weight.shape[0], dtype=torch.float32, device=weight.device) \
            if want_grads and bias is not None else None
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        for start, hc, tc, logits in _chunk_logits(h, weight, bias, targets, chunk, softcap):
            vc = valid[start:start + chunk]
            nats, lse = _nats(logits, tc, vc)
            total = total + nats.sum()
            if want_grads:
                # d cap(z) / dz = 1 - tanh^2 = 1 - (cap(z) / c)^2, taken before the logits' memory is reused
                slope = None if softcap is None else 1.0 - (logits / softcap).square()
                grad = logits.sub_(lse[:, None]).exp_()  # softmax, in the logits' memory
                grad[torch.arange(len(tc), device=grad.device), tc.clamp(min=0)] -= 1.0
                grad.mul_((vc.to(grad.dtype) / count)[:, None])
                if slope is not None:
                    grad.mul_(slope)
                if h.dtype == torch.float32 and weight.dtype == torch.float32:
                    torch.mm(grad, weight, out=grad_h[start:start + chunk])
                    grad_w.addmm_(grad.t(), hc)
                else:
                    grad_h[start:start + chunk] = (grad.to(weight.dtype) @ weight).to(h.dtype)
                    grad_w.addmm_(grad.t(), hc.float())
                if grad_b is not None:
                    grad_b += grad.sum(0)
        ctx.has_bias = bias is not None
        ctx.save_for_backward(*(t for t in (grad_h, grad_w, grad_b) if t is not None))
        ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
        return total / count

    @staticmethod
    def backward(ctx, grad_out):
        saved = list(ctx.saved_tensors)
        grad_h, grad_w = saved[0] * grad_out, (saved[1] * grad_out).to(ctx.dtypes[0])
        grad_b = (saved[2] * grad_out).to(ctx.dtypes[1]) if ctx.has_bias else None
        return grad_h, grad_w, grad_b, None, None, None


def _as_autocast(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
    """Under torch.autocast, the operands in the dtype autocast would give the logits' matmul (as
    a plain `nn.Linear` would run there), so the chunks run with autocast off and match it."""
    device = h.device.type
    if not torch.is_autocast_enabled(device):
        return h, weight, bias
    dtype = torch.get_autocast_dtype(device)
    return h.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype)


def linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                         targets: torch.Tensor, chunk: int = 512, softcap: float | None = None) -> torch.Tensor:
    """Mean cross-entropy over targets != -100 of the logits h @ weight.T + bias, chunked; with
    `softcap`, of the capped logits softcap * tanh(z / softcap) (a head's `logit_softcap`).
    h (N, D), weight (V, D), bias (V,) or None, targets (N,) int64."""
    h, weight, bias = _as_autocast(h, weight, bias)
    with torch.autocast(h.device.type, enabled=False):
        return _LinearCrossEntropy.apply(h, weight, bias, targets, chunk, softcap)


@torch.no_grad()
def linear_cross_entropy_stats(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                               targets: torch.Tensor, chunk: int = 512, softcap: float | None = None) -> torch.Tensor:
    """What an evaluation sums, chunked and without gradients: a float64 tensor (3,) holding the
    summed cross-entropy (nats) over targets != -100, their count, and how many of them the
    logits' argmax hits. Arguments as for `linear_cross_entropy`."""
    h, weight, bias = _as_autocast(h, weight, bias)
    stats = torch.zeros(3, dtype=torch.float64, device=h.device)
    with torch.autocast(h.device.type, enabled=False):
        for _, _, tc, logits in _chunk_logits(h, weight, bias, targets, chunk, softcap):
            valid = tc != IGNORE_INDEX
            nats, _ = _nats(logits, tc, valid)
            hits = (logits.argmax(-1) == tc) & valid
            stats += torch.stack([nats.sum(), valid.sum(), hits.sum()]).double()
    return stats
