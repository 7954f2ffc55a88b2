"""Import a local Hugging Face model directory as a configaformer model, and export one back.

    model = load_hf("path/to/hf-model")          # = Transformer.from_hf; reads config.json + safetensors
    import_hf("path/to/hf-model", "out")         # writes our config.json + model.safetensors
    export_hf(model_or_dir, "hf-out")            # an HF directory transformers' from_pretrained loads

Import maps the HF config with the family's table (by `model_type`), builds our model, and
fills every tensor from the HF files, checking names and shapes. Export works only for configs
a family expresses exactly: the config is mapped to HF and back, and any key that comes back
different is named in the error. Nothing is downloaded; transformers is not needed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..config import ModelConfig, resolve_config
from ..errors import ConfigError
from ..fileio import atomic_write, write_text_atomic
from ..model import Transformer
from ..weights import alias_groups
# Registering the families, in the order export tries them (the first that fits exactly wins).
from . import gpt2  # noqa: F401,I001
from . import llama  # noqa: F401
from . import gemma2  # noqa: F401
from .base import FAMILIES, HF_CONFIG, HF_INDEX, HF_WEIGHTS, Family, HFConfig, HFWeights, InteropError, \
    NotExpressible, first_difference


# How a fresh model is initialised, not what its weights compute: not compared on export.
INIT_KEYS = ("init_std", "init_scale_residual_bool")


def family_of(hf: HFConfig) -> Family:
    family = FAMILIES.get(hf.family)
    if family is None:
        raise InteropError(f"{hf.path}: model_type {hf.data.get('model_type')!r} is not supported; "
                           f"supported: {', '.join(FAMILIES)}")
    return family


def hf_to_config(hf: HFConfig) -> ModelConfig:
    """Our resolved config for an HF config (InteropError if it maps to an invalid one)."""
    family = family_of(hf)
    try:
        return resolve_config(family.to_config(hf))
    except ConfigError as err:
        raise InteropError(f"{hf.path}: the {family.model_type} config gives an invalid configaformer config: "
                           f"{err.problems[0]}") from None


def load_hf(directory: str | os.PathLike) -> Transformer:
    """Our model with the weights of the HF model in `directory` (float32)."""
    directory = Path(directory)
    hf = HFConfig.read(directory)
    family = family_of(hf)
    model = Transformer(hf_to_config(hf))
    weights = HFWeights(directory)
    try:
        state = read_state(model, family, weights, hf.path)
    finally:
        weights.close()
    model.load_state_dict(state)
    return model


def read_state(model: Transformer, family: Family, weights: HFWeights, config_path: Path) -> dict[str, torch.Tensor]:
    """Our full state dict from the HF tensors, by the family's table; every HF tensor must be used."""
    own, state, used = model.state_dict(), {}, set()
    for entry in family.tensors(model.config):
        names = [weights.resolve(name, family.optional_prefix) for name in entry.hf]
        parts = [weights.get(name, shape, config_path) for name, shape in zip(names, entry.hf_shapes(own[entry.ours].shape))]
        state[entry.ours] = entry.join(parts).to(own[entry.ours].dtype)
        used.update(names)
    for names in alias_groups(model):  # a tied head reads the embedding; shared layers their owner
        found = [n for n in names if n in state]
        if not found:
            raise RuntimeError(f"the {family.model_type} table fills none of {names} (a bug in the mapping)")
        state.update({n: state[found[0]] for n in names})
    ignored = family.ignored + (("lm_head.weight",) if model.config.classifiers[0].head_type == "tied" else ())
    extra = sorted(n for n in weights.file_of if n not in used and not n.endswith(ignored))
    if extra:
        raise InteropError(f"{weights.directory / weights.file_of[extra[0]]}: tensor {extra[0]} is not part of the "
                           f"{family.model_type} mapping (an unsupported variant of {config_path}?)")
    return state


def import_hf(directory: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write the HF model in `directory` as our config.json + model.safetensors in `out_dir`."""
    return load_hf(directory).save_pretrained(out_dir)


# ---- export ------------------------------------------------------------------------------------
def express(config: ModelConfig, family: Family) -> dict:
    """The HF config.json of `config` in `family`; NotExpressible naming the first key it changes."""
    data = {"model_type": family.model_type, "architectures": [family.architecture], **family.to_hf(config),
            "dtype": "float32"}
    try:
        back = resolve_config(family.to_config(HFConfig(data, Path(HF_CONFIG)))).to_dict()
    except (InteropError, ConfigError) as err:
        raise NotExpressible("", f"the {family.model_type} config it maps to is refused on import ({err})") from None
    ours = config.to_dict()
    back.update({key: ours[key] for key in family.limit_keys + INIT_KEYS})
    diff = first_difference(ours, back)
    if diff is not None:
        path, mine, theirs = diff
        raise NotExpressible(path, f"{json.dumps(mine)} here, but {family.model_type} can only give "
                                   f"{json.dumps(theirs)}")
    return data


def choose_family(config: ModelConfig, name: str | None = None) -> tuple[Family, dict]:
    """The first family (or the named one) that expresses `config` exactly, with its HF config."""
    if name is not None and name not in FAMILIES:
        raise InteropError(f"--family {name!r} is not supported; supported: {', '.join(FAMILIES)}")
    reasons = []
    for family in [FAMILIES[name]] if name else FAMILIES.values():
        try:
            return family, express(config, family)
        except NotExpressible as err:
            reasons.append(f"{family.model_type}: {err}")
    raise InteropError("this config has no exact Hugging Face equivalent; " + "; ".join(reasons))


def export_hf(model: Transformer | str | os.PathLike, out_dir: str | os.PathLike, family: str | None = None) -> Path:
    """Write `model` (or the model directory save_pretrained wrote) as an HF directory in `out_dir`."""
    if not isinstance(model, Transformer):
        model = Transformer.from_pretrained(model)
    chosen, data = choose_family(model.config, family)
    out = Path(out_dir)
    if (out / HF_INDEX).exists():
        raise InteropError(f"{out / HF_INDEX} exists: transformers would read its shards instead of the "
                           f"exported {HF_WEIGHTS}; choose an empty directory")
    state, tensors = model.state_dict(), {}
    for entry in chosen.tensors(model.config):
        tensors.update(zip(entry.hf, entry.split(state[entry.ours].detach().cpu().float())))
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / HF_WEIGHTS, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    write_text_atomic(out / HF_CONFIG, json.dumps(data, indent=2) + "\n")
    return out
