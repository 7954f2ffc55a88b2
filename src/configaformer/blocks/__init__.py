"""Registered block types. Importing this package registers every built-in block."""

from . import attention, cross_attention, ffn  # noqa: F401  (registration side effect)
from . import gmlp  # noqa: F401  (registration side effect)
from . import parallel  # noqa: F401  (registration side effect; composes attention and ffn)
from .base import Block, Layer

__all__ = ["Block", "Layer"]
