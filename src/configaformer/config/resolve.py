"""Whole-config resolution: load, validate every layer, fill defaults, check cross-layer wiring.

Everything here runs before a single tensor exists, and every problem found is reported
together in one `ConfigError`.
"""

from __future__ import annotations

import json
from decimal import Decimal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from pydantic import ValidationError

from ..errors import ConfigError, Problem
from ..fileio import read_mapping
from ..registry import get_block, list_blocks
from .base import did_you_mean, problems_from_validation
from .layer import LayerConfig, norm_params
from .model import ClassifierConfig, ModelConfig

ConfigLike = Union[ModelConfig, dict, str, Path]


@dataclass(frozen=True)
class LayerPlan:
    """What the builder decided for one layer from the whole layer list.

    keep: cross-layer tensors this layer must materialise and hand on (a later layer reads them).
    sources: for each tensor this layer reads, the index of the layer that produces it.

    Every position has its own plan. A module shared by several positions is built with its
    owner's plan (whose `keep` is the union of theirs); at each position it reads from that
    position's `sources`, which the model hands to `ForwardContext.consume` (context.Wiring).
    """

    index: int
    keep: frozenset[str] = frozenset()
    sources: dict[str, int] = field(default_factory=dict)


def load_config(path: str | Path) -> dict:
    """Read a model config from a YAML or JSON file (JSON is YAML, so one parser serves both)."""
    data = read_mapping(path, "config file")
    if "model" in data and "layers" not in data:
        data = data["model"]  # a run file: its model section
        if not isinstance(data, dict):
            raise ConfigError(Problem("model", f"{path}: expected a mapping of config keys"))
    return data


def resolve_config(config: ConfigLike) -> ModelConfig:
    """Validate `config` and return it with every default filled in. Raises ConfigError."""
    if isinstance(config, ModelConfig):
        return resolve_config(config.to_dict())
    if isinstance(config, (str, Path)):
        config = load_config(config)
    if not isinstance(config, dict):
        raise ConfigError(Problem("", f"a config is a dict (or a YAML/JSON file), got {type(config).__name__}"))

    problems: list[Problem] = []
    try:
        model = ModelConfig.model_validate(config)
    except ValidationError as err:
        problems += problems_from_validation(err, ModelConfig)
        model = None

    raw_layers = config.get("layers")
    layers: list[LayerConfig | None] = []
    if isinstance(raw_layers, (list, tuple)):
        if not raw_layers:
            problems.append(Problem("layers", "the layer list is empty; give at least one layer"))
        for i, raw in enumerate(raw_layers):
            layer, found = _validate_layer(raw, f"layers[{i}]")
            layers.append(layer)
            problems += found

    if model is not None:
        problems += _check_classifiers(model) + _check_positions(model)

    if model is None or not layers:
        raise ConfigError(problems)

    # Per-layer checks run on every layer that parsed, so one pass reports everything.
    valid = [(i, layer) for i, layer in enumerate(layers) if layer is not None]
    model = _resolve_defaults(model, [layer for _, layer in valid])
    too_big = check_size(model, [i for i, _ in valid])
    if too_big:  # checked first: the per-layer checks need not cope with sizes no machine holds
        raise ConfigError(problems + too_big)
    for (i, _), layer in zip(valid, model.layers):
        problems += [Problem(f"layers[{i}].{key}", msg) for key, msg in layer.check(model)]
    problems += _check_model_keys(model) + _check_context_width(model, [i for i, _ in valid])
    if len(valid) == len(layers):
        shared, found = resolve_sharing(model.layers)
        model = model.model_copy(update={"layers": shared})
        problems += found + plan_wiring(model.layers)[1]
    if problems:
        raise ConfigError(problems)
    return model


def _validate_layer(raw: Any, path: str) -> tuple[LayerConfig | None, list[Problem]]:
    if not isinstance(raw, dict):
        return None, [Problem(path, f"a layer is a dict with a 'type' key, got {type(raw).__name__}")]
    kind = raw.get("type")
    valid = list_blocks()
    if kind is None:
        return None, [Problem(f"{path}.type", f"required key is missing; valid types: {', '.join(valid)}")]
    if not isinstance(kind, str) or kind not in valid:
        hint = did_you_mean(kind, valid) if isinstance(kind, str) else ""
        return None, [Problem(f"{path}.type", f"unknown layer type {kind!r}; {hint}valid types: {', '.join(valid)}")]
    schema = get_block(kind).config_cls
    try:
        return schema.model_validate(raw), []
    except ValidationError as err:
        return None, problems_from_validation(err, schema, path)


MAX_ELEMENTS = 2 ** 40  # parameters and tables one model may allocate: 4 TiB in float32


