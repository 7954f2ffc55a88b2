"""Dotted-key overrides of a config, from the command line or from code.

    configaformer train RUN --train.lr 3e-4 --model.layers.3.num_heads 2 --model.layers[Attention].dim_rope 16

    apply_overrides(run_dict, [("model.layers[Attention].dim_rope", "16")], RunConfig)  # a sweep, a search

Keys: a path of names separated by dots; `[x]` is the same as `.x`. Inside a list, a segment is
an index (`layers.3`, `layers[-1]`), `*` (every entry), or, in a model's `layers`, a layer type
(`layers[Attention]`: every Attention layer). Names must exist in the schema where they are
written (a layer's keys are those of its type), so a typo is an error, not a new key.

Values are text, read by the schema of the key they set: a string field keeps the text as typed
(`--sample.prompt 123` is the prompt "123"); a number field reads a number (`3e-4`, `1e3`); a
field that may be null reads `null` as null; anything else (bools, lists, dicts) reads as YAML.

A model given by name or path (a run's `model: llama`) is loaded into a dict before the first
override under it applies, so `model.` overrides work on presets, files and inline configs
alike. The input is never changed: `apply_overrides` works on a deep copy (YAML anchors make
layers share one dict, and an override of one layer must not reach the others).
Every bad override is a ConfigError naming its flag (`--model.layers.9.num_heads`) and what is
valid; the values themselves are checked afterwards by the schema, as if written in the file.
"""

from __future__ import annotations

import re
import types
import typing
from typing import Any, Iterable, Union

import yaml
from pydantic import BaseModel

from ..errors import ConfigError, Problem
from ..presets import locate
from ..registry import get_block, list_blocks
from .base import did_you_mean, join_path, nested_model, user_keys
from .layer import LayerConfig
from .model import ClassifierConfig, ModelConfig
from .resolve import load_config

Override = tuple[str, str]  # (dotted key, value as text)


class ModelSource:
    """Marks a field that holds a model config, or the file path or preset name of one:
    `model: Annotated[Union[str, dict[str, Any]], ModelSource()]`."""


def parse_args(args: list[str]) -> list[Override]:
    """Command-line words -> (key, text) pairs: `["--train.lr", "3e-4", "--out_dir=x"]`."""
    pairs: list[Override] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.split("=")[0] in ("--local_rank", "--local-rank"):  # added by the deepspeed launcher; the
            i += 1 if "=" in arg else 2                            # rank is read from LOCAL_RANK instead
            continue
        if not arg.startswith("--") or arg == "--":
            raise ConfigError(Problem(arg, "expected a setting such as --train.lr 3e-4"))
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(args):
                raise ConfigError(Problem(arg, "needs a value, e.g. --train.max_steps 100"))
            value = args[i + 1]
            i += 1
        pairs.append((key, value))
        i += 1
    return pairs


def apply_overrides(data: dict[str, Any], overrides: Iterable[Override | str], schema: type[BaseModel]) -> dict:
    """A copy of `data` (a config of `schema`) with each override applied in order. Overrides are
    (key, text) pairs or "key=text" strings. Raises one ConfigError listing every bad override."""
    data = _unshared(data)
    problems: list[Problem] = []
    for item in overrides:
        key, text = item if isinstance(item, tuple) else item.partition("=")[::2]
        try:
            parts = split_key(key)
            _set(data, schema, parts, text, [])
        except _Bad as bad:
            problems.append(Problem(f"--{key}", bad.message))
        except ConfigError as err:  # a model named by a path or preset that does not exist
            problems += [Problem(f"--{key}", str(p)) for p in err.problems]
    if problems:
        raise ConfigError(problems)
    return data


