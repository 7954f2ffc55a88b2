"""Parallel attention + FFN in one layer (GPT-J; PaLM, Chowdhery et al. 2022, arXiv 2204.02311).

One pre-norm; attention and FFN both read the same normed (and shifted) input and their outputs
are summed, so the layer is one residual addition:

    h   = token_shift(pre_norm(x))
    y   = Attention(h, ctx) + FFN(h, ctx)        # then gate, post-norm, scale, dropout, residual
    out = x + y

Config: `{"type": "Parallel", "attention": {...}, "ffn": {...}}`. The two parts take exactly the
keys of an `Attention` and an `FFN` layer's own operation (validated by their schemas, so an
error reads `layers[2].attention.num_heads`), without `type`; each part may be left out for its
defaults. The keys every layer takes (norms, token shift, gate, residual, dropout, ...) belong
to the Parallel layer itself and are refused inside a part. A part's `norm_type`, which some
blocks read, is the Parallel layer's.

Everything that is about attention (what the layer produces for and consumes from other layers,
its causal flag, its rotary width) is the attention part's; parameters are the sum of both.
Shapes: (B, L, dim_model) -> (B, L, dim_model).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
from pydantic import BeforeValidator, Field, create_model
from pydantic_core import PydanticCustomError

from ..config import LayerConfig, LayerPlan, ModelConfig
from ..context import ForwardContext
from ..registry import register_block
from .attention import Attention, AttentionConfig
from .base import Block
from .ffn import FFN, FFNConfig


def _refuse_layer_key(value: Any) -> Any:
    raise PydanticCustomError("layer_key", "a key of the whole layer, not of one part; set it on the "
                                           "Parallel layer itself (next to type: Parallel)")


def part_schema(config_cls: type[LayerConfig]) -> type[LayerConfig]:
    """`config_cls` restricted to its block's own keys: the keys every layer takes are refused
    (they are the enclosing layer's) and, like `type`, never written out by `to_dict`. A subclass,
    so the part keeps every method and check of its block's schema, and every key added to it."""
    refused = Annotated[Any, BeforeValidator(_refuse_layer_key)]
    fields: dict[str, Any] = {key: (refused, Field(info.default, exclude=True))
                              for key, info in LayerConfig.model_fields.items() if key != "type"}
    type_field = config_cls.model_fields["type"]
    fields["type"] = (type_field.annotation, Field(type_field.default, exclude=True))
    name = config_cls.__name__.removesuffix("Config") + "Part"
    return create_model(name, __base__=config_cls, __module__=__name__, **fields)


AttentionPart = part_schema(AttentionConfig)
FFNPart = part_schema(FFNConfig)
PARTS = ("attention", "ffn")


class ParallelConfig(LayerConfig):
    causal_key = "attention.causal_mask_bool"
    type: Literal["Parallel"] = "Parallel"
    attention: AttentionPart = Field(default_factory=AttentionPart)
    ffn: FFNPart = Field(default_factory=FFNPart)

    def resolve(self, model: ModelConfig) -> ParallelConfig:
        resolved = LayerConfig.resolve(self, model)
        parts = {name: getattr(self, name).model_copy(update={"norm_type": resolved.norm_type}).resolve(model)
                 for name in PARTS}
        return resolved.model_copy(update=parts)

    def check(self, model: ModelConfig):
        issues = super().check(model)
        for name in PARTS:
            issues += [(f"{name}.{key}", msg) for key, msg in getattr(self, name).check(model)]
        return issues

    def block_params(self, model: ModelConfig) -> int:
        return self.attention.block_params(model) + self.ffn.block_params(model)

    def block_flops(self, model: ModelConfig, seq_len: int) -> int:
        return self.attention.block_flops(model, seq_len) + self.ffn.block_flops(model, seq_len)

    def gate_bias(self) -> bool:
        return self.attention.gate_bias() or self.ffn.gate_bias()

    # ---- cross-layer wiring: the attention part's --------------------------------------------
    def rotary_dim(self) -> int:
        return self.attention.rotary_dim()

    def produces(self) -> set[str]:
        return self.attention.produces()

    def consumes(self) -> dict[str, bool]:
        return self.attention.consumes()

    def consume_key(self, name: str) -> str:
        return "attention." + self.attention.consume_key(name)

    def check_source(self, name: str, source: LayerConfig):
        return [("attention." + key, msg) for key, msg in self.attention.check_source(name, source)]

    def source_config(self, name: str) -> LayerConfig:
        return self.attention.source_config(name)

    def summary(self) -> str:
        rest = super().summary()
        text = f"attn({self.attention.summary()}) + ffn({self.ffn.summary()})"
        return text + (" " + rest if rest else "")


@register_block("Parallel", ParallelConfig)
class Parallel(Block):
    """Attention and FFN blocks (the registered classes, built from the two parts) on one input."""

    def __init__(self, cfg: ParallelConfig, model: ModelConfig, plan: LayerPlan):
        super().__init__(cfg, model, plan)
        self.attention = Attention(cfg.attention, model, plan)
        self.ffn = FFN(cfg.ffn, model, plan)

    def forward(self, h: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:  # (B, L, D) -> (B, L, D)
        return self.attention(h, ctx) + self.ffn(h, ctx)

    def residual_projections(self):
        return self.attention.residual_projections() + self.ffn.residual_projections()
