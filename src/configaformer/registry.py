"""Block registry: the `type` of a layer dict is the name a block registered under."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .blocks.base import Block, LayerConfig


@dataclass(frozen=True)
class BlockSpec:
    name: str
    block_cls: type[Block]
    config_cls: type[LayerConfig]


_REGISTRY: dict[str, BlockSpec] = {}


def register_block(name: str, config_cls: type[LayerConfig]):
    """Class decorator: register a block class and its config schema under `name`.

    A name can be registered once; registering it again is a programming error.
    """

    def decorate(block_cls):
        if name in _REGISTRY:
            raise ValueError(f"block type {name!r} is already registered by {_REGISTRY[name].block_cls.__qualname__}")
        _REGISTRY[name] = BlockSpec(name, block_cls, config_cls)
        block_cls.config_cls = config_cls
        return block_cls

    return decorate


def get_block(name: str) -> BlockSpec:
    """The registered block named `name`; KeyError listing the valid names otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown block type {name!r}; registered: {', '.join(list_blocks())}") from None


def list_blocks() -> list[str]:
    return sorted(_REGISTRY)
