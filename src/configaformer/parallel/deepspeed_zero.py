"""DeepSpeed ZeRO: optimizer state (stage 1), + gradients (2), + parameters (3) partitioned over
the ranks, optionally with the optimizer state and step on the CPU (ZeRO-Offload)
(Rajbhandari et al. 2020, arXiv 1910.02054; Ren et al. 2021, arXiv 2101.06840).

The DeepSpeed JSON is generated from the run file, or read from `distributed.deepspeed.config_path`
and completed. Either way the batch keys are passed explicitly and must agree with the run:

    train_micro_batch_size_per_gpu = train.batch_size
    gradient_accumulation_steps    = train.grad_accum
    train_batch_size               = train.batch_size * train.grad_accum * world size

A JSON value that differs is an error naming the setting ("auto" or a missing key is filled in).
The run file owns the optimizer (AdamW with train.lr/betas/eps/weight_decay, the Trainer's warmup
and decay): a JSON `optimizer` or `scheduler` is refused, and `gradient_clipping`, `bf16`, `fp16`
and the ZeRO keys must agree with train.grad_clip, train.precision and distributed.deepspeed.

ZeRO-3 gathers each module's parameters around its own forward; the heads' output weights, which
the chunked cross-entropy reads directly, are registered with the model as external parameters.

Checkpoints: rank 0 writes the model gathered from the fp32 master weights
(`safe_get_full_fp32_param`) as model.safetensors, loadable by `Transformer.from_pretrained`. The
partitioned optimizer state goes through DeepSpeed's own save_checkpoint into `deepspeed/` of the
same checkpoint directory. That format pickles (torch.save); it is read back only by
`load_checkpoint` when this run resumes from a checkpoint it wrote itself, never from elsewhere, and
it resumes with the same number of ranks and ZeRO stage.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, Problem
from ..weights import alias_groups
from .base import DistributedEngine, FullWeights

DS_DIR, DS_TAG = "deepspeed", "state"
OWNED_BY_RUN = {"optimizer": "train.lr, train.betas, train.eps, train.weight_decay",
                "scheduler": "train.schedule, train.warmup_steps, train.min_lr_ratio"}


def deepspeed_config(run, world_size: int, precision: str) -> dict[str, Any]:
    """The DeepSpeed JSON for this run, world size and precision (fp32, bf16 or fp16: train.precision
    resolved for the device); a ConfigError naming each disagreement."""
    ds, train = run.distributed.deepspeed, run.train
    where = "distributed.deepspeed.config_path"
    problems: list[Problem] = []
    config: dict[str, Any] = {}
    if ds.config_path is not None:
        try:
            config = json.loads(Path(ds.config_path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(Problem(where, f"cannot read {ds.config_path!r} as JSON: {exc}")) from None
        if not isinstance(config, dict):
            raise ConfigError(Problem(where, f"{ds.config_path} must hold a JSON object"))
    for key, owner in OWNED_BY_RUN.items():
        if key in config:
            problems.append(Problem(where, f"{key!r} is set in {ds.config_path}, but the run file owns it ({owner}); "
                                           f"remove it from the JSON"))

    def agree(key: str, want: Any, setting: str, node: dict = config) -> None:
        got = node.get(key, "auto")
        if got != "auto" and got != want:
            problems.append(Problem(setting, f"{ds.config_path} has {key} = {got!r}, but the run needs {want!r}"))
        node[key] = want

    micro, accum = train.batch_size, train.grad_accum
    agree("train_micro_batch_size_per_gpu", micro, f"{where} (train_micro_batch_size_per_gpu vs train.batch_size)")
    agree("gradient_accumulation_steps", accum, f"{where} (gradient_accumulation_steps vs train.grad_accum)")
    agree("train_batch_size", micro * accum * world_size,
          f"{where} (train_batch_size vs train.batch_size {micro} x train.grad_accum {accum} x {world_size} processes)")
    agree("gradient_clipping", float(train.grad_clip), f"{where} (gradient_clipping vs train.grad_clip)")
    for key in ("bf16", "fp16"):
        node = config.setdefault(key, {})
        agree("enabled", precision == key, f"{where} ({key}.enabled vs train.precision {precision})", node)

    zero = config.setdefault("zero_optimization", {})
    stage = ds.zero_stage if ds.zero_stage is not None else zero.get("stage", 2)
    agree("stage", stage, "distributed.deepspeed.zero_stage", zero)
    for key in ("offload_optimizer", "offload_param"):
        on = getattr(ds, key)
        in_json = (zero.get(key) or {}).get("device", "none") not in ("none", None)
        if on is not None and key in zero and in_json != on:
            problems.append(Problem(f"distributed.deepspeed.{key}", f"is {on}, but {ds.config_path} sets "
                                                                    f"zero_optimization.{key} = {zero[key]!r}"))
        elif on and key not in zero:
            zero[key] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
        if (on or in_json) and key == "offload_param" and stage != 3:
            problems.append(Problem("distributed.deepspeed.offload_param",
                                    f"offloads parameters, which only ZeRO stage 3 partitions (zero_stage is {stage})"))
    if run.train.compile:
        problems.append(Problem("train.compile", "torch.compile of a DeepSpeed engine is not supported here "
                                                 "(DeepSpeed hooks every module); set train.compile: false"))
    if problems:
        raise ConfigError(problems)
    # a client AdamW (ours) is fine with ZeRO and its offload: no DeepSpeedCPUAdam build needed
    config.setdefault("zero_allow_untested_optimizer", True)
    config.setdefault("zero_force_ds_cpu_optimizer", False)
    config.setdefault("steps_per_print", 2 ** 31 - 1)  # the Trainer logs
    return config


def check(run, world_size: int, precision: str) -> list[Problem]:
    try:
        deepspeed_config(run, world_size, precision)
    except ConfigError as err:
        return err.problems
    return []


class DeepSpeedEngine(DistributedEngine):
    name = "deepspeed"
    sharded = True
    unpickles_own_state = True  # the Trainer checks the checkpoint came from this run first

    def setup(self, device: torch.device) -> torch.device:
        if device.type == "cpu":
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
        try:
            import deepspeed.ops
        except ImportError as exc:
            raise ConfigError(Problem("distributed.engine", f"'deepspeed' could not import deepspeed: {exc}")) from None
        device = super().setup(device)  # the torch process group first: DeepSpeed joins it
        # DeepSpeed's CPU accelerator compiles a shared-memory all-reduce op on first start (about two
        # minutes of g++) that only its inference all-reduce uses; training all-reduces through the
        # process group above. Marking the op unavailable takes DeepSpeed's own fallback (as off Linux).
        compatible = getattr(deepspeed.ops, "__compatible_ops__", None)
        if device.type == "cpu" and isinstance(compatible, dict):
            compatible["deepspeed_shm_comm"] = False
        warnings.filterwarnings("ignore", message=".*all_gather_into_tensor` is deprecated", category=FutureWarning)
        return device

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "zero_stage": self.config["zero_optimization"]["stage"]}

    def prepare(self, model: nn.Module, make_optimizer):
        import deepspeed

        self.config = deepspeed_config(self.run, self.world_size, self.precision)
        self.ds, optimizer, _, _ = deepspeed.initialize(model=model, optimizer=make_optimizer(), config=self.config)
        if self.config["zero_optimization"]["stage"] == 3:
            # The chunked loss (`model(..., targets=)`) reads the heads' `out` weights outside `out`'s
            # forward. DeepSpeed's API for such weights gathers them for the whole model's forward and
            # backward (a tied weight stays gathered through the embedding's release), so losses and
            # gradients are the unpartitioned ones. (DeepSpeed 0.19 would also register them itself on
            # first access in an eager forward; registering up front does not depend on that fallback.)
            for param in model.loss_parameters():
                deepspeed.zero.register_external_parameter(model, param)
        self.seed_ranks()
        return self.ds, optimizer

    def backward(self, loss: torch.Tensor) -> None:
        self.ds.backward(loss, scale_wrt_gas=False)  # the Trainer already divided by train.grad_accum
        if not self.ds.is_gradient_accumulation_boundary():
            self.ds.step()  # DeepSpeed counts micro-batches in step() and updates at the boundary only

    def update(self, model: nn.Module, optimizer, max_norm: float) -> float:
        self.ds.step()  # clips (gradient_clipping), updates, zeroes the gradients
        norm = self.ds.get_global_grad_norm()
        return math.nan if norm is None else float(norm)

    # -- checkpoints
    def save_engine_state(self, staging: Path) -> None:
        self.ds.save_checkpoint(str(staging / DS_DIR), tag=DS_TAG, save_latest=False)

    def full_weights(self, model: nn.Module):
        import deepspeed
        from deepspeed.utils import safe_get_full_fp32_param

        groups, tensors = alias_groups(model), model.state_dict(keep_vars=True)
        full = {}
        for names in groups:  # the same order on every rank: gathering is collective under ZeRO-3
            value = tensors[names[0]]
            trained = isinstance(value, nn.Parameter) and value.requires_grad
            master = safe_get_full_fp32_param(value) if trained else None
            if master is None:  # a buffer, a frozen parameter (gathered if ZeRO-3 partitioned it)
                with deepspeed.zero.GatheredParameters([value] if isinstance(value, nn.Parameter) else []):
                    master = value.detach().clone()
            full[names[0]] = master.cpu() if self.is_main else None
        return FullWeights(model.config, full, groups) if self.is_main else None

    def full_optimizer_state(self, optimizer):
        return None  # in deepspeed/, written by save_engine_state

    def load(self, model: nn.Module, optimizer, path: Path, state: dict, optimizer_state: dict | None) -> None:
        written = state.get("distributed") or {"engine": "none", "world_size": 1}
        mine = self.describe()
        if written["engine"] != "deepspeed":
            raise ValueError(f"the checkpoint was written by distributed.engine {written['engine']!r}; DeepSpeed "
                             f"resumes only its own checkpoints (start a new out_dir from the model instead)")
        for key, setting in (("world_size", "number of processes"),
                             ("zero_stage", "distributed.deepspeed.zero_stage")):
            if written.get(key) != mine[key]:
                raise ValueError(f"the checkpoint was written with {key} {written.get(key)}, this run has {mine[key]}: "
                                 f"DeepSpeed's partitions resume only with the same {setting}")
        loaded, _ = self.ds.load_checkpoint(str(path / DS_DIR), tag=DS_TAG, load_optimizer_states=True,
                                            load_lr_scheduler_states=False)
        if loaded is None:
            raise ValueError(f"DeepSpeed found no state in {path / DS_DIR}")
