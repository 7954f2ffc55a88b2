"""Position-wise feed-forward network with the GLU family and an RWKV-style output gate.

Papers:
- Vaswani et al. 2017, arXiv 1706.03762 (up-project, activation, down-project).
- GLU variants: Shazeer 2020, "GLU Variants Improve Transformer", arXiv 2002.05202.
  `num_projections` parallel up-projections are multiplied element-wise, the first `num_gelu`
  of them through `activation` (the key keeps its original name; it counts *activated*
  projections, whatever the activation): 2 with 1 = GEGLU (gelu) or SwiGLU (silu), 2 with 0 =
  bilinear. 0 or 1 projection = plain MLP.
- `activation`: gelu (Hendrycks & Gimpel, arXiv 1606.08415) and its tanh approximation gelu_tanh
  (GPT-2, Gemma), relu, squared_relu (Primer, So et
  al. 2021, arXiv 2109.08668), silu / swish (alias; Ramachandran et al., arXiv 1710.05941), mish
  (Misra 2019, arXiv 1908.08681).
- Token shift on the hidden features (`inner_token_shift_config`) and the sigmoid output gate
  (`output_sigmoid_gate_bool`, RWKV's channel-mix receptance): Peng et al. 2023, arXiv 2305.13048.

Shapes: (B, L, dim_model) -> (B, L, hidden) per projection -> (B, L, dim_model),
hidden = round(ff_mult * dim_model). `bias_bool` switches the bias of every linear layer here.
"""

from __future__ import annotations

from typing import Literal, Optional

import torch
from pydantic import Field, NonNegativeInt, PositiveFloat
from torch import nn

from ..config import LayerConfig, LayerPlan, ModelConfig, TokenShiftChunk
from ..config.base import StrictModel
from ..config.layer import Issues, check_token_shift, scaled_width
from ..context import ForwardContext
from ..layers.activations import get_activation
from ..layers.gate import OutputGate
from ..layers.token_shift import make_token_shift
from ..registry import register_block
from .base import Block


class FFNForm(StrictModel):
    """The keys of the up-activation-down operation (its GLU form and width), shared by FFN and
    each expert of an MoE layer (blocks/moe.py)."""

    ff_mult: PositiveFloat = 4.0
    num_projections: int = Field(1, ge=0, le=4)
    num_gelu: Optional[NonNegativeInt] = None  # None: 1; counts projections through `activation`
    activation: Literal["gelu", "gelu_tanh", "relu", "squared_relu", "silu", "swish", "mish"] = "gelu"
    bias_bool: bool = True

    def form_defaults(self) -> dict:
        """The model_copy update that resolves the form's defaults (num_gelu, the swish alias)."""
        return {"num_gelu": 1 if self.num_gelu is None else self.num_gelu,
                "activation": "silu" if self.activation == "swish" else self.activation}

    def dim_hidden(self, model: ModelConfig) -> int:
        return scaled_width(self.ff_mult, model.dim_model)

    def form_params(self, dim: int, hidden: int) -> int:
        """Parameters of the up-projections and the down-projection at `hidden` width."""
        bias, n = int(self.bias_bool), max(self.num_projections, 1)
        return n * (dim * hidden + bias * hidden) + hidden * dim + bias * dim

    def check_form(self) -> Issues:
        issues: Issues = []
        if self.num_gelu > max(self.num_projections, 1):
            issues.append(("num_gelu", f"{self.num_gelu} is more than num_projections ({self.num_projections}); "
                                       f"valid: 0..{max(self.num_projections, 1)}"))
        if self.num_gelu == 0 and self.activation != "gelu":
            issues.append(("activation", f"{self.activation}, but num_gelu is 0: no projection goes through the "
                                         "activation; set num_gelu >= 1 or leave activation out"))
        return issues

    def form_summary(self) -> list[str]:
        n = max(self.num_projections, 1)
        kind = {1: "mlp"}.get(n, f"glu{n}")
        return [f"ff_mult={self.ff_mult:g}", f"{kind}({self.activation}={self.num_gelu})"]


