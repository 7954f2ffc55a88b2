"""Property-based fuzzing of the whole config language (hypothesis), generated from the schemas.

`configs()` draws model config dicts by walking the pydantic schemas: ModelConfig and the config
class of every registered block (`list_blocks()`), with their fields' annotations (Literal,
Optional, nested models, lists) and constraints (ge/gt/le/lt). A new key or block is therefore
fuzzed without touching this file. Sizes are drawn small (a handful of values per kind of key,
below) so every model is tiny; about one value in `INVALID_ODDS` is out of range or of the wrong
type, and now and then a key is unknown or a required one missing. How many optional keys a
config writes varies from config to config: dense ones meet more combinations of features.

`repair(config)` drops what an invalid config's ConfigError names (reading only its key paths)
until it builds, so dense configs also yield valid models with many features at once;
`check_drawn` checks the drawn config and its repair.

`check(config)` runs the properties on one config and returns an `Outcome`:
- it raises ConfigError, each problem naming a key path, or it builds;
- a built model runs forward (eval) and forward + backward (train) with finite outputs and
  gradients, round-trips save/load with identical logits, and, if causal, decodes through a
  DecodeCache in chunks to the logits of the full forward;
- nothing raises any other exception.

tests/test_fuzz.py runs it under a CI-sized profile; benchmarks/fuzz_configs.py runs thousands.
"""

from __future__ import annotations

import copy
import math
import random
import re
import tempfile
import traceback
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, Union

import torch
from hypothesis import strategies as st
from pydantic import BaseModel

import configaformer
from configaformer import ConfigError
from configaformer.config import ClassifierConfig, ModelConfig
from configaformer.config.base import user_keys
from configaformer.registry import get_block, list_blocks

from .conftest import cached_logits

INVALID_ODDS = 40  # about one drawn value in this many is invalid
OPTIONAL_ODDS = (1, 2, 2, 3, 5)  # an optional key is written about once in this many draws (one per config)
MAX_LAYERS = 4
BATCH, LENGTH, CONTEXT_LENGTH = 2, 6, 3
CHUNKS = (1, 2, 3)  # the decode-cache check feeds LENGTH tokens in these chunks

# Small sizes by kind of key (a name prefix or the whole name), so every model stays tiny.
# Hypothesis favours the first choice of a list: each list starts with the most ordinary value.
SIZES = {"dim_": [8, 16, 4, 12, 2, 1, 0], "num_heads": [2, 1, 4, 3], "num_kv_heads": [1, 2, 4],
         "max_seq_len": [16, 8, 4, 1], "vocab_size": [11, 16, 5, 1], "num_classes": [3, 11, 1],
         "input_emb_size": [8, 4, 16], "features": [4, 8, 2, 1], "num_": [1, 2, 0, 3, 4]}
OTHER_INTS = [1, 2, 3, 0, 5, 8, -1, -3]
FLOATS = [0.1, 0.5, 1.0, 2.0, 0.01, 0.9, 3.5, 1e-6]
ALWAYS = {"num_heads", "max_seq_len"}  # optional sizes always drawn: their defaults are large or missing
NAMES = ["lm", "head0", "head1", "x"]  # head names that collide with the defaults on purpose
KEY_PATH = re.compile(r"^[A-Za-z_]\w*(\[\d+\]|\.[A-Za-z_]\w*)*$")


# ---- strategies, from the schemas ---------------------------------------------------------------
def _bounds(metadata: list) -> tuple[float | None, float | None, bool, bool]:
    """(low, high, low inclusive, high inclusive) from annotated_types constraints."""
    lo = hi = None
    lo_inc = hi_inc = True
    for m in metadata:
        for attr, is_lo, inclusive in (("ge", True, True), ("gt", True, False), ("le", False, True), ("lt", False, False)):
            value = getattr(m, attr, None)
            if value is not None:
                if is_lo:
                    lo, lo_inc = value, inclusive
                else:
                    hi, hi_inc = value, inclusive
    return lo, hi, lo_inc, hi_inc


def _inside(value: float, bounds) -> bool:
    lo, hi, lo_inc, hi_inc = bounds
    return (lo is None or value > lo or (lo_inc and value == lo)) and (hi is None or value < hi or (hi_inc and value == hi))


def _int_values(key: str, bounds, rng: random.Random) -> st.SearchStrategy:
    choices = next((v for prefix, v in SIZES.items() if key == prefix or (prefix.endswith("_") and key.startswith(prefix))),
                   OTHER_INTS)
    valid = [v for v in choices if _inside(v, bounds)] or [int(bounds[0]) + (0 if bounds[2] else 1)]
    lo, hi = bounds[0], bounds[1]
    wrong = [2 ** 70, 2.5, "4", True, None]
    wrong += [int(lo) - 1] if lo is not None else []
    wrong += [int(hi) + 1] if hi is not None else []
    return _maybe_invalid(st.sampled_from(valid), st.sampled_from(wrong), rng)


