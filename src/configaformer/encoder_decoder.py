"""Encoder-decoder models from two configs: the encoder's final states are the context that the
decoder's CrossAttention layers attend to (Vaswani et al. 2017, arXiv 1706.03762; T5, arXiv
1910.10683). Both halves are ordinary `Transformer`s, so every layer type and key works in either.

    model = EncoderDecoder({"encoder": {..., "classifiers": [], "layers": [...]},
                            "decoder": {..., "layers": [..., {"type": "CrossAttention"}, ...]}})
    logits, = model(src_ids, tgt_ids, src_padding_mask=mask)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from .config import resolve_config
from .errors import ConfigError, Problem
from .model import Transformer


def _resolve_halves(config) -> dict:
    if not isinstance(config, dict) or set(config) != {"encoder", "decoder"}:
        got = sorted(config) if isinstance(config, dict) else type(config).__name__
        raise ConfigError(Problem("", f"an encoder-decoder config has exactly the keys 'encoder' and 'decoder', got {got}"))
    resolved, problems = {}, []
    for half in ("encoder", "decoder"):
        section = config[half]
        if isinstance(section, dict) and half == "encoder":
            section = {"classifiers": [], **section}  # an encoder needs no heads
        try:
            resolved[half] = resolve_config(section)
        except ConfigError as err:
            problems += [Problem(f"{half}.{p.path}" if p.path else half, p.message) for p in err.problems]
    if "decoder" in resolved:
        cross = [i for i, layer in enumerate(resolved["decoder"].layers) if layer.type == "CrossAttention"]
        if not cross:
            problems.append(Problem("decoder.layers", "no CrossAttention layer reads the encoder; add "
                                                      "{type: CrossAttention} to the decoder's layers"))
        width = resolved["encoder"].dim_model if "encoder" in resolved else None
        for i in cross if width is not None else []:
            if resolved["decoder"].layers[i].dim_context != width:
                problems.append(Problem(f"decoder.layers[{i}].dim_context",
                                        f"{resolved['decoder'].layers[i].dim_context}, but the encoder's "
                                        f"dim_model is {width}; use dim_context: {width}"))
    if problems:
        raise ConfigError(problems)
    return resolved


class EncoderDecoder(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        halves = _resolve_halves(config)
        self.encoder = Transformer(halves["encoder"])
        self.decoder = Transformer(halves["decoder"])

    def config_dict(self) -> dict:
        return {"encoder": self.encoder.config.to_dict(), "decoder": self.decoder.config.to_dict()}

    def encode(self, src_ids: torch.Tensor, src_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.encoder.forward_features(src_ids, src_padding_mask)  # (B, S, encoder dim_model)

    def forward(self, src_ids: torch.Tensor, tgt_ids: torch.Tensor, src_padding_mask: torch.Tensor | None = None,
                tgt_padding_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """Decoder logits, one tensor (B, L, classes) per decoder classifier."""
        memory = self.encode(src_ids, src_padding_mask)
        return self.decoder(tgt_ids, tgt_padding_mask, context=memory, context_mask=src_padding_mask)

    @torch.no_grad()
    def generate(self, src_ids: torch.Tensor, prompt_ids: torch.Tensor, max_new_tokens: int,
                 src_padding_mask: torch.Tensor | None = None, **options) -> torch.Tensor:
        """Encode once, then decode with the decoder's cache (options as Transformer.generate)."""
        memory = self.encode(src_ids, src_padding_mask)
        return self.decoder.generate(prompt_ids, max_new_tokens, context=memory, context_mask=src_padding_mask,
                                     **options)

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """encoder/ and decoder/ subdirectories, each as Transformer.save_pretrained writes it."""
        directory = Path(directory)
        self.encoder.save_pretrained(directory / "encoder")
        self.decoder.save_pretrained(directory / "decoder")
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str | torch.device = "cpu") -> EncoderDecoder:
        directory = Path(directory)
        model = cls.__new__(cls)
        nn.Module.__init__(model)
        model.encoder = Transformer.from_pretrained(directory / "encoder", device)
        model.decoder = Transformer.from_pretrained(directory / "decoder", device)
        _resolve_halves(json.loads(json.dumps(model.config_dict())))  # the pair must still fit together
        return model
