"""Token shift (Peng et al., RWKV; arXiv 2305.13048): move chunks of features along the sequence.

The input's features are split into consecutive chunks; chunk c moves `shift_c` positions later
(a negative shift looks ahead), and the vacated positions are zero-filled. A token therefore
sees some features of its predecessors at no attention cost.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TokenShift(nn.Module):
    def __init__(self, features: list[int], shifts: list[int], state_key: str = "shift"):
        super().__init__()
        self.state_key = state_key  # where its history lives in a layer's decoding state
        self.features = list(features)
        self.shifts = list(shifts)

    def forward(self, x: torch.Tensor, state: dict | None = None) -> torch.Tensor:  # (B, L, D) -> (B, L, D)
        """With a decoding `state`, the last inputs of earlier calls are shifted in instead of
        zeros, so feeding a sequence in chunks equals feeding it whole (causal shifts only)."""
        if state is not None:
            return self._forward_cached(x, state)
        length = x.shape[1]
        chunks = x.split(self.features, dim=-1)
        out = []
        for chunk, s in zip(chunks, self.shifts):
            if s == 0:
                out.append(chunk)
            elif abs(s) >= length:
                out.append(torch.zeros_like(chunk))
            elif s > 0:  # position t receives position t - s
                out.append(F.pad(chunk[:, : length - s], (0, 0, s, 0)))
            else:  # position t receives position t + |s|
                out.append(F.pad(chunk[:, -s:], (0, 0, 0, -s)))
        return torch.cat(out, dim=-1)

    def _forward_cached(self, x: torch.Tensor, state: dict) -> torch.Tensor:
        """The history holds the last inputs, as many as the largest shift reaches but never more
        than have been seen: a shift longer than the sequence (even 2**70) costs nothing."""
        length = x.shape[1]
        history = state.get(self.state_key)
        full = x if history is None else torch.cat([history, x], dim=1)  # (B, h + L, D)
        seen = full.shape[1] - length  # h: earlier positions held
        keep = min(max(self.shifts), full.shape[1])
        state[self.state_key] = full[:, full.shape[1] - keep:]
        out = []
        for chunk, s in zip(full.split(self.features, dim=-1), self.shifts):
            start = seen - s  # where this call's first position reads from in `full`
            if start >= 0:
                out.append(chunk[:, start: start + length])
            else:  # reaches before the first position: zeros
                missing = min(-start, length)
                out.append(F.pad(chunk[:, : length - missing], (0, 0, missing, 0)))
        return torch.cat(out, dim=-1)

    def extra_repr(self) -> str:
        return ", ".join(f"{f}->{s:+d}" for f, s in zip(self.features, self.shifts))


def make_token_shift(chunks, state_key: str = "shift") -> nn.Module | None:
    """A TokenShift for a token_shift_config, or None when it moves nothing."""
    if not chunks or all(c.shift == 0 for c in chunks):
        return None
    return TokenShift([c.features for c in chunks], [c.shift for c in chunks], state_key)
