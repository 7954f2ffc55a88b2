"""What one measurement is: a training step, a forward pass, a generation, a large matmul.

CPU ops run synchronously, so the wall time of a call is its time.
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from .archs import Sizes
from .impls import Impl

LR = 3e-4


class Trainer:
    """An implementation, its AdamW optimizer and a fixed batch; `step()` is one training step:
    forward, cross-entropy on next-token targets, backward, AdamW."""

    def __init__(self, impl: Impl, s: Sizes, seed: int = 0):
        self.impl = impl
        impl.model.train()
        self.optimizer = torch.optim.AdamW(impl.model.parameters(), lr=LR)
        generator = torch.Generator().manual_seed(seed)
        self.tokens = torch.randint(0, s.vocab, (s.batch, s.seq_len + 1), generator=generator)  # (B, L+1)

    def step(self) -> float:
        inputs, targets = self.tokens[:, :-1], self.tokens[:, 1:]  # (B, L) each
        if self.impl.loss is not None:  # the library's own loss path (configaformer: chunked CE)
            loss = self.impl.loss(inputs, targets)
        else:
            logits = self.impl.logits(inputs)  # (B, L, V)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.item()


def forward_ids(s: Sizes, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, s.vocab, (s.batch, s.seq_len), generator=torch.Generator().manual_seed(seed))


def prompt_ids(s: Sizes, seed: int = 2) -> torch.Tensor:
    return torch.randint(0, s.vocab, (1, s.prompt_len), generator=torch.Generator().manual_seed(seed))


def seconds(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


@torch.no_grad()
def forward(impl: Impl, ids: torch.Tensor) -> torch.Tensor:
    return impl.logits(ids)


def counted_flops(fn) -> int:
    """FLOPs of the matrix products torch runs inside fn() (torch.utils.flop_counter), forward and
    backward: a cross-check of the analytic count. (torch 2.13 has no formula for the fused CPU
    attention kernel, so on a CPU a fused-attention model's count is its 6 * weights * tokens alone.)"""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


class Matmul:
    """An n x n float32 matrix product: what this machine's BLAS reaches, sampled between model steps."""

    def __init__(self, n: int):
        self.n = n
        generator = torch.Generator().manual_seed(3)
        self.a, self.b = (torch.randn(n, n, generator=generator) for _ in range(2))
        self.out = torch.empty(n, n)
        torch.mm(self.a, self.b, out=self.out)  # warm-up

    def flops_per_s(self) -> float:
        elapsed, _ = seconds(lambda: torch.mm(self.a, self.b, out=self.out))
        return 2 * self.n ** 3 / elapsed


def summarise(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "samples": values}
