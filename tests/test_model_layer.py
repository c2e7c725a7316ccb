"""Unit tests of the model layer on small synthetic tensors: blocks, tasks, every family."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from contract import datasets as D
from contract import features as F
from contract import tasks as T
from models import blocks, registry
from models.base import EXCLUDE_IDX, RETRIEVE, SCORE, TARGET_IDX
from models.context import synthetic_context as _synthetic_context
from models.hparams import HParams, parse_assignments
from models.tasks import FULL_SOFTMAX, SAMPLED_SOFTMAX, PointwiseTask, RetrievalTask, rows_mask
from training.recipes.common import build_optimizer
from training.trainer import fit_on_arrays, make_optimizer

MOVIELENS = D.dataset_spec("movielens")
TAOBAO = D.dataset_spec("taobao")
RATING, LIKED, LOVED, WATCHED = "rating", "liked", "loved", "watched"  # MovieLens's tasks
GENRES = "item_genres_idx"


def synthetic_context(tasks=(RATING,), **kwargs):
    """A MovieLens context (the shipped description) with random item features."""
    return _synthetic_context(MOVIELENS, tasks, **kwargs)


# -- blocks -------------------------------------------------------------------------
def test_history_pooling_ignores_padding_and_scales_by_sqrt_n():
    pool = blocks.HistoryPooling(num_items=10, num_behaviors=5, dim=4, seed=0)
    items = tf.constant([[3, 4, 0, 0]], tf.int64)
    behaviors = tf.constant([[1, 1, 0, 0]], tf.int64)
    q, b = pool(items, behaviors)
    q_short, b_short = pool(items[:, :2], behaviors[:, :2])
    np.testing.assert_allclose(q.numpy(), q_short.numpy(), atol=1e-6)
    emb = pool.item_embedding.embeddings.numpy()
    np.testing.assert_allclose(q.numpy()[0], (emb[3] + emb[4]) / np.sqrt(2), atol=1e-6)
    empty, _ = pool(tf.zeros([1, 3], tf.int64), tf.zeros([1, 3], tf.int64))
    np.testing.assert_allclose(empty.numpy(), 0.0)


def test_history_pooling_attention_reads_items_together_and_ignores_padding():
    pool = blocks.HistoryPooling(num_items=10, num_behaviors=5, dim=4, seed=0, attention_heads=2)
    items = tf.constant([[3, 4, 0, 0], [3, 5, 0, 0]], tf.int64)
    behaviors = tf.constant([[1, 1, 0, 0], [1, 1, 0, 0]], tf.int64)
    q, _ = pool(items, behaviors)
    q_short, _ = pool(items[:, :2], behaviors[:, :2])
    np.testing.assert_allclose(q.numpy(), q_short.numpy(), atol=1e-5)
    # Without attention the pooled pair is the sum of what each item gives alone (/ sqrt 2);
    # with it, each item is read in the light of the other.
    alone = [pool(tf.constant([[i]], tf.int64), tf.constant([[1]], tf.int64))[0].numpy()[0] for i in (3, 4)]
    assert np.abs(q.numpy()[0] * np.sqrt(2) - alone[0] - alone[1]).max() > 1e-4


def test_history_pooling_behavior_weight_changes_the_query():
    pool = blocks.HistoryPooling(num_items=10, num_behaviors=5, dim=4, seed=0)
    items = tf.constant([[3]], tf.int64)
    pool(items, tf.constant([[1]], tf.int64))  # builds the tables
    pool.behavior_weight.embeddings.assign(tf.constant([[1.0], [1.0], [-1.0], [1.0], [1.0]]))
    liked, _ = pool(items, tf.constant([[1]], tf.int64))
    disliked, _ = pool(items, tf.constant([[2]], tf.int64))
    np.testing.assert_allclose(liked.numpy(), -disliked.numpy(), atol=1e-6)


def test_mlp_and_item_encoder_shapes():
    ctx = synthetic_context()
    mlp = blocks.MLP((8, 3), seed=1)
    assert mlp(tf.ones([2, 5])).shape == (2, 3)
    enc = blocks.ItemEncoder(ctx.num_items, 6, (8,), features=ctx.item_features, statistics=(F.ITEM_POPULARITY_MM,),
                             item_table=ctx.item_table, seed=0)
    assert enc.catalogue().shape == (ctx.num_items, 6)
    # the catalogue row of an item equals encoding it with its own table features
    rows = tf.constant([2, 5], tf.int64)
    feats = {n: tf.gather(tf.constant(ctx.item_table[n]), rows) for n in (GENRES, "item_year_z", F.ITEM_POPULARITY_MM)}
    np.testing.assert_allclose(enc(rows, feats).numpy(), tf.gather(enc.catalogue(), rows).numpy(), atol=1e-5)


def test_rows_mask_marks_each_rows_items():
    mask = rows_mask(tf.constant([[1, 3], [2, 0]], tf.int64), 5).numpy()
    assert mask.tolist() == [[False, True, False, True, False], [True, False, True, False, False]]


# -- tasks --------------------------------------------------------------------------
def test_pointwise_task_loss_only_where_the_condition_holds():
    task = PointwiseTask(MOVIELENS.task(RATING))
    labels = tf.constant([4.0, 0.0])
    logits = tf.constant([3.0, 100.0])
    loss = task(labels, logits, mask=tf.constant([1, 0]))
    assert float(loss) == pytest.approx(1.0)
    assert float(task.metric.result()) == pytest.approx(1.0)


def test_binary_task_is_cross_entropy_and_links_through_sigmoid():
    task = PointwiseTask(MOVIELENS.task(LIKED))
    loss = task(tf.constant([1.0, 0.0]), tf.constant([0.0, 0.0]))
    assert float(loss) == pytest.approx(np.log(2.0), rel=1e-5)
    assert float(task.link(tf.constant(0.0))) == pytest.approx(0.5)


def test_retrieval_full_softmax_equals_cross_entropy_and_excludes_own_items():
    task = RetrievalTask(MOVIELENS.task(D.RETRIEVAL_TASK), FULL_SOFTMAX)
    q = tf.constant([[1.0, 0.0]])
    cands = tf.constant([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    bias = tf.zeros([4])
    loss = float(task(q, cands, bias, tf.constant([1])))
    logits = np.array([1.0, 2.0, 0.0])  # rows 1..3 (row 0 is padding)
    assert loss == pytest.approx(-(logits[0] - np.log(np.exp(logits).sum())), rel=1e-5)
    excluded = float(task(q, cands, bias, tf.constant([1]), exclude=tf.constant([[2, 1]])))
    logits = np.array([1.0, 0.0])  # row 2 excluded; the target itself never is
    assert excluded == pytest.approx(-(logits[0] - np.log(np.exp(logits).sum())), rel=1e-5)


def test_sampled_softmax_corrects_by_log_q():
    task = RetrievalTask(MOVIELENS.task(D.RETRIEVAL_TASK), SAMPLED_SOFTMAX)
    q = tf.constant([[1.0], [1.0]])
    cands = tf.constant([[0.0], [1.0], [1.0]])
    plain = float(task(q, cands, tf.zeros([3]), tf.constant([1, 2])))
    assert plain == pytest.approx(np.log(2.0), rel=1e-5)
    corrected = float(task(q, cands, tf.zeros([3]), tf.constant([1, 2]), log_q=tf.math.log([1.0, 0.9, 0.1])))
    assert corrected != pytest.approx(plain)


# -- hyperparameters and registry -----------------------------------------------------
def test_hparams_override_converts_types_and_rejects_unknown_names():
    family = registry.get_family("mf_dnn")
    hp = family.hparams().override({"dim": "16", "hidden": "8,4", "user_id": "false", "l2": 0.5})
    assert (hp.dim, hp.hidden, hp.user_id, hp.l2) == (16, (8, 4), False, 0.5)
    with pytest.raises(ValueError, match="no hyperparameter 'dimm'.*dim"):
        family.hparams().override({"dimm": 3})
    with pytest.raises(ValueError, match="not a valid int"):
        family.hparams().override({"dim": "x"})
    assert parse_assignments(["mf.dim=8", "two_tower.softmax=sampled"]) == {
        "mf": {"dim": "8"}, "two_tower": {"softmax": "sampled"}}
    with pytest.raises(ValueError, match="FAMILY.NAME=VALUE"):
        parse_assignments(["dim=8"])
    assert "learning_rate=" in "\n".join(HParams.describe())


def _row_moved_after_a_batch_without_it(optimizer_name: str) -> bool:
    """Two steps on an embedding table: rows 0 and 1 in the first batch, only row 0 in
    the second. Does row 1 move in the second step?"""
    table = tf.Variable(tf.ones((3, 2)))
    optimizer = make_optimizer(registry.get_family("mf").hparams().override(
        {"optimizer": optimizer_name, "learning_rate": 0.1}))
    for rows in ([0, 1], [0]):
        before = table.numpy()[1].copy()
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.gather(table, rows) ** 2)
        optimizer.apply_gradients([(tape.gradient(loss, table), table)])
    return not np.allclose(before, table.numpy()[1])


def test_optimizer_is_a_hyperparameter_and_rmsprop_leaves_rows_outside_the_batch_alone():
    assert not _row_moved_after_a_batch_without_it("rmsprop")
    assert _row_moved_after_a_batch_without_it("adam")  # Adam's momentum keeps moving it
    with pytest.raises(ValueError, match="optimizer must be one of adam, rmsprop, got 'sgd'"):
        registry.get_family("mf").hparams().override({"optimizer": "sgd"})
    with pytest.raises(ValueError, match="warm_learning_rate_scale must be > 0, got 0.0"):
        registry.get_family("mf").hparams().override({"warm_learning_rate_scale": "0"})


def test_every_family_declares_tasks_the_datasets_have_and_serves_something():
    for family in registry.FAMILIES.values():
        tasks = family.task_specs(MOVIELENS)
        assert tasks and family.capabilities
        if RETRIEVE in family.capabilities:
            assert family.view == F.USER_VIEW and all(t.kind == T.RETRIEVAL for t in tasks)
        if SCORE in family.capabilities:  # scores the examples it trains on
            assert family.model.score_view == family.view
    with pytest.raises(ValueError, match="cannot train on dataset 'taobao'.*no regression task"):
        registry.get_family("mf").task_specs(TAOBAO)
    # Rating families take the first regression task, mf_dnn_liked the first binary one
    # that is not the implicit label: by kind, not by name.
    assert [t.name for t in registry.get_family("mf").task_specs(MOVIELENS)] == [RATING]
    assert [t.name for t in registry.get_family("mf_dnn_liked").task_specs(MOVIELENS)] == [LIKED]
    assert [t.name for t in registry.get_family("mf_dnn_liked").task_specs(TAOBAO)] == ["cart"]


# -- families learn something -----------------------------------------------------------
def _rating_batches(ctx, n=2048, batch=128, seed=0):
    """Ratings from a low-rank user x item structure plus item bias; histories of liked items."""
    rng = np.random.default_rng(seed)
    users = rng.integers(1, ctx.num_users - 1, size=n)
    items = rng.integers(1, ctx.num_items - 1, size=n)
    u_f = rng.normal(size=(ctx.num_users, 2))
    i_f = rng.normal(size=(ctx.num_items, 2))
    rating = np.clip(3.5 + (u_f[users] * i_f[items]).sum(1) + 0.3 * i_f[items, 0], 0.5, 5.0).astype(np.float32)
    hist = rng.integers(1, ctx.num_items - 1, size=(n, 6))
    table = {k: v[items] for k, v in ctx.item_table.items()}
    data = {F.USER_IDX: users, F.ITEM_IDX: items, RATING: rating, LIKED: (rating >= 4).astype(np.int64),
            WATCHED: np.ones(n, np.int64), F.HISTORY_ITEM_IDX: hist,
            F.HISTORY_BEHAVIOR_IDX: np.full((n, 6), 3), **table}
    return [{k: v[s:s + batch] for k, v in data.items()} for s in range(0, n, batch)], data


def _fit_with_the_optimizer(family_name, overrides, prebuild):
    """Builds a family, compiles, optionally pre-builds its optimizer, fits 2 epochs; returns
    whether it pre-built, how often the train step was traced, and the trained weights."""
    ctx = synthetic_context(num_users=40, num_items=30)
    batches, _ = _rating_batches(ctx)
    keras.utils.set_random_seed(7)
    family = registry.get_family(family_name)
    model = family.build(ctx, family.hparams().override(overrides))
    model({k: tf.constant(v) for k, v in batches[0].items()}, training=False)
    model.compile(optimizer=make_optimizer(model.hparams))
    built = build_optimizer(model) if prebuild else False
    signature = {k: tf.TensorSpec((None,) + np.shape(v)[1:], tf.as_dtype(np.asarray(v).dtype))
                 for k, v in batches[0].items()}
    ds = tf.data.Dataset.from_generator(lambda: iter(batches), output_signature=signature)
    model.fit(ds, epochs=2, verbose=0)
    return built, model.train_function.experimental_get_tracing_count(), [w.numpy() for w in model.weights]


def test_a_prebuilt_optimizer_traces_the_train_step_once_and_trains_to_the_same_weights():
    built, traces, weights = _fit_with_the_optimizer("mf", {"dim": 4}, prebuild=True)
    _, keras_traces, keras_weights = _fit_with_the_optimizer("mf", {"dim": 4}, prebuild=False)
    assert built and (traces, keras_traces) == (1, 2)
    assert len(weights) == len(keras_weights)
    for ours, theirs in zip(weights, keras_weights):
        np.testing.assert_array_equal(ours, theirs)
    # A model drawing dropout keeps Keras's order (its masks' seeds follow the traces).
    built, traces, _ = _fit_with_the_optimizer("mf_history", {"dim": 4, "history_dropout": 0.2}, prebuild=True)
    assert not built and traces == 2


def test_a_setup_builds_its_model_on_an_eval_batch_and_copes_with_an_empty_eval_split():
    """keras_setup builds a pointwise model with one eval batch (then its optimizer); with no
    eval batch at all it leaves the model to be built by fit."""
    import types

    from training import distribute
    from training.recipes import common

    ctx = synthetic_context(num_users=40, num_items=30)
    batches, _ = _rating_batches(ctx)
    family = registry.get_family("mf")
    job = types.SimpleNamespace(config=types.SimpleNamespace(strategy=distribute.DEFAULT), warm_from=None,
                                hparams=family.hparams().override({"dim": 4}))
    for eval_batches, built in ((batches[:1], True), ([], False)):
        model = family.build(ctx, job.hparams)
        signature = {k: tf.TensorSpec((None,) + np.shape(v)[1:], tf.as_dtype(np.asarray(v).dtype))
                     for k, v in batches[0].items()}
        ds = tf.data.Dataset.from_generator(lambda b=eval_batches: iter(b), output_signature=signature)
        setup = common.keras_setup(job, lambda m=model, d=ds: (m, {"eval_batches": d}, None))
        slots = len(setup.model.optimizer.variables) - 1  # beside its step count
        assert setup.model.built == built and (slots == len(setup.model.trainable_variables) if built else slots <= 0)


@pytest.mark.parametrize("family", ["mf", "mf_history", "mf_dnn"])
def test_rating_families_beat_the_global_mean(family):
    ctx = synthetic_context(num_users=40, num_items=30)
    batches, data = _rating_batches(ctx)
    model = fit_on_arrays(family, ctx, {"dim": 4, "l2": 0.0, "learning_rate": 0.03}, batches, epochs=15)
    pred = model({k: tf.constant(v) for k, v in data.items()})[RATING].numpy()
    rmse = np.sqrt(np.mean((pred - data[RATING]) ** 2))
    baseline = np.std(data[RATING])
    assert rmse < 0.8 * baseline, (rmse, baseline)


def test_liked_family_outputs_probabilities_that_rank_liked_first():
    ctx = synthetic_context(tasks=(LIKED,), num_users=40, num_items=30)
    batches, data = _rating_batches(ctx)
    model = fit_on_arrays("mf_dnn_liked", ctx, {"dim": 4, "l2": 0.0, "learning_rate": 0.03}, batches, epochs=10)
    pred = model({k: tf.constant(v) for k, v in data.items()})[LIKED].numpy()
    assert ((pred >= 0) & (pred <= 1)).all()
    from evaluation.definitions import binary_auc
    assert binary_auc(pred, data[LIKED]) > 0.75


def test_two_tower_retrieves_co_occurring_items_better_than_popularity():
    # Two item clusters (rows 1-10, 11-20); a user's history and target share a cluster.
    ctx = synthetic_context(tasks=(D.RETRIEVAL_TASK,), num_items=22)
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(30):
        cluster = rng.integers(0, 2, size=64)
        hist = 1 + cluster[:, None] * 10 + rng.integers(0, 10, size=(64, 5))
        target = 1 + cluster * 10 + rng.integers(0, 10, size=64)
        batches.append({F.HISTORY_ITEM_IDX: hist, F.HISTORY_BEHAVIOR_IDX: np.full((64, 5), 3),
                        TARGET_IDX: target, EXCLUDE_IDX: hist})
    model = fit_on_arrays("two_tower", ctx, {"dim": 8, "learning_rate": 0.05}, batches, epochs=3)
    scores = model.score_catalogue(tf.constant([[1, 2, 3]]), tf.constant([[3, 3, 3]])).numpy()[0]
    top = np.argsort(-scores[1:21])[:10] + 1
    assert (top <= 10).mean() >= 0.9
    sampled = fit_on_arrays("two_tower", ctx, {"dim": 8, "learning_rate": 0.05, "softmax": "sampled"}, batches, epochs=3)
    scores = sampled.score_catalogue(tf.constant([[11, 12]]), tf.constant([[3, 3]])).numpy()[0]
    assert (np.argsort(-scores[1:21])[:10] + 1 > 10).mean() >= 0.9


def test_two_tower_members_train_as_separate_models_and_serve_the_sum_of_their_scores():
    import dataclasses

    family = registry.FAMILIES["two_tower"]
    ctx = synthetic_context(tasks=(D.RETRIEVAL_TASK,), num_items=22)
    rng = np.random.default_rng(1)
    hist = rng.integers(1, 21, size=(8, 4))
    batch = {F.HISTORY_ITEM_IDX: tf.constant(hist), F.HISTORY_BEHAVIOR_IDX: tf.constant(np.full((8, 4), 3)),
             TARGET_IDX: tf.constant(rng.integers(1, 21, size=8)), EXCLUDE_IDX: tf.constant(hist)}
    model = family.build(ctx, family.hparams().override({"dim": 4, "members": 2, "l2": 0.0}))
    single = family.build(ctx, family.hparams(dim=4, l2=0.0))
    scores = model.score_catalogue(batch[F.HISTORY_ITEM_IDX], batch[F.HISTORY_BEHAVIOR_IDX]).numpy()
    members = model.members()
    assert len(members) == 2 and members[0][2] is not members[1][2]
    per_member = []
    for q, (_, _, encoder, bias) in zip(model.member_queries(batch[F.HISTORY_ITEM_IDX], batch[F.HISTORY_BEHAVIOR_IDX]),
                                        members):
        per_member.append(tf.matmul(q, encoder.catalogue(), transpose_b=True).numpy() + bias.all().numpy()[None])
        assert q.shape[-1] == 4
    np.testing.assert_allclose(scores, per_member[0] + per_member[1], rtol=1e-5, atol=1e-5)
    assert not np.allclose(per_member[0], per_member[1])  # members start from different weights
    # The loss is each member's own softmax, so member 1's weights get no gradient from member 0's scores.
    loss = model.retrieval_loss(batch, training=True)
    member_loss = [model.retrieval_terms(batch, q, m[2].catalogue(), m[3].all())
                   for q, m in zip(model.member_queries(batch[F.HISTORY_ITEM_IDX], batch[F.HISTORY_BEHAVIOR_IDX]),
                                   members)]
    np.testing.assert_allclose(loss.numpy(), sum(v.numpy() for v in member_loss), rtol=1e-5)
    with tf.GradientTape() as tape:
        first = model.retrieval_terms(batch, model.member_queries(batch[F.HISTORY_ITEM_IDX],
                                                                  batch[F.HISTORY_BEHAVIOR_IDX])[0],
                                      members[0][2].catalogue(), members[0][3].all())
    second = members[1][0].trainable_variables + members[1][2].trainable_variables
    assert all(g is None for g in tape.gradient(first, second))
    # Two members are two one-model families' weights.
    single.score_catalogue(batch[F.HISTORY_ITEM_IDX], batch[F.HISTORY_BEHAVIOR_IDX])
    assert sorted(tuple(v.shape) for v in model.trainable_variables) == sorted(
        2 * [tuple(v.shape) for v in single.trainable_variables])
    # The Trainer's ensemble: one-member models trained apart, assembled side by side.
    apart = [family.build(dataclasses.replace(ctx, seed=s), family.hparams(dim=4)) for s in (5, 6)]
    alone = [m.score_catalogue(batch[F.HISTORY_ITEM_IDX], batch[F.HISTORY_BEHAVIOR_IDX]).numpy() for m in apart]
    model.assemble(apart)
    np.testing.assert_allclose(model.score_catalogue(batch[F.HISTORY_ITEM_IDX], batch[F.HISTORY_BEHAVIOR_IDX]).numpy(),
                               alone[0] + alone[1], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="assembles 2 one-member models, got 1"):
        model.assemble(apart[:1])
    with pytest.raises(ValueError, match="members must be >= 1"):
        family.hparams().override({"members": 0})


def test_two_tower_item_metadata_without_an_item_table_is_an_error_not_a_silent_switch_off():
    import dataclasses
    family = registry.FAMILIES["two_tower"]
    ctx = dataclasses.replace(synthetic_context(tasks=(D.RETRIEVAL_TASK,)), item_table=None)
    with pytest.raises(ValueError, match="item_metadata=true needs the item table"):
        family.build(ctx, family.hparams(item_metadata=True))
    family.build(ctx, family.hparams(item_metadata=False))  # the default trains on the user view


def test_retrieval_target_behaviors_are_the_ones_the_hash_split_keeps():
    # The hash split's eval/test targets are the interactions whose history behavior is in
    # the retrieval task's target_behaviors (MovieLens: liked, a rating >= 4).
    spec = MOVIELENS
    for rating in np.arange(0.5, 5.01, 0.5):
        assert (rating >= 4) == (spec.description.rating_behavior(rating) in spec.retrieval_targets("hash"))
    assert spec.retrieval_targets("by_day") == () and TAOBAO.retrieval_targets("hash") == ()


def test_retrieval_training_targets_default_to_the_evaluated_behaviors():
    from training.trainer import target_behavior_ids
    family = registry.FAMILIES["two_tower"]
    liked = MOVIELENS.behaviors.index("liked") + 1
    assert target_behavior_ids("two_tower", MOVIELENS, family.hparams(), "hash") == [liked]
    assert target_behavior_ids("two_tower", MOVIELENS, family.hparams(), "leave_last_two_out") == []
    assert target_behavior_ids("two_tower", TAOBAO, family.hparams(), "by_day") == []
    every = family.hparams(target_behaviors=MOVIELENS.behaviors)
    assert target_behavior_ids("two_tower", MOVIELENS, every, "hash") == [1, 2, 3]
    with pytest.raises(ValueError, match=r"target_behaviors \['buy'\] are not behaviors of dataset 'movielens'"):
        target_behavior_ids("two_tower", MOVIELENS, family.hparams(target_behaviors=("buy",)), "hash")


def test_retrieval_batches_leave_the_target_out_of_the_query():
    from training.views import UserView, retrieval_dataset, retrieval_pairs

    history = np.arange(1, 11)
    view = UserView([b"u"], [b"light"], [history], [np.array([1, 2] * 5)], [history])
    assert len(retrieval_pairs(view, [2])) == 5  # only behavior-2 positions are targets
    batch = next(iter(retrieval_dataset(view, retrieval_pairs(view), 100, 4, seed=0)))
    for target, query, own in zip(batch[TARGET_IDX].numpy(), batch[F.HISTORY_ITEM_IDX].numpy(),
                                  batch[EXCLUDE_IDX].numpy()):
        assert list(query) == [x for x in history if x != target][-4:]
        assert list(own) == list(history)


def test_user_balance_draws_every_user_equally_often_at_power_one():
    from training.views import UserView, retrieval_dataset, retrieval_pairs, user_balanced_probabilities

    heavy, light = np.arange(1, 91), np.arange(91, 101)
    view = UserView([b"h", b"l"], [b"x", b"x"], [heavy, light], [np.ones(90, np.int64), np.ones(10, np.int64)],
                    [heavy, light])
    pairs = retrieval_pairs(view)
    assert user_balanced_probabilities(pairs, 0.0) is None
    p = user_balanced_probabilities(pairs, 1.0)
    assert p[pairs[:, 0] == 0].sum() == pytest.approx(0.5) and p[pairs[:, 0] == 1].sum() == pytest.approx(0.5)
    half = user_balanced_probabilities(pairs, 0.5)
    assert half[pairs[:, 0] == 1].sum() == pytest.approx(10 / np.sqrt(10) / (10 / np.sqrt(10) + 90 / np.sqrt(90)))
    with pytest.raises(ValueError, match="power"):
        user_balanced_probabilities(pairs, 1.5)

    def light_share(balance):
        targets = np.concatenate([b[TARGET_IDX].numpy() for _ in range(3)
                                  for b in retrieval_dataset(view, pairs, 25, 4, seed=0, user_balance=balance)])
        assert len(targets) == 3 * len(pairs)  # an epoch is still len(pairs) targets
        return np.isin(targets, light).mean()

    assert light_share(0.0) == pytest.approx(0.1)  # every target once per epoch
    assert 0.4 < light_share(1.0) < 0.6


MULTITASK = ["single_task", "shared_bottom", "mmoe", "ple", "nmtr"]


def _multitask_batches(ctx, n=2048, batch=256, seed=1):
    """Watched / liked / loved / rating from a latent user x item affinity; negatives unwatched."""
    batches, data = _rating_batches(ctx, n=n, batch=batch, seed=seed)
    rng = np.random.default_rng(seed)
    watched = (rng.random(n) < 0.7).astype(np.int64)
    data[WATCHED] = watched
    data[RATING] = np.where(watched == 1, data[RATING], 0.0).astype(np.float32)
    data[LIKED] = ((data[RATING] >= 4) & (watched == 1)).astype(np.int64)
    data[LOVED] = ((data[RATING] >= 4.5) & (watched == 1)).astype(np.int64)
    return [{k: v[s:s + batch] for k, v in data.items()} for s in range(0, n, batch)], data


@pytest.mark.parametrize("family", MULTITASK)
def test_multitask_families_predict_every_task_and_learn_liked(family):
    tasks = (RATING, LIKED, LOVED, WATCHED)
    ctx = synthetic_context(tasks=tasks, num_users=40, num_items=30)
    batches, data = _multitask_batches(ctx, n=1536, batch=256)
    model = fit_on_arrays(family, ctx, {"dim": 4, "bottom": "16", "tower": "8", "learning_rate": 0.03}, batches,
                          epochs=5)
    out = model({k: tf.constant(v) for k, v in data.items()})
    assert set(out) == set(tasks)
    from evaluation.definitions import binary_auc
    watched = data[WATCHED] == 1
    assert binary_auc(out[LIKED].numpy()[watched], data[LIKED][watched]) > 0.75
    for name in (LIKED, LOVED, WATCHED):
        assert ((out[name].numpy() >= 0) & (out[name].numpy() <= 1)).all()


@pytest.mark.parametrize("family,experts", [("mmoe", 4), ("ple", 3), ("shared_bottom", 0)])
def test_gate_weights_are_distributions_per_task(family, experts):
    ctx = synthetic_context(tasks=(LIKED, LOVED), num_users=20, num_items=30)
    batches, data = _multitask_batches(ctx, n=256)
    model = fit_on_arrays(family, ctx, {"dim": 4, "bottom": "8"}, batches, epochs=1)
    gates = model.gate_weights({k: tf.constant(v[:32]) for k, v in data.items()})
    if not experts:
        assert gates == {}
        return
    assert set(gates) == {LIKED, LOVED}
    for weights in gates.values():
        assert weights.shape == (32, experts)
        np.testing.assert_allclose(weights.numpy().sum(axis=1), 1.0, atol=1e-5)


def test_nmtr_cascade_builds_each_logit_on_its_parent():
    ctx = synthetic_context(tasks=(WATCHED, LIKED, LOVED), num_users=20, num_items=30)
    model = registry.get_family("nmtr").build(ctx, registry.get_family("nmtr").hparams())
    assert model.parents == {WATCHED: None, LIKED: WATCHED, LOVED: LIKED}
    logits = {WATCHED: tf.constant([1.0]), LIKED: tf.constant([2.0]), LOVED: tf.constant([3.0])}
    combined = model.combine(logits)
    assert [float(combined[t][0]) for t in (WATCHED, LIKED, LOVED)] == [1.0, 3.0, 6.0]
    # Without watched (no negatives), liked starts the funnel.
    ctx = synthetic_context(tasks=(LIKED, LOVED, RATING), num_users=20, num_items=30)
    model = registry.get_family("nmtr").build(ctx, registry.get_family("nmtr").hparams())
    assert model.parents == {LIKED: None, LOVED: LIKED, RATING: None}


def test_uncertainty_weighting_learns_task_weights():
    ctx = synthetic_context(tasks=(RATING, LIKED), num_users=40, num_items=30)
    batches, _ = _multitask_batches(ctx, n=1024)
    model = fit_on_arrays("shared_bottom", ctx, {"dim": 4, "uncertainty": "true", "learning_rate": 0.05}, batches,
                          epochs=3)
    weights = model.task_weights()
    assert set(weights) == {RATING, LIKED} and weights[RATING] != pytest.approx(1.0)
    fixed = fit_on_arrays("shared_bottom", ctx, {"dim": 4, "loss_weights": "2,0.5"}, batches[:1])
    assert fixed.task_weights() == {RATING: 2.0, LIKED: 0.5}


def test_similar_blends_the_vector_cosine_with_the_category_set_cosine():
    """similar_category_weight w: scores = (cos(vectors) + w cos(category sets)) / (1 + w)."""
    ctx = synthetic_context(num_items=12, vocabulary_rows=6)
    genre_idx = ctx.item_table[GENRES]
    family = registry.get_family("mf")
    plain = family.build(ctx, family.hparams().override({"dim": 4, "similar_category_weight": 0}))
    vectors = plain.item_vectors().numpy()
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    np.testing.assert_allclose(plain.similarity_vectors().numpy(), unit, atol=1e-6)

    model = family.build(ctx, family.hparams().override({"dim": 4, "similar_category_weight": "0.5"}))
    model.item_embedding.embeddings.assign(vectors)  # same learned vectors, blended
    sims = model.similarity_vectors().numpy()
    multi_hot = np.zeros((12, 6))
    for row, ids in enumerate(genre_idx):
        multi_hot[row, ids[ids > 0]] = 1.0
    g = multi_hot / np.maximum(np.linalg.norm(multi_hot, axis=1, keepdims=True), 1e-12)
    expected = (unit @ unit.T + 0.5 * g @ g.T) / 1.5
    np.testing.assert_allclose(sims @ sims.T, expected, atol=1e-5)
    assert np.all(sims @ sims.T <= 1.0 + 1e-5)


# -- features by type (a synthetic description with every type) ---------------------------
from typed_description import TYPED  # noqa: E402

TYPED_SPEC = D.dataset_spec(TYPED)


def _typed_context(**kwargs):
    return _synthetic_context(TYPED_SPEC, ("stars",), num_items=12, vocabulary_rows=7, **kwargs)


def _typed_batch(ctx, n=16, seed=3):
    """Item features from the context's table, user features and histories drawn at random."""
    rng = np.random.default_rng(seed)
    items = rng.integers(1, ctx.num_items, size=n)
    batch = {name: value[items] for name, value in ctx.item_table.items()}
    for f in ctx.user_features:
        if f.text:
            batch[f.name] = rng.integers(0, f.rows, size=(n, f.feature.max_documents, f.feature.max_tokens))
        elif f.rows:
            batch[f.name] = rng.integers(0, f.rows, size=n)
        else:
            batch[f.name] = rng.normal(size=n).astype(np.float32)
    batch.update({F.USER_IDX: rng.integers(1, ctx.num_users, size=n), F.ITEM_IDX: items,
                  F.HISTORY_ITEM_IDX: rng.integers(1, ctx.num_items, size=(n, 4)),
                  F.HISTORY_BEHAVIOR_IDX: np.full((n, 4), 2)})
    return batch


