"""Distributed training (configaformer.parallel): 2-process runs train as one process with the same
global batch, their checkpoints load into one process and resume; bad settings fail early, named.

The tests marked `distributed` launch `torchrun` / `deepspeed` with two CPU processes (gloo); the
rest run in this process. Tolerances: two processes average the gradients of two half-batches
where one process takes the mean over the whole batch, so only float rounding differs; in fp32
the losses agree to ~1e-7 relative (measured), and the tests allow 1e-5.
"""

import importlib.machinery
import json
import os
import re
import socket
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

import configaformer
from configaformer import ConfigError
from configaformer.parallel import check_distributed, make_engine
from configaformer.parallel.deepspeed_zero import deepspeed_config
from configaformer.train import Trainer, TrainingError, load_run_config, train
from configaformer.train.checkpoint import latest_checkpoint

LOSS_RTOL = 1e-5
# A tied LM head, a 6-class head left untrained, and two layers that run the modules of the first
# two again (share_weights_with): the cases where sharding and gathering are easiest to get wrong.
MODEL = {"dim_model": 32, "vocab_size": 258, "dim_rope": 8,
         "classifiers": [{"num_classes": 258, "head_type": "tied"}, 6],
         "layers": [{"type": "Attention", "num_heads": 4}, {"type": "FFN", "ff_mult": 2},
                    {"type": "Attention", "num_heads": 4, "share_weights_with": 0},
                    {"type": "FFN", "ff_mult": 2, "share_weights_with": 1}]}
GLOBAL_BATCH, SEQ_LEN = 8, 32



def run_config(data, out, distributed=None, **train_settings):
    settings = {"batch_size": GLOBAL_BATCH, "seq_len": SEQ_LEN, "lr": 3e-3, "warmup_steps": 2, "max_steps": 8,
                "eval_interval": 4, "eval_batches": 2, "log_interval": 1, "seed": 3, "progress": False,
                "num_threads": 1, "activation_checkpointing": True}
    settings.update(train_settings)
    return {"model": MODEL, "data": {"path": str(data)}, "train": settings, "out_dir": str(out),
            "sample": {"max_new_tokens": 8}, "checkpoint": {"keep_last": 3},
            "distributed": distributed or {"engine": "none"}}


def records(run_dir, kind):
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def losses(run_dir):
    return {r["step"]: r["loss"] for r in records(run_dir, "train")}


def eval_losses(run_dir):
    return {r["step"]: r["heads"]["lm"]["loss"] for r in records(run_dir, "eval")}


