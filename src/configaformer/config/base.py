"""Shared pieces of the config language: the strict pydantic base and error conversion."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

from ..errors import Problem


FLOAT32 = (1.1754943508222875e-38, 3.4028234663852886e38)  # smallest normal and largest float32


class StrictModel(BaseModel):
    """Base for every config schema: unknown keys are errors, types are not coerced, floats are
    finite and mean the same in float32 (the model's arithmetic), where a smaller non-zero
    magnitude is 0 and a larger one infinite. Size ratios (`*_mult` keys) multiply integer sizes
    exactly instead, and the resolver's size check bounds what they give."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _float32_range(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, float) and value and not FLOAT32[0] <= abs(value) <= FLOAT32[1] \
                and not (info.field_name or "").endswith("_mult"):
            raise ValueError(f"{value!r} is {'0' if abs(value) < FLOAT32[0] else 'infinite'} in float32, the "
                             f"model's arithmetic; a non-zero value lies between {FLOAT32[0]:.3g} and {FLOAT32[1]:.3g}")
        return value


def join_path(prefix: str, loc: tuple | list) -> str:
    """`('layers', 3, 'num_heads')` -> `layers[3].num_heads` (prefix is prepended)."""
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def did_you_mean(key: str, valid: list[str] | set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}? " if close else ""


def user_keys(schema: type[BaseModel]) -> set[str]:
    """The keys a user may write in `schema`: its fields, less those excluded from its dump (a
    Parallel part's `type` and the whole-layer keys the part refuses)."""
    return {key for key, info in schema.model_fields.items() if not info.exclude}


def _owner_fields(schema: type[BaseModel], loc: tuple) -> set[str]:
    """The keys valid next to the last element of `loc` inside `schema` (for did-you-mean)."""
    model: Any = schema
    for part in loc[:-1]:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part)
        model = nested_model(field.annotation) if field else None
    return user_keys(model) if model is not None else set()


def nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = nested_model(arg)
        if found is not None:
            return found
    return None


def problems_from_validation(err: ValidationError, schema: type[BaseModel], prefix: str = "") -> list[Problem]:
    """Turn pydantic's errors into `Problem`s with our key paths and a hint of what is valid."""
    problems = []
    for e in err.errors(include_url=False):
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        path = join_path(prefix, loc)
        kind = e["type"]
        if kind == "extra_forbidden":
            valid = _owner_fields(schema, loc) - {"type"}
            key = str(loc[-1]) if loc else ""
            msg = f"unknown key; {did_you_mean(key, valid)}valid keys: {', '.join(sorted(valid))}"
        elif kind == "missing":
            msg = "required key is missing"
        else:
            got = e.get("input")
            text = e["msg"]
            if text.startswith("Value error, "):
                text = text[len("Value error, "):]
            shown = isinstance(got, (dict, list)) or repr(got) in text  # no "(got x)" twice
            msg = text if shown else f"{text} (got {got!r})"
        problems.append(Problem(path, msg))
    return problems
