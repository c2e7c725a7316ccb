"""PeterRec's downstream tasks: split rules and no leakage into pretraining (training/downstream.py)."""

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf

from components.example_gen import encoding, histories, inmemory
from components.example_gen.config import IngestConfig
from contract import datasets as D
from contract import features as F
from evaluation import definitions as d
from training import downstream as DS
from models.families.sequential import NEXT_ITEM
from training.views import ItemRows, load_user_view, sequence_dataset, sequence_windows

LENGTH = 16
MOVIELENS = D.dataset_spec("movielens")
TYPES = encoding.feature_types(MOVIELENS)
NEXT_LIKE = "next_like"  # MovieLens's next-behavior task (is the next interaction liked)
NEXT_LIKED_GENRES = "next_liked_genres"  # its next-item-feature task (the next liked item's genres)


@pytest.fixture(scope="module")
def protocol_s(movielens_slice, tmp_path_factory):
    """Both views of the MovieLens slice under leave_last_two_out, the user view read back
    from GZIP TFRecords by `load_user_view` as the Trainer reads ExampleGen's output."""
    config = IngestConfig("movielens", split="leave_last_two_out")
    loaded = inmemory.load_inputs(str(movielens_slice), config)
    examples, _, _ = histories.build_examples(loaded.interactions, config, loaded.catalogue)
    user_records = histories.build_user_view(loaded.interactions, config, loaded.catalogue)
    vocab = sorted({e.features[F.ITEM_ID][0] for e in examples if e.split == "train"})
    rows = ItemRows([v.encode() for v in vocab], MOVIELENS.behaviors)
    out = tmp_path_factory.mktemp("user_view")
    views = {}
    for split in DS.SPLITS:
        path = os.path.join(out, f"{split}.gz")
        with tf.io.TFRecordWriter(path, "GZIP") as w:
            for u in user_records:
                if u.split == split:
                    w.write(encoding.serialize(u.features, TYPES))
        views[split] = load_user_view([path], rows)
    interactions = DS.interactions_from_records([e.features for e in examples], MOVIELENS)
    return views, interactions, rows


def _per_user(interactions, split):
    return {i.user: i for i in interactions if i.split == split}


def test_pretraining_never_sees_an_eval_or_test_item(protocol_s):
    views, interactions, rows = protocol_s
    held_out = {}
    for split in ("eval", "test"):
        for user, i in _per_user(interactions, split).items():
            held_out.setdefault(user, set()).add(int(rows.rows([i.item.encode()])[0]))
    train = views["train"]
    windows = sequence_windows(train, LENGTH, NEXT_ITEM)
    pretrained_items = set()
    for batch in sequence_dataset(train, windows, 8, seed=0, objective=NEXT_ITEM):
        for key in (F.HISTORY_ITEM_IDX, "sequence_target_idx"):
            pretrained_items.update(batch[key].numpy().ravel().tolist())
    pretrained_items.discard(0)
    # Pretraining batches read exactly the train histories; none holds its user's held-out items.
    for user, items in zip(train.users, train.items):
        assert not set(items.tolist()) & held_out.get(user.decode(), set()), user
    assert pretrained_items <= set(np.concatenate(train.items).tolist())
    assert len(held_out) >= 10


def test_next_like_labels_follow_the_split_rules(protocol_s):
    views, interactions, rows = protocol_s
    data = DS.build(NEXT_LIKE, views, interactions, rows.ids, LENGTH, MOVIELENS)
    liked = MOVIELENS.behaviors.index("liked") + 1
    train = data.splits["train"]
    # Position t is labelled by the behavior at t + 1 of the same train history.
    for k in range(len(train)):
        n = int((train.items[k] > 0).sum())
        m = train.mask[k]
        assert m[n:].sum() == 0
        inside = np.flatnonzero(m[: n - 1])
        np.testing.assert_array_equal(train.labels[k, inside], train.behaviors[k, inside + 1] == liked)
    for split, view_split in (("eval", "eval"), ("test", "test")):
        examples = data.splits[split]
        targets = _per_user(interactions, split)
        view = views[view_split]
        history = {u.decode(): h for u, h in zip(view.users, view.items)}
        assert len(examples) == len(targets)
        for k, user in enumerate(examples.users):
            n = int((examples.items[k] > 0).sum())
            assert examples.mask[k].sum() == 1 and examples.mask[k, n - 1] == 1
            assert examples.labels[k, n - 1] == (targets[user].rating >= 4.0)
            np.testing.assert_array_equal(examples.items[k, :n], history[user][-LENGTH:])
    # What a Trainer builds (no test split): the same train and eval examples, no test.
    trainer = DS.next_behavior({s: views[s] for s in ("train", "eval")}, LENGTH, NEXT_LIKE, MOVIELENS)
    assert set(trainer.splits) == {"train", "eval"}
    np.testing.assert_array_equal(trainer.splits["eval"].labels, data.splits["eval"].labels)
    # The test input ends with the eval item (protocol S), the eval input does not hold it.
    evals = _per_user(interactions, "eval")
    test = data.splits["test"]
    for k, user in enumerate(test.users):
        n = int((test.items[k] > 0).sum())
        assert test.items[k, n - 1] == rows.rows([evals[user].item.encode()])[0]