def test_context_carries_the_descriptions_features_by_type_with_their_vocabulary_rows():
    ctx = _typed_context()
    by_name = {f.name: f for f in ctx.features}
    assert [f.name for f in ctx.item_features] == [
        "item_brand_idx", "item_shape_idx", "item_tags_idx", "item_price_z", "item_weight_mm", "item_sales_log",
        "item_size_bucket", "item_released_mm", "item_title_tokens", "item_review_docs_tokens"]
    assert [f.name for f in ctx.user_features] == ["user_country_idx", "user_age_z", "user_review_docs_tokens"]
    assert by_name["item_brand_idx"].one_hot and not by_name["item_brand_idx"].embedded
    assert by_name["item_size_bucket"].embedded and by_name["item_size_bucket"].rows == 4  # 2 boundaries + 2
    assert by_name["item_price_z"].number and by_name["item_released_mm"].number
    assert by_name["item_review_docs_tokens"].text and by_name["item_tags_idx"].rows == 7
    assert ctx.item_statistics == (F.ITEM_AVG_RATING_MM, F.ITEM_POPULARITY_MM)
    assert synthetic_context().item_statistics == (F.ITEM_AVG_RATING_MM, F.ITEM_POPULARITY_MM)
    taobao = _synthetic_context(TAOBAO, ("viewed",))
    assert taobao.item_statistics == (F.ITEM_POPULARITY_MM,)  # no rating, no average rating
    assert [f.name for f in taobao.item_features] == ["item_category_idx"]


