"""Sequence blocks, the sequential families and their training windows on synthetic tensors."""
import numpy as np
import pytest
import tensorflow as tf

from contract import datasets as D
from models.blocks.sequence import BlockPatches, BottleneckPatch, NextItNetBlock, SequenceEmbedding, TransformerLayer
from models.context import synthetic_context as _synthetic_context
from models.families.sequential import CLOZE, NEXT_ITEM, SEQUENCE_TARGET_IDX, last_window
from models.registry import get_family
from training.views import UserView, cloze_mask, sequence_dataset, sequence_windows


def synthetic_context(tasks=("rating",), **kwargs):
    """A context of the shipped MovieLens description with random item features."""
    return _synthetic_context("movielens", tasks, **kwargs)


FAMILIES = ("sasrec", "bert4rec", "nextitnet")
CAUSAL = ("sasrec", "nextitnet")


def _context(max_history=8, num_items=30):
    return synthetic_context(tasks=(D.RETRIEVAL_TASK,), num_items=num_items, max_history=max_history)


def _model(name, **overrides):
    family = get_family(name)
    return family.build(_context(), family.hparams().override({"dim": 16, **overrides}))


def _batch():
    items = tf.constant([[3, 5, 7, 9, 0, 0], [4, 6, 8, 10, 12, 14]], tf.int64)
    behaviors = tf.constant([[1, 2, 3, 1, 0, 0], [3, 3, 2, 1, 1, 2]], tf.int64)
    return items, behaviors


@pytest.mark.parametrize("name", CAUSAL)
def test_causal_families_do_not_read_later_items(name):
    model = _model(name)
    items, behaviors = _batch()
    before = model.hidden(items, behaviors).numpy()
    changed = items.numpy().copy()
    changed[:, 3:] = np.where(changed[:, 3:] > 0, 20, 0)
    after = model.hidden(tf.constant(changed), behaviors).numpy()
    np.testing.assert_allclose(before[:, :3], after[:, :3], atol=1e-5)
    assert np.abs(before[1, 3:] - after[1, 3:]).max() > 1e-3  # later positions do see them


def test_bidirectional_layer_reads_later_items_but_not_padding():
    layer = TransformerLayer(16, heads=2, causal=False, seed=1)
    emb = SequenceEmbedding(30, 5, 16, 8, seed=1)
    items, behaviors = _batch()
    base = layer(emb(items, behaviors), items).numpy()
    later = items.numpy().copy()
    later[0, 3] = 20
    moved = layer(emb(tf.constant(later), behaviors), tf.constant(later)).numpy()
    assert np.abs(base[0, 0] - moved[0, 0]).max() > 1e-4
    np.testing.assert_array_equal(base[0, 4:], 0.0)  # padded positions are zero


def test_behaviors_enter_the_embedding():
    emb = SequenceEmbedding(30, 5, 16, 8, seed=1)
    emb.behavior_embedding.build((None,))
    emb.behavior_embedding.set_weights([np.random.default_rng(0).normal(size=(5, 16)).astype(np.float32)])
    items, behaviors = _batch()
    other = tf.constant(np.where(behaviors.numpy() > 0, 1, 0))
    assert np.abs(emb(items, behaviors).numpy() - emb(items, other).numpy()).max() > 1e-3


def test_last_window_keeps_the_most_recent_items_left_aligned():
    items = tf.constant([[1, 2, 3, 4, 5], [6, 7, 0, 0, 0], [0, 0, 0, 0, 0]], tf.int64)
    kept, behaviors, lengths = last_window(items, items * 10, 3)
    np.testing.assert_array_equal(kept, [[3, 4, 5], [6, 7, 0], [0, 0, 0]])
    np.testing.assert_array_equal(behaviors, [[30, 40, 50], [60, 70, 0], [0, 0, 0]])
    np.testing.assert_array_equal(lengths, [3, 2, 0])


@pytest.mark.parametrize("name", CAUSAL)
def test_query_is_the_last_real_position(name):
    model = _model(name)
    items, behaviors = _batch()
    q, _ = model.query(items, behaviors)
    h = model.hidden(items, behaviors).numpy()
    np.testing.assert_allclose(q.numpy(), np.stack([h[0, 3], h[1, 5]]), atol=1e-5)
    # Only the most recent max_len (8) items are read, wherever the history is padded.
    long = np.arange(1, 13)[None, :]
    q_long, _ = model.query(tf.constant(long), tf.ones_like(tf.constant(long)))
    q_recent, _ = model.query(tf.constant(np.pad(long[:, -8:], [[0, 0], [0, 3]])), tf.ones([1, 11], tf.int64))
    np.testing.assert_allclose(q_long.numpy(), q_recent.numpy(), atol=1e-5)


