"""Every family trains a few steps on the pipeline's outputs and exports the signatures of
its capabilities; the served answers equal the in-process model."""

import dataclasses
import glob
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft

from contract import datasets as D
from contract import features as F
from contract import protocol
from export.signatures import densify, serving_feature_spec
from models.base import RETRIEVE, SCORE, SIMILAR
from models.registry import FAMILIES
from pipeline import report
from training.trainer import TrainConfig, train_and_export, train
from training.views import ItemRows, load_user_view

LIKED, LOVED, RATING, WATCHED = "liked", "loved", "rating", "watched"  # the shipped descriptions' tasks
MOVIELENS = D.dataset_spec("movielens")

CAPABILITY_SIGNATURES = {
    SCORE: {protocol.SERVING_DEFAULT, protocol.TRANSFORM_FEATURES},
    RETRIEVE: {protocol.SERVING_DEFAULT, protocol.RECOMMEND, protocol.RECOMMEND_EXCLUDING, protocol.RANK_QUERIES,
               protocol.SCORE_QUERIES},
    SIMILAR: {protocol.SIMILAR_ITEMS},
}


@pytest.fixture(scope="module")
def outputs(trained_run):
    config = trained_run[0]
    found = report.output_dirs(config.pipeline_root)
    examples = found["Transform"]["transformed_examples"]
    raw = found["InteractionExampleGen"]["examples"]
    users = found["InteractionExampleGen"]["user_examples"]
    return {
        "config": config,
        "graph": found["Transform"]["transform_graph"],
        F.INTERACTION_VIEW: {s: [os.path.join(examples, f"Split-{s}", "*")] for s in ("train", "eval")},
        F.USER_VIEW: {s: [os.path.join(users, f"Split-{s}", "*")] for s in ("train", "eval", "test")},
        "raw_test": sorted(glob.glob(os.path.join(raw, "Split-test", "*"))),
    }


# One family per kind of export: one score, several scores, a task-specific bottom over the
# typed history (dtrn), retrieval. (Every family is trained on synthetic tensors in
# test_model_layer.py and test_dtrn.py.)
EXPORTED = {"mf": (), "mmoe": (RATING, LIKED, LOVED), "dtrn": (LIKED, LOVED), "two_tower": ()}


@pytest.fixture(scope="module", params=sorted(EXPORTED))
def exported(request, outputs, tmp_path_factory):
    family = request.param
    view = FAMILIES[family].view
    out = str(tmp_path_factory.mktemp(family))
    config = TrainConfig(family=family, description=MOVIELENS.to_dict(), hparams={"max_epochs": 2, "batch_size": 64},
                         top_k=5, tasks=EXPORTED[family])
    summary = train_and_export(config, outputs[view]["train"], outputs[view]["eval"], outputs["graph"], out,
                               train_steps=10)
    return family, tf.saved_model.load(out), tft.TFTransformOutput(outputs["graph"]), summary


def _raw_test_examples(outputs, n=64):
    ds = tf.data.TFRecordDataset(outputs["raw_test"], compression_type="GZIP").take(n)
    return [r.numpy() for r in ds]


def _vocabulary(tft_output):
    return [v.decode() for v in tft_output.vocabulary_by_name(F.ITEM_VOCAB)]


def test_training_stops_early_and_reports_its_best_epoch(exported):
    family, _, _, summary = exported
    assert 1 <= summary["epochs_run"] <= 2
    assert summary["train_cpu_seconds"] > 0
    assert summary["best_epoch"] is not None and summary["monitor"].startswith("val_")
    assert all(np.isfinite(summary["history"]["loss"]))


def test_signatures_follow_the_capabilities(exported, outputs):
    family, loaded = exported[0], exported[1]
    expected = set().union(*(CAPABILITY_SIGNATURES[c] for c in FAMILIES[family].capabilities))
    assert set(loaded.signatures.keys()) == expected
    if RETRIEVE not in FAMILIES[family].capabilities:
        assert protocol.RECOMMEND not in loaded.signatures
    if SCORE in FAMILIES[family].capabilities:  # one named output per task
        served = loaded.signatures[protocol.SERVING_DEFAULT](examples=tf.constant(_raw_test_examples(outputs, 4)))
        assert set(served) == set(EXPORTED[family] or [RATING])