def test_item_encoder_reads_every_declared_item_feature_and_each_one_moves_the_vector():
    ctx = _typed_context()
    enc = blocks.ItemEncoder.for_context(ctx, 5, (8,), seed=0)
    assert enc.catalogue().shape == (ctx.num_items, 5)
    assert set(enc.typed.names) == {f.name for f in ctx.item_features} | set(ctx.item_statistics)
    # The MLP's input: id, brand one-hot (rows - 1), shape / tags / size embeddings, the six
    # numbers (2 statistics + price, weight, sales, released), title and documents encoders.
    width = 5 + (7 - 1) + 3 * 5 + 6 + 2 * 5
    assert enc.mlp.dense[0].kernel.shape[0] == width
    batch = {k: tf.constant(v) for k, v in _typed_batch(ctx).items()}
    base = enc(batch[F.ITEM_IDX], batch).numpy()
    for f in ctx.item_features:
        changed = dict(batch)
        value = batch[f.name].numpy()
        changed[f.name] = tf.constant(value + 1.0 if value.dtype.kind == "f" else (value + 1) % f.rows)
        assert not np.allclose(enc(batch[F.ITEM_IDX], changed).numpy(), base), f.name
    # text=False: the text feature and the documents are not read.
    plain = blocks.ItemEncoder.for_context(ctx, 5, (8,), seed=0, text=False)
    assert not {"item_title_tokens", "item_review_docs_tokens"} & set(plain.typed.names)


