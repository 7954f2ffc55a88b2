"""Training: a short run learns, resumes exactly, survives kills and Ctrl-C, refuses bad runs."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import configaformer
from configaformer import ConfigError
from configaformer.train import Trainer, TrainingError, load_run_config, train
from configaformer.train.checkpoint import latest_checkpoint

TINY_MODEL = {"dim_model": 32, "vocab_size": 258, "dim_rope": 8,
              "classifiers": [{"num_classes": 258, "head_type": "linear"}],
              "layers": [{"type": "Attention", "num_heads": 4, "dropout": 0.1},
                         {"type": "FFN", "ff_mult": 2, "dropout": 0.1}] * 2}



def run_config(data, out, model=None, **train):
    settings = {"batch_size": 4, "seq_len": 32, "lr": 3e-3, "warmup_steps": 2, "max_steps": 12, "eval_interval": 6,
                "eval_batches": 2, "log_interval": 1, "seed": 3, "progress": False, "num_threads": 1}
    settings.update(train)
    return {"model": model or TINY_MODEL, "data": {"path": str(data)}, "train": settings, "out_dir": str(out),
            "sample": {"max_new_tokens": 8}, "checkpoint": {"keep_last": 3}}


def losses(run_dir):
    records = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if r["kind"] == "train"}


def test_short_run_on_the_embedded_corpus_learns(stdlib_data, tmp_path):
    run = load_run_config(run_config(stdlib_data, tmp_path / "r", max_steps=40, eval_interval=20, lr=1e-2,
                                     eval_batches=32))  # 4 KiB of evaluation text: gzip/xz baselines
    summary = train(run)
    curve = losses(tmp_path / "r")
    assert sum(curve[s] for s in (38, 39, 40)) < sum(curve[s] for s in (1, 2, 3)) - 1.0
    val = summary.val["lm"]
    # The byte tokenizer spells one byte per token, so bits per byte is the loss in bits.
    assert val["bits_per_byte"] == pytest.approx(val["loss"] / math.log(2), rel=1e-6)
    assert val["loss"] < math.log(258)
    assert (tmp_path / "r" / "loss.png").stat().st_size > 1000
    assert set(summary.baselines) == {"gzip -9", "xz -9e"} and summary.sample.startswith("def ")
    loaded = configaformer.Transformer.from_pretrained(summary.checkpoint)
    assert loaded.num_parameters() == summary.parameters


def test_resume_continues_with_the_same_losses(stdlib_data, tmp_path):
    straight = train(load_run_config(run_config(stdlib_data, tmp_path / "a")))
    first = load_run_config(run_config(stdlib_data, tmp_path / "b", max_tokens=7 * 4 * 32))  # stops after 7 steps
    assert train(first).steps == 7
    resumed = train(load_run_config(run_config(stdlib_data, tmp_path / "b")), resume=True)
    assert resumed.steps == straight.steps == 12
    a, b = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert list(a) == list(b) and all(a[s] == b[s] for s in a)  # exactly, dropout included
    assert resumed.val == straight.val


def test_masked_objective_for_bidirectional_models_resumes_exactly(stdlib_data, tmp_path):
    model = dict(TINY_MODEL, layers=[{"type": "Attention", "num_heads": 4, "causal_mask_bool": False},
                                     {"type": "FFN", "ff_mult": 2}])
    straight = train(load_run_config(run_config(stdlib_data, tmp_path / "a", model=model, max_steps=8)))
    assert straight.sample is None and straight.val["lm"]["loss"] < math.log(258)
    train(load_run_config(run_config(stdlib_data, tmp_path / "b", model=model, max_steps=8, max_tokens=5 * 128)))
    train(load_run_config(run_config(stdlib_data, tmp_path / "b", model=model, max_steps=8)), resume=True)
    assert losses(tmp_path / "a") == losses(tmp_path / "b")


def test_ctrl_c_saves_a_checkpoint_that_resumes_exactly(stdlib_data, tmp_path, monkeypatch):
    straight = train(load_run_config(run_config(stdlib_data, tmp_path / "a")))
    original, calls = Trainer.train_step, {"n": 0}

    def interrupted(self):
        calls["n"] += 1
        if calls["n"] == 5:
            next(self.loader)  # half-way through a step: a batch was consumed
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(Trainer, "train_step", interrupted)
    summary = train(load_run_config(run_config(stdlib_data, tmp_path / "b")))
    assert summary.stopped_by.startswith("interrupted") and summary.steps == 4
    assert latest_checkpoint(tmp_path / "b").name == "step_0000004"
    monkeypatch.setattr(Trainer, "train_step", original)
    train(load_run_config(run_config(stdlib_data, tmp_path / "b")), resume=True)
    assert losses(tmp_path / "a") == losses(tmp_path / "b")
    assert straight.steps == 12


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(stdlib_data, tmp_path, monkeypatch):
    original = Trainer.losses

    def poisoned(self, model, ex):
        total, heads, reports = original(self, model, ex)
        return (total * float("nan"), heads, reports) if self.step == 5 else (total, heads, reports)

    monkeypatch.setattr(Trainer, "losses", poisoned)
    config = run_config(stdlib_data, tmp_path / "r")
    config["checkpoint"]["interval"] = 2
    with pytest.raises(TrainingError, match=r"loss became nan at step 6.*step_0000004"):
        train(load_run_config(config))
    configaformer.Transformer.from_pretrained(latest_checkpoint(tmp_path / "r"))


def test_a_killed_run_leaves_a_loadable_checkpoint_and_resumes(stdlib_data, tmp_path):
    config = run_config(stdlib_data, tmp_path / "r", max_steps=100000)
    config["checkpoint"]["interval"] = 1
    (tmp_path / "run.json").write_text(json.dumps(config))
    proc = subprocess.Popen([sys.executable, "-m", "configaformer", "train", str(tmp_path / "run.json")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            ckpt = latest_checkpoint(tmp_path / "r")
            if ckpt is not None and int(ckpt.name.split("_")[1]) >= 3:
                break
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # no chance to clean up
    finally:
        proc.wait()
    ckpt = latest_checkpoint(tmp_path / "r")
    assert ckpt is not None
    configaformer.Transformer.from_pretrained(ckpt)
    step = int(ckpt.name.split("_")[1])
    summary = train(load_run_config(dict(config, train=dict(config["train"], max_steps=step + 2))), resume=True)
    assert summary.steps == step + 2
    assert list(losses(tmp_path / "r")) == list(range(1, step + 3))  # records past the checkpoint dropped, once each


@pytest.mark.parametrize("change, words", [
    ({"train": {"warmup_step": 1}}, "train.warmup_step: unknown key; did you mean 'warmup_steps'"),
    ({"model": dict(TINY_MODEL, vocab_size=100, classifiers=[100])}, "model.vocab_size"),
    ({"model": dict(TINY_MODEL, max_seq_len=16)}, "train.seq_len: 32 exceeds the model's max_seq_len 16"),
    ({"data": {"path": "/nonexistent/data"}}, "data.path"),
    ({"model": "no-such-preset"}, "model: 'no-such-preset' is neither"),
    ({"heads": {"cls": {"labels": "none"}}}, "heads.cls: no classifier head named 'cls'"),
    ({"train": {"max_steps": None}}, "set at least one of max_steps"),
    ({"model": dict(TINY_MODEL, layers=[{"type": "Attention", "num_heads": 5}])}, r"model.layers\[0\].num_heads"),
])
def test_bad_runs_fail_before_training_naming_the_setting(stdlib_data, tmp_path, change, words):
    config = run_config(stdlib_data, tmp_path / "r")
    for key, value in change.items():
        config[key] = dict(config[key], **value) if key == "train" else value
    with pytest.raises((ConfigError, TrainingError), match=words):
        Trainer(load_run_config(config))
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_resume_refuses_a_changed_model_and_a_missing_checkpoint(stdlib_data, tmp_path):
    with pytest.raises(TrainingError, match="no checkpoint to resume from"):
        Trainer(load_run_config(run_config(stdlib_data, tmp_path / "r")), resume=True)
    train(load_run_config(run_config(stdlib_data, tmp_path / "r", max_steps=2)))
    with pytest.raises(TrainingError, match="already holds a run; pass --resume"):
        Trainer(load_run_config(run_config(stdlib_data, tmp_path / "r")))
    changed = dict(TINY_MODEL, dim_rope=4)
    with pytest.raises(TrainingError, match=r"model config differs.*model.layers"):
        Trainer(load_run_config(run_config(stdlib_data, tmp_path / "r", model=changed)), resume=True)


def test_overrides_and_the_cli(stdlib_data, tmp_path, capsys):
    from configaformer.cli import main

    path = tmp_path / "run.yaml"
    path.write_text(json.dumps(run_config(stdlib_data, tmp_path / "r")))
    assert main(["train", str(path), "--train.max_steps", "3", "--train.lr=1e-3"]) == 0
    out = capsys.readouterr().out
    assert "validation bits per byte" in out and "gzip / xz on the same text" in out and "3 / 384" in out
    assert main(["generate", str(tmp_path / "r"), "--prompt", "import ", "--max-new-tokens", "5"]) == 0
    assert capsys.readouterr().out.startswith("import ")
    assert main(["train", str(path), "--train.nope", "1"]) == 2
    assert "train.nope" in capsys.readouterr().err


def test_weight_decay_skips_norms_biases_and_embeddings():
    from configaformer.train.optim import param_groups

    model = configaformer.Transformer(dict(TINY_MODEL, classifiers=[{"num_classes": 258, "head_type": "tied"}]))
    decay, no_decay = param_groups(model, 0.1)
    decayed = {id(p) for p in decay["params"]}
    assert id(model.embedding.weight) not in decayed
    assert id(model.layers[0].block.qkv.weight) in decayed and id(model.layers[0].block.qkv.bias) not in decayed
    assert id(model.layers[0].pre_norm.weight) not in decayed
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