@pytest.fixture(scope="session")
def reference(stdlib_data, tmp_path_factory):
    """The single-process run every distributed run must reproduce (global batch 8)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    train(load_run_config(run_config(stdlib_data, out)))
    return out


# ---- fast checks: no launch ----------------------------------------------------------------------
def config_with(data, tmp_path, distributed, **train_settings):
    return load_run_config(run_config(data, tmp_path / "r", distributed, **train_settings))


def problems(run, world_size=2):
    return "\n".join(str(p) for p in check_distributed(run, world_size, "fp32"))


def test_the_distributed_section_is_strict(stdlib_data, tmp_path):
    with pytest.raises(ConfigError, match=r"distributed.deepspeed.zero_stag: unknown key; did you mean 'zero_stage'"):
        config_with(stdlib_data, tmp_path, {"engine": "deepspeed", "deepspeed": {"zero_stag": 3}})
    with pytest.raises(ConfigError, match=r"distributed.engine: .*'ddp'"):
        config_with(stdlib_data, tmp_path, {"engine": "dpp"})
    run = config_with(stdlib_data, tmp_path, {"engine": "ddp", "deepspeed": {"zero_stage": 3}})
    assert "distributed.deepspeed: is set, but distributed.engine is 'ddp'" in problems(run)


@pytest.mark.parametrize("engine, package, words", [
    ("deepspeed", "deepspeed", "pip install 'configaformer\\[distributed\\]'"),
    ("xla", "torch_xla", "torch_xla"),
])
def test_a_missing_engine_package_names_distributed_engine(stdlib_data, tmp_path, monkeypatch, engine, package, words):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == package else real(name, *a))
    with pytest.raises(ConfigError, match=rf"distributed.engine: '{engine}' needs the {package} package, which is "
                                          rf"not installed \(.*{words}"):
        make_engine(config_with(stdlib_data, tmp_path, {"engine": engine}), "fp32")


def test_xla_without_torch_xla_fails_before_anything_starts(stdlib_data, tmp_path):
    if importlib.util.find_spec("torch_xla") is not None:
        pytest.skip("torch_xla is installed here")
    with pytest.raises(ConfigError, match="distributed.engine: 'xla' needs the torch_xla package"):
        Trainer(config_with(stdlib_data, tmp_path, {"engine": "xla"}))
    assert not (tmp_path / "r").exists()


def test_fsdp_on_a_torch_without_what_it_uses_names_distributed_engine(stdlib_data, tmp_path, monkeypatch):
    monkeypatch.delattr(torch.nn.utils, "get_total_norm")
    with pytest.raises(ConfigError, match=r"distributed.engine: 'fsdp' needs FSDP2 as in torch >= 2.7; torch .* "
                                          r"lacks torch.nn.utils.get_total_norm: upgrade torch or use ddp"):
        make_engine(config_with(stdlib_data, tmp_path, {"engine": "fsdp"}), "fp32")


def test_one_process_engine_refuses_a_multi_process_launch(stdlib_data, tmp_path, monkeypatch):
    for key, value in {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match="distributed.engine: is 'none', but 2 processes were launched"):
        make_engine(config_with(stdlib_data, tmp_path, None), "fp32")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_nccl_without_cuda_names_the_backend(stdlib_data, tmp_path):
    run = config_with(stdlib_data, tmp_path, {"engine": "ddp", "backend": "nccl"})
    assert "distributed.backend: nccl needs CUDA devices" in problems(run)


def deepspeed_run(data, tmp_path, deepspeed=None, user_json=None, **train_settings):
    section = dict(deepspeed or {})
    if user_json is not None:
        (tmp_path / "ds.json").write_text(json.dumps(user_json))
        section["config_path"] = str(tmp_path / "ds.json")
    return config_with(data, tmp_path, {"engine": "deepspeed", "deepspeed": section}, **train_settings)


@pytest.mark.parametrize("user_json, words", [
    ({"train_batch_size": 32}, r"config_path \(train_batch_size vs train.batch_size 4 x train.grad_accum 2 x "
                               r"2 processes\): .* has train_batch_size = 32, but the run needs 16"),
    ({"train_micro_batch_size_per_gpu": 8}, r"train_micro_batch_size_per_gpu vs train.batch_size\).*needs 4"),
    ({"gradient_accumulation_steps": 1}, r"gradient_accumulation_steps vs train.grad_accum\).*needs 2"),
    ({"optimizer": {"type": "Adam"}}, r"config_path: 'optimizer' is set in .*the run file owns it \(train.lr"),
    ({"scheduler": {"type": "WarmupLR"}}, r"'scheduler' is set .*train.schedule"),
    ({"gradient_clipping": 0.5}, r"gradient_clipping vs train.grad_clip\).*needs 1.0"),
    ({"bf16": {"enabled": True}}, r"bf16.enabled vs train.precision fp32\)"),
    ({"zero_optimization": {"stage": 3}}, r"distributed.deepspeed.zero_stage: .* has stage = 3, but the run needs 2"),
])
def test_deepspeed_json_that_disagrees_with_the_run_names_the_setting(stdlib_data, tmp_path, user_json, words):
    run = deepspeed_run(stdlib_data, tmp_path, {"zero_stage": 2}, user_json, batch_size=4, grad_accum=2,
                        precision="fp32")
    assert re.search(words, problems(run)), problems(run)


def test_deepspeed_config_passes_consistent_batch_settings(stdlib_data, tmp_path):
    run = deepspeed_run(stdlib_data, tmp_path, {"offload_optimizer": True},
                        {"train_batch_size": "auto", "zero_optimization": {"stage": 3, "reduce_bucket_size": 1000}},
                        batch_size=3, grad_accum=5, precision="fp32")
    for world_size in (1, 2, 8):
        config = deepspeed_config(run, world_size, "fp32")
        assert config["train_batch_size"] == 3 * 5 * world_size
        assert (config["train_micro_batch_size_per_gpu"], config["gradient_accumulation_steps"]) == (3, 5)
    offload = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    assert config["zero_optimization"] == {"stage": 3, "reduce_bucket_size": 1000, "offload_optimizer": offload}
    assert config["gradient_clipping"] == 1.0 and not config["bf16"]["enabled"] and not config["fp16"]["enabled"]
    assert "optimizer" not in config and not config["zero_force_ds_cpu_optimizer"]  # our AdamW, also offloaded
    generated = deepspeed_config(deepspeed_run(stdlib_data, tmp_path, precision="fp32"), 2, "fp32")
    assert generated["zero_optimization"] == {"stage": 2} and generated["train_batch_size"] == GLOBAL_BATCH * 2


@pytest.mark.parametrize("deepspeed, train_settings, words", [
    ({"zero_stage": 2, "offload_param": True}, {}, "distributed.deepspeed.offload_param: offloads parameters, which "
                                                   "only ZeRO stage 3 partitions \\(zero_stage is 2\\)"),
    ({"zero_stage": 3}, {"compile": True}, "train.compile: torch.compile of a DeepSpeed engine is not supported"),
])
def test_deepspeed_options_a_stage_cannot_run_are_refused(stdlib_data, tmp_path, deepspeed, train_settings, words):
    run = deepspeed_run(stdlib_data, tmp_path, deepspeed, precision="fp32", **train_settings)
    with pytest.raises(ConfigError, match=words):
        make_engine(run, "fp32") if importlib.util.find_spec("deepspeed") else deepspeed_config(run, 1, "fp32")


def test_the_deepspeed_launcher_local_rank_argument_is_ignored(stdlib_data, tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps(run_config(stdlib_data, tmp_path / "r")))
    run = load_run_config(path, ["--local_rank=1", "--train.lr", "1e-3", "--local-rank", "0"])
    assert run.train.lr == 1e-3


def test_resume_refuses_an_engine_format_another_engine_cannot_read(stdlib_data, reference, tmp_path):
    import shutil

    from configaformer.parallel.deepspeed_zero import DeepSpeedEngine

    shutil.copytree(reference, tmp_path / "r")
    path = latest_checkpoint(tmp_path / "r")
    state = json.loads((path / "state.json").read_text())
    state.update(optimizer=None, distributed={"engine": "deepspeed", "world_size": 2, "zero_stage": 2})
    del state["checksums"]["optimizer.safetensors"]  # as DeepSpeed writes it: no such file
    (path / "state.json").write_text(json.dumps(state))
    (path / "optimizer.safetensors").unlink()
    with pytest.raises(TrainingError, match="--resume: the checkpoint's optimizer state is in deepspeed's own format; "
                                            "resume it with distributed.engine: deepspeed"):
        Trainer(load_run_config(run_config(stdlib_data, tmp_path / "r")), resume=True)
    run = deepspeed_run(stdlib_data, tmp_path, {"zero_stage": 2}, precision="fp32")
    engine = DeepSpeedEngine(run, "fp32", 0, 4, 0)
    engine.config = deepspeed_config(engine.run, 4, "fp32")
    with pytest.raises(ValueError, match="written with world_size 2, this run has 4: DeepSpeed's partitions resume "
                                         "only with the same number of processes"):
        engine.load(None, None, path, state, None)


# ---- one process through the engines' code (no launcher: a private one-process group) --------
@pytest.mark.parametrize("engine", ["ddp", "fsdp"])
def test_engine_checkpoints_resume_under_another_engine(stdlib_data, reference, tmp_path, engine):
    """A DDP/FSDP checkpoint is the single-process format: a run started under the engine and
    resumed without one continues with the reference run's losses."""
    first = run_config(stdlib_data, tmp_path / "r", {"engine": engine}, max_tokens=4 * GLOBAL_BATCH * SEQ_LEN)
    assert train(load_run_config(first)).steps == 4
    assert not torch.distributed.is_initialized()  # the engine left no process group behind
    summary = train(load_run_config(run_config(stdlib_data, tmp_path / "r")), resume=True)
    ours, ref = losses(tmp_path / "r"), losses(reference)
    assert summary.steps == 8 and list(ours) == list(ref)
    assert all(ours[s] == pytest.approx(ref[s], rel=LOSS_RTOL) for s in ref)
    assert summary.sample is not None


