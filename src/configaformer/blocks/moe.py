"""Mixture of experts: a position-wise layer that sends each token to `top_k` of `num_experts`
FFN experts and adds their outputs weighted by the router's gates.

    logits = h @ W_router                         # (N, E), float32; N = B * L tokens
    s      = softmax(logits) | sigmoid(logits)    # router_score
    chosen = top_k(s + expert_bias)               # the bias selects only (DeepSeek-V3)
    g      = s[chosen] (/ sum, normalize_top_k_bool: Mixtral, DeepSeek-V3)
    y      = sum_j g_j * expert_{chosen_j}(h) + shared(h)

Papers: sparsely gated MoE, Shazeer et al. 2017 (arXiv 1701.06538); Switch Transformer, Fedus et
al. 2021 (arXiv 2101.03961: capacity, load-balancing loss); ST-MoE, Zoph et al. 2022 (arXiv
2202.08906: router z-loss); DeepSeekMoE, Dai et al. 2024 (arXiv 2401.06066: shared experts,
fine-grained experts: a small ff_mult); DeepSeek-V3 (arXiv 2412.19437: sigmoid scores,
auxiliary-loss-free balancing by a per-expert bias); Mixtral (arXiv 2401.04088).

Keys: every expert is an FFN of the form FFN supports (ff_mult, num_projections, num_gelu,
activation, bias_bool: blocks/ffn.py `FFNForm`, built by its `Expert`); `num_shared_experts`
always-on experts are one FFN of num_shared_experts * the expert width (the sum of that many
experts, with one output bias). `capacity_factor`: at most ceil(cf * tokens * top_k / E)
assignments per expert in *training mode*, counted over real tokens; the rest are dropped (the
token keeps its residual and the other experts' outputs), earliest positions first, so a token's
fate depends only on tokens at its own or earlier positions. Evaluation and decoding never drop,
so a layer is position-wise there and cached decoding equals the full forward.

Reports (docs/blocks.md, "Auxiliary losses"; computed when the caller collects them): aux_loss
(weight aux_loss_weight), z_loss (weight z_loss_weight), dropped, load_cv, load_max, load_min and
load (per expert). With bias_update_rate > 0 the buffer `expert_bias` (E,) moves by
rate * sign(mean load - load) after every optimizer step (`after_step`): saved with the weights,
never a parameter, so it has no gradient and no weight decay.

Computation: the assignments are sorted by expert once (layers/routing.py), each expert runs on
its tokens (index_select), and the outputs land back per assignment (index_copy); padded tokens
go to no expert. The group sizes are read to the host once per layer call.
"""

from __future__ import annotations

from typing import Literal, Optional

import torch
import torch.nn.functional as F
from pydantic import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from torch import nn

from ..config import LayerConfig, LayerPlan, ModelConfig
from ..context import ForwardContext
from ..layers.routing import balance_report, dispatch, expert_capacity, route
from ..registry import register_block
from .base import Block
from .ffn import Expert, FFNForm


class MoEConfig(FFNForm, LayerConfig):
    type: Literal["MoE"] = "MoE"
    num_experts: PositiveInt = 8
    top_k: PositiveInt = 2
    num_shared_experts: NonNegativeInt = 0
    router_score: Literal["softmax", "sigmoid"] = "softmax"
    normalize_top_k_bool: bool = True
    capacity_factor: Optional[PositiveFloat] = None  # None: no dropping
    aux_loss_weight: NonNegativeFloat = 0.01
    z_loss_weight: NonNegativeFloat = 0.001
    bias_update_rate: NonNegativeFloat = 0.0  # 0: no bias balancing

    def resolve(self, model: ModelConfig) -> MoEConfig:
        return LayerConfig.resolve(self.model_copy(update=self.form_defaults()), model)

    def expert_params(self, model: ModelConfig) -> int:
        return self.form_params(model.dim_model, self.dim_hidden(model))

    def shared_params(self, model: ModelConfig) -> int:
        if not self.num_shared_experts:
            return 0
        return self.form_params(model.dim_model, self.num_shared_experts * self.dim_hidden(model))

    def block_params(self, model: ModelConfig) -> int:
        router = model.dim_model * self.num_experts
        return self.num_experts * self.expert_params(model) + self.shared_params(model) + router

    def active_block_params(self, model: ModelConfig) -> int:
        """The router, the shared experts and top_k routed experts: what one token runs through."""
        router = model.dim_model * self.num_experts
        return self.top_k * self.expert_params(model) + self.shared_params(model) + router

    def check(self, model: ModelConfig):
        issues = super().check(model) + self.check_form()
        if self.top_k > self.num_experts:
            issues.append(("top_k", f"{self.top_k} is more than num_experts ({self.num_experts}); "
                                    f"valid: 1..{self.num_experts}"))
        elif self.bias_update_rate > 0 and self.top_k == self.num_experts:
            issues.append(("bias_update_rate", f"every token goes to all {self.num_experts} experts (top_k == "
                                               "num_experts), so the bias has no choice to balance; use "
                                               "bias_update_rate: 0 or a top_k below num_experts"))
        return issues

    def summary(self) -> str:
        parts = [f"experts={self.num_experts} top_k={self.top_k}"]
        if self.num_shared_experts:
            parts.append(f"shared={self.num_shared_experts}")
        parts += self.form_summary() + [f"router={self.router_score}"]
        if self.capacity_factor is not None:
            parts.append(f"capacity={self.capacity_factor:g}")
        if self.bias_update_rate:
            parts.append(f"bias_rate={self.bias_update_rate:g}")
        rest = super().summary()
        return " ".join(parts) + (" " + rest if rest else "")


