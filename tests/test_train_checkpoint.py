"""Checkpoints in a run: one evaluation and one save per step (the last step included), and
replacing a step's checkpoint never leaves `latest` naming a missing or incomplete directory."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from configaformer import Transformer
from configaformer.train import Trainer, load_run_config, train
from configaformer.train.checkpoint import latest_checkpoint, load_checkpoint_state, save_checkpoint
from tests.test_train import TINY_MODEL, run_config


def test_the_last_step_is_evaluated_and_saved_once(stdlib_data, tmp_path, monkeypatch):
    saved = []
    original = Trainer.save
    monkeypatch.setattr(Trainer, "save", lambda self, best=False: saved.append(self.step) or original(self, best))
    run = run_config(stdlib_data, tmp_path / "run", max_steps=4, eval_interval=2)  # 4 % 2 == 0, as the main job
    summary = train(load_run_config(run))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "eval"] == [2, 4]
    assert saved == [2, 4] and summary.checkpoint == latest_checkpoint(tmp_path / "run")


class Crash(Exception):
    pass


def test_replacing_a_checkpoint_keeps_latest_loadable_at_every_moment(tmp_path, monkeypatch):
    """Save step 5 twice, the second time stopped (as by a kill) at each file-system operation in
    turn: `latest` always names a complete checkpoint of step 5."""
    model = Transformer(TINY_MODEL)
    rng = {"torch": torch.get_rng_state()}

    def save(run_dir, tag):
        return save_checkpoint(run_dir, model, None, {"step": 5, "tag": tag}, rng, keep_last=2, best=True)

    calls = {"n": 0, "crash_at": None}
    real = {"replace": os.replace, "rmtree": shutil.rmtree}

    def step(name):
        def op(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == calls["crash_at"]:
                raise Crash(name)
            return real[name](*args, **kwargs)
        return op

    monkeypatch.setattr(os, "replace", step("replace"))
    monkeypatch.setattr(shutil, "rmtree", step("rmtree"))
    save(tmp_path / "count", "first")
    calls["n"] = 0
    save(tmp_path / "count", "second")
    operations = calls["n"]
    assert operations >= 2
    for crash_at in range(1, operations + 1):
        run_dir = tmp_path / f"crash{crash_at}"
        save(run_dir, "first")
        calls.update(n=0, crash_at=crash_at)
        with pytest.raises(Crash):
            save(run_dir, "second")
        calls["crash_at"] = None
        latest = latest_checkpoint(run_dir)
        state, _, _ = load_checkpoint_state(latest)  # complete: its files are all there
        assert state["step"] == 5 and state["tag"] in ("first", "second"), crash_at
        Transformer.from_pretrained(latest)
        best = Path(run_dir / "checkpoints" / (run_dir / "checkpoints" / "best").read_text().strip())
        assert load_checkpoint_state(best)[0]["step"] == 5, crash_at
    save(run_dir, "third")  # a later save clears what the crash left
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best", "latest", "step_0000005"]
