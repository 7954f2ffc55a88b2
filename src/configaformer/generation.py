"""Autoregressive decoding with a key/value cache, and token sampling.

`DecodeCache` holds every layer's decoding state between calls: attention keys and values in
buffers preallocated for the whole generation (written in place), the last inputs of token
shifts and sequence convolutions, gMLP's gated history. Each block keeps its own entries under
its layer index; the model advances `offset` after each call. Feeding a sequence through the
cache in chunks gives the same logits as one full forward (tested for every preset).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Callable

import torch


@dataclass
class DecodeCache:
    batch_size: int
    max_len: int  # total positions the cache can hold (prompt + new tokens)
    offset: int = 0  # positions already processed
    layers: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)

    def layer(self, index: int) -> dict[str, torch.Tensor]:
        """The mutable state dict of layer `index` (blocks choose their own keys)."""
        return self.layers.setdefault(index, {})


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None,
                  min_p: float | None = None) -> torch.Tensor:
    """Set to -inf every logit outside the top-k / nucleus (top-p) / min-p sets. (B, V) -> (B, V)."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if min_p is not None:  # keep tokens at least min_p times as likely as the most likely one
        probs = torch.softmax(logits, dim=-1)
        logits = logits.masked_fill(probs < min_p * probs.max(dim=-1, keepdim=True).values, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        before = probs.cumsum(-1) - probs  # mass of strictly more likely tokens
        sorted_logits = sorted_logits.masked_fill(before >= top_p, float("-inf"))  # the first token always stays
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


def sample(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
           min_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Next token ids (B,) from logits (B, V); temperature 0 means greedy."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = filter_logits(logits.float() / temperature, top_k, top_p, min_p)
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(model, prompt_ids: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, min_p: float | None = None,
             eos_token_id: int | None = None, use_cache: bool = True, head: int | str = 0,
             prefill_chunk: int | None = None, generator: torch.Generator | None = None,
             context: torch.Tensor | None = None, context_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Continue each prompt (B, P) by up to max_new_tokens; returns (B, P + n) token ids.

    head: the classifier (index or name) whose logits are sampled; its class count must equal
    vocab_size. Rows that emit eos_token_id keep emitting it; decoding stops early once every
    row has. use_cache=False recomputes the whole sequence every step (the reference the cache
    is tested against). prefill_chunk feeds the prompt through the cache in chunks of that size.
    """
    cfg = model.config
    index = model.head_names.index(head) if isinstance(head, str) else head
    if not 0 <= index < len(model.heads) or cfg.classifiers[index].num_classes != cfg.vocab_size:
        raise ValueError(f"head {head!r} cannot drive generation: it needs num_classes == vocab_size "
                         f"({cfg.vocab_size}); heads: {list(zip(model.head_names, [c.num_classes for c in cfg.classifiers]))}")
    if not cfg.is_causal:
        raise ValueError("generation needs a causal model: every attention-like layer must have causal_mask_bool true")
    if prompt_ids.dim() != 2 or prompt_ids.shape[1] < 1:
        raise ValueError(f"prompt_ids must have shape (batch, length >= 1), got {tuple(prompt_ids.shape)}")
    check_sampling(max_new_tokens, temperature, top_k, top_p, min_p)
    total = prompt_ids.shape[1] + max_new_tokens
    if cfg.max_seq_len is not None and total > cfg.max_seq_len:
        raise ValueError(f"prompt length {prompt_ids.shape[1]} + max_new_tokens {max_new_tokens} = {total} "
                         f"exceeds max_seq_len {cfg.max_seq_len}")
    was_training = model.training
    model.eval()
    try:
        prompt = prompt_ids.to(model.embedding.weight.device).long()
        batch, length = prompt.shape
        extra = {"context": context, "context_mask": context_mask}
        cache = DecodeCache(batch, total) if use_cache else None
        try:  # the token buffer here and the cache's buffers in the prefill hold all `total` positions
            tokens = prompt.new_empty(batch, total)  # filled in place, one column per new token
            logits = _last_logits(model, prompt, cache, index, prefill_chunk, extra)  # checks the prompt
        except RuntimeError as err:
            if not _out_of_memory(err):
                raise
            raise ValueError(f"max_new_tokens {max_new_tokens}: {batch} x {total} positions do not fit in memory "
                             f"({str(err).splitlines()[0]})") from None
        tokens[:, :length] = prompt
        finished = torch.zeros(batch, dtype=torch.bool, device=tokens.device)
        for step in range(max_new_tokens):
            next_ids = sample(logits, temperature, top_k, top_p, min_p, generator)
            if eos_token_id is not None:
                next_ids = next_ids.masked_fill(finished, eos_token_id)
                finished |= next_ids == eos_token_id
            tokens[:, length] = next_ids
            length += 1
            if step == max_new_tokens - 1 or (eos_token_id is not None and bool(finished.all())):
                break
            feed = tokens[:, length - 1: length] if use_cache else tokens[:, :length]
            logits = _head_logits(model, feed, cache, index, extra, check_inputs=False)  # our own samples
        return tokens[:, :length]
    finally:
        model.train(was_training)


def check_sampling(max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                   top_p: float | None = None, min_p: float | None = None,
                   name: Callable[[str], str] = str) -> None:
    """ValueError naming the first invalid option of `generate`; `name` spells an option's name
    (the command line passes its flags: "top_k" -> "--top-k")."""
    def integer(v) -> bool:
        return isinstance(v, Integral) and not isinstance(v, bool)

    def number(v) -> bool:
        return isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v)

    checks = [("max_new_tokens", max_new_tokens, integer(max_new_tokens) and 0 <= max_new_tokens < 2 ** 62,
               "an integer in [0, 2**62)"),  # beyond, torch's sizes overflow int64
              ("temperature", temperature, number(temperature) and temperature >= 0,
               "a finite number >= 0 (0: greedy)"),
              ("top_k", top_k, top_k is None or (integer(top_k) and top_k >= 1), "an integer >= 1"),
              ("top_p", top_p, top_p is None or (number(top_p) and 0 < top_p <= 1), "a number in (0, 1]"),
              ("min_p", min_p, min_p is None or (number(min_p) and 0 <= min_p <= 1), "a number in [0, 1]")]
    for option, value, valid, what in checks:
        if not valid:
            raise ValueError(f"{name(option)} must be {what}, got {value!r}")


def _out_of_memory(err: RuntimeError) -> bool:
    """An allocation failure: CUDA's OutOfMemoryError, the CPU allocator's RuntimeError, or a size
    whose bytes overflow int64."""
    text = str(err)
    words = ("can't allocate memory", "not enough memory", "Storage size calculation overflowed")
    return isinstance(err, torch.OutOfMemoryError) or any(w in text for w in words)


def _head_logits(model, tokens, cache, index, extra, check_inputs: bool = True) -> torch.Tensor:
    """Logits (B, V) of the last position only: the head never runs over the whole prompt."""
    hidden = model.forward_features(tokens, cache=cache, check_inputs=check_inputs, **extra)  # (B, L, dim_model)
    return model.heads[index](hidden[:, -1:])[:, 0]


def _last_logits(model, tokens, cache, index, chunk, extra) -> torch.Tensor:
    if cache is None or not chunk:
        return _head_logits(model, tokens, cache, index, extra)
    for start in range(0, tokens.shape[1], chunk):
        logits = _head_logits(model, tokens[:, start: start + chunk], cache, index, extra)
    return logits
