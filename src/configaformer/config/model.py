"""Model-wide keys (dim_model, vocab_size, dim_rope, classifiers, input_emb_size, layers, ...)."""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, field_validator

from .base import StrictModel
from .layer import NormType, norm_params, scaled_width


class RopeScalingConfig(StrictModel):
    """Llama 3's rotary frequency scaling (Grattafiori et al. 2024, arXiv 2407.21783; the
    `llama3` rope_type of Hugging Face transformers). With wavelength w = 2 pi / f of a rotary
    frequency f and L = original_max_seq_len: frequencies with w < L / high_freq_factor stay,
    those with w > L / low_freq_factor are divided by `factor`, and those between are blended,
    f' = (1 - s) f / factor + s f with s = (L / w - low_freq_factor) / (high_freq_factor - low_freq_factor)."""

    type: Literal["llama3"] = "llama3"
    factor: float = Field(8.0, ge=1.0)
    low_freq_factor: PositiveFloat = 1.0
    high_freq_factor: PositiveFloat = 4.0
    original_max_seq_len: PositiveInt = 8192


class ClassifierConfig(StrictModel):
    """One output head. A bare integer in `classifiers` means `{"num_classes": n}`."""

    num_classes: int  # validated >= 1 by the resolver so the message can say so plainly
    name: Optional[str] = None  # default: "lm" for the first head whose size is vocab_size, else "head{i}" (never an explicit name)
    head_type: Literal["ffn", "linear", "tied"] = "ffn"
    bias_bool: bool = True
    ff_mult: PositiveFloat = 1.0  # hidden width of the "ffn" head, in units of dim_model
    logit_softcap: Optional[PositiveFloat] = None  # logits -> c * tanh(logits / c) (Gemma 2, arXiv 2408.00118)

    def dim_hidden(self, model: ModelConfig) -> int:
        return scaled_width(self.ff_mult, model.dim_model)

    def count_params(self, model: ModelConfig) -> int:
        """Parameters of the head by formula (a tied head's output weight is the embedding's)."""
        dim, bias = model.dim_model, int(self.bias_bool)
        out = bias * self.num_classes
        if self.head_type == "tied":
            return out + (dim * model.emb_size if model.emb_size != dim else 0)
        out += dim * self.num_classes
        if self.head_type == "linear":
            return out
        hidden = self.dim_hidden(model)
        return out + 2 * norm_params(model.norm_type, dim) + 2 * dim * hidden + bias * (hidden + dim)


class ModelConfig(StrictModel):
    """Settings of the whole model; `layers` holds one layer config per layer, in order."""

    dim_model: PositiveInt
    vocab_size: PositiveInt
    dim_rope: NonNegativeInt = 0
    classifiers: list[ClassifierConfig]
    input_emb_size: Optional[PositiveInt] = None  # None: dim_model
    layers: list[Any]
    max_seq_len: Optional[PositiveInt] = None
    emb_dropout: NonNegativeFloat = Field(0.0, lt=1.0)
    norm_type: NormType = "layernorm"
    # At least 1e-12: a norm's gradient at an all-zero input is about eps**-0.5, and a smaller
    # epsilon (1e-30) let two such norms overflow float32 (found by the fuzz suite).
    norm_eps: float = Field(1e-5, ge=1e-12)
    final_norm_bool: bool = True
    rope_base: PositiveFloat = 10000.0
    rope_scaling: Optional[RopeScalingConfig] = None
    emb_scale: PositiveFloat = 1.0  # token embeddings times this (Gemma: sqrt(dim_model)), before any projection
    # At most 1: each linear layer multiplies an activation's scale by about init_std * sqrt(width),
    # and init_std 3.5 overflowed float32 within four layers of a norm-free stack (fuzz suite).
    init_std: PositiveFloat = Field(0.02, le=1.0)
    init_scale_residual_bool: bool = True
    attention_impl: Literal["auto", "explicit"] = "auto"
    abs_pos_emb: Literal["none", "learned", "sinusoidal"] = "none"  # learned needs max_seq_len

    @field_validator("classifiers", mode="before")
    @classmethod
    def _ints_are_class_counts(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [{"num_classes": v} if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
        return value

    @field_validator("layers", mode="before")
    @classmethod
    def _layers_are_a_list(cls, value: Any) -> Any:
        if isinstance(value, tuple):
            return list(value)
        return value

    # ---- derived facts, available once layers are resolved -----------------------------------
    @property
    def emb_size(self) -> int:
        return self.input_emb_size or self.dim_model

    @property
    def is_causal(self) -> bool:
        """True when every layer that mixes tokens with a causal flag is causal."""
        flags = [f for f in (layer.declared_causal() for layer in self.layers) if f is not None]
        return all(flags)

    def to_dict(self) -> dict[str, Any]:
        """The fully resolved config as plain JSON-able data (what `save_pretrained` writes)."""
        return self.model_dump(mode="json")