def test_bert4rec_query_reads_an_appended_mask():
    model = _model("bert4rec")
    items, behaviors = _batch()
    q, _ = model.query(items, behaviors)
    # By hand: the most recent max_len - 1 = 7 items, then the mask row.
    manual_items = np.array([[3, 5, 7, 9, model.mask_row, 0, 0], [4, 6, 8, 10, 12, 14, model.mask_row]])
    manual_behaviors = np.pad(behaviors.numpy(), [[0, 0], [0, 1]])
    manual_behaviors[0, 4] = 0
    h = model.hidden(tf.constant(manual_items), tf.constant(manual_behaviors)).numpy()
    np.testing.assert_allclose(q.numpy(), np.stack([h[0, 4], h[1, 6]]), atol=1e-5)
    assert model.mask_row == model.context.num_items
    # The mask has its own row beyond the catalogue; candidates are the catalogue only.
    assert model.embedding.item_embedding.embeddings.shape[0] == model.context.num_items + 1
    assert model.candidates()[0].shape[0] == model.context.num_items
    # Bidirectional: the mask's state depends on every history item.
    changed = items.numpy().copy()
    changed[1, 0] = 20
    assert np.abs(model.query(tf.constant(changed), behaviors)[0].numpy()[1] - q.numpy()[1]).max() > 1e-4


def test_nextitnet_block_patches():
    x = tf.random.stateless_normal([2, 6, 16], seed=[1, 2])
    block = NextItNetBlock(16, dilation=2, seed=3)
    plain = block(x).numpy()
    assert block.dilations == (2, 4)
    serial = BlockPatches(serial=[BottleneckPatch(16, 4, seed=i) for i in range(2)])
    parallel = BlockPatches(parallel=BottleneckPatch(16, 4, seed=5, skip=False))
    # Patches start as the identity on their branch (serial) or as 0 beside the block
    # (parallel, no skip: the block adds its input once): the pretrained output is unchanged.
    np.testing.assert_allclose(block(x, patches=serial).numpy(), plain, atol=1e-5)
    np.testing.assert_allclose(block(x, patches=parallel).numpy(), plain, atol=1e-5)
    for i, patch in enumerate(list(serial.serial) + [parallel.parallel]):
        patch.up.kernel.assign(tf.random.stateless_normal(patch.up.kernel.shape, seed=[i, 9]))
    assert np.abs(block(x, patches=serial).numpy() - plain).max() > 1e-3
    assert np.abs(block(x, patches=parallel).numpy() - plain).max() > 1e-3
    with pytest.raises(ValueError, match="2 serial patches"):
        block(x, patches=BlockPatches(serial=serial.serial[:1]))
    model = _model("nextitnet")
    with pytest.raises(ValueError, match="one per residual block"):
        model.encode(*_batch(), patches=[None])
    items, behaviors = _batch()
    np.testing.assert_allclose(model.encode(items, behaviors, patches=[None] * 4).numpy(),
                               model.encode(items, behaviors).numpy(), atol=1e-6)


def _view(lengths, seed=0):
    rng = np.random.default_rng(seed)
    items = [rng.integers(1, 29, size=n) for n in lengths]
    return UserView([f"u{i}".encode() for i in range(len(lengths))], [b"x"] * len(lengths), items,
                    [rng.integers(1, 4, size=n) for n in lengths], [np.array([1])] * len(lengths))


def test_next_item_windows_predict_every_item_after_the_first_once():
    view = _view([1, 2, 5, 9, 21])
    windows = sequence_windows(view, 4, NEXT_ITEM)
    targets = {u: [] for u in range(5)}
    for u, start, end, first in windows:
        assert 2 <= end - start <= 5 and first == start + 1
        targets[u] += list(range(start + 1, end))
    assert targets[0] == []  # one item: nothing to predict
    for u, n in enumerate([1, 2, 5, 9, 21]):
        assert sorted(targets[u]) == list(range(1, n))
    batches = list(sequence_dataset(view, windows, 3, seed=7, objective=NEXT_ITEM))
    seen = 0
    for b in batches:
        x, t = b["history_item_idx"].numpy(), b[SEQUENCE_TARGET_IDX].numpy()
        assert x.shape == t.shape
        for row_x, row_t in zip(x, t):
            n = int((row_x > 0).sum())
            assert (row_t[:n] > 0).all() and (row_t[n:] == 0).all()
            # targets are the inputs shifted by one
            np.testing.assert_array_equal(row_x[1:n], row_t[: n - 1])
            seen += n
    assert seen == sum(n - 1 for n in [1, 2, 5, 9, 21])
    again = list(sequence_dataset(view, windows, 3, seed=7, objective=NEXT_ITEM))
    np.testing.assert_array_equal(batches[0]["history_item_idx"], again[0]["history_item_idx"])


