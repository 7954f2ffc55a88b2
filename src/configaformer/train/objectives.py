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


def causal_example(batch) -> Example:
    mask = batch.input_mask
    return Example(batch.inputs, batch.targets, None if bool(mask.all()) else mask)


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
    return Example(inputs, targets, None if bool(real.all()) else real)
