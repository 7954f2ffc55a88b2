"""Registered block types. Importing this package registers every built-in block."""

from . import attention, ffn  # noqa: F401  (registration side effect)
from .base import Block, Layer

__all__ = ["Block", "Layer"]