def test_text_encoder_is_a_masked_mean_of_token_vectors_over_tokens_and_documents():
    enc = blocks.TextEncoder(rows=6, dim=3, seed=1)
    table = enc.embedding.embeddings.numpy()
    tokens = tf.constant([[2, 4, 0], [0, 0, 0]], tf.int64)
    np.testing.assert_allclose(enc(tokens).numpy(), [(table[2] + table[4]) / 2, np.zeros(3)], atol=1e-6)
    docs = tf.constant([[[2, 0], [0, 0], [4, 4]]], tf.int64)  # the empty document is left out
    np.testing.assert_allclose(enc(docs).numpy()[0], (table[2] + table[4]) / 2, atol=1e-6)


def test_a_missing_categorical_value_reads_as_zero_not_as_the_padding_rows_vector():
    ctx = _typed_context()
    typed = blocks.TypedFeatures([f for f in ctx.item_features if f.name == "item_shape_idx"], 4, seed=0)
    (part,) = typed({"item_shape_idx": tf.constant([0, 2], tf.int64)})
    np.testing.assert_allclose(part.numpy()[0], 0.0)
    np.testing.assert_allclose(part.numpy()[1], typed.embeddings["item_shape_idx"].embeddings.numpy()[2], atol=1e-6)


def test_user_features_join_the_query_when_the_description_declares_some():
    ctx = _typed_context()
    query = blocks.HistoryQuery(ctx, 4, user_id=True)
    assert query.user_features is not None
    assert set(query.user_features.typed.names) == {f.name for f in ctx.user_features}
    batch = {k: tf.constant(v) for k, v in _typed_batch(ctx).items()}
    q, _ = query(batch)
    for name in ("user_country_idx", "user_age_z", "user_review_docs_tokens"):
        value = batch[name].numpy()
        moved = value + 1.0 if value.dtype.kind == "f" else (value + 1) % 7
        assert not np.allclose(query({**batch, name: tf.constant(moved)})[0].numpy(), q.numpy()), name
    assert blocks.HistoryQuery(synthetic_context(), 4, user_id=True).user_features is None  # MovieLens: none