def size_parts(model: ModelConfig, indices: list[int] | None = None) -> list[tuple[str, int]]:
    """(key path, elements) of every part a built model allocates, by formula: the parameters
    (layers that share weights count once) and the rotary tables. `indices`: the positions of
    `model.layers` in the user's layer list, where some layers failed to parse."""
    dim, emb = model.dim_model, model.emb_size
    parts = [("vocab_size", model.vocab_size * emb + (emb * dim if emb != dim else 0))]
    if model.abs_pos_emb == "learned" and model.max_seq_len:
        parts.append(("max_seq_len", model.max_seq_len * dim))
    rope = {layer.rotary_dim() for layer in model.layers} - {0}
    if rope:  # RotaryTable: inverse frequencies, and cos and sin for the first max_seq_len (or 256) positions
        length = model.max_seq_len or 256
        parts.append(("max_seq_len" if model.max_seq_len else "dim_rope", sum(d // 2 + 2 * length * d for d in rope)))
    indices = range(len(model.layers)) if indices is None else indices
    parts += [(f"layers[{i}]", layer.count_params(model)) for i, layer in zip(indices, model.layers)
              if layer.share_weights_with is None]
    parts.append(("final_norm_bool", norm_params(model.norm_type, dim) if model.final_norm_bool else 0))
    parts += [(f"classifiers[{i}]", head.count_params(model)) for i, head in enumerate(model.classifiers)]
    return parts


def check_size(model: ModelConfig, indices: list[int] | None = None) -> list[Problem]:
    """Refuse a model larger than MAX_ELEMENTS before any tensor exists, naming its largest part."""
    parts = size_parts(model, indices)
    total = sum(n for _, n in parts)
    if total <= MAX_ELEMENTS:
        return []
    path, largest = max(parts, key=lambda part: part[1])
    return [Problem(path, f"the model would allocate about {Decimal(total):.2e} parameters and tables "
                          f"({Decimal(4 * total):.2e} bytes in float32), {Decimal(largest):.2e} of them here; "
                          f"the limit is {Decimal(MAX_ELEMENTS):.2e} (2^40); use smaller sizes")]


def _check_classifiers(model: ModelConfig) -> list[Problem]:
    problems = []
    names = set()
    for i, head in enumerate(model.classifiers):
        path = f"classifiers[{i}]"
        if head.num_classes < 1:
            problems.append(Problem(f"{path}.num_classes", f"class count must be >= 1 (got {head.num_classes})"))
        if head.head_type == "tied" and head.num_classes != model.vocab_size:
            problems.append(Problem(f"{path}.head_type", f"a tied head needs num_classes == vocab_size "
                                                         f"({model.vocab_size}), got {head.num_classes}"))
        if head.head_type != "ffn" and head.ff_mult != ClassifierConfig.model_fields["ff_mult"].default:
            problems.append(Problem(f"{path}.ff_mult", f"sizes the hidden layer of an ffn head, but head_type is "
                                                       f"{head.head_type}, which has none; leave ff_mult out"))
        if head.name is not None:
            if head.name in names:
                problems.append(Problem(f"{path}.name", f"duplicate head name {head.name!r}"))
            names.add(head.name)
    return problems


def _check_positions(model: ModelConfig) -> list[Problem]:
    if model.abs_pos_emb == "learned" and model.max_seq_len is None:
        return [Problem("abs_pos_emb", "learned positions need max_seq_len (the size of their table); "
                                       "set max_seq_len, or use abs_pos_emb: sinusoidal or none")]
    return []


def _check_model_keys(model: ModelConfig) -> list[Problem]:
    """Model-wide keys set to something no layer reads (see docs/config-errors.md)."""
    problems = []
    fields = ModelConfig.model_fields
    if model.rope_base != fields["rope_base"].default and not any(layer.rotary_dim() for layer in model.layers):
        problems.append(Problem("rope_base", "no layer rotates (dim_rope is 0 or rotation is off in every layer), so "
                                             "the rotary base is unused; leave rope_base out or set dim_rope"))
    scaling = model.rope_scaling
    if scaling is not None and not any(layer.rotary_dim() for layer in model.layers):
        problems.append(Problem("rope_scaling", "no layer rotates (dim_rope is 0 or rotation is off in every layer), "
                                                "so the rotary scaling is unused; leave rope_scaling out or set dim_rope"))
    if scaling is not None and scaling.high_freq_factor <= scaling.low_freq_factor:
        problems.append(Problem("rope_scaling.high_freq_factor", f"{scaling.high_freq_factor:g} must exceed "
                                                                 f"low_freq_factor ({scaling.low_freq_factor:g})"))
    if model.attention_impl == "explicit" and not any("attn_map" in layer.produces() for layer in model.layers):
        problems.append(Problem("attention_impl", "explicit forms the attention matrix of self-attention layers, "
                                                  "but no layer computes one; leave attention_impl out"))
    return problems


def _check_context_width(model: ModelConfig, indices: list[int]) -> list[Problem]:
    """Every layer that reads the context (`model(ids, context=...)`: one tensor for the whole
    model) must expect the same width `dim_context`. `indices`: the layers' positions."""
    readers = [(i, layer.dim_context) for i, layer in zip(indices, model.layers)
               if get_block(layer.type).block_cls.reads_context]
    return [Problem(f"layers[{i}].dim_context", f"{width}, but layers[{readers[0][0]}].dim_context is {readers[0][1]}: "
                                                f"every layer that reads the context reads the one context tensor "
                                                f"passed to the model, so they take one width")
            for i, width in readers[1:] if width != readers[0][1]]


def resolve_sharing(layers: list[LayerConfig]) -> tuple[list[LayerConfig], list[Problem]]:
    """Check every `share_weights_with` and point it at the layer that owns the weights, so a
    chain (2 shares 1, 1 shares 0) resolves to the original (2 shares 0).

    A layer may share only an earlier layer of the same type whose settings are identical apart
    from `share_weights_with`: it runs that layer's whole module (norms, gate, residual scale
    and block), so the settings could not differ anyway.
    """
    problems: list[Problem] = []
    resolved = list(layers)
    for i, layer in enumerate(layers):
        j = layer.share_weights_with
        if j is None:
            continue
        path = f"layers[{i}].share_weights_with"
        if j >= i:
            valid = f"the index of an earlier layer, 0..{i - 1}" if i else "none: layers[0] has no earlier layer"
            problems.append(Problem(path, f"{j} is not an earlier layer; valid: {valid}"))
            continue
        other = layers[j]
        if other.type != layer.type:
            problems.append(Problem(path, f"layers[{j}] is a {other.type} layer, this one a {layer.type} layer; "
                                          f"a layer can only share the weights of a layer of the same type"))
            continue
        mine, theirs = (cfg.model_dump(mode="json", exclude={"share_weights_with"}) for cfg in (layer, other))
        differ = [f"{key}: {mine.get(key)!r} here, {theirs.get(key)!r} there"
                  for key in sorted(set(mine) | set(theirs)) if mine.get(key) != theirs.get(key)]
        if differ:
            problems.append(Problem(path, f"layers[{j}] has different settings ({'; '.join(differ)}); a layer that "
                                          f"shares weights must repeat every other key of the layer it shares"))
            continue
        root = resolved[j].share_weights_with
        resolved[i] = layer.model_copy(update={"share_weights_with": j if root is None else root})
    return resolved, problems


def _resolve_defaults(model: ModelConfig, layers: list[LayerConfig]) -> ModelConfig:
    heads, taken = [], {h.name for h in model.classifiers if h.name}
    for i, head in enumerate(model.classifiers):
        name = head.name
        if name is None:
            name = "lm" if head.num_classes == model.vocab_size and "lm" not in taken else f"head{i}"
            suffix = 0
            while name in taken:  # an explicit name already holds it
                suffix += 1
                name = f"head{i}_{suffix}"
            taken.add(name)
        heads.append(head.model_copy(update={"name": name}))
    model = model.model_copy(update={"input_emb_size": model.emb_size, "classifiers": heads})
    return model.model_copy(update={"layers": [layer.resolve(model) for layer in layers]})


def plan_wiring(layers: list[LayerConfig]) -> tuple[list[LayerPlan], list[Problem]]:
    """Link each consumer of a cross-layer tensor to the most recent earlier producer.

    Producers that some later layer reads are marked to keep (materialise) that tensor; all
    other layers are free to use fused kernels that never form it. Layers that share one module
    (`share_weights_with`, already resolved to the owner) all get the union of their keeps, as
    the module runs with one plan at every use.
    """
    problems: list[Problem] = []
    latest: dict[str, int] = {}
    keep: dict[int, set[str]] = {}
    sources: dict[int, dict[str, int]] = {}
    for i, layer in enumerate(layers):
        for name, required in layer.consumes().items():
            src = latest.get(name)
            if src is None:
                if required:
                    where = (f"none of layers[0..{i - 1}] does" if i else
                             "this is the first layer, so there is none; put a layer that computes it first")
                    problems.append(Problem(f"layers[{i}].{layer.consume_key(name)}",
                                            f"needs an earlier layer that computes {name!r} to reuse; {where}"))
                continue
            for key, msg in layer.check_source(name, layers[src].source_config(name)):
                problems.append(Problem(f"layers[{i}].{key}", msg + f" (reused from layers[{src}])"))
            keep.setdefault(src, set()).add(name)
            sources.setdefault(i, {})[name] = src
        for name in layer.produces():
            latest[name] = i
    for i, layer in enumerate(layers):
        owner = layer.share_weights_with
        if owner is not None and owner < i:
            keep.setdefault(owner, set()).update(keep.get(i, ()))
    for i, layer in enumerate(layers):
        owner = layer.share_weights_with
        if owner is not None and owner < i:
            keep[i] = set(keep.get(owner, ()))
    plans = [LayerPlan(i, frozenset(keep.get(i, ())), sources.get(i, {})) for i in range(len(layers))]
    return plans, problems
