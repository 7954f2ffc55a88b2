"""The implementations compared, each behind one small interface (`Impl`).

- configaformer: `configaformer.Transformer(config)`; `generate(..., temperature=0)` with its KV
  cache, and `use_cache=False` (recomputes the whole sequence each step) as "configaformer (no cache)".
- x-transformers: lucidrains' `TransformerWrapper` + `Decoder`; generation through its
  `AutoregressiveWrapper.generate(..., temperature=0, cache_kv=True)`.
- hand-written: `benchmarks/handwritten.py`.
- "... (compiled)": the same model under `torch.compile` (inductor), training and forward only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from .archs import configaformer_config, xtransformers_kwargs, xtransformers_unsupported
from .handwritten import GPT, GPTConfig

CF, XT, HAND = "configaformer", "x-transformers", "hand-written"
COMPILED = " (compiled)"
CF_NO_CACHE = CF + " (no cache)"
INSTALL_HINT = 'pip install -e ".[bench]"'


class Unavailable(Exception):
    """This implementation cannot run this architecture here (the message says why)."""


@dataclass
class Impl:
    name: str
    model: torch.nn.Module  # the eager module (parameters, train/eval)
    logits: Callable[[torch.Tensor], torch.Tensor]  # ids (B, L) -> logits (B, L, V)
    generate: Optional[Callable[[torch.Tensor, int], torch.Tensor]] = None  # greedy, (B, P), n -> tokens
    # (ids, targets) -> mean cross-entropy, where the library has its own loss path; else CE of `logits`
    loss: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def xtransformers_available() -> bool:
    try:
        import x_transformers  # noqa: F401
    except ImportError:
        return False
    return True


def build(name: str, c: GPTConfig, seed: int = 0) -> Impl:
    """The implementation `name` (CF, XT, HAND, or CF/HAND + COMPILED) of architecture c."""
    torch.manual_seed(seed)
    base = name.removesuffix(COMPILED)
    if base == CF:
        import configaformer

        model = configaformer.Transformer(configaformer_config(c))
        impl = Impl(name, model, lambda ids: model(ids)[0],  # one classifier: its (B, L, V) logits
                    lambda ids, n: model.generate(ids, n, temperature=0),
                    lambda ids, targets: model(ids, targets=targets)[0])  # chunked CE, no full logits
    elif base == HAND:
        model = GPT(c)
        impl = Impl(name, model, model, lambda ids, n: model.generate(ids, n))
    elif base == XT:
        reason = xtransformers_unsupported(c)
        if reason:
            raise Unavailable(reason)
        if not xtransformers_available():
            raise Unavailable(f"x-transformers is not installed ({INSTALL_HINT})")
        from x_transformers import AutoregressiveWrapper, Decoder, TransformerWrapper

        kwargs = xtransformers_kwargs(c)
        model = TransformerWrapper(**kwargs | {"attn_layers": Decoder(**kwargs["attn_layers"])})
        wrapper = AutoregressiveWrapper(model)
        impl = Impl(name, model, model, lambda ids, n: wrapper.generate(ids, n, temperature=0.0, cache_kv=True))
    else:
        raise ValueError(f"unknown implementation {name!r}")
    if name.endswith(COMPILED):
        compiled = torch.compile(impl.model)
        impl.logits = (lambda ids: compiled(ids)[0]) if base == CF else compiled
        if base == CF:
            impl.loss = lambda ids, targets: compiled(ids, targets=targets)[0]
        impl.generate = None  # decoding shapes change every step: left to eager
    return impl


def without_cache(impl: Impl) -> Impl:
    """configaformer's model decoding with use_cache=False: every step recomputes the whole sequence."""
    model = impl.model
    return Impl(CF_NO_CACHE, model, impl.logits, lambda ids, n: model.generate(ids, n, temperature=0, use_cache=False))