@pytest.mark.parametrize("family,tasks", [("mf_dnn", ("stars",)), ("mmoe", ("stars", "good", "helpful"))])
def test_families_train_on_a_description_with_every_feature_type(family, tasks):
    ctx = _synthetic_context(TYPED_SPEC, tasks, num_items=12, vocabulary_rows=7)
    rng = np.random.default_rng(0)
    batches = []
    for seed in range(4):
        batch = _typed_batch(ctx, n=32, seed=seed)
        batch.update(stars=rng.uniform(1, 5, 32).astype(np.float32), good=rng.integers(0, 2, 32),
                     helpful=rng.integers(0, 2, 32), seen=np.ones(32, np.int64))
        batches.append(batch)
    model = fit_on_arrays(family, ctx, {"dim": 4}, batches, epochs=1)
    out = model({k: tf.constant(v) for k, v in batches[0].items()})
    assert set(out) == set(tasks) and all(np.isfinite(v.numpy()).all() for v in out.values())


def test_movielens_item_encoder_keeps_its_seeds_and_input_order():
    """MovieLens's numbers stay those of 0c3ec41: [id (seed+1), genres (seed+2), (avg rating,
    popularity, year)] into an MLP at seed+3."""
    ctx = synthetic_context()
    enc = blocks.ItemEncoder.for_context(ctx, 4, (8,), seed=10)
    assert enc.typed.names == (GENRES, F.ITEM_AVG_RATING_MM, F.ITEM_POPULARITY_MM, "item_year_z")
    np.testing.assert_array_equal(enc.id_embedding.embeddings.numpy(),
                                  blocks.embedding(ctx.num_items, 4, 11, "a").embeddings.numpy())
    np.testing.assert_array_equal(enc.typed.embeddings[GENRES].embeddings.numpy(),
                                  blocks.embedding(6, 4, 12, "b").embeddings.numpy())
    assert enc.mlp.dense[0].kernel_initializer.seed == 13


