"""The forward context: everything a layer needs besides its input, computed once per forward.

The model builds one `ForwardContext` per call and hands it to every layer as `forward(x, ctx)`.
It holds positions, the caller's padding mask, rotary tables per rotary width, attention masks
and position biases (memoised, so layers with equal settings share one tensor), and `state`:
cross-layer tensors such as an attention map that an earlier layer produced for a later one.

Cross-layer tensors go through two calls, keyed by the layer that produced them, so that every
reader gets its own producer's tensor however often layers run (a shared module at several
positions, a layer recomputed by activation checkpointing after later layers ran):

    ctx.produce("attn_map", probs)      # kept only if a later layer reads it from this position
    probs = ctx.consume("attn_map")     # from the producer in this position's LayerPlan.sources

The model calls `enter_layer(i)` before layer i, which also drops the tensors whose last reader
has run. `Wiring` holds who reads what, per position, from the builder's plans.

Auxiliary losses and statistics (docs/blocks.md, "Auxiliary losses"): a block reports them with
`ctx.report(name, value, weight)`; they are collected only when the caller asked for them
(`model(..., aux=True)`, which returns them beside the outputs), keyed `layers[i].name`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Mapping, NamedTuple, Sequence

import torch

if TYPE_CHECKING:
    from .config import LayerPlan

StateKey = tuple[str, int]  # (tensor name, position of the layer that produced it)


@dataclass(frozen=True)
class Wiring:
    """Which cross-layer tensors each layer position reads, from the builder's per-position plans
    (a module shared by several positions reads, at each, from that position's own sources)."""

    sources: tuple[dict[str, int], ...] = ()  # position -> {name: producing position}
    last_reader: dict[StateKey, int] = field(default_factory=dict)  # the last position reading each tensor
    released: tuple[tuple[StateKey, ...], ...] = ()  # position -> tensors no position from it on reads

    @classmethod
    def from_plans(cls, plans: Sequence[LayerPlan]) -> Wiring:
        last = {(name, src): plan.index for plan in plans for name, src in plan.sources.items()}
        released = tuple(tuple(key for key, reader in last.items() if reader == position - 1)
                         for position in range(len(plans)))
        return cls(tuple(dict(plan.sources) for plan in plans), last, released)


class AuxReport(NamedTuple):
    """One auxiliary value a layer reported in a forward (`ForwardContext.report`)."""

    value: torch.Tensor  # a 0-dim tensor (a loss or a statistic), or a vector statistic (per-expert load)
    weight: float = 0.0  # > 0: a loss the trainer adds as weight * value; 0: a statistic, detached


def aux_loss(reports: Mapping[str, AuxReport]) -> torch.Tensor | float:
    """The weighted sum of the auxiliary losses among `reports` (0.0 when there are none)."""
    return sum((r.weight * r.value for r in reports.values() if r.weight), 0.0)


@dataclass
class ForwardContext:
    seq_len: int
    device: torch.device
    dtype: torch.dtype
    padding_mask: torch.Tensor | None = None  # (B, L) bool, True = real token
    positions: torch.Tensor | None = None  # (B, L) positions when padded; None means arange(L)
    rotary: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # dim_rope -> cos, sin
    context: torch.Tensor | None = None  # (B, S, dim_context) sequence read by cross-attention layers
    context_mask: torch.Tensor | None = None  # (B, S) bool, True = real context token
    offset: int = 0  # positions already processed and cached (incremental decoding); 0 otherwise
    cache: Any = None  # a generation.DecodeCache while decoding incrementally, else None
    layer_index: int = 0  # position of the layer running now (set by the model; keys decoding state)
    wiring: Wiring = field(default_factory=Wiring)
    state: dict[StateKey, torch.Tensor] = field(default_factory=dict)  # use produce / consume
    reports: dict[str, AuxReport] | None = None  # use report; None: the caller asked for none
    _memo: dict[Any, Any] = field(default_factory=dict)

    def decode_state(self) -> dict | None:
        """The decoding state of the layer running now (None unless decoding with a cache)."""
        return None if self.cache is None else self.cache.layer(self.layer_index)

    def enter_layer(self, index: int) -> None:
        """Called by the model before the layer at position `index` runs."""
        self.layer_index = index
        if index < len(self.wiring.released):
            for key in self.wiring.released[index]:
                self.state.pop(key, None)

    def produce(self, name: str, tensor: torch.Tensor) -> None:
        """Hand `tensor` on as this position's `name` to the later layers that read it (none: a no-op)."""
        key = (name, self.layer_index)
        if key in self.wiring.last_reader:
            self.state[key] = tensor

    @property
    def reporting(self) -> bool:
        """Whether the caller collects auxiliary reports (a block may skip computing them if not)."""
        return self.reports is not None

    def report(self, name: str, value: torch.Tensor, weight: float = 0.0) -> None:
        """Hand an auxiliary loss (weight > 0: the trainer adds weight * value to the loss) or a
        statistic (weight 0: stored detached) of the layer running now to the caller, as
        `layers[i].name`; a no-op when the caller collects none."""
        if self.reports is not None:
            self.reports[f"layers[{self.layer_index}].{name}"] = AuxReport(value if weight else value.detach(),
                                                                          float(weight))

    def consume(self, name: str) -> torch.Tensor | None:
        """The `name` tensor of the layer this position reads it from; None if there is none."""
        source = self._sources().get(name)
        return None if source is None else self.state[(name, source)]

    def layer_inputs(self) -> dict[StateKey, torch.Tensor]:
        """The cross-layer tensors the layer running now reads."""
        return {key: self.state[key] for key in self._sources().items() if key in self.state}

    def _sources(self) -> dict[str, int]:
        """{name: producing position} for the position running now (none in a context built by hand)."""
        sources = self.wiring.sources
        return sources[self.layer_index] if self.layer_index < len(sources) else {}

    def isolated(self, index: int, inputs: dict[StateKey, torch.Tensor]) -> ForwardContext:
        """A copy for running the layer at position `index` on its own, as activation checkpointing
        recomputes it in backward after later layers ran: it reads only `inputs` (what
        `layer_inputs()` gave at that position), and what it produces stays in the copy's `state`
        (`produced()`), what it reports in the copy's own `reports`. Its own memo: masks it builds
        are not shared."""
        reports = None if self.reports is None else {}
        return replace(self, layer_index=index, state=dict(inputs), reports=reports, _memo=dict(self._memo))

    def produced(self) -> dict[StateKey, torch.Tensor]:
        """The cross-layer tensors the layer at this position produced."""
        return {key: t for key, t in self.state.items() if key[1] == self.layer_index}

    def memo(self, key: Any, make: Callable[[], Any]) -> Any:
        """`make()` once per forward for each key; later calls with the same key reuse it."""
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    @property
    def key_len(self) -> int:
        """Keys a query can see: the cached positions plus this call's."""
        return self.offset + self.seq_len

    def relative_positions(self) -> torch.Tensor:
        """(B|1, L, offset + L) long: key position minus query position (negative = earlier key)."""
        def make():
            if self.positions is not None:
                return self.positions[:, None, :] - self.positions[:, :, None]
            keys = torch.arange(self.key_len, device=self.device)
            return (keys[None, :] - keys[self.offset:, None])[None]
        return self.memo("relative_positions", make)

    def attn_mask(self, causal: bool, window: int | None = None) -> torch.Tensor | None:
        """Boolean mask (B|1, 1, L, offset + L), True where a query may attend a key; None if
        nothing is masked. `window`: only keys fewer than `window` positions away (sliding-window
        attention). The causal mask is aligned bottom-right: query i sits at position offset + i.
        Padded queries may attend themselves so that no row is empty."""
        window = self._window(window)
        return self.memo(("mask", causal, window), lambda: self._build_mask(causal, window))

    def _window(self, window: int | None) -> int | None:
        """None for a window that holds every key (however large: 2**70 is no overflow)."""
        return None if window is None or window >= self.key_len else window

    def fused_mask(self, causal: bool, window: int | None = None) -> tuple[torch.Tensor | None, bool]:
        """(attn_mask, is_causal) for scaled_dot_product_attention: the cheap is_causal flag when
        the only masking needed is causal and queries and keys start together, else the explicit
        mask. (SDPA aligns is_causal top-left, which is wrong once keys are cached; a single new
        query needs no causal mask at all.)"""
        window = self._window(window)
        if self.padding_mask is None and window is None:
            if self.offset == 0:
                return None, causal
            if self.seq_len == 1 or not causal:
                return None, False
        return self.attn_mask(causal, window), False

    def _build_mask(self, causal: bool, window: int | None) -> torch.Tensor | None:
        mask = None
        if causal or window is not None:
            keys = torch.arange(self.key_len, device=self.device)
            distance = keys[None, :] - keys[self.offset:, None]  # key - query position, (L, offset + L)
            mask = torch.ones_like(distance, dtype=torch.bool)
            if causal:
                mask = distance <= 0
            if window is not None:
                mask = mask & (distance.abs() < window)
            mask = mask[None, None]
        if self.padding_mask is not None:
            keys = self.padding_mask[:, None, None, :]  # (B, 1, 1, L)
            mask = keys if mask is None else mask & keys
            mask = mask | torch.eye(self.seq_len, dtype=torch.bool, device=self.device)[None, None]
        return mask