def test_downstream_tasks_come_from_the_description():
    assert DS.tasks(MOVIELENS) == (NEXT_LIKE, NEXT_LIKED_GENRES)
    assert DS.class_feature(MOVIELENS).name == "genres"
    assert DS.tasks(D.dataset_spec("taobao")) == ()  # no next-behavior task, no behaviors from a rating


def test_next_liked_genre_targets_are_the_next_liked_movies_genres(protocol_s):
    views, interactions, rows = protocol_s
    data = DS.build(NEXT_LIKED_GENRES, views, interactions, rows.ids, LENGTH, MOVIELENS)
    assert data.task == NEXT_LIKED_GENRES
    assert data.classes == DS.class_vocabulary(interactions) and "Drama" in data.classes
    genres_of = {i.item: i.values for i in interactions}
    liked = MOVIELENS.behaviors.index("liked") + 1
    for split in ("eval", "test"):
        examples = data.splits[split]
        targets = _per_user(interactions, split)
        assert set(examples.users) == {u for u, i in targets.items() if i.rating >= 4.0}
        for k, user in enumerate(examples.users):
            want = {data.classes.index(g) for g in genres_of[targets[user].item]}
            got = examples.labelled_targets()[k]
            assert set(np.flatnonzero(got)) == want
            assert got.sum() == pytest.approx(1.0)
    train = data.splits["train"]
    for k in range(len(train)):
        n = int((train.items[k] > 0).sum())
        for t in np.flatnonzero(train.mask[k]):
            later = [j for j in range(t + 1, n) if train.behaviors[k, j] == liked]
            if later:  # the next liked item inside the window decides the label
                item = rows.ids[train.items[k, later[0]] - 1].decode()
                want = {data.classes.index(g) for g in genres_of[item]}
                assert set(np.flatnonzero(train.labels[k, t])) == want


def test_tasks_need_protocol_s(protocol_s):
    views, interactions, rows = protocol_s
    doubled = list(interactions) + [i for i in interactions if i.split == "eval"][:1]
    with pytest.raises(ValueError, match="leave_last_two_out"):
        DS.build(NEXT_LIKED_GENRES, views, doubled, rows.ids, LENGTH, MOVIELENS)
    # next_like reads its eval / test labels from the user view's target behaviors.
    two = dataclasses.replace(views["eval"], target_behaviors=[np.concatenate([b, b])
                                                               for b in views["eval"].target_behaviors])
    with pytest.raises(ValueError, match="leave_last_two_out"):
        DS.build(NEXT_LIKE, {**views, "eval": two}, interactions, rows.ids, LENGTH, MOVIELENS)
    stale = dataclasses.replace(views["eval"], target_behaviors=[])
    with pytest.raises(ValueError, match="eval user view carries no target_behaviors"):
        DS.build(NEXT_LIKE, {**views, "eval": stale}, interactions, rows.ids, LENGTH, MOVIELENS)
    with pytest.raises(ValueError, match="unknown downstream task"):
        DS.build("gender", views, interactions, rows.ids, LENGTH, MOVIELENS)


def test_set_accuracy():
    scores = np.array([[0.1, 0.9, 0.0], [0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    targets = np.array([[0, 1, 1], [1, 0, 0], [0, 0, 1]])
    # Hit, a two-way tie with one right class (1/2), miss.
    assert d.set_accuracy(scores, targets) == pytest.approx(0.5)
    np.testing.assert_allclose(d.set_hits(scores, targets), [1.0, 0.5, 0.0])  # per example: their mean
    assert np.isnan(d.set_accuracy(np.zeros((0, 3)), np.zeros((0, 3))))
    with pytest.raises(ValueError, match="at least one target"):
        d.set_accuracy(scores, np.zeros((3, 3)))


def test_per_user_keeps_each_users_most_recent_window(protocol_s):
    views, interactions, rows = protocol_s
    every = DS.build(NEXT_LIKE, views, interactions, rows.ids, LENGTH, MOVIELENS)
    recent = DS.build(NEXT_LIKE, views, interactions, rows.ids, LENGTH, MOVIELENS, per_user=1)
    train = views["train"]
    history = {u.decode(): h for u, h in zip(train.users, train.items)}
    assert len(recent.splits["train"]) == len(set(recent.splits["train"].users)) < len(every.splits["train"])
    for k, user in enumerate(recent.splits["train"].users):
        n = int((recent.splits["train"].items[k] > 0).sum())
        np.testing.assert_array_equal(recent.splits["train"].items[k, :n], history[user][-LENGTH:])
    for split in ("eval", "test"):  # only the training set shrinks
        np.testing.assert_array_equal(recent.splits[split].items, every.splits[split].items)


def test_interactions_read_from_example_files_equal_the_records(movielens_slice, tmp_path):
    config = IngestConfig("movielens", split="leave_last_two_out")
    examples, _ = inmemory.ingest_in_memory(str(movielens_slice), config)
    path = str(tmp_path / "interactions.gz")
    with tf.io.TFRecordWriter(path, "GZIP") as w:
        for e in examples:
            w.write(encoding.serialize(e.features, TYPES))
    from_files = DS.load_interactions([path], MOVIELENS)
    assert from_files == DS.interactions_from_records([e.features for e in examples], MOVIELENS)
    assert {i.split for i in from_files} == set(DS.SPLITS)
    assert all(i.values for i in from_files) and all(0.5 <= i.rating <= 5.0 for i in from_files)
