"""What every Hugging Face family mapping shares: the mapping tables' types, reading a local
HF model directory (config.json + safetensors, sharded or not), and the config comparison
that decides whether a config can be exported exactly.

A family (gpt2.py, llama.py, gemma2.py) is a `Family`: a function from the HF config.json to
one of our config dicts, its inverse, and a table of `TensorMap`s from our state-dict names to
HF tensor names. Nothing here imports transformers; it reads JSON and safetensors only.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from ..config import ModelConfig

HF_CONFIG = "config.json"
HF_WEIGHTS = "model.safetensors"
HF_INDEX = "model.safetensors.index.json"


class InteropError(ValueError):
    """A Hugging Face directory that cannot be imported, or a config that cannot be exported:
    one line naming the file and key (the CLI prints it and exits with 2)."""


# ---- the mapping tables ------------------------------------------------------------------------
@dataclass(frozen=True)
class TensorMap:
    """Our tensor `ours` is the HF tensors `hf` concatenated along dim 0 (one of them: itself),
    each transposed first where `transpose` (GPT-2's Conv1D stores (in, out)). `rows`: the
    HF tensors' sizes along that dim, needed to split ours again on export."""

    ours: str
    hf: tuple[str, ...]
    rows: tuple[int, ...] | None = None
    transpose: bool = False

    def hf_shapes(self, shape: torch.Size) -> list[tuple[int, ...]]:
        """The HF tensors' shapes, given our tensor's shape."""
        rows = self.rows or (shape[0],)
        shapes = [(r, *shape[1:]) for r in rows]
        return [tuple(reversed(s)) if self.transpose else s for s in shapes]

    def join(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        parts = [t.t() if self.transpose else t for t in tensors]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)

    def split(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        parts = tensor.split(list(self.rows)) if self.rows else [tensor]
        return [(p.t() if self.transpose else p).contiguous() for p in parts]


def same(ours: str, hf: str) -> TensorMap:
    return TensorMap(ours, (hf,))


def fused(ours: str, *parts: tuple[str, int]) -> TensorMap:
    """Ours is the HF tensors stacked along dim 0: parts are (HF name, rows)."""
    return TensorMap(ours, tuple(name for name, _ in parts), tuple(rows for _, rows in parts))


def transposed(ours: str, hf: str) -> TensorMap:
    return TensorMap(ours, (hf,), transpose=True)


@dataclass(frozen=True)
class Family:
    """One HF architecture: `to_config(hf)` gives our config dict, `to_hf(config)` the HF config
    dict (raising NotExpressible for what it cannot say), `tensors(config)` the tensor table.
    `limit_keys`: our keys the HF config records without changing the function (max_seq_len
    only refuses longer inputs), left out of the exactness comparison. `optional_prefix`: a
    prefix of HF tensor names that older checkpoints leave out (GPT-2's `transformer.`);
    `ignored`: suffixes of HF tensors that hold buffers, not weights."""

    model_type: str
    architecture: str
    to_config: Callable[[HFConfig], dict]
    to_hf: Callable[[ModelConfig], dict]
    tensors: Callable[[ModelConfig], list[TensorMap]]
    limit_keys: tuple[str, ...] = ()
    optional_prefix: str = ""
    ignored: tuple[str, ...] = ()


FAMILIES: dict[str, Family] = {}

# HF activation names (transformers' ACT2FN) -> ours, and ours -> the name export writes.
ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu",
               "silu": "silu", "swish": "silu"}
HF_ACTIVATION = {"gelu_tanh": "gelu_pytorch_tanh", "gelu": "gelu", "relu": "relu", "silu": "silu"}


def register_family(family: Family) -> Family:
    if family.model_type in FAMILIES:
        raise ValueError(f"HF family {family.model_type!r} is already registered")
    FAMILIES[family.model_type] = family
    return family


class NotExpressible(Exception):
    """Raised by a family's `to_hf`: the key (path in our config) it cannot express, and why."""

    def __init__(self, path: str, why: str):
        super().__init__(f"{path}: {why}")
        self.path, self.why = path, why


# ---- reading an HF directory -------------------------------------------------------------------
class HFConfig:
    """A parsed HF config.json, with lookups whose errors name the file, the key and the family."""

    def __init__(self, data: dict[str, Any], path: Path):
        self.data, self.path = data, path
        self.family = str(data.get("model_type"))

    @classmethod
    def read(cls, directory: Path) -> HFConfig:
        path = directory / HF_CONFIG
        if not directory.is_dir():
            raise InteropError(f"{directory} is not a directory (expected a Hugging Face model directory)")
        if not path.is_file():
            raise InteropError(f"{directory} has no {HF_CONFIG}; expected a Hugging Face model directory "
                               f"(config.json + model.safetensors)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise InteropError(f"{path} is not valid JSON: {err}") from None
        if not isinstance(data, dict):
            raise InteropError(f"{path}: expected a JSON object of config keys")
        return cls(data, path)

    def get(self, key: str, default: Any = None) -> Any:
        value = self.data.get(key)
        return default if value is None else value

    def require(self, key: str) -> Any:
        if self.data.get(key) is None:
            raise InteropError(f"{self.path}: key {key!r} is missing (the {self.family} mapping needs it)")
        return self.data[key]

    def expect(self, key: str, supported: Iterable[Any], default: Any = None) -> Any:
        """The value of `key` (default if absent), refused unless it is one of `supported`."""
        value, supported = self.get(key, default), list(supported)
        if value not in supported:
            raise InteropError(f"{self.path}: {key} = {json.dumps(value)} is not supported by the {self.family} "
                               f"mapping (supported: {', '.join(json.dumps(v) for v in supported)})")
        return value

    def activation(self, key: str, default: str) -> str:
        """Our name of the activation `key` names (ACTIVATIONS), refused if it has none."""
        return ACTIVATIONS[self.expect(key, ACTIVATIONS, default)]

    def rope(self) -> tuple[float, dict[str, Any] | None]:
        """(rope_theta, our rope_scaling dict or None) from `rope_parameters` (transformers 5)
        or the older `rope_theta` + `rope_scaling`."""
        params = self.get("rope_parameters") or self.get("rope_scaling") or {}
        theta = params.get("rope_theta", self.get("rope_theta", 10000.0))
        kind = params.get("rope_type", params.get("type", "default"))
        if kind not in ("default", "llama3"):
            raise InteropError(f"{self.path}: rope_type {kind!r} is not supported by the {self.family} mapping "
                               "(supported: default, llama3)")
        if params.get("partial_rotary_factor", 1.0) != 1.0:
            raise InteropError(f"{self.path}: partial_rotary_factor {params['partial_rotary_factor']} is not "
                               "supported (only 1.0: every feature of a head rotates)")
        if kind == "default":
            return float(theta), None
        keys = {"factor": "factor", "low_freq_factor": "low_freq_factor", "high_freq_factor": "high_freq_factor",
                "original_max_position_embeddings": "original_max_seq_len"}
        missing = [k for k in keys if params.get(k) is None]
        if missing:
            raise InteropError(f"{self.path}: llama3 rope scaling needs {', '.join(missing)}")
        return float(theta), {"type": "llama3", **{ours: params[k] for k, ours in keys.items()}}


def rope_to_hf(config: ModelConfig) -> dict[str, Any]:
    """Our rope_base and rope_scaling as transformers 5's `rope_parameters`."""
    scaling = config.rope_scaling
    if scaling is None:
        return {"rope_type": "default", "rope_theta": config.rope_base}
    return {"rope_type": "llama3", "rope_theta": config.rope_base, "factor": scaling.factor,
            "low_freq_factor": scaling.low_freq_factor, "high_freq_factor": scaling.high_freq_factor,
            "original_max_position_embeddings": scaling.original_max_seq_len}


class HFWeights:
    """The tensors of an HF directory: model.safetensors, or the shards model.safetensors.index.json
    lists. `get` reads one tensor lazily; errors name the file and the tensor."""

    def __init__(self, directory: Path):
        from safetensors import SafetensorError, safe_open

        self.directory, self._stack = directory, ExitStack()
        index, single = directory / HF_INDEX, directory / HF_WEIGHTS
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
                raise InteropError(f"{index} is not a safetensors index (JSON with a weight_map): {err}") from None
            self.source = index
        elif single.is_file():
            weight_map, self.source = None, single
        else:
            raise InteropError(f"{directory} has neither {HF_WEIGHTS} nor {HF_INDEX} (only safetensors "
                               "checkpoints are read; convert .bin files with transformers first)")
        files = sorted(set(weight_map.values())) if weight_map else [HF_WEIGHTS]
        self.handles, self.file_of = {}, {}
        for name in files:
            path = directory / name
            if Path(name).name != name or not path.is_file():
                raise InteropError(f"{self.source} names the shard {name!r}, which is not a file in {directory}")
            try:
                self.handles[name] = self._stack.enter_context(safe_open(str(path), framework="pt"))
            except (SafetensorError, OSError) as err:
                raise InteropError(f"{path} is not a readable safetensors file: {err}") from None
            for key in self.handles[name].keys():
                self.file_of[key] = name
        if weight_map:
            for key, name in weight_map.items():
                if self.file_of.get(key) != name:
                    raise InteropError(f"{self.source} places tensor {key} in {name}, which does not hold it")

    def close(self) -> None:
        self._stack.close()

    def resolve(self, name: str, optional_prefix: str = "") -> str:
        """`name`, or `name` less `optional_prefix` where only that is stored (older checkpoints)."""
        short = name.removeprefix(optional_prefix)
        return short if optional_prefix and name not in self.file_of and short in self.file_of else name

    def get(self, name: str, shape: tuple[int, ...], config_path: Path) -> torch.Tensor:
        if name not in self.file_of:
            raise InteropError(f"{self.source}: tensor {name} is missing (the config in {config_path} needs it)")
        path = self.directory / self.file_of[name]
        tensor = self.handles[self.file_of[name]].get_tensor(name)
        if tuple(tensor.shape) != tuple(shape):
            raise InteropError(f"{path}: tensor {name} has shape {list(tensor.shape)}, but {config_path} implies "
                               f"{list(shape)}")
        return tensor


# ---- comparing configs (export) ----------------------------------------------------------------
def first_difference(ours: Any, theirs: Any, path: str = "") -> tuple[str, Any, Any] | None:
    """The first key path (in our config's order) where two resolved config dicts differ."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        for key in list(ours) + [k for k in theirs if k not in ours]:
            found = first_difference(ours.get(key), theirs.get(key), f"{path}.{key}" if path else key)
            if found:
                return found
        return None
    if isinstance(ours, list) and isinstance(theirs, list):
        if len(ours) != len(theirs):
            return path, f"{len(ours)} entries", f"{len(theirs)}"
        for i, (a, b) in enumerate(zip(ours, theirs)):
            found = first_difference(a, b, f"{path}[{i}]")
            if found:
                return found
        return None
    return None if ours == theirs else (path, ours, theirs)


def hf_activation(ffn: Any, index: int, family: str) -> str:
    if ffn.activation not in HF_ACTIVATION:
        raise NotExpressible(f"layers[{index}].activation", f"{ffn.activation} has no name in transformers' "
                                                            f"activations for {family}")
    return HF_ACTIVATION[ffn.activation]


def block_pair(config: ModelConfig, family: str) -> tuple[Any, Any]:
    """(attention, FFN) config of the first HF block: our layers 0 and 1. The families here are
    stacks of such pairs; the exactness comparison then checks every later pair against them."""
    layers = config.layers
    for index, kind in enumerate(("Attention", "FFN")):
        if len(layers) <= index or layers[index].type != kind:
            got = layers[index].type if len(layers) > index else "nothing"
            raise NotExpressible(f"layers[{index}].type", f"{family} alternates Attention and FFN layers, "
                                                         f"starting with Attention; here it is {got}")
    if len(layers) % 2:
        raise NotExpressible("layers", f"{family} has Attention + FFN pairs; here are {len(layers)} layers")
    return layers[0], layers[1]


def lm_head(config: ModelConfig, family: str) -> Any:
    """The one classifier an HF causal LM has, checked to be a bias-free linear or tied head."""
    heads = config.classifiers
    if len(heads) != 1 or heads[0].num_classes != config.vocab_size:
        raise NotExpressible("classifiers", f"{family} has one head of vocab_size classes; here "
                                            f"{len(heads)} head(s)")
    if heads[0].head_type == "ffn":
        raise NotExpressible("classifiers[0].head_type", f"{family}'s head is a linear layer (or the tied "
                                                         "embedding), not an ffn head")
    return heads[0]
