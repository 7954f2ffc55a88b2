"""Training against faults: where a run may write, stale metrics of a killed run, truncated
shards, checkpoints with a missing or changed file, and engine state from another run."""

import json
import shutil
from pathlib import Path

import pytest

from configaformer import ConfigError
from configaformer.data import verify
from configaformer.train import Trainer, TrainingError, load_run_config, train
from configaformer.train.checkpoint import (CheckpointError, check_engine_state_trusted, latest_checkpoint,
                                            verify_checkpoint)
from tests.test_train import losses, run_config


@pytest.mark.parametrize("where, words", [
    ("", "out_dir: must name a directory"),
    ("a_file", "is a file, not a directory"),
    ("a_file/run", "is inside 'A_FILE', a file"),
    ("DATA", "is a prepared dataset"),
    ("DATA/run", "is inside the prepared dataset"),
])
def test_out_dir_that_is_empty_a_file_or_a_dataset_is_refused_and_nothing_is_written(stdlib_data, tmp_path,
                                                                                    monkeypatch, where, words):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    shutil.copytree(stdlib_data, data)
    (tmp_path / "a_file").write_text("keep me")
    before = sorted(p.name for p in tmp_path.iterdir())
    out = where.replace("DATA", str(data))
    words = words.replace("A_FILE", "a_file")
    with pytest.raises(ConfigError, match="out_dir") as info:
        Trainer(load_run_config(run_config(data, out)))
    assert words in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == before and (tmp_path / "a_file").read_text() == "keep me"
    assert verify(data) == []


def test_a_fresh_start_sets_a_killed_runs_metrics_aside_and_logs_only_its_own(stdlib_data, tmp_path):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    stale = "".join(json.dumps({"kind": "train", "step": s, "tokens": s * 128, "loss": 9.0}) + "\n"
                    for s in range(1, 980))  # a run killed before its first checkpoint
    (run_dir / "metrics.jsonl").write_text(stale)
    train(load_run_config(run_config(stdlib_data, run_dir, max_steps=4)))
    assert list(losses(run_dir)) == [1, 2, 3, 4]  # not 979 old records followed by new ones
    (aside,) = run_dir.glob("metrics.stale-*.jsonl")
    assert aside.read_text() == stale  # kept, not lost


@pytest.mark.parametrize("change, words", [
    ({"betas": [2, -1]}, r"train.betas: each of AdamW's two betas must be in \[0, 1\)"),
    ({"betas": [0.9, 1.0]}, r"train.betas: .*\[0, 1\)"),
    ({"activation_checkpointing": [99]}, r"train.activation_checkpointing: positions \[99\] are outside"),
])
def test_train_settings_adamw_or_the_model_cannot_take_are_config_errors(stdlib_data, tmp_path, change, words):
    with pytest.raises(ConfigError, match=words):
        Trainer(load_run_config(run_config(stdlib_data, tmp_path / "r", **change)))


def test_a_truncated_shard_is_an_error_naming_the_shard_when_training_starts(stdlib_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(stdlib_data, data)
    shard = data / "train-00000.bin"
    shard.write_bytes(shard.read_bytes()[:-1000])
    with pytest.raises(TrainingError, match=r"data.train_split: .*train-00000.bin: [\d,]+ bytes, the manifest says"):
        Trainer(load_run_config(run_config(data, tmp_path / "r")))


@pytest.fixture
def two_step_run(stdlib_data, tmp_path):
    config = run_config(stdlib_data, tmp_path / "r", max_steps=2, eval_interval=2)
    train(load_run_config(config))
    return config, latest_checkpoint(tmp_path / "r")


def flip_a_weight_byte(checkpoint: Path) -> None:
    path = checkpoint / "model.safetensors"
    data = bytearray(path.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")  # safetensors: header length, JSON header, then tensor bytes
    data[header + (len(data) - header) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def test_a_flipped_bit_in_the_weights_is_caught_on_resume_and_generate(two_step_run, capsys):
    from configaformer.cli import main

    config, ckpt = two_step_run
    verify_checkpoint(ckpt)  # intact
    flip_a_weight_byte(ckpt)
    with pytest.raises(TrainingError, match=r"--resume: checkpoint .* is corrupt: model.safetensors differs"):
        Trainer(load_run_config(dict(config, train=dict(config["train"], max_steps=4))), resume=True)
    args = ["generate", config["out_dir"], "--prompt", "def ", "--max-new-tokens", "2", "--checkpoint", "latest"]
    try:  # the CLI turns the CheckpointError into one line once it catches it
        code, message = main(args), capsys.readouterr().err
    except CheckpointError as err:
        code, message = 2, str(err)
    assert code == 2 and "model.safetensors differs" in message


def test_a_checkpoint_from_before_checksums_still_resumes(two_step_run):
    config, ckpt = two_step_run
    state = json.loads((ckpt / "state.json").read_text())
    del state["checksums"]
    (ckpt / "state.json").write_text(json.dumps(state))
    flip_a_weight_byte(ckpt)  # unverifiable: loads as it is
    summary = train(load_run_config(dict(config, train=dict(config["train"], max_steps=3))), resume=True)
    assert summary.steps == 3


def test_a_missing_optimizer_file_is_named(two_step_run):
    config, ckpt = two_step_run
    (ckpt / "optimizer.safetensors").unlink()
    with pytest.raises(TrainingError, match=r"is incomplete: optimizer.safetensors is missing"):
        Trainer(load_run_config(config), resume=True)


def test_engine_state_is_trusted_only_from_this_runs_own_complete_checksummed_checkpoints(two_step_run, tmp_path):
    config, ckpt = two_step_run
    state = verify_checkpoint(ckpt)
    mine = (Path(config["out_dir"]) / "run_id").read_text().strip()
    assert state["run_id"] == mine
    check_engine_state_trusted(ckpt, state, mine)
    with pytest.raises(CheckpointError, match="written by another run"):
        check_engine_state_trusted(ckpt, state, "0123456789abcdef")
    with pytest.raises(CheckpointError, match="records no checksums"):
        check_engine_state_trusted(ckpt, {k: v for k, v in state.items() if k != "checksums"}, mine)
    (ckpt / "deepspeed").mkdir()
    (ckpt / "deepspeed" / "mp_rank_00_model_states.pt").write_bytes(b"pickled")
    with pytest.raises(CheckpointError, match=r"files its checksums do not cover \(deepspeed/mp_rank_00"):
        check_engine_state_trusted(ckpt, state, mine)


def test_resume_refuses_engine_state_in_a_checkpoint_copied_from_another_run(stdlib_data, two_step_run, tmp_path,
                                                                           monkeypatch):
    from configaformer.parallel.base import Engine

    monkeypatch.setattr(Engine, "unpickles_own_state", True)  # as DeepSpeed's engine, which torch.loads its files
    config, ckpt = two_step_run
    Trainer(load_run_config(config), resume=True).close()  # its own checkpoint: trusted
    train(load_run_config(run_config(stdlib_data, tmp_path / "other", max_steps=2, eval_interval=2)))
    shutil.rmtree(ckpt)
    shutil.copytree(latest_checkpoint(tmp_path / "other"), ckpt)
    with pytest.raises(TrainingError, match="written by another run"):
        Trainer(load_run_config(config), resume=True)
