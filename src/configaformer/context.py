"""The forward context: everything a layer needs besides its input, computed once per forward.

The model builds one `ForwardContext` per call and hands it to every layer as `forward(x, ctx)`.
It holds positions, the caller's padding mask, rotary tables per rotary width, attention masks
(memoised per causal flag), and `state`: cross-layer tensors such as an attention map that an
earlier layer produced for a later one. Layers write to `state` only what the builder's
`LayerPlan.keep` says some later layer reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ForwardContext:
    seq_len: int
    device: torch.device
    dtype: torch.dtype
    padding_mask: torch.Tensor | None = None  # (B, L) bool, True = real token
    positions: torch.Tensor | None = None  # (B, L) positions when padded; None means arange(L)
    rotary: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # dim_rope -> cos, sin
    state: dict[str, torch.Tensor] = field(default_factory=dict)
    _masks: dict[bool, torch.Tensor | None] = field(default_factory=dict)

    def attn_mask(self, causal: bool) -> torch.Tensor | None:
        """Boolean mask (B|1, 1, L, L), True where a query may attend a key; None if none is needed
        (no padding and not causal). Padded queries may attend themselves so no row is empty."""
        if causal not in self._masks:
            self._masks[causal] = self._build_mask(causal)
        return self._masks[causal]

    def fused_mask(self, causal: bool) -> tuple[torch.Tensor | None, bool]:
        """(attn_mask, is_causal) for scaled_dot_product_attention: the cheap is_causal flag when
        the only masking needed is causal, else the explicit mask."""
        if self.padding_mask is None:
            return None, causal
        return self.attn_mask(causal), False

    def _build_mask(self, causal: bool) -> torch.Tensor | None:
        length = self.seq_len
        mask = None
        if causal:
            mask = torch.ones(length, length, dtype=torch.bool, device=self.device).tril()[None, None]
        if self.padding_mask is not None:
            keys = self.padding_mask[:, None, None, :]  # (B, 1, 1, L)
            mask = keys if mask is None else mask & keys
            eye = torch.eye(length, dtype=torch.bool, device=self.device)[None, None]
            mask = mask | eye
        return mask
