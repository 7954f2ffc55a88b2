"""Search space files (search/space.py): what a space draws and applies, and every mistake named
by file, line and key before any trial runs."""

from __future__ import annotations

import textwrap

import optuna
import pytest

from configaformer.errors import ConfigError
from configaformer.search.space import SpaceError, check_run, load_space

optuna.logging.set_verbosity(optuna.logging.WARNING)

GOOD = """\
base: stdlib
dimensions:
  width: {path: model.dim_model, choices: [128, 192]}
  kv: {path: "model.layers[Attention].num_kv_heads", choices: [1, 2, 4]}
  lr: {path: train.lr, low: 1.0e-3, high: 1.0e-2, log: true}
  depth: {path: train.batch_size, low: 4, high: 16, int: true}
  pattern:
    path: model.layers
    choices: [AFAF, AFFF]
    blocks: {A: {type: Attention, num_heads: 8}, F: {type: FFN, ff_mult: 2}}
  lazy: {path: "model.layers[2].previous_attention_bool", choices: [false, true], when: {pattern: [AFAF]}}
objectives: {val_bpb: min, train_tokens_per_s: max}
constraints: {train_peak_mib: {max: 600}}
"""


def write(tmp_path, text: str):
    path = tmp_path / "space.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def trials(space, n: int, seed: int = 0):
    study = optuna.create_study(directions=["minimize", "maximize"], sampler=optuna.samplers.RandomSampler(seed))
    return [space.draw(study.ask()) for _ in range(n)]


def test_a_space_draws_every_dimension_and_conditions_only_when_they_hold(tmp_path):
    space = load_space(write(tmp_path, GOOD))
    assert space.objectives == {"val_bpb": "min", "train_tokens_per_s": "max"}
    assert space.constraints == {"train_peak_mib": (None, 600)}
    drawn = trials(space, 40)
    for values in drawn:
        assert values["width"] in (128, 192) and 1e-3 <= values["lr"] <= 1e-2
        assert isinstance(values["depth"], int) and 4 <= values["depth"] <= 16
        assert ("lazy" in values) == (values["pattern"] == "AFAF")
    assert {v["pattern"] for v in drawn} == {"AFAF", "AFFF"}


def test_the_layer_pattern_applies_first_and_the_other_paths_address_its_layers(tmp_path):
    space = load_space(write(tmp_path, GOOD))
    data = space.run_data({"pattern": "AFAF", "kv": 2, "lazy": True, "width": 192, "lr": 0.005})
    layers = data["model"]["layers"]
    assert [layer["type"] for layer in layers] == ["Attention", "FFN", "Attention", "FFN"]
    assert [layer.get("num_kv_heads") for layer in layers] == [2, None, 2, None]
    assert layers[2]["previous_attention_bool"] is True and "previous_attention_bool" not in layers[0]
    assert data["model"]["dim_model"] == 192 and data["train"]["lr"] == 0.005
    check_run(data)  # a valid run: it builds
    assert space.base["model"] == "stdlib" or "layers" in space.base["model"]  # the base is not changed


def test_a_combination_that_does_not_build_is_a_config_error_naming_the_key(tmp_path):
    space = load_space(write(tmp_path, GOOD))
    with pytest.raises(ConfigError, match=r"model\.layers\[\d\]\.dim_rope"):  # stdlib's dim_rope 24 > 128 / 8
        check_run(space.run_data({"width": 128}))


BAD = [
    ("unknown path", "  width: {path: model.dim_modl, choices: [128]}\n", 3, "dim_modl"),
    ("unknown layer key", '  x: {path: "model.layers[Attention].num_hedas", choices: [2]}\n', 3, "num_hedas"),
    ("range on a categorical key", "  norm: {path: model.norm_type, low: 1, high: 2}\n", 3, "norm_type"),
    ("choices and a range", "  w: {path: model.dim_model, choices: [64], low: 1}\n", 3, "categorical"),
    ("low above high", "  lr: {path: train.lr, low: 0.1, high: 0.01}\n", 3, "low < high"),
    ("log of zero", "  lr: {path: train.lr, low: 0, high: 0.01, log: true}\n", 3, "> 0"),
    ("condition on a missing dimension", "  w: {path: model.dim_model, choices: [64], when: {nope: [1]}}\n", 3,
     "earlier dimension"),
    ("unknown dimension key", "  w: {path: model.dim_model, choice: [64]}\n", 3, "unknown key"),
    ("a pattern letter without a block", "  p: {path: model.layers, choices: [AX], blocks: {A: {type: FFN}}}\n", 3,
     "letters in blocks"),
    ("a bad value for the run", "  lr: {path: train.lr, choices: [-1.0]}\n", 3, "train.lr"),
]


@pytest.mark.parametrize("dimension, line, names", [(d, n, w) for _, d, n, w in BAD], ids=[b[0] for b in BAD])
def test_a_bad_dimension_names_its_line(tmp_path, dimension, line, names):
    text = "base: stdlib\ndimensions:\n" + dimension + "objectives: {val_bpb: min}\n"
    with pytest.raises(SpaceError) as err:
        load_space(write(tmp_path, text))
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'space.yaml'}:{line}: ") and names in message and "\n" not in message


@pytest.mark.parametrize("text, line, names", [
    ("base: stdlib\ndimensions: {w: {path: model.dim_model, choices: [64]}}\nobjectives: {accuracy: max}\n", 3,
     "no one measures"),
    ("base: stdlib\ndimensions: {w: {path: model.dim_model, choices: [64]}}\nobjectives: {val_bpb: down}\n", 3,
     "min or max"),
    ("base: stdlib\ndimensions: {w: {path: model.dim_model, choices: [64]}}\nobjectives: {val_bpb: min}\n"
     "constraints: {gpu_hours: {max: 1}}\n", 4, "no one measures"),
    ("base: nowhere.yaml\ndimensions: {w: {path: model.dim_model, choices: [64]}}\nobjectives: {val_bpb: min}\n", 1,
     "neither a run file"),
    ("base: stdlib\nobjectives: {val_bpb: min}\n", 1, "dimensions"),
    ("base: stdlib\ndimension: {}\n", 2, "unknown key"),
    ("base: stdlib\ndimensions:\n  a: {path: model.dim_model, choices: [64, 128]}\n"
     "  b: {path: train.lr, choices: [0.1], when: {a: [96]}}\nobjectives: {val_bpb: min}\n", 4, "among a's choices"),
    ("- a list\n", 1, "mapping"),
    ("base: [stdlib\n", 1, "cannot read"),
])
def test_a_bad_space_file_names_its_line(tmp_path, text, line, names):
    with pytest.raises(SpaceError) as err:
        load_space(write(tmp_path, text))
    message = str(err.value)
    assert f"space.yaml:{line}: " in message and names in message, message


def test_a_base_beside_the_space_file_is_found(tmp_path):
    run = tmp_path / "base.yaml"
    run.write_text("model: llama\ndata: {path: data}\ntrain: {max_steps: 3}\n")
    space = load_space(write(tmp_path, "base: base.yaml\ndimensions:\n"
                                       "  p: {path: model.layers, choices: [AF], blocks: {A: {type: Attention, "
                                       "num_heads: 2}, F: {type: FFN}}}\nobjectives: {val_bpb: min}\n"))
    data = space.run_data({"p": "AF"})
    assert [layer["type"] for layer in data["model"]["layers"]] == ["Attention", "FFN"]
    assert data["model"]["dim_model"] > 0  # the rest of the llama preset stays
