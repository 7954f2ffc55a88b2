"""Classifier heads trained from per-document labels stored in the dataset (--label-field)."""

import json

import numpy as np
import pytest
import torch

from configaformer import ConfigError, Transformer
from configaformer.data import BatchLoader, DataError, PrepareOptions, TokenDataset, prepare, verify
from configaformer.train import Trainer, load_run_config, train
from configaformer.train.objectives import IGNORE_INDEX, Example

MODEL = {"dim_model": 32, "vocab_size": 258, "dim_rope": 8,
         "classifiers": [{"num_classes": 258, "head_type": "linear"}, {"num_classes": 2, "name": "kind"}],
         "layers": [{"type": "Attention", "num_heads": 4}, {"type": "FFN", "ff_mult": 2}]}


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """Documents of 'a's (label 0) and of 'b's (label 1)."""
    root = tmp_path_factory.mktemp("labelled")
    rng = np.random.default_rng(0)
    with open(root / "docs.jsonl", "w") as f:
        for i in range(400):
            label = i % 2
            f.write(json.dumps({"text": ("ab"[label] * int(rng.integers(20, 90))), "label": label, "id": i}) + "\n")
    out = root / "data"
    prepare(out, PrepareOptions(sources=[str(root / "docs.jsonl")], label_field="label", dedup=False,
                                val_fraction=0.2))
    return out


def test_loader_gives_every_token_its_documents_label(labelled):
    split = TokenDataset(labelled).split("train")
    batch = BatchLoader(split, 4, 32, seed=1).batch_at(0, 0)
    assert batch.labels.shape == batch.tokens.shape
    ids = batch.tokens
    letters = (ids == ord("a")) | (ids == ord("b"))
    assert (batch.labels[letters] == (ids[letters] == ord("b")).long()).all()
    assert TokenDataset(labelled).manifest["splits"]["train"]["labels"]["num_classes"] == 2


def test_sequence_targets_keep_only_the_last_real_token():
    labels = torch.tensor([[0, 0, 1, 1], [1, 1, 1, -1]])
    mask = torch.tensor([[True, True, True, True], [True, True, True, False]])
    ex = Example(torch.zeros(2, 4, dtype=torch.long), labels, mask, labels)
    seq = ex.head_targets("sequence")
    assert seq.tolist() == [[IGNORE_INDEX] * 3 + [1], [IGNORE_INDEX, IGNORE_INDEX, 1, IGNORE_INDEX]]
    assert ex.head_targets("token").tolist() == [[0, 0, 1, 1], [1, 1, 1, IGNORE_INDEX]]


@pytest.mark.parametrize("kind", ["token", "sequence"])
def test_a_label_head_learns_from_the_dataset(labelled, tmp_path, kind):
    run = {"model": MODEL, "data": {"path": str(labelled)}, "out_dir": str(tmp_path / "r"),
           "heads": {"kind": {"labels": kind, "loss_weight": 1.0}}, "sample": {"max_new_tokens": 0},
           "train": {"batch_size": 8, "seq_len": 32, "lr": 1e-2, "warmup_steps": 2, "max_steps": 40,
                     "eval_interval": 40, "eval_batches": 4, "progress": False, "num_threads": 1}}
    summary = train(load_run_config(run))
    assert summary.val["kind"]["accuracy"] > 0.9 and "bits_per_byte" not in summary.val["kind"]
    assert "bits_per_byte" in summary.val["lm"]


def test_label_mistakes_are_named(labelled, tmp_path):
    stdlib = tmp_path / "stdlib"
    prepare(stdlib, PrepareOptions(sources=["python-stdlib"], max_bytes=100_000))
    run = {"model": MODEL, "data": {"path": str(stdlib)}, "out_dir": str(tmp_path / "r"),
           "heads": {"kind": {"labels": "token"}}, "train": {"max_steps": 2, "seq_len": 32, "batch_size": 2}}
    with pytest.raises(ConfigError, match="heads.kind.labels.*--label-field"):
        Trainer(load_run_config(run))
    one_class = dict(MODEL, classifiers=[258, {"num_classes": 1, "name": "kind"}])
    with pytest.raises(ConfigError, match="labels up to 1, more than the head's 1 classes"):
        Trainer(load_run_config(dict(run, model=one_class, data={"path": str(labelled)})))
    with pytest.raises(DataError, match="is a text file"):
        prepare(tmp_path / "x", PrepareOptions(sources=["python-stdlib"], label_field="label", max_bytes=1000))
    (tmp_path / "bad.jsonl").write_text('{"text": "hi", "label": "x"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:1: label field 'label' holds 'x'"):
        prepare(tmp_path / "y", PrepareOptions(sources=[str(tmp_path / "bad.jsonl")], label_field="label"))
    (tmp_path / "none.jsonl").write_text('{"text": "hi"}\n')
    with pytest.raises(DataError, match="no field 'label'.*--label-field"):
        prepare(tmp_path / "z", PrepareOptions(sources=[str(tmp_path / "none.jsonl")], label_field="label"))


def test_verify_reports_a_corrupt_labels_file(labelled, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(labelled, copy)
    path = copy / "train-labels.bin"
    data = bytearray(path.read_bytes())
    data[0] ^= 1
    path.write_bytes(bytes(data))
    assert any("train-labels.bin" in p for p in verify(copy))
    assert verify(labelled) == []


def label_first_run(labelled, out, classifiers):
    model = {**MODEL, "classifiers": classifiers}
    return load_run_config({"model": model, "data": {"path": str(labelled)}, "out_dir": str(out),
                            "heads": {"kind": {"labels": "token"}}, "sample": {"prompt": "ab", "max_new_tokens": 6},
                            "train": {"batch_size": 4, "seq_len": 32, "max_steps": 2, "eval_interval": 2,
                                      "eval_batches": 1, "progress": False, "num_threads": 1}})


def test_the_end_of_run_sample_comes_from_the_lm_head_when_a_label_head_is_first(labelled, tmp_path):
    run = label_first_run(labelled, tmp_path / "r", [{"num_classes": 2, "name": "kind"},
                                                     {"num_classes": 258, "head_type": "linear"}])
    summary = train(run)
    tokenizer = TokenDataset(labelled).tokenizer()
    model = Transformer.from_pretrained(summary.checkpoint).eval()
    ids = torch.as_tensor(tokenizer.encode("ab").astype("int64"))[None]
    out = model.generate(ids, 6, temperature=run.sample.temperature, top_k=run.sample.top_k, head=1,
                         generator=torch.Generator().manual_seed(run.train.seed))
    assert summary.sample == tokenizer.decode(out[0].tolist())


def test_a_run_without_an_lm_head_ends_without_a_sample(labelled, tmp_path):
    summary = train(label_first_run(labelled, tmp_path / "r", [{"num_classes": 2, "name": "kind"}]))
    assert summary.sample is None and summary.steps == 2 and set(summary.val) == {"kind"}
