"""The model: token embedding -> layers (each built from its layer dict) -> classifier heads.

    ids (B, L) -> embedding (B, L, input_emb_size) [* emb_scale] -> [projection] -> [+ absolute positions]
        -> dropout -> (B, L, dim_model)
        -> layers[0] ... layers[n-1]  each forward(x, ctx) -> (B, L, dim_model)
        -> final norm -> one head per classifier -> tuple of logits (B, L, classes)
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from . import blocks  # noqa: F401  (registers the built-in blocks)
from .blocks.base import Layer
from .config import ModelConfig, plan_wiring, resolve_config
from .config.resolve import ConfigLike
from .context import AuxReport, ForwardContext, Wiring
from .generation import DecodeCache, generate
from .layers.abs_position import make_abs_positions
from .layers.heads import make_head
from .layers.losses import linear_cross_entropy, linear_cross_entropy_stats
from .layers.norms import make_norm
from .positional.rotary import RotaryTable
from .registry import get_block
from .weights import CONFIG_FILE, WEIGHTS_FILE, alias_groups, read_weights, write_pretrained


class Transformer(nn.Module):
    """A transformer built from a config (dict, YAML/JSON path, or ModelConfig).

    `model(token_ids)` returns a tuple with one logits tensor (B, L, classes) per classifier.
    `model.config` is the fully resolved config (every default filled in).
    """

    def __init__(self, config: ConfigLike):
        super().__init__()
        cfg = resolve_config(config)  # raises ConfigError before any tensor exists
        self.config: ModelConfig = cfg
        plans, _ = plan_wiring(cfg.layers)
        self.wiring = Wiring.from_plans(plans)  # who reads which cross-layer tensor, per position

        self.embedding = nn.Embedding(cfg.vocab_size, cfg.emb_size)
        self.emb_proj = nn.Linear(cfg.emb_size, cfg.dim_model, bias=False) if cfg.emb_size != cfg.dim_model else None
        self.abs_pos = make_abs_positions(cfg.abs_pos_emb, cfg.dim_model, cfg.max_seq_len)
        self.emb_dropout = nn.Dropout(cfg.emb_dropout) if cfg.emb_dropout > 0 else None
        rope_dims = sorted({d for d in (layer.rotary_dim() for layer in cfg.layers) if d})
        self.rotary = nn.ModuleDict({
            str(d): RotaryTable(d, cfg.rope_base, initial_len=cfg.max_seq_len or 256, scaling=cfg.rope_scaling)
            for d in rope_dims
        })
        # A layer with share_weights_with (resolved to the owner) reuses the owner's whole Layer
        # module: the ModuleList holds the same module twice, its parameters exist once.
        layers: list[Layer] = []
        for layer, plan in zip(cfg.layers, plans):
            if layer.share_weights_with is not None:
                layers.append(layers[layer.share_weights_with])
            else:
                layers.append(Layer(get_block(layer.type).block_cls(layer, cfg, plan), layer, cfg))
        self.layers = nn.ModuleList(layers)
        # The padding sides every layer honours (docs/blocks.md, "Padding"); inputs are checked against them.
        self.padding_sides = frozenset(("left", "right")).intersection(*(layer.block.padding_sides for layer in layers))
        self.final_norm = make_norm(cfg.norm_type, cfg.dim_model, cfg.norm_eps) if cfg.final_norm_bool else None
        self.heads = nn.ModuleList(make_head(head, cfg, self.embedding) for head in cfg.classifiers)
        self.head_names = [head.name for head in cfg.classifiers]
        self.reset_parameters()

    # ---- initialisation ------------------------------------------------------------------------
    def reset_parameters(self) -> None:
        """Every parameter back to its documented init (docs/blocks.md, "Initialisation"):
        Normal(0, init_std) for linear and embedding weights, zero biases; every other module with a
        `reset_parameters()` runs it (norms, residual scales, and blocks' raw Parameters: gMLP's
        spatial weight, memory slots, talking-heads mixes, the Primer conv), children before their
        parents so that an enclosing module's init wins; one that owns parameters without it is
        a TypeError. By default each layer's output projection then gets std
        init_std / sqrt(num_layers), as in GPT-2 (whose 1/sqrt(2 * n_blocks) counts the same
        thing: residual additions; here each layer is one)."""
        std = self.config.init_std
        modules = list(self.modules())
        for module in modules:
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, 0.0, std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        for module in reversed(modules):  # pre-order reversed: children before parents
            if module is self or isinstance(module, (nn.Linear, nn.Embedding)):
                continue
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
            elif own := [name for name, _ in module.named_parameters(recurse=False)]:
                raise TypeError(f"{type(module).__qualname__} owns parameters ({', '.join(own)}) but defines "
                                f"no reset_parameters(); see docs/blocks.md, \"Initialisation\"")
        if self.config.init_scale_residual_bool:
            residual_std = std / math.sqrt(len(self.layers))
            for layer in self.layers:
                for out_proj in layer.block.residual_projections():
                    nn.init.normal_(out_proj.weight, 0.0, residual_std)

    # ---- forward -------------------------------------------------------------------------------
    def forward(self, token_ids: torch.Tensor, padding_mask: torch.Tensor | None = None, *,
                context: torch.Tensor | None = None, context_mask: torch.Tensor | None = None,
                cache: DecodeCache | None = None, targets: torch.Tensor | Mapping[int, torch.Tensor] | None = None,
                loss_stats: bool = False, aux: bool = False):
        """token_ids (B, L) int; padding_mask (B, L) bool, True for real tokens (optional).

        context (B, S, dim_context) and context_mask (B, S): the sequence CrossAttention layers
        attend to (e.g. an encoder's output). cache: a generation.DecodeCache to decode
        incrementally (the tokens continue the cached ones; see `generate`).
        Returns one logits tensor (B, L, classes) per classifier, in config order.

        With targets, returns losses instead, computed in chunks without forming the
        (B, L, classes) logits (layers/losses.py): the same values and gradients as
        F.cross_entropy on the logits, with far less memory for large vocabularies. `targets` is
        {head index: (B, L) class ids} (-100 = no target), each head with its own, or one (B, L)
        tensor for head 0; the result has one entry per head, in the order given: the mean
        cross-entropy, or with loss_stats=True (no gradient) a float64 (3,) tensor of summed nats,
        count of targets and argmax hits, what an evaluation adds up.
        The heads' `out` parameters are read here, outside `out`'s own forward: an engine that
        gathers parameters per module (ZeRO-3) registers them with this module (loss_parameters).

        aux=True: returns (that tuple, reports), the auxiliary losses and statistics the layers
        reported, {"layers[i].name": AuxReport(value, weight)} (docs/blocks.md, "Auxiliary
        losses"); `context.aux_loss(reports)` is their weighted sum, which the trainer adds."""
        reports: dict[str, AuxReport] | None = {} if aux else None
        x = self.forward_features(token_ids, padding_mask, context=context, context_mask=context_mask, cache=cache,
                                  reports=reports)
        if targets is None:
            out = tuple(head(x) for head in self.heads)
        else:
            per_head = targets.items() if isinstance(targets, Mapping) else [(0, targets)]
            loss = linear_cross_entropy_stats if loss_stats else linear_cross_entropy
            out = tuple(loss(self.heads[i].features(x).flatten(0, 1), self.heads[i].out.weight,
                             self.heads[i].out.bias, t.reshape(-1), softcap=self.heads[i].softcap)
                        for i, t in per_head)
        return (out, reports) if aux else out

    def loss_parameters(self) -> list[nn.Parameter]:
        """The parameters `forward(..., targets=)` reads directly: each head's `out` weight and bias."""
        return [p for head in self.heads for p in head.out.parameters()]

    def forward_features(self, token_ids: torch.Tensor, padding_mask: torch.Tensor | None = None, *,
                         context: torch.Tensor | None = None, context_mask: torch.Tensor | None = None,
                         cache: DecodeCache | None = None, check_inputs: bool = True,
                         reports: dict[str, AuxReport] | None = None) -> torch.Tensor:
        """The final hidden states (B, L, dim_model), after the final norm. check_inputs=False
        skips the input checks, for callers whose ids are known good (generate's own samples).
        reports: a dict that receives the layers' auxiliary reports (see `forward`'s aux)."""
        if check_inputs:
            token_ids = self._check_input(token_ids, padding_mask, cache)
        x = self.embedding(token_ids)  # (B, L, input_emb_size)
        if self.config.emb_scale != 1.0:
            x = x * self.config.emb_scale
        if self.emb_proj is not None:
            x = self.emb_proj(x)  # (B, L, dim_model)
        length = token_ids.shape[1]
        ctx = self.make_context(length, x.dtype, padding_mask, cache=cache)
        ctx.context, ctx.context_mask, ctx.reports = context, context_mask, reports
        if self.abs_pos is not None:  # the context's positions: real tokens only, after any cached ones
            positions = ctx.positions
            if positions is None:
                positions = torch.arange(ctx.offset, ctx.offset + length, device=x.device)[None]  # (1, L)
            x = x + self.abs_pos(positions).to(x.dtype)  # (B|1, L, dim_model)
        if self.emb_dropout is not None:
            x = self.emb_dropout(x)
        for index, layer in enumerate(self.layers):
            ctx.enter_layer(index)  # a shared Layer module keeps one decoding state and one wiring per use
            x = layer(x, ctx)
        if cache is not None:
            cache.offset += length
        return x if self.final_norm is None else self.final_norm(x)

    def make_context(self, length: int, dtype: torch.dtype, padding_mask: torch.Tensor | None,
                     cache: DecodeCache | None = None) -> ForwardContext:
        device = self.embedding.weight.device
        positions = None
        if padding_mask is not None:
            padding_mask = padding_mask.to(device=device, dtype=torch.bool)
            # Positions count real tokens only, so left padding leaves every real token's position as is.
            positions = (padding_mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, L)
        offset = 0 if cache is None else cache.offset
        ctx = ForwardContext(seq_len=length, device=device, dtype=dtype, padding_mask=padding_mask,
                             positions=positions, offset=offset, cache=cache, wiring=self.wiring)
        for dim, table in self.rotary.items():
            ctx.rotary[int(dim)] = table(length, positions, dtype, offset)
        return ctx

    def generate(self, prompt_ids: torch.Tensor, max_new_tokens: int, **options) -> torch.Tensor:
        """Continue prompts (B, P) by up to max_new_tokens with a key/value cache; see
        `configaformer.generation.generate` for the sampling options (temperature, top_k, top_p,
        min_p, eos_token_id, ...)."""
        return generate(self, prompt_ids, max_new_tokens, **options)

    def _check_input(self, token_ids: torch.Tensor, padding_mask: torch.Tensor | None,
                     cache: DecodeCache | None = None) -> torch.Tensor:
        """Clear errors for bad inputs; returns the ids as int64/int32 (e.g. from uint16 shards)."""
        if token_ids.dim() != 2 or token_ids.is_floating_point() or token_ids.is_complex() or token_ids.dtype == torch.bool:
            raise ValueError(f"token_ids must be an integer tensor of shape (batch, length), "
                             f"got {tuple(token_ids.shape)} {token_ids.dtype}")
        length = token_ids.shape[1] + (0 if cache is None else cache.offset)
        limit = self.config.max_seq_len
        if limit is not None and length > limit:
            raise ValueError(f"sequence length {length} exceeds max_seq_len {limit}")
        if cache is not None:
            if padding_mask is not None:
                raise ValueError("decoding with a cache takes no padding_mask: give prompts of equal length")
            if length > cache.max_len or token_ids.shape[0] != cache.batch_size:
                raise ValueError(f"the cache holds {cache.max_len} positions for batch {cache.batch_size}; "
                                 f"got {length} positions for batch {token_ids.shape[0]}")
        if padding_mask is not None and padding_mask.shape != token_ids.shape:
            raise ValueError(f"padding_mask shape {tuple(padding_mask.shape)} must equal token_ids shape "
                             f"{tuple(token_ids.shape)}")
        if padding_mask is not None and len(self.padding_sides) < 2:
            self._check_padding_side(padding_mask)
        if token_ids.dtype not in (torch.long, torch.int):
            token_ids = token_ids.long()
        # The range check reads values, which on an accelerator would stall the host on every
        # call (each decoded token included): it runs for host tensors, where it costs nothing.
        if token_ids.device.type == "cpu" and not torch.compiler.is_compiling() and token_ids.numel():
            lo, hi = (int(v) for v in torch.aminmax(token_ids))
            if lo < 0 or hi >= self.config.vocab_size:
                bad = lo if lo < 0 else hi
                raise ValueError(f"token id {bad} is out of range for vocab_size {self.config.vocab_size} "
                                 f"(valid ids: 0..{self.config.vocab_size - 1})")
        return token_ids

    def _check_padding_side(self, padding_mask: torch.Tensor) -> None:
        """Refuse padding on a side some layer does not honour (its real tokens' outputs would
        change). It reads values, so like the id range check it runs for host tensors only."""
        if padding_mask.device.type != "cpu" or torch.compiler.is_compiling():
            return
        real = padding_mask.bool()
        found = {"left": (~real[:, :-1] & real[:, 1:]).any(), "right": (real[:, :-1] & ~real[:, 1:]).any()}
        for side, present in found.items():
            if side not in self.padding_sides and bool(present):
                types = sorted({cfg.type for cfg, layer in zip(self.config.layers, self.layers)
                                if side not in layer.block.padding_sides})
                honoured = " or ".join(sorted(self.padding_sides)) or "neither side"
                raise ValueError(f"padding_mask pads on the {side} (or between real tokens), but {', '.join(types)} "
                                 f"layers give the same outputs only with padding on the {honoured}")

    def after_step(self, reports: Mapping[str, torch.Tensor]) -> None:
        """Run each block's `after_step` (updates outside autograd, e.g. MoE's bias balancing) once
        per optimizer step. `reports`: {"layers[i].name": value} summed over the step's forwards;
        a module used at several positions (share_weights_with) gets its positions' sums added."""
        per_block: dict[int, tuple[nn.Module, dict[str, torch.Tensor]]] = {}
        for index, layer in enumerate(self.layers):
            prefix = f"layers[{index}]."
            block, own = per_block.setdefault(id(layer.block), (layer.block, {}))
            for key, value in reports.items():
                if key.startswith(prefix):
                    name = key[len(prefix):]
                    own[name] = own[name] + value if name in own else value
        with torch.no_grad():
            for block, own in per_block.values():
                if own:
                    block.after_step(own)

    # ---- sizes ---------------------------------------------------------------------------------
    def num_parameters(self, embedding: bool = True) -> int:
        """Parameters counted once (tied weights once); without the input embedding if asked."""
        total = sum(p.numel() for p in self.parameters())
        return total if embedding else total - self.embedding.weight.numel()

    # ---- save / load ---------------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write config.json (the resolved config) and model.safetensors into `directory`, atomically
        (each shared tensor once: see configaformer.weights)."""
        return write_pretrained(directory, self.config, self.state_dict(), alias_groups(self))

    @classmethod
    def from_hf(cls, directory: str | os.PathLike) -> Transformer:
        """Import a local Hugging Face model directory (GPT-2, Llama, Mistral, Qwen2, Gemma 2:
        config.json + safetensors); see configaformer.interop and docs/interop.md."""
        from .interop import load_hf

        return load_hf(directory)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str | torch.device = "cpu") -> Transformer:
        """Rebuild the model saved by `save_pretrained` (no pickle: JSON + safetensors)."""
        directory = Path(directory)
        config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
        for path in (config_path, weights_path):
            if not path.is_file():
                raise FileNotFoundError(f"{path} does not exist; expected a directory written by save_pretrained")
        try:
            config: dict[str, Any] = json.loads(config_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{config_path} is not valid JSON: {exc}") from None
        model = cls(config)
        weights = read_weights(directory, model)  # ValueError: unreadable, or other tensors than the model's
        try:
            model.load_state_dict(weights)
        except RuntimeError as exc:  # a tensor of another shape
            raise ValueError(f"{weights_path} does not match {config_path}: {exc}") from None
        return model.to(device)