def test_serving_default_equals_the_in_process_model(outputs, tmp_path):
    config = TrainConfig(family="mf_dnn", description=MOVIELENS.to_dict(), hparams={"max_epochs": 1})
    view = outputs[F.INTERACTION_VIEW]
    model, _, valid = train(config, view["train"], view["eval"], outputs["graph"], train_steps=5)
    from export.signatures import export_model

    tft_output = tft.TFTransformOutput(outputs["graph"])
    export_model(model, tft_output, valid, str(tmp_path))
    loaded = tf.saved_model.load(str(tmp_path))
    examples = _raw_test_examples(outputs)
    served = loaded.signatures[protocol.SERVING_DEFAULT](examples=tf.constant(examples))
    assert set(served) == {RATING}
    spec = serving_feature_spec(tft_output, MOVIELENS)
    transformed = densify(tft_output.transform_features_layer()(tf.io.parse_example(examples, spec)))
    np.testing.assert_allclose(served[RATING].numpy(), model(transformed)[RATING].numpy(), rtol=1e-5, atol=1e-5)
    # A client needs no label, timestamp or split.
    example = tf.train.Example.FromString(examples[0])
    for name in (RATING, WATCHED, F.TIMESTAMP, F.SPLIT):
        del example.features.feature[name]
    out = loaded.signatures[protocol.SERVING_DEFAULT](examples=tf.constant([example.SerializeToString()]))
    assert np.isfinite(out[RATING].numpy()).all()


def _padded(rows):
    width = max(len(r) for r in rows)
    return tf.constant([[x.encode() for x in r] + [b""] * (width - len(r)) for r in rows], tf.string)


def _recommend(loaded, histories, behaviors=None, exclude=None):
    behaviors = behaviors or [["liked"] * len(h) for h in histories]
    width = max(len(h) for h in histories)
    inputs = {"history_item_ids": _padded([h + [""] * (width - len(h)) for h in histories]),
              "history_behaviors": _padded([b + [""] * (width - len(b)) for b in behaviors])}
    if exclude is None:
        return loaded.signatures[protocol.RECOMMEND](**inputs)
    return loaded.signatures[protocol.RECOMMEND_EXCLUDING](**inputs, exclude_item_ids=_padded(exclude))


def test_recommend_never_returns_a_history_item_and_validates_its_input(exported):
    family, loaded, tft_output, _ = exported
    if RETRIEVE not in FAMILIES[family].capabilities:
        return
    vocab = _vocabulary(tft_output)
    rng = np.random.default_rng(0)
    histories = [list(rng.choice(vocab, size=n, replace=False)) for n in (1, 3, 100)]
    # The most frequent items are in every history, and a 100-item history is longer than
    # the 64 the query reads: the exclusion covers the whole history.
    histories = [h + [v for v in vocab[:10] if v not in h] for h in histories]
    out = _recommend(loaded, histories)
    assert out[protocol.RECOMMEND_ITEM_IDS].shape == (3, 5)
    for history, recommended, scores in zip(histories, out["item_ids"].numpy(), out["scores"].numpy()):
        recommended = [r.decode() for r in recommended]
        assert not set(recommended) & set(history)
        assert all(r in vocab for r in recommended)
        assert list(scores) == sorted(scores, reverse=True)
    # Missing behaviors take the default; unknown items next to known ones are ignored;
    # an empty history is allowed.
    ok = _recommend(loaded, [[vocab[0], "no-such-item"], []], [["", "liked"], []])
    assert np.isfinite(ok["scores"].numpy()).all()
    with pytest.raises(tf.errors.InvalidArgumentError, match="history_behaviors holds a value"):
        _recommend(loaded, [[vocab[0]]], [["hated"]])
    with pytest.raises(tf.errors.InvalidArgumentError, match="none of them is in the catalogue"):
        _recommend(loaded, [["no-such-item", "nor-this"]])
    # Ids and behaviors of different shapes are an error naming both, never a broadcast.
    for name in (protocol.RECOMMEND, protocol.RECOMMEND_EXCLUDING):
        inputs = {"history_item_ids": tf.constant([[vocab[0].encode(), vocab[1].encode()]]),
                  "history_behaviors": tf.constant([[b"liked"]])}
        if name == protocol.RECOMMEND_EXCLUDING:
            inputs["exclude_item_ids"] = tf.constant([[vocab[2].encode()]])
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=rf"{name}: history_item_ids has shape \[1, 2\] but history_behaviors has shape "
                                 r"\[1, 1\]"):
            loaded.signatures[name](**inputs)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"history_item_ids has shape \[1, 1\] but exclude_item_ids has shape \[2, 1\]"):
        _recommend(loaded, [[vocab[0]]], exclude=[[vocab[1]], [vocab[2]]])