def test_xla_path_runs_against_a_stand_in_torch_xla(stdlib_data, reference, tmp_path, monkeypatch):
    """The thin XLA path on the CPU: torch_xla replaced by a stand-in whose device is the CPU, whose
    "xla" process group is gloo and whose "xla://" rendezvous is a one-process TCP store."""
    import torch.distributed as dist

    fake = types.ModuleType("torch_xla")
    fake.__spec__ = importlib.machinery.ModuleSpec("torch_xla", None)
    fake.device, fake.syncs = (lambda: torch.device("cpu")), []
    fake.sync = lambda: fake.syncs.append(1)
    runtime = types.ModuleType("torch_xla.runtime")
    runtime.global_ordinal, runtime.world_size, runtime.local_ordinal = (lambda: 0), (lambda: 1), (lambda: 0)
    for name, module in {"torch_xla": fake, "torch_xla.distributed": types.ModuleType("torch_xla.distributed"),
                         "torch_xla.distributed.xla_backend": types.ModuleType("xla_backend"),
                         "torch_xla.runtime": runtime}.items():
        monkeypatch.setitem(sys.modules, name, module)
    if "xla" not in dist.Backend.backend_list:
        dist.Backend.register_backend("xla", lambda store, rank, size, timeout: dist.ProcessGroupGloo(
            store, rank, size, timeout), devices=["cpu"])

    def rendezvous(url, **kwargs):
        yield dist.TCPStore("127.0.0.1", free_port(), 1, True), 0, 1

    try:
        dist.register_rendezvous_handler("xla", rendezvous)
    except RuntimeError:  # registered by an earlier run of this test in this process
        pass
    summary = train(load_run_config(run_config(stdlib_data, tmp_path / "r", {"engine": "xla"})))
    assert len(fake.syncs) == 8  # one graph cut per optimizer step
    ref = losses(reference)
    assert all(losses(tmp_path / "r")[s] == pytest.approx(ref[s], rel=LOSS_RTOL) for s in ref)
    configaformer.Transformer.from_pretrained(summary.checkpoint)


