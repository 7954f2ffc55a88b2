"""Training objectives: what the model reads and what each position must predict.

- causal: next-token prediction. inputs = tokens[:, :-1], targets = tokens[:, 1:].
- masked: masked-token prediction (BERT, Devlin et al. 2019, arXiv 1810.04805) for bidirectional
  models. Of the input tokens, `mask_rate` are chosen; 80% of those become the mask token, 10% a
  random token, 10% stay; only chosen positions are predicted. The choice is drawn from a
  generator seeded by (seed, step), so a resumed run masks exactly as the uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE_INDEX = -100


@dataclass
class Example:
    inputs: torch.Tensor  # (B, L) token ids
    targets: torch.Tensor  # (B, L) class ids, IGNORE_INDEX where nothing is predicted
    padding_mask: torch.Tensor | None  # (B, L) True for real tokens, None if nothing is padded
    labels: torch.Tensor | None = None  # (B, L) the label of each input token's document (-1 = none)

    def head_targets(self, kind: str) -> torch.Tensor:
        """Targets (B, L) for a head trained on `kind`: "lm" (the objective's targets), "token"
        (every input token: its document's label) or "sequence" (only the last real input token
        of each row: its document's label); IGNORE_INDEX elsewhere."""
        if kind == "lm":
            return self.targets
        labels = self.labels.masked_fill(self.labels < 0, IGNORE_INDEX)
        if self.padding_mask is not None:
            labels = labels.masked_fill(~self.padding_mask, IGNORE_INDEX)
        if kind == "token":
            return labels
        length = self.inputs.shape[1] if self.padding_mask is None else self.padding_mask.sum(1)
        last = (torch.as_tensor(length) - 1).clamp(min=0).expand(labels.shape[0])  # (B,)
        keep = torch.zeros_like(labels, dtype=torch.bool)
        keep[torch.arange(labels.shape[0]), last] = True
        return labels.masked_fill(~keep, IGNORE_INDEX)


def causal_example(batch) -> Example:
    mask = batch.input_mask
    return Example(batch.inputs, batch.targets, None if bool(mask.all()) else mask, _labels(batch))


def masked_example(batch, rate: float, mask_id: int, vocab_size: int, seed: int, step: int) -> Example:
    tokens = batch.tokens[:, :-1]
    real = batch.padding_mask[:, :-1]
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    chosen = (torch.rand(tokens.shape, generator=gen) < rate) & real
    action = torch.rand(tokens.shape, generator=gen)
    random_ids = torch.randint(0, vocab_size, tokens.shape, generator=gen)
    inputs = torch.where(chosen & (action < 0.8), torch.full_like(tokens, mask_id), tokens)
    inputs = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_ids, inputs)
    targets = tokens.masked_fill(~chosen, IGNORE_INDEX)
    return Example(inputs, targets, None if bool(real.all()) else real, _labels(batch))


def _labels(batch) -> torch.Tensor | None:
    return None if batch.labels is None else batch.labels[:, :-1]
