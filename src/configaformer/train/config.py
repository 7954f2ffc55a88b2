"""The run file: which model, which data, and how to train — validated before anything starts.

    model: llama                      # a preset name, a YAML/JSON path, or an inline model config
    data: {path: data/stdlib}
    train: {batch_size: 16, seq_len: 256, lr: 1e-3, max_steps: 1000, ...}
    out_dir: runs/llama

Any setting can be overridden from the command line with its dotted path, model keys included:
`configaformer train run.yaml --train.lr 3e-4 --model.layers.3.num_heads 2` (config/overrides.py;
`override_run` applies such overrides to a run dict from code).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from pydantic import ValidationError, field_validator

from ..config.base import problems_from_validation
from ..config.overrides import ModelSource, apply_overrides, parse_args
from ..errors import ConfigError, Problem
from ..fileio import read_mapping
from ..presets import locate


class RunModel(BaseModel):
    """Run-file sections: unknown keys are errors; numbers written as text ("3e-4", which YAML
    reads as a string) are accepted, since run files and command lines are typed by hand."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # no inf or nan anywhere


class DataSection(RunModel):
    path: str  # a directory written by `configaformer data prepare`
    train_split: str = "train"
    eval_split: str = "val"
    packing: bool = True


class TrainSection(RunModel):
    batch_size: PositiveInt = 16  # sequences per micro-batch (per process)
    seq_len: PositiveInt = 256
    grad_accum: PositiveInt = 1
    lr: PositiveFloat = 1e-3
    min_lr_ratio: NonNegativeFloat = Field(0.1, le=1.0)  # final lr = lr * min_lr_ratio
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: NonNegativeInt = 100
    weight_decay: NonNegativeFloat = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: PositiveFloat = 1e-8
    grad_clip: NonNegativeFloat = 1.0  # 0 = no clipping
    max_steps: Optional[PositiveInt] = None
    max_tokens: Optional[PositiveInt] = None
    max_minutes: Optional[PositiveFloat] = None
    eval_interval: PositiveInt = 200
    eval_batches: PositiveInt = 20
    log_interval: PositiveInt = 10
    seed: int = 0
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 on CUDA if supported, else fp32
    compile: bool = False
    activation_checkpointing: Union[bool, list[NonNegativeInt]] = False  # all layers, or these indices
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    num_threads: Optional[PositiveInt] = None  # torch CPU threads (None: torch's default)
    progress: bool = True

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= beta < 1.0 for beta in value):  # AdamW's own check would fail at the first step
            raise ValueError(f"each of AdamW's two betas must be in [0, 1), got {list(value)}")
        return value


class ObjectiveSection(RunModel):
    kind: Literal["auto", "causal", "masked"] = "auto"  # auto: causal for causal models, else masked
    mask_rate: float = Field(0.15, gt=0.0, lt=1.0)  # masked-token prediction (BERT): share of tokens to predict


class HeadSection(RunModel):
    """How one classifier head is trained. `labels`: "lm" (the language-modelling objective; the
    head's class count must equal the vocabulary), "token" (every token predicts its document's
    label, from `data prepare --label-field`), "sequence" (the last token of each sequence predicts
    its document's label) or "none" (frozen, left untrained)."""

    labels: Literal["lm", "token", "sequence", "none"] = "lm"
    loss_weight: NonNegativeFloat = 1.0


class CheckpointSection(RunModel):
    interval: Optional[PositiveInt] = None  # steps; None: at each evaluation
    keep_last: PositiveInt = 2
    keep_best: bool = True


class SampleSection(RunModel):
    prompt: str = "def "
    max_new_tokens: NonNegativeInt = 120
    temperature: NonNegativeFloat = 0.8
    top_k: Optional[PositiveInt] = 40


class FSDPSection(RunModel):
    """FSDP2 (`torch.distributed.fsdp.fully_shard`; Zhao et al. 2023, arXiv 2304.11277): each layer
    is one shard unit."""

    reshard_after_forward: bool = True  # False: keep a layer's gathered weights until its backward


