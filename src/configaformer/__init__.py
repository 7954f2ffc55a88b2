"""configaformer: highly configurable transformers, one config per model.

    model = configaformer.Transformer(config)       # config: dict, YAML/JSON path or ModelConfig
    logits_lm, logits_cls = model(token_ids)         # one (B, L, classes) tensor per classifier
"""

from .config import ModelConfig, load_config, resolve_config
from .encoder_decoder import EncoderDecoder
from .errors import ConfigError, Problem
from .model import Transformer
from .registry import get_block, list_blocks, register_block

__version__ = "0.1.0"

__all__ = ["ConfigError", "EncoderDecoder", "ModelConfig", "Problem", "Transformer", "get_block", "list_blocks",
           "load_config", "register_block", "resolve_config"]
