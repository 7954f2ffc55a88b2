"""configaformer.data.loader: windows, rank sharding, resuming, packing with document boundaries."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from configaformer.data import BatchLoader, DataError, PrepareOptions, TokenDataset, document_mask, prepare
from configaformer.data.loader import IGNORE_INDEX

from .test_data_prepare import write_corpus


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("loader")
    corpus = write_corpus(root / "corpus", 80)
    prepare(root / "ds", PrepareOptions(sources=[str(corpus)], val_fraction=0.2, shard_tokens=700))
    return TokenDataset(root / "ds")


def stream(split) -> np.ndarray:
    return split.tokens(0, split.num_tokens)


def test_split_reads_across_shards_and_documents(dataset):
    train = dataset.split("train")
    assert len(dataset.manifest["splits"]["train"]["shards"]) > 2
    whole = stream(train)
    assert len(whole) == train.num_tokens and whole.dtype == np.int64
    docs = [train.document(i) for i in range(train.num_documents)]
    assert np.array_equal(np.concatenate(docs), whole) and all(d[-1] == 256 for d in docs)
    boundary = int(dataset.split("train")._shard_starts[1])
    assert np.array_equal(train.tokens(boundary - 3, boundary + 3), whole[boundary - 3:boundary + 3])
    with pytest.raises(DataError, match=r"no split 'test' \(splits: train, val\)"):
        dataset.split("test")


def test_packed_windows_cover_every_target_once_per_epoch(dataset):
    train, seq_len = dataset.split("train"), 16
    loader = BatchLoader(train, batch_size=4, seq_len=seq_len, mode="sequential")
    batches = [next(loader) for _ in range(loader.steps_per_epoch)]
    tokens = torch.cat([b.tokens for b in batches]).numpy()  # (steps * 4, 17)
    whole = stream(train)
    for k, window in enumerate(tokens):
        assert np.array_equal(window, whole[k * seq_len:k * seq_len + seq_len + 1])
    assert torch.equal(batches[0].inputs, batches[0].tokens[:, :-1])
    assert torch.equal(batches[0].targets, batches[0].tokens[:, 1:])
    assert loader.state_dict()["epoch"] == 1  # a full epoch moves to the next


def test_packed_doc_ids_mark_document_boundaries(dataset):
    train = dataset.split("train")
    batch = BatchLoader(train, batch_size=8, seq_len=64, mode="sequential").batch_at(0, 1)
    for row, docs in zip(batch.tokens, batch.doc_ids):
        changes = torch.nonzero(docs[1:] != docs[:-1]).flatten() + 1
        assert len(changes) >= 1  # 64-token windows span several short documents
        for pos in changes:  # a new document starts right after a separator token
            assert row[pos - 1] == dataset.separator_id and docs[pos] == docs[pos - 1] + 1
    mask = document_mask(batch.doc_ids[:, :-1])
    assert mask.shape == (8, 64, 64) and mask.dtype == torch.bool
    same = batch.doc_ids[0, 10] == batch.doc_ids[0, 40]
    assert bool(mask[0, 10, 40]) == bool(same) and bool(mask[0, 5, 5])
    assert bool(batch.padding_mask.all())


def test_unpacked_examples_start_at_documents_and_pad(dataset):
    train = dataset.split("train")
    loader = BatchLoader(train, batch_size=4, seq_len=200, packing=False, mode="sequential")
    assert loader.num_examples == train.num_documents  # every document fits one example
    batch = next(loader)
    for row in range(4):
        doc = train.document(row)
        n = len(doc)
        assert torch.equal(batch.tokens[row, :n], torch.from_numpy(doc))
        assert bool(batch.padding_mask[row, :n].all()) and not bool(batch.padding_mask[row, n:].any())
        assert bool((batch.tokens[row, n:] == dataset.pad_id).all())
        assert int((batch.doc_ids[row] < 0).sum()) == 201 - n
        assert bool((batch.targets[row, n - 1:] == IGNORE_INDEX).all())  # nothing to predict after the end
        assert bool((batch.targets[row, :n - 1] >= 0).all())
    long_docs = BatchLoader(train, batch_size=1, seq_len=8, packing=False, mode="sequential")
    pieces = [long_docs.batch_at(0, s) for s in range(long_docs.steps_per_epoch)]
    first_doc = train.document(0)
    covered = [p.tokens[0][p.padding_mask[0]] for p in pieces if bool((p.doc_ids[0][p.padding_mask[0]] == 0).all())]
    rebuilt = torch.cat([covered[0]] + [c[1:] for c in covered[1:]])  # stride 8, overlap of one token
    assert torch.equal(rebuilt, torch.from_numpy(first_doc))


@pytest.mark.parametrize("mode", ["random", "sequential"])
def test_ranks_never_overlap_and_their_union_does_not_depend_on_world_size(dataset, mode):
    train = dataset.split("train")

    def taken(world_size, batch_size, steps):
        loaders = [BatchLoader(train, batch_size, 16, rank=r, world_size=world_size, seed=3, mode=mode)
                   for r in range(world_size)]
        per_rank = [[tuple(l.example_ids(0, s)) for s in range(steps)] for l in loaders]
        return loaders[0], per_rank

    loader, per_rank = taken(4, 2, 5)
    flat = [e for rank in per_rank for step in rank for e in step]
    assert len(flat) == len(set(flat)) == 4 * 2 * 5  # no example on two ranks, nor twice
    everything = {e for r in range(4) for s in range(loader.steps_per_epoch) for e in
                  BatchLoader(train, 2, 16, rank=r, world_size=4, seed=3, mode=mode).example_ids(0, s)}
    assert len(everything) == loader.steps_per_epoch * 8 > 0.9 * loader.num_examples
    _, two = taken(2, 4, 5)
    for step in range(5):  # same global batch (8), other split among ranks: the same examples
        assert {e for rank in per_rank for e in rank[step]} == {e for rank in two for e in rank[step]}


def test_random_order_is_seeded_and_changes_per_epoch(dataset):
    train = dataset.split("train")
    a, b, c = (BatchLoader(train, 4, 16, seed=s) for s in (1, 1, 2))
    assert np.array_equal(a.example_ids(0, 0), b.example_ids(0, 0))
    assert not np.array_equal(a.example_ids(0, 0), c.example_ids(0, 0))
    assert not np.array_equal(a.example_ids(0, 0), a.example_ids(1, 0))
    assert sorted(a._epoch_order(1)) == list(range(a.num_examples))


def test_resuming_from_a_json_state_gives_the_same_batches(dataset):
    train = dataset.split("train")
    make = lambda: BatchLoader(train, batch_size=3, seq_len=16, seed=7)  # noqa: E731
    reference = make()
    steps = reference.steps_per_epoch + 4  # crosses an epoch boundary
    expected = [next(reference).tokens for _ in range(steps)]
    first = make()
    for _ in range(5):
        next(first)
    saved = json.loads(json.dumps(first.state_dict()))  # plain ints survive JSON
    assert all(type(v) is int for v in saved.values())
    resumed = make()
    resumed.load_state_dict(saved)
    assert all(torch.equal(next(resumed).tokens, want) for want in expected[5:])
    # half the ranks, twice the batch: same global batch, resumes the same examples
    wide = [BatchLoader(train, batch_size=3, seq_len=16, seed=7, rank=r, world_size=2) for r in range(2)]
    narrow = BatchLoader(train, batch_size=6, seq_len=16, seed=7)
    narrow.load_state_dict({**saved, "global_batch": 6})
    for loader in wide:
        loader.load_state_dict({**saved, "global_batch": 6})
    assert torch.equal(torch.cat([next(w).tokens for w in wide]), next(narrow).tokens)


def test_resume_refuses_a_different_run(dataset):
    train = dataset.split("train")
    state = BatchLoader(train, 3, 16, seed=7).state_dict()
    with pytest.raises(ValueError, match="loader state has seed=7, but this loader has 8"):
        BatchLoader(train, 3, 16, seed=8).load_state_dict(state)
    with pytest.raises(ValueError, match="loader state has seq_len=16, but this loader has 32"):
        BatchLoader(train, 3, 32, seed=7).load_state_dict(state)
    with pytest.raises(ValueError, match="out of range"):
        BatchLoader(train, 3, 16, seed=7).load_state_dict({**state, "step": 10 ** 9})


@pytest.mark.parametrize("kwargs, message", [
    (dict(batch_size=0), "batch_size must be an integer >= 1"), (dict(rank=2, world_size=2), "rank must be in"),
    (dict(mode="shuffled"), "mode must be one of random, sequential"),
    (dict(batch_size=10 ** 6), "fewer than one global batch"),
])
def test_bad_loader_arguments(dataset, kwargs, message):
    with pytest.raises(ValueError, match=message):
        BatchLoader(dataset.split("val"), **{"batch_size": 2, "seq_len": 16, **kwargs})


def test_opening_a_dataset_that_is_not_one(tmp_path):
    with pytest.raises(DataError, match="dataset directory not found"):
        TokenDataset(tmp_path / "nothing")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "train-00000.bin").write_bytes(b"\0" * 10)  # what an interrupted writer might leave
    with pytest.raises(DataError, match="half is not a prepared dataset: it has no manifest.json"):
        TokenDataset(tmp_path / "half")
