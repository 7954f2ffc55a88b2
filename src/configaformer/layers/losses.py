"""Cross-entropy of a linear output layer without materialising all the logits.

`linear_cross_entropy(h, weight, bias, targets)` equals
`F.cross_entropy(h @ weight.T + bias, targets, ignore_index=-100)` but walks the rows in chunks:
each chunk's logits (chunk x V, float32) exist only while that chunk's loss and gradients are
computed, and the gradients with respect to h, weight and bias are accumulated right there, so
the backward pass has nothing left to recompute. For a vocabulary of V and N tokens this avoids
holding the N x V logits, their log-softmax and their gradient (3 x 64 MiB for 2048 tokens of
8192 classes in float32), at the cost of no extra matmuls: the same three products a plain
forward and backward do. The idea is the fused linear cross-entropy of Liger-Kernel
(Hsu et al. 2024, arXiv 2410.10989) and Cut Cross-Entropy (Wijmans et al. 2024, arXiv 2411.09009).
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, bias, targets, chunk: int):  # h (N, D), weight (V, D), targets (N,)
        valid = targets != IGNORE_INDEX
        count = valid.sum().clamp(min=1).to(torch.float32)
        want_grads = ctx.needs_input_grad[0] or ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        grad_h = torch.empty_like(h) if want_grads else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_grads else None
        grad_b = torch.zeros(weight.shape[0], dtype=torch.float32, device=weight.device) \
            if want_grads and bias is not None else None
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        for start in range(0, h.shape[0], chunk):
            hc, tc, vc = h[start:start + chunk], targets[start:start + chunk], valid[start:start + chunk]
            logits = (hc @ weight.t()).float()  # (n, V)
            if bias is not None:
                logits = logits + bias.float()
            lse = torch.logsumexp(logits, dim=-1)  # (n,)
            picked = logits.gather(1, tc.clamp(min=0)[:, None])[:, 0]
            total = total + ((lse - picked) * vc).sum()
            if want_grads:
                grad = logits.sub_(lse[:, None]).exp_()  # softmax, in the logits' memory
                grad[torch.arange(len(tc), device=grad.device), tc.clamp(min=0)] -= 1.0
                grad.mul_((vc.to(grad.dtype) / count)[:, None])
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
        return grad_h, grad_w, grad_b, None, None


def linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                         targets: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """Mean cross-entropy over targets != -100 of the logits h @ weight.T + bias, chunked.
    h (N, D), weight (V, D), bias (V,) or None, targets (N,) int64."""
    return _LinearCrossEntropy.apply(h, weight, bias, targets, chunk)
