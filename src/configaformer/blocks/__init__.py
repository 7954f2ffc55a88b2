"""Registered block types. Importing this package imports every module in it, and each module
registers its block with @register_block, so a new block type is one new file here."""

import importlib
import pkgutil

from .base import Block, Layer

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["Block", "Layer"]