def test_recommend_excluding_keeps_out_what_the_query_did_not_read(exported):
    """A client sending only its most recent items, the rest as exclusions, gets what the
    whole history gets: the query reads the most recent MAX_HISTORY items either way, and
    no item of either part comes back."""
    family, loaded, tft_output, _ = exported
    if RETRIEVE not in FAMILIES[family].capabilities:
        return
    vocab = _vocabulary(tft_output)
    rng = np.random.default_rng(1)
    history = list(rng.choice(vocab, size=F.MAX_HISTORY + 36, replace=False))
    older, recent = history[:-F.MAX_HISTORY], history[-F.MAX_HISTORY:]
    whole = _recommend(loaded, [history])
    split = _recommend(loaded, [recent], exclude=[older])
    np.testing.assert_array_equal(split["item_ids"].numpy(), whole["item_ids"].numpy())
    np.testing.assert_allclose(split["scores"].numpy(), whole["scores"].numpy(), rtol=1e-6)
    assert not {r.decode() for r in split["item_ids"].numpy()[0]} & set(history)
    # Excluding items outside the history: the rest keep their scores and order, and
    # unknown ids are ignored; an empty exclusion list is recommend itself.
    plain = _recommend(loaded, [recent])
    top = [r.decode() for r in plain["item_ids"].numpy()[0]]
    kept = _recommend(loaded, [recent], exclude=[[top[0], top[3], "no-such-item"]])
    ids = [r.decode() for r in kept["item_ids"].numpy()[0]]
    assert top[0] not in ids and top[3] not in ids
    assert ids[:3] == [top[1], top[2], top[4]]
    np.testing.assert_allclose(kept["scores"].numpy()[0][:3], plain["scores"].numpy()[0][[1, 2, 4]], rtol=1e-6)
    empty = loaded.signatures[protocol.RECOMMEND_EXCLUDING](
        history_item_ids=_padded([recent]), history_behaviors=_padded([["liked"] * len(recent)]),
        exclude_item_ids=tf.zeros([1, 0], tf.string))
    np.testing.assert_array_equal(empty["item_ids"].numpy(), plain["item_ids"].numpy())