# -- bias penalties -----------------------------------------------------------------------
def _set_biases(model, family, rng):
    """Random user and item biases in the family's own bias tables; returns (users [R], items [R])."""
    user_table = model.query_layer.user_bias.table if family == "mf_dnn" else model.user_bias.table
    user = rng.normal(size=user_table.embeddings.shape).astype(np.float32)
    item = rng.normal(size=model.item_bias.table.embeddings.shape).astype(np.float32)
    user_table.embeddings.assign(user)
    model.item_bias.table.embeddings.assign(item)
    return user[:, 0], item[:, 0]


@pytest.mark.parametrize("family,extra", [("mf", {}), ("mf_dnn", {}), ("mmoe", {"entity_biases": True})])
def test_per_entity_bias_penalty_over_one_epoch_is_reg_times_the_squared_biases(family, extra):
    from training.recipes.common import row_counts

    tasks = (RATING, LIKED) if family == "mmoe" else (RATING,)
    ctx = synthetic_context(tasks=tasks, num_users=8, num_items=9)
    _, data = _rating_batches(ctx, n=24, batch=24)
    # A fixed epoch: user 1 in 12 rows, users 2..4 in 4 each; items 1..6 in 1..6 rows (+3 rows of item 7).
    users = np.array([1] * 12 + [2] * 4 + [3] * 4 + [4] * 4)
    items = np.array([1] + [2] * 2 + [3] * 3 + [4] * 4 + [5] * 5 + [6] * 6 + [7] * 3)
    data = {**data, F.USER_IDX: users, F.ITEM_IDX: items}
    ctx = dataclasses.replace(ctx, user_row_counts=row_counts(users, ctx.num_users),
                              item_row_counts=row_counts(items, ctx.num_items))
    spec = registry.get_family(family)
    reg_u, reg_i = 3.0, 7.0
    hparams = spec.hparams().override({"dim": 4, "l2": 0.0, "bias_penalty": "per_entity", "bias_reg_user": reg_u,
                                       "bias_reg_item": reg_i, **extra})
    model = spec.build(ctx, hparams)
    rng = np.random.default_rng(3)
    batches = [{k: tf.constant(v[s:s + 5]) for k, v in data.items()} for s in range(0, len(users), 5)]
    model(batches[0])  # builds the layers
    b_u, b_i = _set_biases(model, family, rng)
    # The batch penalty is a mean over the batch's rows: times the rows, summed over the epoch.
    total = sum(float(model.forward(b)[1]) * int(b[F.ITEM_IDX].shape[0]) for b in batches)
    expected = reg_u * np.sum(b_u[np.unique(users)] ** 2) + reg_i * np.sum(b_i[np.unique(items)] ** 2)
    assert total == pytest.approx(expected, rel=1e-5)
    # Per example (mf's default), a bias is penalised once per row it is looked up in.
    if family == "mf":
        per_example = spec.build(ctx, hparams.override({"bias_penalty": "per_example", "l2": 1.0}))
        per_example(batches[0])
        per_example.user_embedding.embeddings.assign(tf.zeros_like(per_example.user_embedding.embeddings))
        per_example.item_embedding.embeddings.assign(tf.zeros_like(per_example.item_embedding.embeddings))
        b_u, b_i = _set_biases(per_example, family, np.random.default_rng(3))
        total = sum(float(per_example.forward(b)[1]) * int(b[F.ITEM_IDX].shape[0]) for b in batches)
        assert total == pytest.approx(np.sum(b_u[users] ** 2) + np.sum(b_i[items] ** 2), rel=1e-5)


