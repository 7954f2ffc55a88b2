"""Token-choice top-k routing for mixture-of-experts layers (blocks/moe.py), its grouping of
tokens by expert with a per-expert capacity, and its balance statistics.

Papers: Shazeer et al. 2017 (arXiv 1701.06538, top-k gating); Switch Transformer, Fedus et al.
2021 (arXiv 2101.03961: capacity factor, load-balancing loss); ST-MoE, Zoph et al. 2022 (arXiv
2202.08906: router z-loss); DeepSeek-V3 (arXiv 2412.19437: sigmoid scores, top-k weights
normalised, a selection-only bias for auxiliary-loss-free balancing); Mixtral (arXiv 2401.04088:
softmax over the chosen logits, which equals the full softmax renormalised over the top k).

Shapes: N tokens (batch * length, flattened), E experts, k chosen per token. An assignment is one
(token, choice) pair, numbered `slot * N + token` (slot 0 = the best choice).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Routing:
    logits: torch.Tensor  # (N, E) float32 router logits
    probs: torch.Tensor  # (N, E) each token's distribution over experts (softmax; sigmoid scores / their sum)
    experts: torch.Tensor  # (N, k) long, the chosen experts, best first
    gates: torch.Tensor  # (N, k) float32, the weight of each chosen expert's output


def route(logits: torch.Tensor, top_k: int, score: str, normalize: bool,
          bias: torch.Tensor | None = None) -> Routing:
    """Scores (softmax or sigmoid of the logits), the top_k experts by score + bias (the bias
    only selects: it is no part of the gates and gets no gradient), and their gates: the chosen
    scores, divided by their sum if `normalize`."""
    scores = logits.softmax(-1) if score == "softmax" else logits.sigmoid()  # (N, E)
    chosen = scores.detach() if bias is None else scores.detach() + bias  # selection carries no gradient
    experts = chosen.topk(top_k, dim=-1).indices  # (N, k)
    gates = scores.gather(1, experts)  # (N, k)
    if normalize:
        gates = gates / gates.sum(-1, keepdim=True)
    probs = scores if score == "softmax" else scores / scores.sum(-1, keepdim=True)
    return Routing(logits, probs, experts, gates)


def expert_capacity(real_tokens: torch.Tensor, capacity_factor: float, top_k: int, num_experts: int) -> torch.Tensor:
    """ceil(capacity_factor * tokens * top_k / num_experts), a 0-dim long tensor (Switch's capacity
    with k choices per token), from the count of real (unpadded) tokens."""
    return (real_tokens.double() * (capacity_factor * top_k / num_experts)).ceil().long()


@dataclass
class Dispatch:
    order: torch.Tensor  # (k * N,) assignments grouped by expert, by priority within each expert
    sizes: list[int]  # 2E + 1 group sizes along `order`: expert e's kept, then its dropped; padding last
    routed: torch.Tensor  # (E,) long, real assignments per expert before the capacity
    kept: torch.Tensor  # (E,) long, those within it

    def kept_groups(self) -> list[torch.Tensor]:
        """Per expert, the assignments it computes (indices `slot * N + token`)."""
        pieces = self.order.split(self.sizes)
        return [pieces[2 * e] for e in range(len(self.routed))]


def dispatch(experts: torch.Tensor, priority: torch.Tensor, valid: torch.Tensor | None, num_experts: int,
             capacity: torch.Tensor | None) -> Dispatch:
    """Group the assignments by expert with one sort, and keep at most `capacity` per expert
    (None: all). Within an expert, assignments run in order of their token's `priority` (N,),
    distinct values below N, then their slot: the earliest tokens keep their place, as in
    Switch. Padded tokens (`valid` False) are put in a last group that no expert computes."""
    n, k = experts.shape
    flat = experts.t().reshape(-1)  # (k * N,) the expert of assignment slot * N + token
    if valid is not None:
        flat = torch.where(valid.repeat(k), flat, num_experts)  # padding: the extra group E
    slots = torch.arange(k, device=experts.device).repeat_interleave(n)  # (k * N,)
    rank = priority.repeat(k) * k + slots  # unique, below k * N
    order = torch.argsort(flat * (k * n) + rank)  # by expert, then by rank
    counts = torch.zeros(num_experts + 1, dtype=torch.long, device=experts.device)
    counts.scatter_add_(0, flat, torch.ones_like(flat))
    routed = counts[:num_experts]
    kept = routed if capacity is None else torch.minimum(routed, capacity)
    sizes = torch.cat([torch.stack([kept, routed - kept], 1).reshape(-1), counts[num_experts:]])
    return Dispatch(order, sizes.tolist(), routed, kept)


def balance_report(routing: Routing, plan: Dispatch, valid: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Over the real tokens: the load-balancing loss E * sum_e f_e * P_e (Switch; f_e the fraction
    of assignments routed to expert e before the capacity, P_e its mean probability), the router
    z-loss mean(logsumexp(logits)^2) (ST-MoE), the fraction of assignments dropped, and the load
    per expert (`load`, assignments routed) with its coefficient of variation and its max and min
    as multiples of the mean (1: balanced)."""
    n, num_experts = routing.probs.shape
    top_k = routing.experts.shape[1]
    weight = torch.ones(n, device=routing.probs.device) if valid is None else valid.float()  # (N,)
    real = weight.sum().clamp(min=1.0)
    mean_prob = (routing.probs * weight[:, None]).sum(0) / real  # (E,)
    load = plan.routed.float()
    fraction = load / (real * top_k)  # (E,), sums to 1
    mean_load = load.mean().clamp(min=1e-9)
    return {
        "aux_loss": num_experts * (fraction * mean_prob).sum(),
        "z_loss": (torch.logsumexp(routing.logits, -1).square() * weight).sum() / real,
        "dropped": (plan.routed - plan.kept).sum().float() / (real * top_k),
        "load_cv": load.std(correction=0) / mean_load,
        "load_max": load.max() / mean_load,
        "load_min": load.min() / mean_load,
        "load": load,
    }
