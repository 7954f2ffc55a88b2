"""Activation checkpointing, applied to a built model from outside (as torchtitan's `apply_ac`):
the chosen layer positions run under `torch.utils.checkpoint` (non-reentrant), so their
activations are dropped after the forward and recomputed in backward (Chen et al. 2016,
"Training Deep Nets with Sublinear Memory Cost", arXiv 1604.06174).

    apply_activation_checkpointing(model, True)       # every position
    apply_activation_checkpointing(model, [0, 2])     # these positions of model.layers

A position is one use of a layer: a module that several positions share (`share_weights_with`)
is recomputed at the listed positions only, and runs plainly at the others.

The layer module keeps its place and its parameter names (its class becomes `CheckpointedLayer`,
a subclass of `Layer`, the way FSDP2's `fully_shard` swaps classes), so state dicts, optimizers
and `save_pretrained` see the same model. Apply it before an engine wraps the model (FSDP2 then
shards the checkpointed layers, as torchtitan orders it) and before `torch.compile`.

Cross-layer tensors (an attention map or scores read by a later layer): a checkpointed layer runs
on its own copy of the context (`ForwardContext.isolated`) that holds only the tensors it reads,
handed to it as inputs, and returns what it produces (and the auxiliary losses it reports); so its recomputation in backward, after
later layers ran, reads what its forward read, and gradients equal those without checkpointing.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..blocks.base import Layer
from ..context import ForwardContext


class CheckpointedLayer(Layer):
    """A Layer recomputed in backward at the positions in `checkpoint_positions`."""

    checkpoint_positions: frozenset[int] = frozenset()

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        index = ctx.layer_index
        if index not in self.checkpoint_positions or not torch.is_grad_enabled():
            return super().forward(x, ctx)
        forward = super().forward

        def run(x: torch.Tensor, inputs: dict) -> tuple[torch.Tensor, dict, dict | None]:  # the same each time
            own = ctx.isolated(index, inputs)
            return forward(x, own), own.produced(), own.reports

        y, produced, reports = checkpoint(run, x, ctx.layer_inputs(), use_reentrant=False)
        ctx.state.update(produced)  # for the later layers that read them
        if reports:  # auxiliary losses: returned like the output, so their gradients reach the layer
            ctx.reports.update(reports)
        return y


def checkpoint_positions(positions: bool | Iterable[int] | None, count: int) -> frozenset[int]:
    """The layer positions `positions` names in a model of `count` layers (True: all; False or
    None: none); ValueError naming those outside it."""
    chosen = frozenset(range(count) if positions is True else positions or ())
    outside = sorted(i for i in chosen if not 0 <= i < count)
    if outside:
        raise ValueError(f"positions {outside} are outside the model's {count} layers (valid: 0..{count - 1})")
    return chosen


def apply_activation_checkpointing(model: nn.Module, positions: bool | Iterable[int] | None = True) -> frozenset[int]:
    """Recompute the layers at `positions` (True: all) of `model.layers` in backward; returns the
    positions. ValueError for a position outside the model, TypeError once an engine wrapped it."""
    chosen = checkpoint_positions(positions, len(model.layers))
    for index in sorted(chosen):
        layer = model.layers[index]
        if type(layer) is Layer:
            layer.__class__ = CheckpointedLayer
        elif not isinstance(layer, CheckpointedLayer):
            raise TypeError(f"layers[{index}] is a {type(layer).__name__}: apply activation checkpointing to the "
                            f"model's own Layer modules, before an engine wraps them")
        layer.checkpoint_positions = layer.checkpoint_positions | {index}
    return chosen