# ---- two processes -------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(run_file: Path, args: list[str], launcher: str = "torchrun") -> None:
    if launcher == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    else:
        cmd = [str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", "2", "--master_port", str(free_port())]
    cmd += ["-m" if launcher == "torchrun" else "--module", "configaformer", "train", str(run_file), *args]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if not torch.cuda.is_available():
        env["DS_ACCELERATOR"] = "cpu"
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"


# Global batch 8 in every case: 2 processes x batch_size x grad_accum. eval_batches keeps the
# evaluated examples those of the reference (eval_batches x batch_size x 2 = 16).
CASES = {
    # gradient accumulation: DDP all-reduces on the last micro-batch only
    "ddp": ({"engine": "ddp"}, {"batch_size": 2, "grad_accum": 2, "eval_batches": 4}),
    "fsdp": ({"engine": "fsdp"}, {"batch_size": 4}),
    "zero2": ({"engine": "deepspeed", "deepspeed": {"zero_stage": 2}}, {"batch_size": 4}),
    # a user JSON: stage 3 with every parameter partitioned (by default small ones are not)
    "zero3": ({"engine": "deepspeed", "deepspeed": {"config_path": "{tmp}/ds.json"}}, {"batch_size": 4}),
}
ZERO3_JSON = {"zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0}, "train_batch_size": "auto"}


@pytest.mark.distributed
@pytest.mark.parametrize("case", list(CASES))
def test_two_processes_train_as_one_and_resume(stdlib_data, reference, tmp_path, case):
    distributed, settings = CASES[case]
    if distributed["engine"] == "deepspeed" and importlib.util.find_spec("deepspeed") is None:
        pytest.skip("deepspeed is not installed (pip install -e '.[distributed]')")
    (tmp_path / "ds.json").write_text(json.dumps(ZERO3_JSON))
    distributed = json.loads(json.dumps(distributed).replace("{tmp}", str(tmp_path)))
    run_file, out = tmp_path / "run.json", tmp_path / "run"
    run_file.write_text(json.dumps(run_config(stdlib_data, out, distributed, **settings)))

    launch(run_file, ["--train.max_tokens", str(4 * GLOBAL_BATCH * SEQ_LEN)])  # stops after step 4
    assert latest_checkpoint(out).name == "step_0000004"
    launch(run_file, ["--resume"], launcher="deepspeed" if case == "zero3" else "torchrun")

    ours, ref = losses(out), losses(reference)
    assert list(ours) == list(range(1, 9))
    for step in ref:
        assert ours[step] == pytest.approx(ref[step], rel=LOSS_RTOL), (step, ours, ref)
    # rank 0 alone evaluated half the examples: equal numbers show the sum over both ranks
    ref_eval = eval_losses(reference)
    assert all(eval_losses(out)[s] == pytest.approx(ref_eval[s], rel=LOSS_RTOL) for s in ref_eval)
    state = json.loads((latest_checkpoint(out) / "state.json").read_text())
    assert state["distributed"]["engine"] == distributed["engine"] and state["distributed"]["world_size"] == 2

    ids = torch.randint(0, 258, (2, SEQ_LEN), generator=torch.Generator().manual_seed(0))
    for step in ("step_0000004", "step_0000008"):  # consolidated safetensors: one process loads them
        mine = configaformer.Transformer.from_pretrained(out / "checkpoints" / step).eval()
        theirs = configaformer.Transformer.from_pretrained(reference / "checkpoints" / step).eval()
        with torch.no_grad():
            for a, b in zip(mine(ids), theirs(ids)):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