def test_overlapping_windows_read_every_target_with_a_full_context_once():
    lengths = [1, 2, 5, 9, 21]
    view = _view(lengths, seed=3)
    windows = sequence_windows(view, 6, NEXT_ITEM, stride=2)
    targets = {u: [] for u in range(len(lengths))}
    for u, start, end, first in windows:
        assert 2 <= end - start <= 7 and start + 1 <= first < end
        # every target but a sequence's first max_len - stride has max_len - stride + 1 items before it
        assert first - start >= min(5, first)
        targets[u] += list(range(first, end))
    for u, n in enumerate(lengths):
        assert sorted(targets[u]) == list(range(1, n))  # each item after the first, once
    assert len(windows) > len(sequence_windows(view, 6, NEXT_ITEM))
    seen = 0
    for b in sequence_dataset(view, windows, 4, seed=2, objective=NEXT_ITEM):
        x, t = b["history_item_idx"].numpy(), b[SEQUENCE_TARGET_IDX].numpy()
        for row_x, row_t in zip(x, t):
            n = int((row_x > 0).sum())
            wanted = row_t[:n] > 0
            # the targets are a suffix of the window, each the input after it
            assert wanted[-1] and (np.diff(wanted.astype(int)) >= 0).all() and (row_t[n:] == 0).all()
            np.testing.assert_array_equal(row_x[1:n][wanted[:-1]], row_t[:n - 1][wanted[:-1]])
            seen += int(wanted.sum())
    assert seen == sum(n - 1 for n in lengths)
    with pytest.raises(ValueError, match="stride"):
        sequence_windows(view, 6, NEXT_ITEM, stride=7)
    with pytest.raises(ValueError, match="next"):
        sequence_windows(view, 6, CLOZE, stride=3)


def test_cloze_windows_mask_items_and_their_behaviors():
    view = _view([3, 10, 25])
    windows = sequence_windows(view, 8, CLOZE)
    covered = {u: [] for u in range(3)}
    for u, start, end, first in windows:
        assert first == start
        covered[u] += list(range(start, end))
    assert all(sorted(covered[u]) == list(range(n)) for u, n in enumerate([3, 10, 25]))
    mask_row = 30
    for b in sequence_dataset(view, windows, 4, seed=1, objective=CLOZE, mask_row=mask_row, mask_prob=0.3):
        x, kinds, t = (b[k].numpy() for k in ("history_item_idx", "history_behavior_idx", SEQUENCE_TARGET_IDX))
        masked = x == mask_row
        assert masked.any(axis=1).all()  # at least one masked item per window
        assert (t[masked] > 0).all() and (t[~masked] == 0).all()
        assert (kinds[masked] == 0).all()
    with pytest.raises(ValueError, match="mask"):
        sequence_dataset(view, windows, 4, seed=1, objective=CLOZE)
    rng = np.random.default_rng(0)
    shares = np.mean([cloze_mask(100, rng, 0.2, 0.0).mean() for _ in range(200)])
    assert shares == pytest.approx(0.2, abs=0.01)
    only_last = cloze_mask(10, rng, 0.2, 1.0)
    assert only_last.tolist() == [False] * 9 + [True]


@pytest.mark.parametrize("name,softmax", [("sasrec", "full"), ("bert4rec", "full"), ("nextitnet", "sampled")])
def test_families_learn_a_deterministic_sequence(name, softmax):
    """Every user walks the items in the same cycle: after a short training the next item
    ranks first for most histories (chance: 1 in 15)."""
    from training.trainer import fit_on_arrays

    cycle = np.arange(1, 13)
    items = [np.roll(cycle, -k)[:n] for k in range(12) for n in (4, 6, 8)]
    view = UserView([b"u"] * 36, [b"x"] * 36, items, [np.ones(len(i), np.int64) for i in items], [np.array([1])] * 36)
    family = get_family(name)
    context = _context(num_items=16)
    probe = family.build(context, family.hparams())
    windows = sequence_windows(view, probe.max_len, probe.objective)
    ds = sequence_dataset(view, windows, 36, seed=0, objective=probe.objective,
                          mask_row=getattr(probe, "mask_row", 0), mask_prob=0.3, last_mask_prob=0.3)
    batches = [{k: v.numpy() for k, v in b.items()} for b in ds]
    model = fit_on_arrays(name, context, {"dim": 32, "softmax": softmax, "learning_rate": 0.01, "dropout": 0.0},
                          batches * 40, epochs=1)
    histories = tf.constant(np.stack([np.roll(cycle, -k)[:5] for k in range(12)]))
    scores = model.score_catalogue(histories, tf.ones_like(histories)).numpy()
    expected = np.array([np.roll(cycle, -k)[5] for k in range(12)])
    assert (scores.argmax(axis=1) == expected).mean() >= 0.5
