"""Warm start from the last blessed model: id tables follow the vocabularies, other weights are copied."""
import os

import numpy as np
import tensorflow as tf
import tf_keras as keras

from contract import features as F
from training import warm_start


def test_row_map_moves_known_ids_and_keeps_padding_and_oov():
    rows = warm_start.row_map(["a", "b", "c"], ["c", "new", "a"])
    # rows: 0 padding, 1..3 the new vocabulary, then the OOV bucket (old table: 0, a=1, b=2, c=3, oov=4)
    assert rows.tolist() == [0, 3, -1, 1, 4]


class _Tiny(keras.Model):
    def __init__(self, items, dim=4, hidden=3, seed=0):
        super().__init__()
        init = keras.initializers.RandomNormal(seed=seed)
        self.item_embedding = keras.layers.Embedding(items + F.OOV_BUCKETS + 1, dim, embeddings_initializer=init,
                                                     name="item_embedding")
        self.item_embedding.build((None,))
        self.dense = keras.layers.Dense(hidden, kernel_initializer=init, name="dense")

    def call(self, ids):
        return self.dense(self.item_embedding(ids))


def _export(model, directory, vocabulary):
    model(tf.constant([1]))
    tf.saved_model.save(model, directory)
    os.makedirs(os.path.join(directory, "assets"), exist_ok=True)
    with open(os.path.join(directory, "assets", F.ITEM_VOCAB), "w") as f:
        f.write("\n".join(vocabulary) + "\n")


def test_warm_start_carries_known_items_and_copies_matching_weights(tmp_path):
    old = _Tiny(items=3, seed=1)
    _export(old, str(tmp_path / "old"), ["a", "b", "c"])
    old_table = old.item_embedding.embeddings.numpy()
    new = _Tiny(items=3, seed=2)
    new(tf.constant([1]))
    fresh = new.item_embedding.embeddings.numpy()
    summary = warm_start.warm_start(new, str(tmp_path / "old"), {F.ITEM_VOCAB: ["c", "new", "a"]})
    table = new.item_embedding.embeddings.numpy()
    np.testing.assert_array_equal(table[1], old_table[3])  # c
    np.testing.assert_array_equal(table[3], old_table[1])  # a
    np.testing.assert_array_equal(table[2], fresh[2])  # a new item keeps its initialisation
    np.testing.assert_array_equal(table[[0, 4]], old_table[[0, 4]])  # padding and OOV
    np.testing.assert_array_equal(new.dense.kernel.numpy(), old.dense.kernel.numpy())
    assert summary["copied"] == 2 and not summary["initialised"]
    assert summary["id_tables"]["0:embeddings"] == {"vocabulary": F.ITEM_VOCAB, "known_ids": 2,
                                                                 "new_ids": 1}


def test_a_weight_whose_shape_changed_keeps_its_initialisation(tmp_path):
    old = _Tiny(items=3, hidden=3)
    _export(old, str(tmp_path / "old"), ["a", "b", "c"])
    new = _Tiny(items=3, hidden=5, seed=4)
    new(tf.constant([1]))
    kernel = new.dense.kernel.numpy()
    summary = warm_start.warm_start(new, str(tmp_path / "old"), {F.ITEM_VOCAB: ["a", "b", "c"]})
    np.testing.assert_array_equal(new.dense.kernel.numpy(), kernel)
    assert [n.split("/")[-1] for n in summary["initialised"]] == ["kernel", "bias"]
    assert summary["id_tables"]["0:embeddings"]["known_ids"] == 3


def test_another_architecture_is_trained_from_scratch(tmp_path):
    old = _Tiny(items=3)
    _export(old, str(tmp_path / "old"), ["a", "b", "c"])
    new = _Tiny(items=3, seed=4)  # not built: its dense layer has no weights yet
    table = new.item_embedding.embeddings.numpy()
    summary = warm_start.warm_start(new, str(tmp_path / "old"), {F.ITEM_VOCAB: ["a", "b", "c"]})
    np.testing.assert_array_equal(new.item_embedding.embeddings.numpy(), table)
    assert summary["copied"] == 0 and "trained from scratch" in summary["reason"]