def test_rank_queries_ranks_as_recommend_does(exported, outputs):
    family, loaded, tft_output, _ = exported
    if RETRIEVE not in FAMILIES[family].capabilities:
        return
    files = glob.glob(outputs[F.USER_VIEW]["test"][0])
    records = [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP").take(4)]
    ranked = loaded.signatures[protocol.RANK_QUERIES](examples=tf.constant(records))
    ids = tft_output.vocabulary_by_name(F.ITEM_VOCAB)
    for record, rows, targets in zip(records, ranked[protocol.RANKED_ROWS].numpy(),
                                     ranked[protocol.TARGET_ROWS].numpy()):
        feature = tf.train.Example.FromString(record).features.feature
        history = [v.decode() for v in feature[F.HISTORY_ITEM_IDS].bytes_list.value]
        behaviors = [v.decode() for v in feature[F.HISTORY_BEHAVIORS].bytes_list.value]
        expected = _recommend(loaded, [history], [behaviors])[protocol.RECOMMEND_ITEM_IDS].numpy()[0]
        assert [ids[r - 1] for r in rows] == list(expected)
        wanted = [v for v in feature[F.TARGET_ITEM_IDS].bytes_list.value]
        got = [ids[t - 1] if t > 0 else None for t in targets if t != protocol.TARGET_PAD]
        assert [w for w in wanted if w in ids] == [g for g in got if g is not None]


def test_similar_items_excludes_the_item_and_rejects_unknown_ids(exported):
    family, loaded, tft_output, _ = exported
    if SIMILAR not in FAMILIES[family].capabilities:  # no item vectors: no signature
        assert protocol.SIMILAR_ITEMS not in loaded.signatures
        return
    vocab = _vocabulary(tft_output)
    out = loaded.signatures[protocol.SIMILAR_ITEMS](item_ids=tf.constant([vocab[0].encode()]))
    similar = [x.decode() for x in out["item_ids"].numpy()[0]]
    assert vocab[0] not in similar and len(similar) == 5
    assert np.all(out["scores"].numpy() <= 1.0 + 1e-6)
    with pytest.raises(tf.errors.InvalidArgumentError, match="unknown item id"):
        loaded.signatures[protocol.SIMILAR_ITEMS](item_ids=tf.constant([b"no-such-item"]))


def test_user_view_rows_are_the_transform_graphs_history_ids(outputs):
    """The trainer maps user-view ids and behaviors exactly as the Transform graph does."""
    tft_output = tft.TFTransformOutput(outputs["graph"])
    rows = ItemRows(tft_output.vocabulary_by_name(F.ITEM_VOCAB), MOVIELENS.behaviors)
    view = load_user_view(glob.glob(outputs[F.USER_VIEW]["eval"][0]), rows)
    items = [b"1", b"no-such-item", _vocabulary(tft_output)[3].encode()]
    behaviors = [b"liked", b"disliked", b"hated"]
    transformed = densify(tft_output.transform_features_layer()({
        F.HISTORY_ITEM_IDS: tf.sparse.from_dense(tf.constant([items])),
        F.HISTORY_BEHAVIORS: tf.sparse.from_dense(tf.constant([behaviors])),
    }))
    assert transformed[F.HISTORY_ITEM_IDX].numpy()[0, :3].tolist() == rows.rows(items).tolist()
    assert transformed[F.HISTORY_BEHAVIOR_IDX].numpy()[0, :3].tolist() == rows.behavior_rows(behaviors).tolist()
    assert rows.behavior_rows([b"hated"])[0] == len(MOVIELENS.behaviors) + 1
    assert len(view) > 0 and all(len(t) for t in view.targets)


def test_pushed_models_served_over_grpc_match_in_process(trained_run, outputs):
    """The pipeline's pushed models, served by the local server, answer as the SavedModel does."""
    from serving.client import ServingClient, ServingError
    from serving.local_server import serve

    config = trained_run[0]
    examples = _raw_test_examples(outputs, 8)
    history = _vocabulary(tft.TFTransformOutput(outputs["graph"]))[:3]
    with serve(config.serving_model_dir, port=0, poll_seconds=0.5) as server:
        with ServingClient(f"127.0.0.1:{server.port}", timeout_s=30) as client:
            for family in config.families:
                path = os.path.join(config.serving_model_dir, family)
                loaded = tf.saved_model.load(os.path.join(path, os.listdir(path)[0]))
                if SCORE in FAMILIES[family].capabilities:
                    expected = loaded.signatures[protocol.SERVING_DEFAULT](examples=tf.constant(examples))
                    served = client.predict_examples(family, examples)
                    np.testing.assert_allclose(served[RATING], expected[RATING].numpy(), rtol=1e-6)
                if RETRIEVE in FAMILIES[family].capabilities:
                    ranked = client.recommend(family, [history], [["liked"] * 3])[0]
                    expected = _recommend(loaded, [history])[protocol.RECOMMEND_ITEM_IDS].numpy()[0]
                    assert [item for item, _ in ranked] == [e.decode() for e in expected][:len(ranked)]
                    assert ranked and not {item for item, _ in ranked} & set(history)
                    excluded = client.recommend(family, [history], [["liked"] * 3],
                                                exclude_item_ids=[[ranked[0][0]]])[0]
                    assert excluded[:len(ranked) - 1] == ranked[1:]
                    bad = {F.HISTORY_ITEM_IDS: np.array([history[:2]], dtype=object),
                           F.HISTORY_BEHAVIORS: np.array([["liked"]], dtype=object)}
                    with pytest.raises(ServingError) as info:
                        client.predict_tensors(family, bad, signature=protocol.RECOMMEND)
                    assert info.value.code.name == "INVALID_ARGUMENT"
                    assert "history_item_ids has shape [1, 2] but history_behaviors has shape [1, 1]" in \
                        info.value.message


def test_a_two_tower_ensemble_trains_its_members_apart_and_serves_their_sum(outputs, tmp_path):
    view = FAMILIES["two_tower"].view
    config = TrainConfig(family="two_tower", description=MOVIELENS.to_dict(),
                         hparams={"max_epochs": 1, "batch_size": 64, "members": 2}, top_k=5,
                         seed=7)
    summary = train_and_export(config, outputs[view]["train"], outputs[view]["eval"], outputs["graph"],
                               str(tmp_path / "ensemble"), train_steps=5)
    assert [m["seed"] for m in summary["members"]] == [7, 8]
    assert summary["hparams"]["members"] == 2 and summary["monitor"] == "val_ndcg@5"
    assert 0.0 <= summary["best_value"] <= 1.0
    loaded = tf.saved_model.load(str(tmp_path / "ensemble"))
    out = loaded.signatures[protocol.RECOMMEND](history_item_ids=tf.constant([["1", "2"]]),
                                                  history_behaviors=tf.constant([["liked", "liked"]]))
    ids = [i.decode() for i in out[protocol.RECOMMEND_ITEM_IDS].numpy()[0]]
    assert len(ids) == 5 and not {"1", "2"} & set(ids)


def test_a_warm_started_trainer_starts_from_its_base_model(outputs, tmp_path):
    """With warm_start, train_and_export's base_model is the family's last blessed model: the
    recipe's model takes its weights (every id known, the same transform graph) and trains at
    the learning rate times warm_learning_rate_scale."""
    view = FAMILIES["mf"].view
    first = str(tmp_path / "first")
    config = TrainConfig(family="mf", description=MOVIELENS.to_dict(), hparams={
        "max_epochs": 1, "batch_size": 64, "learning_rate": 0.01, "warm_learning_rate_scale": 3.0})
    cold = train_and_export(config, outputs[view]["train"], outputs[view]["eval"], outputs["graph"], first,
                            train_steps=5)
    assert "warm_start" not in cold and cold["learning_rate"] == pytest.approx(0.01)
    # The base model's weights, read from its object graph and checkpoint, are a full load's
    from training.warm_start import old_weights

    read, loaded = old_weights(first), tf.saved_model.load(first).trainable_variables
    assert [name for name, _ in read] == [v.name.split(":")[0].rsplit("/", 1)[-1] for v in loaded]
    for (_, value), variable in zip(read, loaded):
        np.testing.assert_array_equal(value, variable.numpy())
    warm_config = dataclasses.replace(config, warm_start=True)
    summary = train_and_export(warm_config, outputs[view]["train"], outputs[view]["eval"], outputs["graph"],
                               str(tmp_path / "second"), train_steps=5, base_model=first)
    warm = summary["warm_start"]
    assert warm["base_model"] == first and not warm["initialised"]
    assert summary["learning_rate"] == pytest.approx(0.03)
    items = [t for t in warm["id_tables"].values() if t["vocabulary"] == F.ITEM_VOCAB]
    assert items and all(t["new_ids"] == 0 for t in warm["id_tables"].values())
    assert items[0]["known_ids"] == len(_vocabulary(tft.TFTransformOutput(outputs["graph"])))

    # A base model of other hyperparameters leaves weights initialised: the plain rate
    other = dataclasses.replace(warm_config, hparams={**warm_config.hparams, "dim": 8})
    fresh = train_and_export(other, outputs[view]["train"], outputs[view]["eval"], outputs["graph"],
                             str(tmp_path / "third"), train_steps=5, base_model=first)
    assert fresh["warm_start"]["initialised"] and fresh["learning_rate"] == pytest.approx(0.01)


def test_a_retrieve_only_model_warm_starts_from_its_exported_weights(outputs, tmp_path):
    """two_tower is never called as a Keras model (it serves retrieve only), so Keras does not
    list its weights in the SavedModel; the export's own list carries every one of them."""
    view = FAMILIES["two_tower"].view
    config = TrainConfig(family="two_tower", description=MOVIELENS.to_dict(),
                         hparams={"max_epochs": 1, "warm_start": True}, top_k=5)
    first = str(tmp_path / "first")
    train_and_export(config, outputs[view]["train"], outputs[view]["eval"], outputs["graph"], first, train_steps=3)
    assert "trainable_variables" not in dir(tf.saved_model.load(first))  # what Keras leaves out
    summary = train_and_export(dataclasses.replace(config, warm_start=True), outputs[view]["train"],
                               outputs[view]["eval"], outputs["graph"], str(tmp_path / "second"), train_steps=3,
                               base_model=first)
    warm = summary["warm_start"]
    assert not warm["initialised"], warm
    assert warm["copied"] + len(warm["id_tables"]) > 0
    assert any(t["vocabulary"] == F.ITEM_VOCAB and t["new_ids"] == 0 for t in warm["id_tables"].values())
    # two_tower's record leaves warm starts off (not measured warm): it trains from scratch
    off = train_and_export(dataclasses.replace(config, warm_start=True, hparams={"max_epochs": 1}),
                           outputs[view]["train"], outputs[view]["eval"], outputs["graph"], str(tmp_path / "third"),
                           train_steps=3, base_model=first)
    assert "warm_start" not in off


def test_per_entity_bias_penalty_counts_the_training_split_only(outputs):
    """The pointwise recipe divides each bias's penalty by its user's and item's training
    examples: eval rows never reach the counts."""
    from training import recipes
    from training.inputs import load_examples
    from training.recipes import pointwise

    config = TrainConfig(family="mf", description=MOVIELENS.to_dict(), top_k=5,
                         hparams={"bias_penalty": "per_entity", "bias_reg_user": 2.0, "bias_reg_item": 3.0})
    view = outputs[F.INTERACTION_VIEW]
    job = recipes.Job(config, FAMILIES["mf"], config.params, view["train"], view["eval"], outputs["graph"])
    model, _, _ = pointwise.build(job, None)
    tft_output = tft.TFTransformOutput(outputs["graph"])
    train_rows, eval_rows = (load_examples(view[s], tft_output, config.max_history) for s in ("train", "eval"))
    for key, reg, weight in ((F.USER_IDX, 2.0, model.bias_penalty.user_weight),
                             (F.ITEM_IDX, 3.0, model.bias_penalty.item_weight)):
        rows = int(weight.shape[0])
        train_counts = np.bincount(train_rows[key], minlength=rows)[:rows]
        both = train_counts + np.bincount(eval_rows[key], minlength=rows)[:rows]
        np.testing.assert_allclose(weight.numpy(), reg / np.maximum(train_counts, 1), rtol=1e-6)
        assert not np.allclose(weight.numpy(), reg / np.maximum(both, 1)), key  # the eval rows would change it
