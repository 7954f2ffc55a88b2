"""The training loop: `train(run)` builds model, data and optimizer from a RunConfig and trains.

Everything that can be wrong with the run (unknown keys, a missing dataset, a vocabulary larger
than the model's, a sequence longer than a block allows, a resume against a changed model) is
checked before the first step, with the setting named. During training: gradient accumulation,
warmup + cosine/linear decay, clipping, mixed precision, evaluation with bits per byte, atomic
checkpoints (exact resume: same batches, masks, dropout and learning rates), JSON-lines metrics,
loss plots, a NaN guard, and Ctrl-C saving a checkpoint before exiting.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from ..config import resolve_config
from ..context import AuxReport, aux_loss
from ..data import BatchLoader, DataError, TokenDataset
from ..errors import ConfigError, Problem
from ..model import Transformer
from ..parallel import CheckpointRequest, make_engine
from ..parallel.checkpointing import apply_activation_checkpointing, checkpoint_positions
from .auxiliary import add_reports, reduce_reports, scalar_means
from .baselines import compressor_bits_per_byte, eval_text_bytes
from .checkpoint import (CheckpointError, check_engine_state_trusted, latest_checkpoint, load_checkpoint_state,
                         save_checkpoint, staging_dir)
from .config import RunConfig
from .metrics import MetricsWriter
from .objectives import IGNORE_INDEX, Example, causal_example, masked_example
from .optim import lr_at, make_optimizer
from .rundir import check_out_dir, claim_run_dir, run_id
from .runtime import (ProgressBar, TrainingError, memory_mib, model_config_of, pick_device, pick_precision,
                      rng_state)


RESUME_KEYS = ("step", "tokens", "best_val", "loader", "model_config")  # what _resume reads from state.json


@dataclass
class Summary:
    run_dir: Path
    steps: int
    tokens: int
    parameters: int
    val: dict[str, dict[str, float]]
    tokens_per_s: float
    seconds: float
    checkpoint: Path | None
    plot: Path | None
    sample: str | None
    stopped_by: str
    baselines: dict[str, float] = field(default_factory=dict)  # compressors' bits per byte on the eval text
    eval_text_bytes: int = 0  # the length of that text ({} baselines when under MIN_TEXT_BYTES)


# ---- setting up ----------------------------------------------------------------------------------
class Trainer:
    """One training run, on one process or many: the engine (configaformer.parallel, picked by the
    run's `distributed` section) is reached through the hooks `wrap_model`, `backward`,
    `reduce_eval`, `save`, `is_main`, `rank`, `world_size`."""

    rank, world_size = 0, 1

    def __init__(self, run: RunConfig, resume: bool = False):
        self.run, self.cfg = run, run.train
        self.run_dir = Path(run.out_dir)
        check_out_dir(run.out_dir)
        self._lock = self.run_id = None
        if run.train.num_threads:
            torch.set_num_threads(run.train.num_threads)
        self.device = pick_device(run.train.device)
        self.precision = pick_precision(run.train.precision, self.device)
        self.engine = make_engine(run, self.precision)  # ConfigError for settings this machine cannot run
        try:
            self.model_cfg = resolve_config(model_config_of(run))
        except ConfigError as err:
            raise ConfigError([Problem(f"model.{p.path}" if p.path else "model", p.message)
                               for p in err.problems]) from None
        try:
            self.dataset = TokenDataset(run.data.path)
        except DataError as err:
            raise TrainingError(f"data.path: {err}") from None
        try:
            self.dataset.check_vocab(self.model_cfg.vocab_size)
        except ValueError as err:
            raise TrainingError(f"model.vocab_size: {err}") from None
        self._check_settings()
        self.objective = self._objective()
        self.head_plan = self._head_plan()
        if not resume and latest_checkpoint(self.run_dir) is not None:  # every rank checks: none goes on alone
            raise TrainingError(f"{self.run_dir} already holds a run; pass --resume to continue it, "
                                f"or choose another out_dir")
        if resume:  # before anything is written
            path = latest_checkpoint(self.run_dir)
            if path is None:
                raise TrainingError(f"--resume: {self.run_dir} has no checkpoint to resume from")
            if not path.is_dir():
                raise TrainingError(f"--resume: {path.parent / 'latest'} names {path.name}, which is not a "
                                    f"checkpoint directory; point it at one of {path.parent}/step_*")
        self.device = self.engine.setup(self.device)  # joins the process group
        self.rank, self.world_size = self.engine.rank, self.engine.world_size
        try:
            self._build(resume)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Leave the process group and release the run directory."""
        self.engine.close()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _build(self, resume: bool) -> None:
        run = self.run
        torch.manual_seed(run.train.seed)  # the same initial weights on every rank
        self.model = Transformer(self.model_cfg).to(self.device)
        self.num_parameters = self.model.num_parameters()
        freeze_untrained_heads(self.model, {i for i, _, _ in self.head_plan})
        self.train_model, self.optimizer = self.wrap_model(self.model)
        self.loader = self._loader(run.data.train_split, "random")
        self.eval_loader = self._loader(run.data.eval_split, "sequential")
        self.byte_lengths = torch.from_numpy(self.dataset.tokenizer().token_byte_lengths()).float()
        self.step = self.tokens = 0
        self.aux_metrics: dict[str, float] = {}  # the last step's auxiliary reports, per layer (metrics)
        self.best_val = math.inf
        self._mark_boundary()
        self.tokens_per_step = run.train.batch_size * run.train.seq_len * run.train.grad_accum * self.world_size
        self.total_steps = run.train.max_steps or (
            math.ceil(run.train.max_tokens / self.tokens_per_step) if run.train.max_tokens else None)
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._lock, self.run_id = claim_run_dir(self.run_dir, resume)  # before the metrics writer opens
        self.metrics = MetricsWriter(self.run_dir, enabled=self.is_main)
        if resume:
            self._resume()

    # -- hooks for distributed engines
    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap_model(self, model) -> tuple[Any, torch.optim.Optimizer]:
        """(the module to train: checkpointed, wrapped by the engine, compiled; the optimizer)."""
        apply_activation_checkpointing(model, self.cfg.activation_checkpointing)  # before FSDP shards the layers
        train_model, optimizer = self.engine.prepare(model, lambda: make_optimizer(model, self.cfg))
        return (torch.compile(train_model) if self.cfg.compile else train_model), optimizer

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss)

    # -- checks before the first step
    def _check_settings(self) -> None:
        cfg, run = self.cfg, self.run
        if not (cfg.max_steps or cfg.max_tokens or cfg.max_minutes):
            raise ConfigError(Problem("train", "set at least one of max_steps, max_tokens, max_minutes"))
        limit = self.model_cfg.max_seq_len
        if limit is not None and cfg.seq_len > limit:
            raise ConfigError(Problem("train.seq_len", f"{cfg.seq_len} exceeds the model's max_seq_len {limit}"))
        try:
            checkpoint_positions(cfg.activation_checkpointing, len(self.model_cfg.layers))
        except ValueError as err:
            raise ConfigError(Problem("train.activation_checkpointing", str(err))) from None
        names = [h.name for h in self.model_cfg.classifiers]
        for name in run.heads:
            if name not in names:
                raise ConfigError(Problem(f"heads.{name}", f"no classifier head named {name!r}; heads: {names}"))

    def _objective(self) -> str:
        kind = self.run.objective.kind
        causal = self.model_cfg.is_causal
        if kind == "auto":
            return "causal" if causal else "masked"
        if kind == "causal" and not causal:
            raise ConfigError(Problem("objective.kind", "next-token prediction needs a causal model; this one has "
                                                        "bidirectional layers (use masked)"))
        return kind

    def _head_plan(self) -> list[tuple[int, str, float]]:
        """(head index, name, loss weight) of every trained head; `self.head_kinds[index]` says
        what it is trained on ("lm", "token" or "sequence" labels)."""
        plan, self.head_kinds = [], {}
        for i, head in enumerate(self.model_cfg.classifiers):
            section = self.run.heads.get(head.name)
            labels = section.labels if section else ("lm" if head.num_classes == self.model_cfg.vocab_size else "none")
            if labels == "lm" and head.num_classes != self.model_cfg.vocab_size:
                raise ConfigError(Problem(f"heads.{head.name}.labels", f"the language-modelling objective needs "
                                          f"num_classes == vocab_size ({self.model_cfg.vocab_size}), "
                                          f"got {head.num_classes}"))
            if labels in ("token", "sequence"):
                self._check_label_head(head, labels)
            if labels != "none":
                plan.append((i, head.name, section.loss_weight if section else 1.0))
                self.head_kinds[i] = labels
        if not plan:
            raise ConfigError(Problem("heads", "no head is trained: give the model a classifier of vocab_size "
                                               "classes, or set heads.NAME.labels: lm"))
        return plan

    def _check_label_head(self, head, labels: str) -> None:
        path = f"heads.{head.name}.labels"
        for name in (self.run.data.train_split, self.run.data.eval_split):
            try:
                split = self.dataset.split(name)
            except DataError as err:
                raise TrainingError(f"data: {err}") from None
            if split.doc_labels is None:
                raise ConfigError(Problem(path, f"{labels!r} labels come from the dataset, but split {name!r} of "
                                                f"{self.run.data.path} has none: prepare it with --label-field"))
            if split.num_label_classes > head.num_classes:
                raise ConfigError(Problem(path, f"split {name!r} has labels up to {split.num_label_classes - 1}, "
                                                f"more than the head's {head.num_classes} classes"))

    def _loader(self, split: str, mode: str) -> BatchLoader:
        key = "data.train_split" if mode == "random" else "data.eval_split"
        try:
            return BatchLoader(self.dataset.split(split), self.cfg.batch_size, self.cfg.seq_len, rank=self.rank,
                               world_size=self.world_size, seed=self.cfg.seed, mode=mode,
                               packing=self.run.data.packing)
        except (DataError, ValueError) as err:
            raise TrainingError(f"{key}: {err}") from None

    # -- one step
    def example(self, batch, step: int) -> Example:
        if self.objective == "causal":
            return causal_example(batch)
        vocab = self.model_cfg.vocab_size
        mask_id = self.dataset.vocab_size if vocab > self.dataset.vocab_size else self.dataset.pad_id
        return masked_example(batch, self.run.objective.mask_rate, mask_id, self.dataset.vocab_size,
                              self.cfg.seed, step)

    def autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def losses(self, model, ex: Example) -> tuple[torch.Tensor, list[torch.Tensor], dict[str, AuxReport]]:
        """(weighted total loss, per-head mean losses, the layers' auxiliary reports) for one
        example batch, each head's loss from the chunked cross-entropy (`model(..., targets=)`):
        no (B, L, classes) logits. The total includes the weighted auxiliary losses (MoE's
        load-balancing and z-losses; docs/blocks.md, "Auxiliary losses")."""
        per_head, reports = self._head_losses(model, ex, aux=True)
        total = sum(w * loss for (_, _, w), loss in zip(self.head_plan, per_head)) + aux_loss(reports)
        return total, list(per_head), reports

    def _head_losses(self, model, ex: Example, stats: bool = False, aux: bool = False):
        """One entry per trained head: its mean loss, or with stats its (nats, count, hits); with
        aux, (those, the auxiliary reports)."""
        inputs = ex.inputs.to(self.device, non_blocking=True)
        mask = None if ex.padding_mask is None else ex.padding_mask.to(self.device)
        targets = {i: ex.head_targets(self.head_kinds[i]).to(self.device) for i, _, _ in self.head_plan}
        with self.autocast():
            return model(inputs, padding_mask=mask, targets=targets, loss_stats=stats, aux=aux)

    def _mark_boundary(self) -> None:
        """Remember the loader position and RNG state between steps: a checkpoint written after
        Ctrl-C mid-step must describe the last completed step, not a half-consumed one."""
        self._boundary = {"loader": self.loader.state_dict(), "rng": rng_state()}

    def train_step(self) -> tuple[float, float]:
        model, cfg = self.train_model, self.cfg
        model.train()
        lr = lr_at(self.step, cfg, self.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        total, objective, sums = 0.0, 0.0, {}
        for micro in range(cfg.grad_accum):
            ex = self.example(next(self.loader), self.step * cfg.grad_accum + micro)
            with self.engine.accumulating(skip_sync=micro < cfg.grad_accum - 1):
                loss, per_head, reports = self.losses(model, ex)
                self.backward(loss / cfg.grad_accum)
            objective += float(loss.detach()) / cfg.grad_accum
            total += float(sum(w * h.detach() for (_, _, w), h in zip(self.head_plan, per_head))) / cfg.grad_accum
            add_reports(sums, reports)
        # over ranks: every rank logs, and stops on a NaN (in the heads' or the auxiliary losses), alike
        total, objective = self.engine.mean(total), self.engine.mean(objective)
        if not (math.isfinite(total) and math.isfinite(objective)):
            bad = total if not math.isfinite(total) else objective
            raise TrainingError(f"the loss became {bad} at step {self.step + 1}; stopping. The last good checkpoint "
                                f"is {latest_checkpoint(self.run_dir) or 'none (no checkpoint was written yet)'}. "
                                f"Try a lower train.lr or train.grad_clip")
        self._updating = True  # parameters change from here until the step is counted
        norm = self.engine.update(self.model, self.optimizer, cfg.grad_clip)  # clip, step, zero the gradients
        sums = reduce_reports(sums, self.engine.reduce_sum)
        self.model.after_step(sums)  # e.g. MoE's bias balancing, from the step's loads on all ranks
        self.aux_metrics = scalar_means(sums, cfg.grad_accum * self.world_size)
        self.step += 1
        self.tokens += self.tokens_per_step
        self._updating = False
        self._mark_boundary()
        return total, float(norm)

    @torch.no_grad()
    def evaluate(self) -> dict[str, dict[str, float]]:
        """Per trained head, on the first eval_batches validation batches: mean loss (nats per
        predicted token); bits per byte for language-modelling heads, accuracy for label heads."""
        model = self.train_model
        model.eval()
        stats = torch.zeros(len(self.head_plan), 3, dtype=torch.float64)  # per head: nats, targets, hits
        byte_total = 0.0
        steps = min(self.cfg.eval_batches, self.eval_loader.steps_per_epoch)
        for i in range(steps):
            ex = self.example(self.eval_loader.batch_at(0, i), -1 - i)
            stats += torch.stack(self._head_losses(model, ex, stats=True)).cpu()
            lm_targets = ex.targets[ex.targets != IGNORE_INDEX]
            byte_total += float(self.byte_lengths[lm_targets.cpu()].sum())
        nats, counts, hits, byte_total = self.reduce_eval(*stats.unbind(1), byte_total)
        results = {}
        for j, (head, name, _) in enumerate(self.head_plan):
            values = {"loss": float(nats[j]) / max(float(counts[j]), 1)}
            if self.head_kinds[head] == "lm":
                values["bits_per_byte"] = float(nats[j]) / math.log(2) / max(byte_total, 1)
            else:
                values["accuracy"] = float(hits[j]) / max(float(counts[j]), 1)
            results[name] = values
        return results

    def reduce_eval(self, nats, counts, hits, byte_total):
        """Sums over ranks (each evaluated its share of the batches): every rank reports the same."""
        n = len(nats)
        total = self.engine.reduce_sum(torch.cat([nats, counts, hits, torch.tensor([byte_total], dtype=torch.float64)]))
        return total[:n], total[n:2 * n], total[2 * n:3 * n], float(total[-1])

    # -- checkpoints
    def state(self) -> dict[str, Any]:
        return {"step": self.step, "tokens": self.tokens, "best_val": self.best_val,
                "loader": self._boundary["loader"], "run": self.run.to_dict(),
                "model_config": self.model_cfg.to_dict(), "distributed": self.engine.describe(),
                "run_id": self.run_id}

    def save(self, best: bool = False) -> Path | None:
        """Every rank enters (gathering sharded state is collective); rank 0 writes."""
        keep = self.run.checkpoint

        def write(weights, optimizer, rng: dict[str, torch.Tensor], staging: Path | None) -> Path:
            return save_checkpoint(self.run_dir, weights, optimizer, self.state(), rng, keep.keep_last,
                                   best and keep.keep_best, staging=staging)

        return self.engine.save(CheckpointRequest(self.model, self.optimizer, self._boundary["rng"],
                                                  staging_dir(self.run_dir, self.step), write))

    def _resume(self) -> None:
        path = latest_checkpoint(self.run_dir)
        if path is None:
            raise TrainingError(f"--resume: {self.run_dir} has no checkpoint to resume from")
        try:
            state, optim, rng = load_checkpoint_state(path)
            missing = [key for key in RESUME_KEYS if key not in state]
            if missing:
                raise CheckpointError(f"{path / 'state.json'} lacks {', '.join(missing)}: not a checkpoint this "
                                      f"version can resume")
            if self.engine.unpickles_own_state:
                check_engine_state_trusted(path, state, run_id(self.run_dir))
            saved = resolve_config(state["model_config"]).to_dict()
        except (CheckpointError, KeyError, ConfigError) as err:
            raise TrainingError(f"--resume: {err}") from None
        if saved != self.model_cfg.to_dict():
            changed = sorted(k for k in set(saved) | set(self.model_cfg.to_dict())
                             if saved.get(k) != self.model_cfg.to_dict().get(k))
            raise TrainingError(f"--resume: the model config differs from the checkpoint's (changed: "
                                f"{', '.join('model.' + c for c in changed)}); start a new out_dir instead")
        try:
            self.engine.load(self.model, self.optimizer, path, state, optim)
        except ValueError as err:
            raise TrainingError(f"--resume: {err}") from None
        try:
            self.loader.load_state_dict(state["loader"])
        except ValueError as err:
            raise TrainingError(f"--resume: {err} (train.batch_size, train.seq_len, train.seed and data must "
                                f"match the checkpoint)") from None
        rng = self.engine.own_rng(rng)  # {} when the checkpoint had fewer ranks: keep this rank's seed
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if torch.cuda.is_available():
            cuda = [rng[k] for k in sorted(rng) if k.startswith("cuda")]
            if cuda:
                torch.cuda.set_rng_state_all(cuda)
        self.step, self.tokens, self.best_val = state["step"], state["tokens"], state["best_val"]
        self._mark_boundary()
        self.metrics.truncate_after(self.step)
        self.metrics.load_history()

    # -- the loop
    def _stop_reason(self, start: float) -> str | None:
        cfg = self.cfg
        if cfg.max_steps and self.step >= cfg.max_steps:
            return "max_steps"
        if cfg.max_tokens and self.tokens >= cfg.max_tokens:
            return "max_tokens"
        if cfg.max_minutes and time.perf_counter() - start >= cfg.max_minutes * 60:
            return "max_minutes"
        return None

    def fit(self) -> Summary:
        cfg = self.cfg
        start, start_tokens = time.perf_counter(), self.tokens
        last_log, last_log_tokens = start, self.tokens
        val: dict[str, dict[str, float]] = {}
        ckpt = latest_checkpoint(self.run_dir) if self.step else None
        saved_step = self.step if ckpt else None
        interval = self.run.checkpoint.interval
        stopped_by = self._stop_reason(start)
        bar = self._progress()
        try:
            if stopped_by is not None:  # nothing left to train (a finished run resumed): report, write nothing
                val = self.evaluate()
            while stopped_by is None:
                loss, grad_norm = self.train_step()
                now = time.perf_counter()
                if self.step % cfg.log_interval == 0 or self.step == 1:
                    speed = (self.tokens - last_log_tokens) / max(now - last_log, 1e-9)
                    self.metrics.log({"kind": "train", "step": self.step, "tokens": self.tokens, "loss": loss,
                                      "lr": self.optimizer.param_groups[0]["lr"], "grad_norm": grad_norm,
                                      "tokens_per_s": speed, "memory_mib": memory_mib(self.device),
                                      **self.aux_metrics})
                    last_log, last_log_tokens = now, self.tokens
                    if bar is not None:
                        bar.update(loss, speed, self.step)
                stopped_by = self._stop_reason(start)  # the last step is evaluated and saved once, here
                evaluate_now = stopped_by is not None or self.step % cfg.eval_interval == 0
                if evaluate_now:
                    val = self._evaluate_and_log()
                if evaluate_now or (interval and self.step % interval == 0):
                    ckpt, saved_step = self._checkpoint(val, evaluate_now), self.step
        except KeyboardInterrupt:
            stopped_by = "interrupted (Ctrl-C)"
            if bar is not None:
                bar.close()
                bar = None
            if (self.step and self.step != saved_step and not getattr(self, "_updating", False)
                    and self.world_size == 1):
                ckpt = self.save()  # several ranks stop at different points: they keep the last checkpoint
            else:
                ckpt = latest_checkpoint(self.run_dir)
            if self.is_main:
                print(f"\ninterrupted after step {self.step}: checkpoint {ckpt}; continue with --resume")
        if bar is not None:
            bar.close()
        elapsed = time.perf_counter() - start
        plot = self.metrics.plot() if self.is_main else None
        self.metrics.close()
        finished = self.is_main and stopped_by != "interrupted (Ctrl-C)"
        text = eval_text_bytes(self._all_ranks_eval()) if finished else b""
        return Summary(self.run_dir, self.step, self.tokens, self.num_parameters, val,
                       (self.tokens - start_tokens) / max(elapsed, 1e-9), elapsed, ckpt, plot,
                       self.sample(ckpt) if finished else None, stopped_by, compressor_bits_per_byte(text), len(text))

    def _all_ranks_eval(self):
        """What eval_text_bytes reads: the validation batches of all ranks together (one global batch
        per step), so the compressors see the text the model was evaluated on."""
        if self.world_size == 1:
            return self
        loader = BatchLoader(self.dataset.split(self.run.data.eval_split), self.cfg.batch_size * self.world_size,
                             self.cfg.seq_len, mode="sequential", packing=self.run.data.packing)
        return SimpleNamespace(eval_loader=loader, cfg=self.cfg, dataset=self.dataset)

    def _evaluate_and_log(self) -> dict[str, dict[str, float]]:
        val = self.evaluate()
        self.metrics.log({"kind": "eval", "step": self.step, "tokens": self.tokens, "heads": val})
        self.metrics.plot()
        return val

    def _checkpoint(self, val: dict[str, dict[str, float]], evaluated: bool) -> Path | None:
        loss = next(iter(val.values()))["loss"] if (val and evaluated) else math.inf
        best = loss < self.best_val
        if best:
            self.best_val = loss
        return self.save(best=best)

    def sample(self, checkpoint: Path | None = None) -> str | None:
        """A sample from the trained model's first language-modelling head, if the model is causal
        and has one (sharded engines: from the consolidated checkpoint, so rank 0 generates alone)."""
        lm_heads = [i for i, _, _ in self.head_plan if self.head_kinds[i] == "lm"]
        if self.objective != "causal" or self.run.sample.max_new_tokens == 0 or not lm_heads:
            return None
        tokenizer = self.dataset.tokenizer()
        prompt = tokenizer.encode(self.run.sample.prompt)
        if len(prompt) == 0:
            return None
        ids = torch.as_tensor(prompt.astype("int64"))[None].to(self.device)
        limit = self.model_cfg.max_seq_len
        new = self.run.sample.max_new_tokens if limit is None else min(self.run.sample.max_new_tokens, limit - ids.shape[1])
        gen = torch.Generator(device=self.device).manual_seed(self.cfg.seed)
        model = self.engine.sample_model(self.model, checkpoint)
        out = model.generate(ids, max(new, 0), temperature=self.run.sample.temperature, top_k=self.run.sample.top_k,
                             head=lm_heads[0], generator=gen)
        return tokenizer.decode(out[0].tolist())

    def _progress(self):
        if not (self.is_main and self.cfg.progress):
            return None
        return ProgressBar(self.total_steps, self.step)


def freeze_untrained_heads(model: Transformer, trained: set[int]) -> None:
    """A head no objective trains (labels: none) gets no gradient: freeze its own weights, so that
    no engine updates them (DeepSpeed's flat buffers would give them zero gradients and weight
    decay) and DDP meets no unused parameters. Weights it shares (a tied embedding) stay trainable."""
    used = {id(p) for name, child in model.named_children() if name != "heads" for p in child.parameters()}
    used |= {id(p) for i, head in enumerate(model.heads) if i in trained for p in head.parameters()}
    for i, head in enumerate(model.heads):
        for p in head.parameters():
            if i not in trained and id(p) not in used:
                p.requires_grad_(False)


def train(run: RunConfig, resume: bool = False) -> Summary:
    trainer = Trainer(run, resume=resume)
    try:
        return trainer.fit()
    finally:
        trainer.close()
