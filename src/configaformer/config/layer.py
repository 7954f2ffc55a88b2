"""Keys every layer type takes, and the contract a block's config schema fulfils."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import TYPE_CHECKING, ClassVar, Literal, Optional

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from .base import StrictModel

if TYPE_CHECKING:  # pragma: no cover
    from .model import ModelConfig

NormType = Literal["layernorm", "rmsnorm", "rmsnorm_offset", "scalenorm", "none"]
GateActivation = Literal["none", "sigmoid", "gelu", "silu", "relu", "tanh"]
ResidualScale = Literal["none", "rezero", "layerscale"]

LAYERSCALE_INIT = 1e-4  # default `layerscale_init` (see README: between CaiT's 0.1 and 1e-6)


def norm_params(norm_type: str, dim: int) -> int:
    """Parameters of one norm of width `dim` (for the parameter-count formulas): LayerNorm has a
    weight and a bias per feature, RMSNorm (either form) a weight per feature, ScaleNorm one scalar."""
    return {"layernorm": 2 * dim, "rmsnorm": dim, "rmsnorm_offset": dim, "scalenorm": 1, "none": 0}[norm_type]


def scaled_width(mult: float, dim: int) -> int:
    """A hidden width `round(mult * dim)`, at least 1 (FFN, gMLP and head `ff_mult`). A product past
    the float range is rounded exactly, so the size check can refuse it instead of overflowing."""
    product = mult * dim
    return max(1, round(Fraction(mult) * dim if math.isinf(product) else product))


def divisors_near(n: int, target: int, count: int = 6, reach: int = 100_000) -> list[int]:
    """Up to `count` divisors of `n` nearest to `target`, ascending, for an error message to offer:
    a bounded search outward from `target`, so a huge `n` costs no more than a small one."""
    found: list[int] = []
    for step in range(reach):
        for h in sorted({target - step, target + step}):
            if 1 <= h <= n and n % h == 0:
                found.append(h)
        if len(found) >= count or (target - step < 1 and target + step > n):
            break
    return sorted(found[:count])


def indivisible(key: str, value: int, total_name: str, total: int) -> tuple[str, str]:
    """The issue for `total` (e.g. dim_attn) not divisible by `value` (e.g. num_heads)."""
    options = ", ".join(map(str, divisors_near(total, value)))
    return key, f"{total_name} ({total}) is not divisible by {key} ({value}); valid {key} near {value}: {options}"


# Checks return (key path relative to the layer, message) pairs; the resolver adds `layers[i]`.
Issues = list[tuple[str, str]]


class TokenShiftChunk(StrictModel):
    """One chunk of a token shift: `features` consecutive features moved `shift` positions later."""

    features: PositiveInt
    shift: int


class OutputGateConfig(StrictModel):
    """Multiply a layer's output by act(W x_src): `source` is the layer input (the residual
    stream, before the norm) or the hidden state the main operation reads (after norm and shift)."""

    activation: GateActivation = "sigmoid"
    source: Literal["input", "hidden"] = "input"


def check_token_shift(chunks: list[TokenShiftChunk] | None, width: int, causal: bool, key: str,
                      width_name: str) -> Issues:
    if not chunks:
        return []
    issues: Issues = []
    if all(c.shift == 0 for c in chunks):
        issues.append((key, "every chunk has shift 0, so nothing moves; give a chunk a non-zero shift or leave "
                            "the key out"))
    total = sum(c.features for c in chunks)
    if total != width:
        issues.append((key, f"features sum to {total}; they must sum to {width_name} ({width})"))
    for i, c in enumerate(chunks):
        if causal and c.shift < 0:
            issues.append((f"{key}[{i}].shift", f"{c.shift} looks ahead in a causal layer; use a shift >= 0"))
    return issues


class LayerConfig(StrictModel):
    """Keys shared by every layer type (see README, "Keys every layer takes"). A block's schema
    subclasses it; the contract is docs/blocks.md."""

    # The key (a dotted path for a nested part) holding this layer type's causal flag, if it has
    # one: `declared_causal` reads it, and the conformance test builds both settings from it.
    causal_key: ClassVar[Optional[str]] = None

    type: str
    pre_norm_bool: bool = True
    post_norm_bool: bool = False
    norm_type: Optional[NormType] = None  # None: the model's norm_type
    token_shift_config: Optional[list[TokenShiftChunk]] = None
    output_gate: Optional[OutputGateConfig] = None
    add_residual: bool = True
    dropout: NonNegativeFloat = Field(0.0, lt=1.0)
    residual_scale: ResidualScale = "none"
    layerscale_init: Optional[PositiveFloat] = None  # None: LAYERSCALE_INIT when residual_scale is layerscale
    layer_drop: NonNegativeFloat = Field(0.0, lt=1.0)
    share_weights_with: Optional[NonNegativeInt] = None  # index of an earlier layer whose module this one runs

    # ---- the contract every block schema fulfils -------------------------------------------
    def resolve(self, model: ModelConfig) -> LayerConfig:
        """A copy with every default that depends on the model filled in."""
        update = {"norm_type": self.norm_type or model.norm_type}
        if self.residual_scale == "layerscale" and self.layerscale_init is None:
            update["layerscale_init"] = LAYERSCALE_INIT
        return self.model_copy(update=update)

    def declared_causal(self) -> Optional[bool]:
        """Whether this layer keeps every position from seeing later ones: the flag at `causal_key`.
        None: it has no flag (a layer that does not mix positions, such as FFN). A layer type that
        mixes positions without a flag returns True (always causal) or False (always looks ahead)."""
        if self.causal_key is None:
            return None
        value = self
        for part in self.causal_key.split("."):
            value = getattr(value, part)
        return bool(value)

    def check(self, model: ModelConfig) -> Issues:
        """Checks of this layer against the model-wide settings (run after resolve)."""
        causal = self.declared_causal()
        causal = model.is_causal if causal is None else causal
        issues = check_token_shift(self.token_shift_config, model.dim_model, causal,
                                   "token_shift_config", "dim_model")
        issues += self.check_norm_keys(model)
        if self.layerscale_init is not None and self.residual_scale != "layerscale":
            issues.append(("layerscale_init", f"only applies with residual_scale: layerscale "
                                              f"(this layer has residual_scale: {self.residual_scale})"))
        if not self.add_residual:
            if self.residual_scale != "none":
                issues.append(("residual_scale", f"{self.residual_scale} scales the branch before the residual "
                                                 "add, but add_residual is false; use residual_scale: none"))
            if self.layer_drop > 0:
                issues.append(("layer_drop", "a dropped layer passes its input on through the residual add, "
                                             "but add_residual is false; use layer_drop: 0"))
        return issues

    def uses_norm_type(self) -> bool:
        """Whether the block itself builds a norm of the layer's `norm_type` (gMLP's norm on v)."""
        return False

    def check_norm_keys(self, model: ModelConfig) -> Issues:
        """Norm and gate-source keys set to something the layer would ignore (see docs/config-errors.md)."""
        issues: Issues = []
        if self.post_norm_bool and self.norm_type == "none":
            issues.append(("post_norm_bool", "is true, but norm_type is none (this layer's or the model's), so the "
                                             "post-norm does nothing; choose a norm_type or post_norm_bool: false"))
        if (self.norm_type != model.norm_type and not (self.pre_norm_bool or self.post_norm_bool)
                and not self.uses_norm_type()):
            issues.append(("norm_type", f"{self.norm_type} differs from the model's {model.norm_type}, but this layer "
                                        "has no norm (pre_norm_bool and post_norm_bool are false); leave norm_type out"))
        gate = self.output_gate
        shifted = self.token_shift_config and any(c.shift for c in self.token_shift_config)
        if gate is not None and gate.source == "hidden" and not shifted \
                and not (self.pre_norm_bool and self.norm_type != "none"):
            issues.append(("output_gate.source", "'hidden' is the layer input itself here: the layer has no pre-norm "
                                                 "(pre_norm_bool false or norm_type none) and no token_shift_config; "
                                                 "use source: input"))
        return issues

    def count_params(self, model: ModelConfig) -> int:
        """Parameters of the whole layer by formula (without building it): the shared parts
        (norms, output gate, residual scale) plus `block_params`. A layer that shares an earlier
        layer's weights reports the same count (its module holds them); the model counts them once."""
        dim = model.dim_model
        norms = (int(self.pre_norm_bool) + int(self.post_norm_bool)) * norm_params(self.norm_type, dim)
        gate = dim * dim + int(self.gate_bias()) * dim if self.output_gate else 0
        scale = {"none": 0, "rezero": 1, "layerscale": dim}[self.residual_scale]
        return norms + gate + scale + self.block_params(model)

    def gate_bias(self) -> bool:
        """Whether the layer's output gate has a bias: the block's `bias_bool` where it has one."""
        return bool(getattr(self, "bias_bool", True))

    def block_params(self, model: ModelConfig) -> int:
        """Parameters of the block's own operation, by formula."""
        raise NotImplementedError(f"{type(self).__name__} does not define block_params")

    def active_block_params(self, model: ModelConfig) -> int:
        """Parameters of the block that one token's forward pass uses: all of them (`block_params`)
        unless the block routes tokens to a subset (mixture of experts)."""
        return self.block_params(model)

    def block_flops(self, model: ModelConfig, seq_len: int) -> int:
        """Forward FLOPs per token of the block's own operation at context length `seq_len`
        (a multiply-add is 2 FLOPs; matrix products only, elementwise work ignored). By default
        every active weight once per token; blocks that mix positions (attention's QK^T and AV,
        gMLP's spatial product) add those products."""
        return 2 * self.active_block_params(model)

    def rotary_dim(self) -> int:
        """Width of the rotary table this layer reads from the context (0: none)."""
        return 0

    def produces(self) -> set[str]:
        """Names of cross-layer tensors this layer can hand to later layers (e.g. "attn_map")."""
        return set()

    def consumes(self) -> dict[str, bool]:
        """Cross-layer tensors this layer reads from the most recent producer -> whether required."""
        return {}

    def consume_key(self, name: str) -> str:
        """The config key that asks for `name` (where errors about it point)."""
        return "type"

    def check_source(self, name: str, source: LayerConfig) -> Issues:
        """Checks that the producer of `name` suits this layer (e.g. equal head counts).
        `source` is the producer's `source_config(name)`."""
        return []

    def source_config(self, name: str) -> LayerConfig:
        """The config that produces `name`, handed to consumers' `check_source`: this layer
        itself, or the producing part of a composite layer (Parallel: its attention)."""
        return self

    def summary(self) -> str:
        """A few words on the settings that matter, for `configaformer info`."""
        parts = []
        if self.token_shift_config:
            parts.append("shift=" + "/".join(str(c.shift) for c in self.token_shift_config))
        if self.output_gate:
            parts.append(f"gate={self.output_gate.activation}({self.output_gate.source})")
        if self.post_norm_bool:
            parts.append("post_norm")
        if not self.pre_norm_bool:
            parts.append("no_pre_norm")
        if not self.add_residual:
            parts.append("no_residual")
        if self.residual_scale != "none":
            parts.append(self.residual_scale)
        if self.layer_drop:
            parts.append(f"layer_drop={self.layer_drop:g}")
        if self.share_weights_with is not None:
            parts.append(f"shares=layers[{self.share_weights_with}]")
        return " ".join(parts)