@register_block("MoE", MoEConfig)
class MoE(Block):
    def __init__(self, cfg: MoEConfig, model: ModelConfig, plan: LayerPlan):
        super().__init__(cfg, model, plan)
        dim, hidden = model.dim_model, cfg.dim_hidden(model)
        self.router = nn.Linear(dim, cfg.num_experts, bias=False)
        self.experts = nn.ModuleList(Expert(cfg, dim, hidden) for _ in range(cfg.num_experts))
        self.shared = Expert(cfg, dim, cfg.num_shared_experts * hidden) if cfg.num_shared_experts else None
        self.expert_bias: Optional[torch.Tensor]
        if cfg.bias_update_rate > 0:
            self.register_buffer("expert_bias", torch.zeros(cfg.num_experts))  # (E,) float32, in the state dict
        else:
            self.expert_bias = None

    def reset_parameters(self) -> None:
        """The linear layers get the model's init; the balancing bias starts at zero."""
        if self.expert_bias is not None:
            self.expert_bias.zero_()

    def residual_projections(self) -> list[nn.Linear]:
        experts = list(self.experts) + ([self.shared] if self.shared is not None else [])
        return [expert.out_proj for expert in experts]

    def forward(self, h: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        cfg = self.cfg
        batch, length, dim = h.shape
        x = h.reshape(-1, dim)  # (N, D)
        n = x.shape[0]
        valid = None if ctx.padding_mask is None else ctx.padding_mask.reshape(-1)  # (N,)
        logits = F.linear(x.float(), self.router.weight.float())  # (N, E) float32, also under autocast
        routing = route(logits, cfg.top_k, cfg.router_score, cfg.normalize_top_k_bool, self.expert_bias)
        capacity = None
        if self.training and cfg.capacity_factor is not None:
            real = torch.tensor(n, device=x.device) if valid is None else valid.sum()
            capacity = expert_capacity(real, cfg.capacity_factor, cfg.top_k, cfg.num_experts)
        plan = dispatch(routing.experts, self.priority(ctx, batch, length, x.device), valid, cfg.num_experts, capacity)
        groups = plan.kept_groups()  # per expert: its assignments, slot * N + token
        outputs = [expert(x.index_select(0, group % n)) for expert, group in zip(self.experts, groups)]
        computed = torch.cat(outputs)  # (assignments kept, D), in the experts' dtype (bf16 under autocast)
        per_assignment = computed.new_zeros(cfg.top_k * n, dim).index_copy(0, torch.cat(groups), computed)
        gates = routing.gates.t().reshape(-1, 1).to(computed.dtype)  # (k * N, 1), slot-major like the assignments
        y = (per_assignment * gates).view(cfg.top_k, n, dim).sum(0)  # dropped and padded rows are zero
        if self.shared is not None:
            y = y + self.shared(x)
        if ctx.reporting:
            report = balance_report(routing, plan, valid)
            weights = {"aux_loss": cfg.aux_loss_weight, "z_loss": cfg.z_loss_weight}
            for name, value in report.items():
                ctx.report(name, value, weights.get(name, 0.0))
        return y.view(batch, length, dim)

    @staticmethod
    def priority(ctx: ForwardContext, batch: int, length: int, device: torch.device) -> torch.Tensor:
        """(N,) each token's place in the capacity queues: by position (real tokens counted from 0,
        so padding moves no one), then by row; distinct and below N."""
        positions = ctx.positions if ctx.positions is not None else torch.arange(length, device=device)[None]
        rows = torch.arange(batch, device=device)[:, None]
        return (positions.expand(batch, length) * batch + rows).reshape(-1)

    def after_step(self, reports: dict[str, torch.Tensor]) -> None:
        """Auxiliary-loss-free balancing (DeepSeek-V3): bias += rate * sign(mean load - load)."""
        if self.expert_bias is not None and "load" in reports:
            load = reports["load"].to(self.expert_bias)
            self.expert_bias += self.cfg.bias_update_rate * torch.sign(load.mean() - load)