def _float_values(bounds, rng: random.Random) -> st.SearchStrategy:
    valid = [v for v in FLOATS if _inside(v, bounds)]
    lo, hi = bounds[0], bounds[1]
    wrong = [math.inf, -math.inf, math.nan, 1e300, -1.0, "0.5", None]
    wrong += [hi] if hi is not None else []
    drawn = st.floats(lo if lo is not None else -4.0, min(hi, 4.0) if hi is not None else 4.0,
                      exclude_min=not bounds[2], exclude_max=not bounds[3], allow_nan=False)
    return _maybe_invalid(st.one_of(st.sampled_from(valid), drawn) if valid else drawn, st.sampled_from(wrong), rng)


def _maybe_invalid(valid: st.SearchStrategy, invalid: st.SearchStrategy, rng: random.Random) -> st.SearchStrategy:
    return invalid if rng.randrange(INVALID_ODDS) == 0 else valid


def value_strategy(annotation: Any, key: str, rng: random.Random, metadata: tuple = (),
                   none_odds: int = 2) -> st.SearchStrategy:
    """Values for one field, from its annotation and constraints. `rng` decides which are invalid
    (hypothesis' own draws favour the ends of their ranges, which would make most configs invalid)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return value_strategy(args[0], key, rng, metadata + tuple(args[1:]))
    if origin in (Union, types.UnionType):
        options = st.one_of(*[value_strategy(a, key, rng, metadata) for a in args if a is not type(None)])
        return st.none() if type(None) in args and rng.randrange(none_odds) == 0 else options
    if origin is Literal:  # shuffled: hypothesis favours the first choice, and every choice matters
        return _maybe_invalid(st.sampled_from(rng.sample(args, len(args))), st.just("bogus"), rng)
    if origin in (list, tuple):
        return _maybe_invalid(st.lists(value_strategy(args[0], key, rng), min_size=1, max_size=3), st.just("x"), rng)
    if annotation is bool:
        return _maybe_invalid(st.sampled_from(rng.sample([False, True], 2)), st.sampled_from([1, "yes"]), rng)
    if annotation is int:
        return _int_values(key, _bounds(list(metadata)), rng)
    if annotation is float:
        return _float_values(_bounds(list(metadata)), rng)
    if annotation is str:
        return st.sampled_from(NAMES)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _maybe_invalid(schema_dicts(annotation, rng), st.sampled_from([3, [], {"bogus_key": 1}]), rng)
    raise TypeError(f"no strategy for {key}: {annotation!r}; add one to tests/fuzz.py")


@st.composite
def schema_dicts(draw, schema: type[BaseModel], rng: random.Random, fixed: dict | None = None,
                 optional_odds: int = 5) -> dict:
    """A dict for `schema`: every required key (now and then one left out), each optional key
    about once in OPTIONAL_ODDS, rarely an unknown key. `fixed`: keys drawn elsewhere."""
    fixed = fixed or {}
    out: dict[str, Any] = {}
    for key in sorted(user_keys(schema)):
        if key in fixed:
            out[key] = draw(fixed[key])
            continue
        info = schema.model_fields[key]
        if info.is_required() or key in ALWAYS:
            if rng.randrange(INVALID_ODDS * 4) == 0:
                continue  # a required key missing
        elif rng.randrange(optional_odds):
            continue
        none_odds = INVALID_ODDS if key in ALWAYS else 2
        values = value_strategy(info.annotation, key, rng, tuple(info.metadata), none_odds)
        out[key] = draw(values)
        if out[key] == info.default and rng.randrange(4):  # a key written at its default changes nothing
            out[key] = draw(values)
    if rng.randrange(INVALID_ODDS * 4) == 0:
        out["bogus_key"] = 1
    return out


@st.composite
def layer_dicts(draw, rng: random.Random, optional_odds: int) -> dict:
    """One layer of a registered type (now and then an unknown one)."""
    name = draw(st.sampled_from(list_blocks()))
    schema = get_block(name).config_cls
    kind = _maybe_invalid(st.just(name), st.sampled_from(["Nope", 3]), rng)
    return draw(schema_dicts(schema, rng, fixed={"type": kind}, optional_odds=optional_odds))


@st.composite
def configs(draw) -> dict:
    """Model config dicts: ModelConfig's keys, 1..MAX_LAYERS layers, 0..2 classifiers (a bare
    class count or a ClassifierConfig dict)."""
    rng = random.Random(draw(st.integers(0, 2 ** 32 - 1)))
    odds = rng.choice(OPTIONAL_ODDS)  # sparse layers are mostly valid; dense ones meet more combinations
    head = st.one_of(st.sampled_from(SIZES["num_classes"]), schema_dicts(ClassifierConfig, rng))
    return draw(schema_dicts(ModelConfig, rng, fixed={
        "layers": st.lists(layer_dicts(rng, odds), min_size=1, max_size=MAX_LAYERS),
        "classifiers": st.lists(head, min_size=0, max_size=2),
    }, optional_odds=2 * odds))  # a model-wide key acts on every layer: fewer of them


# ---- repair: the valid config nearest a drawn one -------------------------------------------------
PATH_PART = re.compile(r"([A-Za-z_]\w*)|\[(\d+)\]")


def repair(config: dict, rounds: int = 30) -> dict | None:
    """The drawn config less what its ConfigError names, one problem a round, until it builds (or
    None): dense configs mostly fail on one or two keys, and without them reach the combinations
    of features a valid model can have. It reads only the problems' key paths, so it needs no
    knowledge of any schema. A layer whose type or whole self is named is dropped."""
    config = copy.deepcopy(config)
    for _ in range(rounds):
        try:
            configaformer.resolve_config(config)
            return config
        except ConfigError as err:
            if not err.problems or not _drop(config, err.problems[0].path):
                return None
        except Exception:  # not for repair to judge: check() reports it on the drawn config
            return None
    return None


def _drop(config: dict, path: str) -> bool:
    parts = [name or int(index) for name, index in PATH_PART.findall(path)]
    if not parts:
        return False
    if parts[0] in ("layers", "classifiers") and len(parts) > 1 and isinstance(config.get(parts[0]), list):
        items, index = config[parts[0]], parts[1]
        item = items[index] if index < len(items) else None
        whole = len(parts) == 2 or parts[2] in ("type", "num_classes") or not isinstance(item, dict) \
            or parts[2] not in item
        if whole:
            if parts[0] == "layers" and len(items) == 1:
                return False
            del items[index]
        else:
            del item[parts[2]]
        return True
    if parts[0] in config and not ModelConfig.model_fields.get(parts[0], ModelConfig.model_fields["layers"]).is_required():
        del config[parts[0]]
        return True
    return False


# ---- properties ---------------------------------------------------------------------------------
@dataclass
class Outcome:
    kind: str  # "valid", "invalid" (a ConfigError naming key paths), or a failure kind below
    detail: str = ""

    FAILURES: typing.ClassVar[tuple[str, ...]] = ("exception", "unnamed_problem", "non_finite", "cache_mismatch",
                                                  "reload_mismatch")

    @property
    def failed(self) -> bool:
        return self.kind in self.FAILURES


def _cause(exc: BaseException) -> str:
    """`Type: message (file:line)` of the innermost frame in configaformer, for grouping."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "configaformer" in f.filename]
    where = f" ({frames[-1].filename.rsplit('configaformer/', 1)[-1]}:{frames[-1].lineno})" if frames else ""
    first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}{where}"


