"""The layers' auxiliary reports over one training step (docs/blocks.md, "Auxiliary losses"):
summed over the step's micro-batches and the ranks for the blocks' `after_step` (MoE's bias
balancing), and averaged per forward for the metrics (`layers[3].aux_loss`, `layers[3].dropped`)."""

from __future__ import annotations

from typing import Callable, Mapping

import torch

from ..context import AuxReport


def add_reports(sums: dict[str, torch.Tensor], reports: Mapping[str, AuxReport]) -> None:
    """Add one forward's reports (detached, float32 on their device) into `sums`."""
    for key, report in reports.items():
        value = report.value.detach().float()
        sums[key] = sums[key] + value if key in sums else value


def reduce_reports(sums: dict[str, torch.Tensor],
                   reduce_sum: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, torch.Tensor]:
    """`sums` summed over ranks with one collective (`reduce_sum`: the engine's), on the CPU."""
    if not sums:
        return {}
    keys = list(sums)
    flat = reduce_sum(torch.cat([sums[key].reshape(-1) for key in keys]).double()).cpu()
    out, start = {}, 0
    for key in keys:
        size = sums[key].numel()
        out[key] = flat[start:start + size].reshape(sums[key].shape).float()
        start += size
    return out


def scalar_means(totals: Mapping[str, torch.Tensor], forwards: int) -> dict[str, float]:
    """The 0-dim reports as floats, averaged over `forwards` (micro-batches times ranks), for the
    metrics; vectors (per-expert loads) are left out."""
    return {key: float(value) / forwards for key, value in totals.items() if value.dim() == 0}
