"""`configaformer train` trains and evaluates every head through the chunked cross-entropy
(`model(..., targets=)`): the same losses, gradients, bits per byte and accuracies as
cross-entropy on the full (B, L, classes) logits, for language-modelling, token-label and
sequence-label heads, with padding and -100 targets."""

import math

import pytest
import torch
import torch.nn.functional as F

from configaformer.train import Trainer, load_run_config
from configaformer.train.objectives import IGNORE_INDEX
from tests.test_train_labels import labelled  # noqa: F401  (the labelled-documents fixture)

MODEL = {"dim_model": 32, "vocab_size": 258, "dim_rope": 8,
         "classifiers": [{"num_classes": 258, "head_type": "tied", "name": "lm"},
                         {"num_classes": 2, "name": "kind"}, {"num_classes": 3, "head_type": "linear", "name": "doc"}],
         "layers": [{"type": "Attention", "num_heads": 4}, {"type": "FFN", "ff_mult": 2}]}


@pytest.fixture
def trainer(labelled, tmp_path):  # noqa: F811
    run = {"model": MODEL, "data": {"path": str(labelled), "packing": False}, "out_dir": str(tmp_path / "r"),
           "heads": {"kind": {"labels": "token", "loss_weight": 0.5}, "doc": {"labels": "sequence"}},
           "train": {"batch_size": 4, "seq_len": 48, "max_steps": 1, "eval_batches": 3, "progress": False,
                     "num_threads": 1}}
    return Trainer(load_run_config(run))


def full_logit_losses(trainer, ex):
    """The reference: every head's logits (B, L, classes), then F.cross_entropy."""
    outputs = trainer.model(ex.inputs, padding_mask=ex.padding_mask)
    return [F.cross_entropy(outputs[i].float().flatten(0, 1), ex.head_targets(trainer.head_kinds[i]).flatten(),
                            ignore_index=IGNORE_INDEX) for i, _, _ in trainer.head_plan], outputs


def test_chunked_training_losses_and_gradients_equal_the_full_logits(trainer):
    ex = trainer.example(next(trainer.loader), 0)
    assert ex.padding_mask is not None and not ex.padding_mask.all()  # padded rows: -100 targets too
    assert sorted(trainer.head_kinds.values()) == ["lm", "sequence", "token"]
    expected, _ = full_logit_losses(trainer, ex)
    total = sum(w * loss for (_, _, w), loss in zip(trainer.head_plan, expected))
    total.backward()
    want = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    trainer.model.zero_grad()
    got_total, got, reports = trainer.losses(trainer.train_model, ex)
    assert reports == {}  # no layer reports auxiliary losses here
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)
    got_total.backward()
    assert want and {n for n, p in trainer.model.named_parameters() if p.grad is not None} == set(want)
    for name, p in trainer.model.named_parameters():
        if name in want:
            torch.testing.assert_close(p.grad, want[name], rtol=1e-4, atol=1e-6, msg=name)


@torch.no_grad()
def test_evaluate_equals_the_full_logit_reference(trainer):
    trainer.model.eval()
    sums = {name: [0.0, 0, 0] for _, name, _ in trainer.head_plan}
    byte_total = 0.0
    for i in range(min(trainer.cfg.eval_batches, trainer.eval_loader.steps_per_epoch)):
        ex = trainer.example(trainer.eval_loader.batch_at(0, i), -1 - i)
        outputs = trainer.model(ex.inputs, padding_mask=ex.padding_mask)
        for head, name, _ in trainer.head_plan:
            targets, logits = ex.head_targets(trainer.head_kinds[head]), outputs[head].float()
            valid = targets != IGNORE_INDEX
            sums[name][0] += float(F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum"))
            sums[name][1] += int(valid.sum())
            sums[name][2] += int((logits.argmax(-1) == targets)[valid].sum())
        byte_total += float(trainer.byte_lengths[ex.targets[ex.targets != IGNORE_INDEX]].sum())
    results = trainer.evaluate()
    for name, (nats, count, hits) in sums.items():
        assert results[name]["loss"] == pytest.approx(nats / count, rel=1e-5)
        if name == "lm":
            assert results[name]["bits_per_byte"] == pytest.approx(nats / math.log(2) / byte_total, rel=1e-5)
        else:
            assert results[name]["accuracy"] == pytest.approx(hits / count, abs=1e-12)


def test_training_and_evaluation_never_form_the_full_logits(trainer, monkeypatch):
    for head in trainer.model.heads:
        def no_logits(x, out=head.out):
            raise AssertionError(f"a head formed logits {tuple(x.shape[:-1])} x {out.out_features}")
        monkeypatch.setattr(head.out, "forward", no_logits)
    loss, _ = trainer.train_step()
    assert math.isfinite(loss) and set(trainer.evaluate()) == {"lm", "kind", "doc"}