def check_drawn(config: dict) -> list[tuple[dict, Outcome]]:
    """(config, outcome) of `check` on the drawn config and, if it is invalid, on its repair."""
    outcome = check(config)
    fixed = repair(config) if outcome.kind == "invalid" else None
    return [(config, outcome)] + ([(fixed, check(fixed))] if fixed is not None else [])


def check(config: dict) -> Outcome:
    """Every property for one config (see the module docstring)."""
    try:
        return _check(config)
    except Exception as exc:  # the property: nothing but ConfigError, and that one caught below
        return Outcome("exception", _cause(exc))


def _check(config: dict) -> Outcome:
    torch.manual_seed(0)
    try:
        model = configaformer.Transformer(config)
    except ConfigError as err:
        unnamed = [str(p) for p in err.problems if not KEY_PATH.match(p.path)]
        return Outcome("unnamed_problem", "; ".join(unnamed)) if unnamed or not err.problems else Outcome("invalid")
    cfg = model.config
    if configaformer.resolve_config(cfg.to_dict()) != cfg:
        return Outcome("exception", "the resolved config is not a fixed point of resolve_config")
    length = min(LENGTH, cfg.max_seq_len or LENGTH)
    ids = torch.randint(0, cfg.vocab_size, (BATCH, length))
    inputs = {}
    widths = [layer.dim_context for layer in cfg.layers if get_block(layer.type).block_cls.reads_context]
    if widths:
        inputs["context"] = torch.randn(BATCH, CONTEXT_LENGTH, widths[0])

    model.train()
    out = model(ids, **inputs)
    if out:
        sum(o.float().square().mean() for o in out).backward()
    bad = [name for name, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    if not all(torch.isfinite(o).all() for o in out) or bad:
        return Outcome("non_finite", f"training forward/backward; gradients of {bad[:3]}")
    model.eval()
    with torch.no_grad():
        out = model(ids, **inputs)
        if not all(torch.isfinite(o).all() for o in out):
            return Outcome("non_finite", "eval forward")
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp)
            again = configaformer.Transformer.from_pretrained(tmp).eval()
        if not all(torch.equal(a, b) for a, b in zip(out, again(ids, **inputs))):
            return Outcome("reload_mismatch", "save_pretrained -> from_pretrained changed the logits")
        if cfg.is_causal and out:
            chunks = [c for c in CHUNKS if c <= length][:1] if length < sum(CHUNKS) else list(CHUNKS)
            chunks = chunks + [length - sum(chunks)] if sum(chunks) < length else chunks
            try:
                torch.testing.assert_close(cached_logits(model, ids, chunks, **inputs), out[0], rtol=1e-4, atol=1e-4)
            except AssertionError as exc:
                return Outcome("cache_mismatch", str(exc).strip().splitlines()[0])
    return Outcome("valid")
