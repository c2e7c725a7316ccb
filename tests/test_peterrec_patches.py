"""PeterRec's fine-tuning modes on a small NextItNet: what trains, what stays, and the patches' start."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from contract import datasets as D
from models.blocks import patches as P
from models.context import synthetic_context as _synthetic_context
from models.families.nextitnet import NextItNet, NextItNetParams
from models.peterrec import BINARY, MEAN, MULTICLASS, PatchedClassifier


def synthetic_context(tasks=("rating",), **kwargs):
    """A context of the shipped MovieLens description with random item features."""
    return _synthetic_context("movielens", tasks, **kwargs)


DIM, BOTTLENECK, CLASSES, LENGTH = 16, 4, 5, 8
DILATIONS = (1, 2, 4)


def _network(seed=0):
    context = synthetic_context(tasks=(D.RETRIEVAL_TASK,), num_items=30, max_history=LENGTH, seed=seed)
    net = NextItNet(context, NextItNetParams(dim=DIM, dilations=DILATIONS, max_len=LENGTH, dropout=0.1))
    return net


def _batch(seed=1, n=6):
    rng = np.random.default_rng(seed)
    items = rng.integers(1, 30, size=(n, LENGTH))
    items[0, 5:] = 0  # a padded sequence
    behaviors = np.where(items > 0, rng.integers(1, 4, size=items.shape), 0)
    labels = np.zeros((n, LENGTH, CLASSES), np.float32)
    labels[np.arange(n)[:, None], np.arange(LENGTH)[None, :], rng.integers(0, CLASSES, size=(n, LENGTH))] = 1.0
    mask = (items > 0).astype(np.float32)
    return {"items": tf.constant(items), "behaviors": tf.constant(behaviors), "labels": tf.constant(labels),
            "mask": tf.constant(mask)}


def _pretrained():
    """A network with its weights moved off their initial values (as pretraining leaves them)."""
    net = _network()
    batch = _batch()
    net.hidden(batch["items"], batch["behaviors"])
    rng = np.random.default_rng(3)
    net.set_weights([w + rng.normal(scale=0.1, size=w.shape).astype(w.dtype) for w in net.get_weights()])
    return net


@pytest.mark.parametrize("mode", P.MODES)
def test_patched_network_starts_as_the_pretrained_one(mode):
    net = _pretrained()
    batch = _batch()
    want = net.hidden(batch["items"], batch["behaviors"], training=False).numpy()
    model = PatchedClassifier.from_network(net, mode, MULTICLASS, CLASSES, bottleneck=BOTTLENECK)
    got = model.encode(batch["items"], batch["behaviors"], training=False).numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)
    if mode in P.PATCH_MODES:
        # The patches are really in the forward pass: moving them moves the output (not by
        # the same amount in every channel, which the layer norm after a serial patch removes).
        for layer in model.patch_layers:
            layer.up.kernel.assign(tf.random.normal(layer.up.kernel.shape, stddev=0.1, seed=5))
        moved = model.encode(batch["items"], batch["behaviors"], training=False).numpy()
        assert np.abs(moved - want).max() > 1e-3


def _counts(net):
    block = sum(int(np.prod(v.shape)) for v in net.residual_blocks[0].weights)
    head = DIM * CLASSES + CLASSES
    patch = 2 * DIM * BOTTLENECK + DIM + BOTTLENECK
    return {
        P.FINE_CLS: head,
        P.FINE_LAST: head + block + 2 * DIM,  # last block and the final norm
        P.PATCH_SERIAL: head + 2 * len(DILATIONS) * patch,
        P.PATCH_PARALLEL: head + len(DILATIONS) * patch,
    }


@pytest.mark.parametrize("mode", P.MODES)
def test_one_step_changes_exactly_what_the_mode_trains(mode):
    net = _pretrained()
    model = PatchedClassifier.from_network(net, mode, MULTICLASS, CLASSES, bottleneck=BOTTLENECK, pooling=MEAN)
    batch = _batch()
    model(batch)
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    trainable = {id(v) for v in model.trainable_variables}
    before = {id(v): v.numpy().copy() for v in model.weights}
    # Two steps: at the first, a patch's `down` gets no gradient (its `up` is still 0).
    model.train_step(batch)
    model.train_step(batch)
    changed = {id(v) for v in model.weights if not np.array_equal(v.numpy(), before[id(v)])}
    frozen = [v.name for v in model.weights if id(v) not in trainable and id(v) in changed]
    assert not frozen, f"{mode}: frozen weights changed: {frozen}"
    assert changed == trainable, f"{mode}: trainable weights left unchanged: " + ", ".join(
        v.name for v in model.weights if id(v) in trainable - changed)
    pretrained_ids = {id(v) for v in net.embedding.weights + net.final_norm.weights}
    for block in net.residual_blocks:
        pretrained_ids |= {id(v) for v in block.weights}
    total = sum(int(np.prod(v.shape)) for v in model.weights if id(v) in pretrained_ids)
    head = DIM * CLASSES + CLASSES
    expected = dict(_counts(net), **{P.SCRATCH: total + head, P.FINE_ALL: total + head})
    assert model.trained_parameters() == expected[mode]
    # The item bias (the next-item output) is not part of the downstream model.
    assert not {id(v) for v in net.item_bias.weights} & {id(v) for v in model.weights}


def test_patches_are_a_small_share_and_modes_are_checked():
    # One network per classifier: a classifier takes (shares) its network's layers.
    counts = {m: PatchedClassifier.from_network(_pretrained(), m, BINARY, 1, bottleneck=BOTTLENECK)
              for m in P.MODES}
    batch = _batch()
    for model in counts.values():
        model(batch)
    n = {m: model.trained_parameters() for m, model in counts.items()}
    assert n[P.FINE_CLS] < n[P.PATCH_PARALLEL] < n[P.PATCH_SERIAL] < n[P.FINE_ALL]
    assert n[P.FINE_ALL] == n[P.SCRATCH]
    with pytest.raises(ValueError, match="unknown fine-tuning mode"):
        PatchedClassifier.from_network(_pretrained(), "fine_some", BINARY, 1)
    with pytest.raises(ValueError, match="bottleneck"):
        P.make_patches(P.PATCH_SERIAL, 2, DIM, 0)


def test_pretrained_weights_load_from_the_exported_saved_model(tmp_path):
    from training.peterrec import load_pretrained

    net = _pretrained()
    batch = _batch()
    want = net.hidden(batch["items"], batch["behaviors"]).numpy()
    tf.saved_model.save(net, str(tmp_path / "serving"))
    fresh = _network()
    fresh.hidden(batch["items"], batch["behaviors"])
    assert np.abs(fresh.hidden(batch["items"], batch["behaviors"]).numpy() - want).max() > 1e-3
    load_pretrained(fresh, str(tmp_path / "serving"))
    np.testing.assert_allclose(fresh.hidden(batch["items"], batch["behaviors"]).numpy(), want, atol=1e-6)
    with pytest.raises(FileNotFoundError, match="serving model directory"):
        load_pretrained(fresh, str(tmp_path))


def test_fine_tune_keeps_the_best_eval_epoch_and_scores_test_once():
    from training import downstream as DS
    from training.peterrec import fine_tune, predict, score

    def split(seed, n):
        b = _batch(seed, n)
        mask = b["mask"].numpy()
        labels = (b["items"].numpy() % 2 == 0).astype(np.float32) * mask  # learnable: parity of the item
        return DS.LabeledSequences(b["items"].numpy(), b["behaviors"].numpy(), labels, mask, [str(i) for i in range(n)])

    data = DS.DownstreamData("parity", DS.BINARY, (), {"train": split(1, 32), "eval": split(2, 16),
                                                         "test": split(3, 16)})
    model = PatchedClassifier.from_network(_pretrained(), P.PATCH_PARALLEL, BINARY, 1, bottleneck=BOTTLENECK)
    result = fine_tune(model, data, learning_rate=0.01, batch_size=8, max_epochs=4, patience=2, seed=0)
    assert result["eval"] == max(result["eval_history"]) and result["best_epoch"] >= 1
    assert result["eval_history"][result["best_epoch"] - 1] == result["eval"]
    # The model holds the best epoch's weights: scoring eval again gives the reported value.
    assert score(DS.BINARY, predict(model, data.splits["eval"]), data.splits["eval"]) == pytest.approx(result["eval"])
    assert result["test"] == pytest.approx(score(DS.BINARY, predict(model, data.splits["test"]), data.splits["test"]))
    assert result["trained_parameters"] == model.trained_parameters() == DIM + 1 + len(DILATIONS) * (
        2 * DIM * BOTTLENECK + DIM + BOTTLENECK)
