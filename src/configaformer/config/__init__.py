"""The config language: schemas, loading, whole-model validation."""

from .layer import LayerConfig, OutputGateConfig, TokenShiftChunk
from .model import ClassifierConfig, ModelConfig
from .resolve import LayerPlan, load_config, plan_wiring, resolve_config

__all__ = ["ClassifierConfig", "LayerConfig", "LayerPlan", "ModelConfig", "OutputGateConfig",
           "TokenShiftChunk", "load_config", "plan_wiring", "resolve_config"]