class FFNConfig(FFNForm, LayerConfig):
    type: Literal["FFN"] = "FFN"
    inner_token_shift_config: Optional[list[TokenShiftChunk]] = None
    output_sigmoid_gate_bool: bool = False

    def resolve(self, model: ModelConfig) -> FFNConfig:
        return LayerConfig.resolve(self.model_copy(update=self.form_defaults()), model)

    def block_params(self, model: ModelConfig) -> int:
        dim, bias = model.dim_model, int(self.bias_bool)
        gate = dim * dim + bias * dim if self.output_sigmoid_gate_bool else 0
        return self.form_params(dim, self.dim_hidden(model)) + gate

    def check(self, model: ModelConfig):
        issues = super().check(model) + self.check_form()
        issues += check_token_shift(self.inner_token_shift_config, self.dim_hidden(model), model.is_causal,
                                    "inner_token_shift_config", "the hidden width round(ff_mult * dim_model)")
        return issues

    def summary(self) -> str:
        parts = self.form_summary()
        if self.inner_token_shift_config:
            parts.append("inner_shift=" + "/".join(str(c.shift) for c in self.inner_token_shift_config))
        if self.output_sigmoid_gate_bool:
            parts.append("sigmoid_gate")
        rest = super().summary()
        return " ".join(parts) + (" " + rest if rest else "")


class GLUParts:
    """The up-projections, their GLU product and the down-projection `out_proj`, for an nn.Module
    (FFN and an MoE expert): `init_glu` builds them, `glu_hidden` computes the product."""

    def init_glu(self, form: FFNForm, dim: int, hidden: int) -> None:
        self.num_projections = max(form.num_projections, 1)
        self.num_gelu = form.num_gelu  # how many projections (the first ones) go through the activation
        self.act = get_activation(form.activation)
        # All up-projections in one matmul; chunked in glu_hidden.
        self.up = nn.Linear(dim, hidden * self.num_projections, bias=form.bias_bool)
        self.out_proj = nn.Linear(hidden, dim, bias=form.bias_bool)

    def glu_hidden(self, h: torch.Tensor) -> torch.Tensor:
        """(..., dim) -> (..., hidden): the product of the up-projections, the first num_gelu activated."""
        u = self.up(h)  # (..., hidden * num_projections)
        if self.num_projections == 1:
            return self.act(u) if self.num_gelu else u
        parts = u.chunk(self.num_projections, dim=-1)  # each (..., hidden)
        z = self.act(parts[0]) if self.num_gelu > 0 else parts[0]
        for i in range(1, self.num_projections):
            z = z * (self.act(parts[i]) if i < self.num_gelu else parts[i])
        return z


class Expert(GLUParts, nn.Module):
    """FFN's operation without its token shift and gate, at width `hidden`: an MoE expert."""

    def __init__(self, form: FFNForm, dim: int, hidden: int):
        super().__init__()
        self.init_glu(form, dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, dim) -> (N, dim)
        return self.out_proj(self.glu_hidden(x))


@register_block("FFN", FFNConfig)
class FFN(GLUParts, Block):
    def __init__(self, cfg: FFNConfig, model: ModelConfig, plan: LayerPlan):
        super().__init__(cfg, model, plan)
        self.init_glu(cfg, model.dim_model, cfg.dim_hidden(model))
        self.inner_shift = make_token_shift(cfg.inner_token_shift_config, "inner_shift")
        self.gate = OutputGate(model.dim_model, model.dim_model, "sigmoid", "hidden", cfg.bias_bool) \
            if cfg.output_sigmoid_gate_bool else None

    def forward(self, h: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        z = self.glu_hidden(h)  # (B, L, hidden)
        if self.inner_shift is not None:
            if ctx.padding_mask is not None:
                z = z * ctx.padding_mask[..., None].to(z.dtype)
            z = self.inner_shift(z, ctx.decode_state())
        y = self.out_proj(z)
        return y if self.gate is None else self.gate(y, h, h)