def test_per_entity_bias_penalty_needs_training_row_counts_and_a_known_mode():
    spec = registry.get_family("mf")
    ctx = dataclasses.replace(synthetic_context(), user_row_counts=None)
    with pytest.raises(ValueError, match="bias_penalty=per_entity needs the training examples per user and item"):
        spec.build(ctx, spec.hparams().override({"bias_penalty": "per_entity"}))
    with pytest.raises(ValueError, match="bias_penalty must be one of per_example, per_entity, got 'once'"):
        spec.hparams().override({"bias_penalty": "once"})
    spec.build(ctx, spec.hparams())  # per example needs no counts


def test_multitask_stop_on_names_the_task_early_stopping_watches():
    spec = registry.get_family("mmoe")
    ctx = synthetic_context(tasks=(RATING, LIKED, LOVED))
    assert spec.build(ctx, spec.hparams()).monitor(10) == ("val_mean_auc", "max")
    assert spec.build(ctx, spec.hparams().override({"stop_on": RATING})).monitor(10) == ("val_rating_rmse", "min")
    with pytest.raises(ValueError, match="stop_on='helpful' is not a task of MMoEModel; its tasks: rating, liked"):
        spec.build(ctx, spec.hparams().override({"stop_on": "helpful"}))


def test_two_tower_trains_a_catalogue_past_full_softmax_max_items_with_the_in_batch_softmax():
    from models.families import two_tower
    from models.tasks import FULL_SOFTMAX, SAMPLED_SOFTMAX

    family = registry.FAMILIES["two_tower"]
    ctx = synthetic_context(tasks=(D.RETRIEVAL_TASK,), num_items=22)
    small = family.build(ctx, family.hparams(dim=4))
    large = family.build(ctx, family.hparams(dim=4, full_softmax_max_items=21))
    assert [t.softmax for t in small.retrieval.values()] == [FULL_SOFTMAX]
    assert [t.softmax for t in large.retrieval.values()] == [SAMPLED_SOFTMAX]
    # at the bound the full softmax stays; an explicit sampled softmax stays sampled
    assert two_tower.softmax_for(family.hparams(full_softmax_max_items=22), 22) == FULL_SOFTMAX
    assert two_tower.softmax_for(family.hparams(softmax=SAMPLED_SOFTMAX), 5) == SAMPLED_SOFTMAX
    with pytest.raises(ValueError, match="full_softmax_max_items must be at least 1"):
        family.hparams(full_softmax_max_items=0)
