"""The config language under fuzzing (tests/fuzz.py): configs drawn from the registered schemas
either raise a ConfigError naming key paths or build models that run, train, save and decode.

The CI profile (`FUZZ_PROFILE=ci`, the default) is deterministic (derandomize) and takes seconds;
`FUZZ_PROFILE=dev` draws fresh examples each run. The large profile is a script:
`python -m benchmarks.fuzz_configs --examples 5000` (docs/reliability.md).
"""

from __future__ import annotations

import json
import math
import os
import typing

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from pydantic import BaseModel

import configaformer
from benchmarks import fuzz_configs
from configaformer import ConfigError
from configaformer.config import ClassifierConfig, ModelConfig
from configaformer.config.base import user_keys
from configaformer.registry import get_block, list_blocks

from .fuzz import check, check_drawn, configs, repair

COMMON = dict(deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.function_scoped_fixture])
settings.register_profile("ci", max_examples=300, derandomize=True, **COMMON)
settings.register_profile("dev", max_examples=1000, **COMMON)
PROFILE = settings.get_profile(os.environ.get("FUZZ_PROFILE", "ci"))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run several times slower on 2 threads of a busy 2-core machine (as in
    tests/test_benchmarks.py); the process-wide setting is restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@PROFILE
@given(configs())
def test_a_config_is_a_config_error_naming_its_keys_or_a_model_that_runs_trains_saves_and_decodes(config):
    for checked, outcome in check_drawn(config):  # the drawn config, and its repair if it is invalid
        assert not outcome.failed, f"{outcome.kind}: {outcome.detail}\nconfig: {checked!r}"


def test_repair_drops_exactly_the_keys_and_layers_the_config_error_names():
    config = {"dim_model": 16, "vocab_size": 11, "classifiers": [11], "rope_base": 3.0,
              "layers": [{"type": "Attention", "num_heads": 3, "talking_heads_bool": True}, {"type": "Nope"}, {"type": "FFN"}]}
    assert repair(config) == {"dim_model": 16, "vocab_size": 11, "classifiers": [11],
                              "layers": [{"type": "Attention", "talking_heads_bool": True}, {"type": "FFN"}]}
    assert repair(dict(config, vocab_size=0)) is None  # a required key cannot be dropped


# ---- every float key, found by walking the schemas -------------------------------------------
def float_paths(schema: type[BaseModel], prefix: tuple = ()) -> list[tuple]:
    """Key paths (tuples) of every float field of `schema` and the models nested in it."""
    paths = []
    for key in sorted(user_keys(schema)):
        annotation = schema.model_fields[key].annotation
        kinds = _leaf_types(annotation)
        if float in kinds:
            paths.append(prefix + (key,))
        for kind in kinds:
            if isinstance(kind, type) and issubclass(kind, BaseModel) and typing.get_origin(annotation) is not list:
                paths += float_paths(kind, prefix + (key,))
    return paths


def _leaf_types(annotation) -> set:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Annotated:
        return _leaf_types(args[0])
    if args:
        return set().union(*(_leaf_types(a) for a in args))
    return {annotation}


def _float_cases() -> list[tuple[dict, str]]:
    base = {"dim_model": 8, "vocab_size": 11, "classifiers": [11], "layers": [{"type": "FFN"}]}
    cases = [(dict(base), path) for path in float_paths(ModelConfig)]  # nested ones too (rope_scaling.factor)
    cases += [(dict(base, classifiers=[{"num_classes": 11}]), ("classifiers", 0) + path)
              for path in float_paths(ClassifierConfig)]
    for name in list_blocks():
        cases += [(dict(base, layers=[{"type": name}]), ("layers", 0) + path)
                  for path in float_paths(get_block(name).config_cls)]
    return [(config, ".".join(map(str, path)).replace(".0.", "[0].")) for config, path in cases]


FLOAT_CASES = _float_cases()


def _set(config: dict, path: str, value: float) -> dict:
    config = json.loads(json.dumps(config))
    parts = path.replace("[0]", ".0").split(".")
    node = config
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    node[parts[-1]] = value
    return config


def test_the_schema_walk_finds_the_float_keys_of_nested_parts_and_heads():
    paths = {path for _, path in FLOAT_CASES}
    assert {"init_std", "classifiers[0].ff_mult", "layers[0].layerscale_init", "layers[0].attention.logit_softcap",
            "layers[0].ffn.ff_mult"} <= paths and "layers[0].attention.dropout" not in paths


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
@pytest.mark.parametrize("config, path", FLOAT_CASES, ids=[path for _, path in FLOAT_CASES])
def test_every_float_key_of_every_schema_refuses_inf_and_nan_naming_itself(config, path, value):
    with pytest.raises(ConfigError) as info:
        configaformer.Transformer(_set(config, path, value))
    problems = {p.path: p.message for p in info.value.problems}
    assert "finite" in problems.get(path, ""), problems


def test_the_large_profile_script_counts_every_example_and_resumes(tmp_path):
    out = tmp_path / "fuzz.json"
    first = fuzz_configs.main(["--examples", "6", "--piece", "3", "--max-seconds", "0", "--out", str(out)])
    assert first["examples"] == 3  # one piece, then the time limit
    summary = fuzz_configs.main(["--examples", "6", "--piece", "3", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert summary["examples"] == 6 and set(saved["pieces"]) == {"0", "1"}
    assert summary["checked"] >= 6 and summary["valid"] + summary["invalid"] + sum(summary[k] for k in ("exception", "unnamed_problem",
                                                                            "non_finite", "cache_mismatch",
                                                                            "reload_mismatch")) == summary["checked"]


@pytest.mark.parametrize("breakage, kind", [
    (lambda self, h, ctx: h * float("nan"), "non_finite"),
    (lambda self, h, ctx: h.cumsum(1), "cache_mismatch"),  # causal, but forgets earlier chunks
    (lambda self, h, ctx: h[:, :, 99], "exception"),
])
def test_check_reports_a_broken_block_by_kind(monkeypatch, breakage, kind):
    config = {"dim_model": 8, "vocab_size": 11, "classifiers": [11], "layers": [{"type": "FFN"}]}
    assert check(config).kind == "valid"
    monkeypatch.setattr(get_block("FFN").block_cls, "forward", breakage)
    assert check(config).kind == kind


def test_check_reports_a_problem_without_a_key_path(monkeypatch):
    config = {"dim_model": 8, "vocab_size": 11, "classifiers": [11], "layers": [{"type": "FFN"}]}
    monkeypatch.setattr(get_block("FFN").config_cls, "check", lambda self, model: [("", "broken")])
    assert check(config).kind == "unnamed_problem"