class DeepSpeedSection(RunModel):
    """DeepSpeed ZeRO (Rajbhandari et al. 2020, arXiv 1910.02054). Unset keys come from
    `config_path`'s JSON if given, else from the defaults (stage 2, no offload)."""

    zero_stage: Optional[Literal[1, 2, 3]] = None  # 1: optimizer state, 2: + gradients, 3: + parameters sharded
    offload_optimizer: Optional[bool] = None  # ZeRO-Offload (arXiv 2101.06840): optimizer state and step on the CPU
    offload_param: Optional[bool] = None  # stage 3 only: parameters on the CPU between uses
    config_path: Optional[str] = None  # a DeepSpeed JSON to start from; batch keys must agree with train.*


class DistributedSection(RunModel):
    """How many processes train and how (configaformer.parallel). Launch with torchrun or deepspeed."""

    engine: Literal["none", "ddp", "fsdp", "deepspeed", "xla"] = "none"
    backend: Literal["auto", "gloo", "nccl"] = "auto"  # auto: nccl on CUDA, gloo on CPU (xla: its own)
    timeout_minutes: PositiveFloat = 30.0  # a collective waiting longer than this fails the run
    fsdp: FSDPSection = FSDPSection()
    deepspeed: DeepSpeedSection = DeepSpeedSection()


class RunConfig(RunModel):
    model: Annotated[Union[str, dict[str, Any]], ModelSource()]  # a preset name, a file path, or a config
    data: DataSection
    train: TrainSection = TrainSection()
    objective: ObjectiveSection = ObjectiveSection()
    heads: dict[str, HeadSection] = {}  # by head name; heads not listed: "lm" if their size is the vocabulary
    checkpoint: CheckpointSection = CheckpointSection()
    sample: SampleSection = SampleSection()
    out_dir: str = "runs/default"
    distributed: DistributedSection = DistributedSection()  # see configaformer.parallel

    @field_validator("out_dir")
    @classmethod
    def _out_dir_named(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name a directory (an empty out_dir would write into the current directory)")
        return value

    @field_validator("model")
    @classmethod
    def _model_exists(cls, value: Union[str, dict]) -> Union[str, dict]:
        if isinstance(value, str):
            try:
                locate(value, "model")
            except ConfigError as err:
                raise ValueError(err.problems[0].message) from None
        return value

    def unused_settings(self) -> list[Problem]:
        """Settings changed from their default that the rest of the run makes do nothing (the
        `distributed` sections are checked by configaformer.parallel; see docs/config-errors.md)."""
        def changed(section: BaseModel, key: str) -> bool:
            return getattr(section, key) != type(section).model_fields[key].default

        train, objective, sample = self.train, self.objective, self.sample
        found = []
        if train.schedule == "constant" and changed(train, "min_lr_ratio"):
            found.append(("train.min_lr_ratio", "sets where the lr decays to, but train.schedule is constant"))
        if objective.kind == "causal" and changed(objective, "mask_rate"):
            found.append(("objective.mask_rate", "is for the masked objective, but objective.kind is causal"))
        if sample.max_new_tokens == 0:
            found += [(f"sample.{key}", "shapes the sample, but sample.max_new_tokens is 0: no sample is drawn")
                      for key in ("prompt", "temperature", "top_k") if changed(sample, key)]
        for name, head in self.heads.items():
            if head.labels == "none" and changed(head, "loss_weight"):
                found.append((f"heads.{name}.loss_weight", f"weighs a loss, but heads.{name}.labels is none: the head "
                                                           "is not trained"))
        return [Problem(path, message + "; leave it out") for path, message in found]

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def override_run(data: dict[str, Any], overrides: list[str] | list[tuple[str, str]]) -> dict[str, Any]:
    """A copy of the run dict `data` with overrides applied: `["model.layers[Attention].dim_rope=16"]`
    or `[("train.lr", "3e-4")]` (the syntax of config/overrides.py). Raises ConfigError."""
    return apply_overrides(data, overrides, RunConfig)


def load_run_config(source: Union[str, Path, dict], overrides: Optional[list[str]] = None) -> RunConfig:
    """Read and validate a run file (YAML/JSON path or dict) with command-line overrides."""
    data = read_mapping(source, "run file") if isinstance(source, (str, Path)) else dict(source)
    data = apply_overrides(data, parse_args(overrides or []), RunConfig)
    try:
        run = RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(problems_from_validation(err, RunConfig)) from None
    unused = run.unused_settings()
    if unused:
        raise ConfigError(unused)
    return run
