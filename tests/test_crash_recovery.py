"""What killed runs leave behind is cleaned by the next run, and only that: temporaries of
checkpoint writes in a run directory (the training process holds the directory's lock), and
temporaries of `data prepare` whose writing process has gone (never those of a live one)."""

import shutil
import subprocess
import sys
import textwrap

import pytest

from configaformer.data import PrepareOptions, prepare, verify
from configaformer.data.shards import clean_stale_temporaries
from configaformer.train import Trainer, TrainingError, load_run_config, train
from tests.test_train import run_config


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_next_run_removes_temporaries_of_killed_checkpoint_writes(stdlib_data, tmp_path):
    config = run_config(stdlib_data, tmp_path / "r", max_steps=2, eval_interval=2)
    train(load_run_config(config))
    root = tmp_path / "r" / "checkpoints"
    left = [root / ".step_0000003.k2j4l1x9", root / ".step_0000004.staging", root / ".step_0000003.swap"]
    for path in left:
        (path / "deepspeed").mkdir(parents=True)
        (path / "model.safetensors").write_bytes(b"half")
    shutil.copytree(root / "step_0000002", root / ".step_0000002.swap")  # a kill mid-replace: `latest`
    (root / "latest").write_text(".step_0000002.swap\n")
    Trainer(load_run_config(config), resume=True).close()
    assert not any(path.exists() for path in left)
    assert (root / ".step_0000002.swap").is_dir()  # names the linked copy, kept


def test_a_second_process_cannot_train_into_a_run_directory_in_use(stdlib_data, tmp_path):
    (tmp_path / "r").mkdir()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from configaformer.train.rundir import claim_run_dir
        held = claim_run_dir(Path({str(tmp_path / 'r')!r}), resume=False)
        print("held", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(TrainingError, match=rf"in use by a training process \(pid {holder.pid}\)"):
            Trainer(load_run_config(run_config(stdlib_data, tmp_path / "r")))
    finally:
        holder.kill()
        holder.wait()
    Trainer(load_run_config(run_config(stdlib_data, tmp_path / "r"))).close()  # free once it has gone


def small(tmp_path):
    (tmp_path / "corpus").mkdir()
    for i in range(20):
        (tmp_path / "corpus" / f"f{i}.py").write_text(f"def f{i}():\n    return {i}\n" * 20)
    return PrepareOptions(sources=[str(tmp_path / "corpus")], val_fraction=0.2)


def test_prepare_removes_a_killed_runs_temporaries_of_its_output_but_not_a_live_runs(tmp_path):
    gone, alive = dead_pid(), subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = [tmp_path / f".ds.tmp-{gone}-0a1b2c3d", tmp_path / f".ds.old-{gone}-0a1b2c3d"]
        kept = [tmp_path / f".ds.tmp-{alive.pid}-0a1b2c3d",  # a live preparation of the same output
                tmp_path / f".other.tmp-{gone}-0a1b2c3d",    # another output's: its own run cleans it
                tmp_path / ".ds.tmp-notapid"]                 # not a name we write
        for path in stale + kept:
            path.mkdir()
            (path / "train-00000.bin").write_bytes(b"half")
        prepare(tmp_path / "ds", small(tmp_path))
        assert not any(path.exists() for path in stale) and all(path.exists() for path in kept)
        assert verify(tmp_path / "ds") == []
    finally:
        alive.kill()
        alive.wait()


def test_a_dataset_left_aside_by_a_kill_between_the_two_renames_is_put_back(tmp_path):
    prepare(tmp_path / "ds", small(tmp_path))
    aside = tmp_path / f".ds.old-{dead_pid()}-0a1b2c3d"
    (tmp_path / "ds").rename(aside)  # killed after moving the old dataset aside, before the new one came
    assert clean_stale_temporaries(tmp_path / "ds") == []
    assert not aside.exists() and verify(tmp_path / "ds") == []
