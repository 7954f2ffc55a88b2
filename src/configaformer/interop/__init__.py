"""Hugging Face interop: import GPT-2, Llama, Mistral, Qwen2 and Gemma 2 checkpoints from a local
directory as configaformer configs and weights, and export configs these families express
exactly (docs/interop.md). Reads JSON and safetensors only; transformers is not needed."""

from .base import FAMILIES, InteropError
from .hf import export_hf, import_hf, load_hf

__all__ = ["FAMILIES", "InteropError", "export_hf", "import_hf", "load_hf"]
