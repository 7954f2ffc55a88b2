"""A search space file: a base run, the dimensions to vary as paths into it, objectives, constraints.

    base: stdlib                       # a run file or a named run (model + data + training budget)
    dimensions:
      width:  {path: model.dim_model, choices: [128, 192, 256]}
      kv:     {path: "model.layers[Attention].num_kv_heads", choices: [1, 2, 4]}
      lazy:   {path: "model.layers[2].previous_attention_bool", choices: [false, true], when: {pattern: [AFAF]}}
      lr:     {path: train.lr, low: 1.0e-3, high: 1.0e-2, log: true}
      pattern:                         # the layer list itself: one letter per layer
        path: model.layers
        choices: [AFAF, AFGF, AFAFAF]
        blocks: {A: {type: Attention, num_heads: 8}, F: {type: FFN}, G: {type: gMLP}}
    objectives: {val_bpb: min, train_tokens_per_s: max}
    constraints: {train_peak_mib: {max: 600}}

A dimension's `path` is an override key (config/overrides.py: `model.layers[Attention].dim_rope`,
`model.layers.3.num_heads`, `train.lr`, `data.path`); it takes `choices` (categorical) or `low` and
`high` (`int: true` for integers, `log: true` for a log scale). `when` makes it conditional: it is
drawn only when each named dimension took one of the listed values (else the base value stays).
A `model.layers` dimension is applied first, so the other paths address the chosen layers.
Every mistake is a SpaceError naming the file, line and key, before any trial runs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError

# figure -> the direction an objective on it usually takes (what `profile` or training measures)
FIGURES = {"val_bpb": "min", "params": "min", "non_embedding_params": "min", "flops_per_token": "min",
           "train_flops_per_token": "min", "kv_bytes_per_token": "min", "train_peak_mib": "min",
           "inference_peak_mib": "min", "train_tokens_per_s": "max", "prefill_tokens_per_s": "max",
           "decode_tokens_per_s": "max"}
DIMENSION_KEYS = {"path", "choices", "low", "high", "log", "int", "when", "blocks"}
LAYERS_PATH = "model.layers"


class SpaceError(ValueError):
    """A bad space file: one line, `FILE:LINE: key: what is wrong`."""


@dataclass
class Dimension:
    name: str
    path: str
    choices: list | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    when: dict[str, list] = field(default_factory=dict)
    blocks: dict[str, dict] = field(default_factory=dict)  # for model.layers: letter -> layer dict

    def suggest(self, trial) -> Any:
        """The value an Optuna trial draws for this dimension."""
        if self.choices is not None:
            return trial.suggest_categorical(self.name, self.choices)
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log)

    def examples(self) -> list:
        """Values that probe the path: every choice, or both ends of a range."""
        if self.choices is not None:
            return list(self.choices)
        return [int(self.low), int(self.high)] if self.integer else [self.low, self.high]


@dataclass
class Space:
    file: str
    base: dict[str, Any]  # the base run file's data
    dimensions: list[Dimension]
    objectives: dict[str, str]  # figure -> "min" | "max", in order
    constraints: dict[str, tuple[float | None, float | None]]  # figure -> (min, max)

    def run_data(self, values: dict[str, Any]) -> dict[str, Any]:
        """The base run with the drawn `values` (dimension name -> value) applied. ConfigError."""
        from ..train.config import override_run

        data = self.base
        order = sorted(self.dimensions, key=lambda d: d.path != LAYERS_PATH)  # the layer list first
        for dim in order:
            if dim.name not in values:
                continue
            value = values[dim.name]
            if dim.path == LAYERS_PATH:
                data = override_run(data, [])  # a copy
                model = data["model"]
                if isinstance(model, str):  # a preset name or a path: its dict
                    from ..config.resolve import load_config
                    from ..presets import locate

                    model = load_config(locate(model, "model"))
                data["model"] = dict(model, layers=[dict(dim.blocks[letter]) for letter in value])
            else:
                text = value if isinstance(value, str) else json.dumps(value)
                data = override_run(data, [(dim.path, text)])
        return data

    def draw(self, trial) -> dict[str, Any]:
        """Values for every dimension whose conditions hold, in file order."""
        values: dict[str, Any] = {}
        for dim in self.dimensions:
            if all(values.get(name, _ABSENT) in allowed for name, allowed in dim.when.items()):
                values[dim.name] = dim.suggest(trial)
        return values


_ABSENT = object()


def _lines(node, path=(), found=None) -> dict[tuple, int]:
    """1-based line of every mapping key in a composed YAML node, by its key path."""
    found = {} if found is None else found
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            found[path + (key.value,)] = key.start_mark.line + 1
            _lines(value, path + (key.value,), found)
    return found


def load_space(path: str | Path) -> Space:
    """Read and check a space file; SpaceError naming the line of the first mistake."""
    from ..presets import preset_path
    from ..train.config import load_run_config

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except (OSError, UnicodeError, yaml.YAMLError) as err:
        mark = getattr(err, "context_mark", None) or getattr(err, "problem_mark", None)  # where it opened
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise SpaceError(f"{where}: cannot read the space file ({str(err).splitlines()[0]})") from None
    lines = _lines(node) if node is not None else {}

    def fail(keys: tuple, message: str):
        line = next((lines[keys[:n]] for n in range(len(keys), 0, -1) if keys[:n] in lines), 1)
        raise SpaceError(f"{path}:{line}: {'.'.join(map(str, keys)) or '<file>'}: {message}")

    if not isinstance(data, dict):
        fail((), "a space file is a mapping with base, dimensions and objectives")
    unknown = set(data) - {"base", "dimensions", "objectives", "constraints"}
    if unknown:
        fail((sorted(unknown)[0],), "unknown key; valid: base, dimensions, objectives, constraints")
    base_value = data.get("base")
    if not isinstance(base_value, str):
        fail(("base",), "name the base run file (a path, relative to this file, or a named run such as stdlib)")
    base_path = path.parent / base_value
    base_path = base_path if base_path.is_file() else Path(base_value) if Path(base_value).is_file() else \
        preset_path(base_value, "run")
    if base_path is None:
        fail(("base",), f"{base_value!r} is neither a run file nor a named run")
    try:
        base = load_run_config(base_path).to_dict()
    except (ConfigError, OSError, ValueError) as err:
        fail(("base",), f"the run file {base_path} is not valid: {str(err).splitlines()[-1].strip(' -')}")

    dims_data = data.get("dimensions")
    if not isinstance(dims_data, dict) or not dims_data:
        fail(("dimensions",), "a mapping of at least one named dimension")
    dimensions = [_dimension(name, spec, fail) for name, spec in dims_data.items()]
    names = [d.name for d in dimensions]
    for dim in dimensions:
        for other, allowed in dim.when.items():
            if other not in names or names.index(other) >= names.index(dim.name):
                fail(("dimensions", dim.name, "when", other), "a condition names an earlier dimension "
                     f"(earlier ones: {', '.join(names[:names.index(dim.name)]) or 'none'})")
            choices = next(d for d in dimensions if d.name == other).choices
            if choices is None or any(v not in choices for v in allowed):
                fail(("dimensions", dim.name, "when", other), f"the values must be among {other}'s choices "
                                                              f"({choices if choices is not None else 'a range'})")
    space = Space(str(path), base, dimensions, _objectives(data.get("objectives"), fail),
                  _constraints(data.get("constraints") or {}, fail))
    from ..train.config import load_run_config as check_run_section

    # Every path exists and the run file's schema takes every value it may draw. Whether the model
    # builds depends on the other dimensions too (a width and a head count): each trial checks
    # that (`check_run`) and records a combination that does not build as infeasible.
    # A model key's value that its own schema refuses ("Input should be ...") is refused here too.
    for dim in dimensions:
        key = re.split(r"[.\[\]]+", dim.path.strip("]"))[-1]
        for value in dim.examples():
            try:
                data = space.run_data({dim.name: value})
                check_run_section(data)
            except ConfigError as err:
                fail(("dimensions", dim.name), f"{dim.path} = {value!r} gives an invalid run: {err.problems[0]}")
            try:
                check_run(data)
            except ConfigError as err:
                own = [p for p in err.problems if p.path.endswith(key) and p.message.startswith("Input should")]
                if own and dim.path != LAYERS_PATH:
                    fail(("dimensions", dim.name), f"{dim.path} cannot be {value!r}: {own[0]}")
    return space


def check_run(data: dict[str, Any]) -> None:
    """ConfigError unless `data` is a valid run whose model config builds (the screen of a trial)."""
    from ..config.resolve import resolve_config
    from ..train.config import load_run_config
    from ..train.runtime import model_config_of

    run = load_run_config(data)
    try:
        resolve_config(model_config_of(run))
    except ConfigError as err:
        raise ConfigError([type(p)(f"model.{p.path}", p.message) for p in err.problems]) from None


def _dimension(name: str, spec: Any, fail) -> Dimension:
    where = ("dimensions", name)
    if not isinstance(spec, dict):
        fail(where, "a mapping with path and choices, or path, low and high")
    unknown = set(spec) - DIMENSION_KEYS
    if unknown:
        fail(where + (sorted(unknown)[0],), f"unknown key; valid: {', '.join(sorted(DIMENSION_KEYS))}")
    if not isinstance(spec.get("path"), str):
        fail(where + ("path",), "the override key to vary, e.g. model.dim_model or train.lr")
    when = spec.get("when") or {}
    if not isinstance(when, dict) or not all(isinstance(v, list) and v for v in when.values()):
        fail(where + ("when",), "a mapping of dimension name -> list of values")
    dim = Dimension(name, spec["path"], when=when, log=bool(spec.get("log", False)), integer=bool(spec.get("int")))
    has_range = "low" in spec or "high" in spec
    if "choices" in spec:
        if has_range or "log" in spec or "int" in spec:
            fail(where + ("choices",), "a categorical dimension takes choices only (low, high, log and int are for "
                                       "ranges)")
        if not isinstance(spec["choices"], list) or not spec["choices"]:
            fail(where + ("choices",), "a non-empty list")
        dim.choices = spec["choices"]
    elif has_range:
        low, high = spec.get("low"), spec.get("high")
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high))
        if not numbers or low >= high or (dim.log and low <= 0):
            fail(where + ("low",), "low < high, both numbers" + (", both > 0 for log: true" if dim.log else ""))
        dim.low, dim.high = low, high
    else:
        fail(where, "give choices, or low and high")
    if dim.path == LAYERS_PATH:
        blocks = spec.get("blocks")
        if not isinstance(blocks, dict) or not all(isinstance(b, dict) for b in blocks.values()):
            fail(where + ("blocks",), "model.layers takes choices of letter strings and blocks: {letter: layer dict}")
        for choice in dim.choices or fail(where + ("choices",), "model.layers takes choices, not a range"):
            if not isinstance(choice, str) or not choice or any(c not in blocks for c in choice):
                fail(where + ("choices",), f"{choice!r}: each choice is a string of the letters in blocks "
                                           f"({', '.join(blocks)})")
        dim.blocks = blocks
    elif "blocks" in spec:
        fail(where + ("blocks",), "blocks are for a model.layers dimension only")
    return dim


def _objectives(value: Any, fail) -> dict[str, str]:
    if not isinstance(value, dict) or not value:
        fail(("objectives",), f"a mapping of figure -> min or max; figures: {', '.join(FIGURES)}")
    for name, direction in value.items():
        if name not in FIGURES:
            fail(("objectives", name), f"no one measures this figure; figures: {', '.join(FIGURES)}")
        if direction not in ("min", "max"):
            fail(("objectives", name), "min or max")
    return dict(value)


def _constraints(value: Any, fail) -> dict[str, tuple[float | None, float | None]]:
    if not isinstance(value, dict):
        fail(("constraints",), "a mapping of figure -> {min: x, max: y}")
    found = {}
    for name, bounds in value.items():
        if name not in FIGURES:
            fail(("constraints", name), f"no one measures this figure; figures: {', '.join(FIGURES)}")
        if not isinstance(bounds, dict) or not bounds or set(bounds) - {"min", "max"} or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in bounds.values()):
            fail(("constraints", name), "{min: number} and/or {max: number}")
        found[name] = (bounds.get("min"), bounds.get("max"))
    return found