def _unshared(value: Any) -> Any:
    """A deep copy in which no two places share one object (copy.deepcopy keeps YAML aliases shared)."""
    if isinstance(value, dict):
        return {k: _unshared(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_unshared(v) for v in value]
    return value


class _Bad(Exception):
    def __init__(self, message: str):
        self.message = message


_KEY = re.compile(r"[^.\[\]]+(?:\.[^.\[\]]+|\[[^.\[\]]+\])*")


def split_key(key: str) -> list[str]:
    """`model.layers[Attention].dim_rope` -> `["model", "layers", "Attention", "dim_rope"]`."""
    if not _KEY.fullmatch(key):
        raise _Bad("not a key path; write names separated by dots, e.g. train.lr, model.layers.3.num_heads "
                   "or model.layers[Attention].dim_rope")
    return key.replace("[", ".").replace("]", "").split(".")


def _where(path: list) -> str:
    return join_path("", path) or "the top level"


def _set(node: Any, annotation: Any, parts: list[str], text: str, path: list) -> Any:
    """Set `parts` below `node` (whose schema is `annotation`); returns the new node."""
    if _is_model_source(annotation):
        node = _unshared(load_config(locate(node, _where(path)))) if isinstance(node, str) else node
        annotation = ModelConfig
    key, container = parts[0], _container(annotation)
    if container is list:
        if not isinstance(node, list):
            raise _Bad(f"{_where(path)} is {node!r}, not a list to index")
        item = _LAYER if annotation is _LAYERS else _args(annotation, list)[0]
        for index in _select(node, key, annotation is _LAYERS, path):
            _assign(node, index, item, parts[1:], text, path + [index])
        return node
    schema = None if container is dict else nested_model(annotation)
    if container is None and schema is None:
        raise _Bad(f"{_where(path)} has no keys below it (set it as a whole: --{_where(path)} VALUE)")
    if node is None:
        node = {}
    if isinstance(node, int) and schema is ClassifierConfig:  # the `classifiers: [256]` shorthand
        node = {"num_classes": node}
    if not isinstance(node, dict):
        raise _Bad(f"{_where(path)} is {node!r}, not a mapping with keys")
    if schema is None:  # a dict of any keys (a run's `heads`)
        child = _args(annotation, dict)[1]
    else:
        valid = user_keys(schema)
        if key not in valid:
            kind = f" (type {node['type']})" if issubclass(schema, LayerConfig) and "type" in node else ""
            raise _Bad(f"unknown key {key!r} in {_where(path)}{kind}; {did_you_mean(key, valid)}"
                       f"valid keys: {', '.join(sorted(valid))}")
        child = _LAYERS if (schema is ModelConfig and key == "layers") else _with_metadata(schema.model_fields[key])
    _assign(node, key, child, parts[1:], text, path + [key])
    return node


def _assign(node: Any, key: Any, annotation: Any, rest: list[str], text: str, path: list) -> None:
    if annotation is _LAYER:
        annotation = _layer_schema(node[key], path) if rest else Any
    if not rest:
        node[key] = parse_value(text, annotation)
        return
    current = node.get(key) if isinstance(node, dict) else node[key]
    node[key] = _set(current, annotation, rest, text, path)


# ---- the schema's shape -------------------------------------------------------------------------
_LAYERS = object()  # a model's `layers`: each entry's schema is its type's
_LAYER = object()


def _layer_schema(layer: Any, path: list) -> Any:
    kind = layer.get("type") if isinstance(layer, dict) else None
    if kind not in list_blocks():
        raise _Bad(f"{_where(path)} has no known type ({kind!r}); valid types: {', '.join(list_blocks())}")
    return get_block(kind).config_cls


def _select(items: list, segment: str, layers: bool, path: list) -> list[int]:
    """The indices `segment` picks: one index, `*`, or (in `layers`) every layer of a type."""
    n = len(items)
    if re.fullmatch(r"-?\d+", segment):
        i = int(segment)
        if not -n <= i < n:
            valid = f"0..{n - 1}, or -{n}..-1" if n else "none: it is empty"
            raise _Bad(f"index {i} is out of range: {_where(path)} has {n} entries (valid: {valid})")
        return [i % n]
    if segment == "*":
        return list(range(n))
    if layers:
        present = sorted({layer.get("type") for layer in items if isinstance(layer, dict)} - {None})
        if segment not in list_blocks():
            raise _Bad(f"{segment!r} is neither an index, '*' nor a layer type; {did_you_mean(segment, list_blocks())}"
                       f"valid types: {', '.join(list_blocks())}")
        picked = [i for i, layer in enumerate(items) if isinstance(layer, dict) and layer.get("type") == segment]
        if not picked:
            raise _Bad(f"no {segment} layer in {_where(path)} (its types: {', '.join(present)})")
        return picked
    raise _Bad(f"{segment!r} is not an index into {_where(path)}; write an index (0..{n - 1}) or '*'")


def _with_metadata(field: Any) -> Any:
    return typing.Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation


def _is_model_source(annotation: Any) -> bool:
    return typing.get_origin(annotation) is typing.Annotated and \
        any(isinstance(m, ModelSource) for m in annotation.__metadata__)


def _strip(annotation: Any) -> list[Any]:
    """The alternatives of an annotation, Annotated and Optional/Union unwrapped."""
    if typing.get_origin(annotation) is typing.Annotated:
        return _strip(annotation.__origin__)
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return [alt for arg in typing.get_args(annotation) for alt in _strip(arg)]
    return [annotation]


def _container(annotation: Any) -> type | None:
    if annotation is _LAYERS:
        return list
    origins = {typing.get_origin(alt) or alt for alt in _strip(annotation)}
    if dict in origins:
        return dict
    return list if origins & {list, tuple} else None


def _args(annotation: Any, kind: type) -> tuple:
    for alt in _strip(annotation):
        if (typing.get_origin(alt) or alt) in ((kind,) if kind is dict else (list, tuple)):
            args = typing.get_args(alt)
            if kind is dict:
                return args or (str, Any)
            return (args[0] if args else Any,)
    return (Any, Any)


# ---- values -------------------------------------------------------------------------------------
def parse_value(text: str, annotation: Any) -> Any:
    """Read `text` as a value of `annotation` (see the module docstring)."""
    alternatives = _strip(annotation)
    kinds: set[Any] = set()
    for alt in alternatives:
        if typing.get_origin(alt) is typing.Literal:
            kinds |= {type(v) for v in typing.get_args(alt)}
        else:
            kinds.add(typing.get_origin(alt) or alt)
    if type(None) in kinds and text in ("null", "~"):
        return None
    try:
        parsed = yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError:
        parsed = text
    if str in kinds and not (isinstance(parsed, dict) and kinds & {dict, Any}) \
            and not (isinstance(parsed, list) and kinds & {list, tuple, Any}):
        return text
    if isinstance(parsed, str) and kinds & {int, float, Any}:  # YAML 1.1 reads "3e-4" as text
        try:
            parsed = float(parsed)
        except ValueError:
            return parsed
    if isinstance(parsed, float) and parsed.is_integer() and int in kinds and float not in kinds:
        parsed = int(parsed)  # `--model.dim_model 1e3` for an integer key
    return parsed
