"""The block contract and the wrapper that gives every layer type the shared keys.

The contract a new block fulfils (decode state, padding, causality, the output projection's
depth-scaled init, raw Parameters' init and weight decay, what the conformance test checks) is
written down in docs/blocks.md: read it before adding a block.

A block is the layer's main operation: `forward(h, ctx) -> y`, both (B, L, dim_model). The
`Layer` wrapper around it applies what every layer type shares, in this order:

    h = token_shift(pre_norm(x))          # pre_norm_bool, token_shift_config
    y = block(h, ctx)
    y = y * act(W_gate(x or h))           # output_gate
    y = post_norm(y)                      # post_norm_bool
    y = y * scale                         # residual_scale: rezero (scalar) or layerscale (per feature)
    y = drop_path(dropout(y))             # dropout; layer_drop (per sample, training only)
    out = x + y                           # add_residual

A layer with `share_weights_with` is not built: the model reuses the owner's `Layer` module
(everything above), so its parameters exist once.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from ..config import LayerConfig, LayerPlan, ModelConfig
from ..context import ForwardContext
from ..layers.gate import OutputGate
from ..layers.norms import make_norm
from ..layers.residual import drop_path, make_residual_scale
from ..layers.token_shift import make_token_shift


class Block(nn.Module):
    """Base class of registered blocks (the contract: docs/blocks.md). A subclass that has a linear
    layer writing to the residual stream names it `out_proj`, so the model can scale its
    initialisation with depth; one that owns raw nn.Parameters defines `reset_parameters()`."""

    config_cls: type[LayerConfig]  # set by @register_block
    # Sides a caller may pad on (with the padding mask) and leave real tokens' outputs unchanged.
    padding_sides: ClassVar[tuple[str, ...]] = ("left", "right")
    # Whether forward reads `ctx.context` (the config then names its width `dim_context`).
    reads_context: ClassVar[bool] = False
    # Names of this module's raw Parameters that are tables, like embeddings: no weight decay.
    no_weight_decay: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: LayerConfig, model: ModelConfig, plan: LayerPlan):
        super().__init__()
        self.cfg = cfg
        self.plan = plan

    def forward(self, h: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def after_step(self, reports: dict[str, torch.Tensor]) -> None:
        """Called by the trainer after each optimizer step (`Transformer.after_step`), without
        gradients, with this block's reports (`ctx.report`) summed over the step's forwards: for
        state updated outside autograd (MoE's bias balancing). Nothing by default."""

    def residual_projections(self) -> list[nn.Linear]:
        """The linear layers that write to the residual stream (the model scales their init with
        depth): `out_proj` where the block has one. Composite blocks list their parts'."""
        out_proj = getattr(self, "out_proj", None)
        return [out_proj] if isinstance(out_proj, nn.Linear) else []


class Layer(nn.Module):
    def __init__(self, block: Block, cfg: LayerConfig, model: ModelConfig):
        super().__init__()
        dim, eps = model.dim_model, model.norm_eps
        self.pre_norm = make_norm(cfg.norm_type, dim, eps) if cfg.pre_norm_bool else None
        self.token_shift = make_token_shift(cfg.token_shift_config)
        self.block = block
        gate = cfg.output_gate
        self.gate = OutputGate(dim, dim, gate.activation, gate.source, bias=cfg.gate_bias()) if gate else None
        self.post_norm = make_norm(cfg.norm_type, dim, eps) if cfg.post_norm_bool else None
        self.residual_scale = make_residual_scale(cfg.residual_scale, dim, cfg.layerscale_init)
        self.dropout = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else None
        self.layer_drop = cfg.layer_drop
        self.add_residual = cfg.add_residual

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        h = x if self.pre_norm is None else self.pre_norm(x)
        if self.token_shift is not None:
            if ctx.padding_mask is not None:  # padding never leaks into real tokens' features
                h = h * ctx.padding_mask[..., None].to(h.dtype)
            h = self.token_shift(h, ctx.decode_state())
        y = self.block(h, ctx)
        if self.gate is not None:
            y = self.gate(y, x, h)
        if self.post_norm is not None:
            y = self.post_norm(y)
        if self.residual_scale is not None:
            y = self.residual_scale(y)
        if self.dropout is not None:
            y = self.dropout(y)
        if self.layer_drop > 0 and self.training:  # a constant and a module flag: no data-dependent branch
            y = drop_path(y, self.layer_drop)
        return x + y if self.add_residual else y
