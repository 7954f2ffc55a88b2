"""Keys every layer type takes, and the contract a block's config schema fulfils."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Optional

from pydantic import Field, NonNegativeFloat, PositiveInt

from .base import StrictModel

if TYPE_CHECKING:  # pragma: no cover
    from .model import ModelConfig

NormType = Literal["layernorm", "rmsnorm", "none"]
GateActivation = Literal["none", "sigmoid", "gelu", "silu", "relu", "tanh"]

# Parameters of one norm, per feature (used by the parameter-count formulas).
NORM_PARAMS_PER_FEATURE = {"layernorm": 2, "rmsnorm": 1, "none": 0}

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
    total = sum(c.features for c in chunks)
    if total != width:
        issues.append((key, f"features sum to {total}; they must sum to {width_name} ({width})"))
    for i, c in enumerate(chunks):
        if causal and c.shift < 0:
            issues.append((f"{key}[{i}].shift", f"{c.shift} looks ahead in a causal layer; use a shift >= 0"))
    return issues


class LayerConfig(StrictModel):
    """Keys shared by every layer type (see README, "Keys every layer takes")."""

    type: str
    pre_norm_bool: bool = True
    post_norm_bool: bool = False
    norm_type: Optional[NormType] = None  # None: the model's norm_type
    token_shift_config: Optional[list[TokenShiftChunk]] = None
    output_gate: Optional[OutputGateConfig] = None
    add_residual: bool = True
    dropout: NonNegativeFloat = Field(0.0, lt=1.0)

    # ---- the contract every block schema fulfils -------------------------------------------
    def resolve(self, model: ModelConfig) -> LayerConfig:
        """A copy with every default that depends on the model filled in."""
        return self.model_copy(update={"norm_type": self.norm_type or model.norm_type})

    def declared_causal(self) -> Optional[bool]:
        """True/False if this layer type mixes tokens with an explicit causal flag, else None."""
        return None

    def check(self, model: ModelConfig) -> Issues:
        """Checks of this layer against the model-wide settings (run after resolve)."""
        causal = self.declared_causal()
        causal = model.is_causal if causal is None else causal
        return check_token_shift(self.token_shift_config, model.dim_model, causal,
                                 "token_shift_config", "dim_model")

    def count_params(self, model: ModelConfig) -> int:
        """Parameters of the whole layer by formula (without building it): the shared parts
        (norms, output gate) plus `block_params`."""
        dim = model.dim_model
        norms = (int(self.pre_norm_bool) + int(self.post_norm_bool)) * NORM_PARAMS_PER_FEATURE[self.norm_type] * dim
        gate = dim * dim + dim if self.output_gate else 0
        return norms + gate + self.block_params(model)

    def block_params(self, model: ModelConfig) -> int:
        """Parameters of the block's own operation, by formula."""
        raise NotImplementedError(f"{type(self).__name__} does not define block_params")

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
        """Checks that the producer of `name` suits this layer (e.g. equal head counts)."""
        return []

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
        return " ".join(parts)
