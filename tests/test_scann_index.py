"""Approximate top K (export/scann_index.py) on small synthetic models: `recommend` through a
ScaNN index finds the exact top items, excludes the history, keeps the exact contract, and
loads through tf.saved_model.load, the local server (a fresh process) and gRPC."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from contract import datasets as D
from contract import features as F
from contract import protocol
from export.scann_index import ScannTopK, scann_ops_used
from export.signatures import export_model
from models.context import synthetic_context
from models.hparams import ScannParams
from models.registry import get_family

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_ITEMS = 3000  # item rows, row 0 = padding
MAX_HISTORY = 8
K = 10
MOVIELENS = D.dataset_spec("movielens")  # the shipped description: its behaviors
EASY = {"scann_num_leaves": 30, "scann_num_leaves_to_search": 10, "scann_num_reordering_candidates": 100}


class HistoryTransform(tf.Module):
    """Stands in for the Transform graph's history features: item ids -> rows (vocabulary
    index + 1, 0 unknown), behaviors -> 1..n (n + 1 unknown), the most recent max_history.
    Like the Transform's Keras layer, export_model runs its `call`."""

    def __init__(self, item_ids, behaviors, max_history):
        super().__init__()
        self.max_history = max_history
        self.items = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
            tf.constant(item_ids), tf.range(1, len(item_ids) + 1, dtype=tf.int64)), default_value=0)
        self.behaviors = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
            tf.constant(list(behaviors)), tf.range(1, len(behaviors) + 1, dtype=tf.int64)),
            default_value=len(behaviors) + 1)

    def call(self, features):
        items = tf.RaggedTensor.from_sparse(features[F.HISTORY_ITEM_IDS])[:, -self.max_history:]
        behaviors = tf.RaggedTensor.from_sparse(features[F.HISTORY_BEHAVIORS])[:, -self.max_history:]
        return {F.HISTORY_ITEM_IDX: tf.ragged.map_flat_values(self.items.lookup, items),
                F.HISTORY_BEHAVIOR_IDX: tf.ragged.map_flat_values(self.behaviors.lookup, behaviors)}


class TransformOutput:
    """What export_model reads of a TFTransformOutput, for a retrieval family."""

    def __init__(self, item_ids, max_history):
        self.item_ids = [i.encode() for i in item_ids]
        self.max_history = max_history

    def transform_features_layer(self):
        return HistoryTransform(self.item_ids, MOVIELENS.behaviors, self.max_history)

    def vocabulary_by_name(self, name):
        assert name == F.ITEM_VOCAB
        return list(self.item_ids)


ITEM_IDS = [f"i{r}" for r in range(1, NUM_ITEMS)]
VALID = np.arange(NUM_ITEMS) > 0
VALID[-50:] = False  # rows without an item (e.g. not in the training vocabulary) are never returned


# The variable of each family's candidate vectors.
ITEM_TABLE = {"two_tower": lambda m: m.item_encoder.id_embedding.embeddings,
              "sasrec": lambda m: m.embedding.item_embedding.embeddings}


def _model(family_name, **overrides):
    """A model of the family over an easy catalogue: item vectors in 30 tight clusters
    (a query's top items share a cluster, which partitioning keeps together), and biases."""
    family = get_family(family_name)
    context = synthetic_context("movielens", tasks=(D.RETRIEVAL_TASK,), num_items=NUM_ITEMS, max_history=MAX_HISTORY)
    model = family.build(context, family.hparams().override({"dim": 16, **overrides}))
    probe = tf.constant([[1, 2]], tf.int64)
    model.score_catalogue(probe, probe)  # builds every weight
    rng = np.random.default_rng(1)
    table = ITEM_TABLE[family_name](model)
    centers = rng.normal(size=(30, table.shape[1]))
    vectors = centers[rng.integers(0, 30, table.shape[0])] + rng.normal(0.0, 0.05, table.shape)
    table.assign(vectors.astype(np.float32))
    bias = model.item_bias.table.embeddings
    bias.assign(rng.normal(0.0, 0.1, bias.shape).astype(np.float32))
    return model


def _export(model, path, **overrides):
    """Exports `model` (its record's ScaNN fields replaced by `overrides`) and loads it."""
    model.hparams = model.hparams.override(overrides)
    export_model(model, TransformOutput(ITEM_IDS, MAX_HISTORY), VALID, path, top_k=K, family="test")
    return tf.saved_model.load(path)


def _histories(n=40, seed=3):
    rng = np.random.default_rng(seed)
    histories = [[f"i{r}" for r in rng.choice(np.arange(1, NUM_ITEMS), size=rng.integers(1, 2 * MAX_HISTORY),
                                              replace=False)] for _ in range(n)]
    histories[0] = []  # an empty history: the items' prior
    histories[1] = ["i5", "unknown-id", "i7"]  # an unknown id next to known ones is ignored
    return histories


def _recommend(loaded, histories):
    items, behaviors = protocol.history_arrays(histories, None)
    out = loaded.signatures[protocol.RECOMMEND](history_item_ids=tf.constant(items),
                                                history_behaviors=tf.constant(behaviors))
    return {key: value.numpy() for key, value in out.items()}


@pytest.fixture(scope="module", params=["two_tower", "sasrec"])
def pair(request, tmp_path_factory):
    """The same model exported with exact top K and with a ScaNN index."""
    model = _model(request.param)
    base = tmp_path_factory.mktemp(request.param)
    exact = _export(model, str(base / "exact"))
    approximate = _export(model, str(base / "scann"), scann=True, **EASY)
    return request.param, exact, approximate, str(base / "scann"), str(base / "exact")


def test_scann_recommend_returns_the_exact_top_items_outside_the_history(pair):
    _, exact, approximate, _, _ = pair
    histories = _histories()
    want, got = _recommend(exact, histories), _recommend(approximate, histories)
    assert set(got) == set(want) == {protocol.RECOMMEND_ITEM_IDS, protocol.RECOMMEND_SCORES}
    for key in want:
        assert got[key].shape == want[key].shape == (len(histories), K) and got[key].dtype == want[key].dtype
    recalls = [len(set(g) & set(w)) / K for g, w in zip(got[protocol.RECOMMEND_ITEM_IDS],
                                                         want[protocol.RECOMMEND_ITEM_IDS])]
    assert np.mean(recalls) >= 0.95, recalls
    exact_score = {(b, i): s for b, (ids, scores) in enumerate(zip(want[protocol.RECOMMEND_ITEM_IDS],
                                                                   want[protocol.RECOMMEND_SCORES]))
                   for i, s in zip(ids, scores)}
    for b, (ids, scores, history) in enumerate(zip(got[protocol.RECOMMEND_ITEM_IDS], got[protocol.RECOMMEND_SCORES],
                                                   histories)):
        names = [i.decode() for i in ids]
        assert not set(names) & set(history), f"history {b} got one of its own items"
        assert len(set(names)) == K and all(VALID[int(n[1:])] for n in names)
        assert np.all(np.diff(scores) <= 0)
        for i, s in zip(ids, scores):  # reordered: the served scores are the exact ones
            if (b, i) in exact_score:
                assert s == pytest.approx(exact_score[(b, i)], abs=1e-4)


def test_rank_queries_ranks_as_recommend_does_with_scann(pair):
    _, _, approximate, _, _ = pair
    histories = _histories(n=12, seed=5)
    examples = []
    for history in histories:
        feats = {F.HISTORY_ITEM_IDS: tf.train.Feature(bytes_list=tf.train.BytesList(value=[h.encode() for h in history])),
                 F.HISTORY_BEHAVIORS: tf.train.Feature(bytes_list=tf.train.BytesList(value=[b""] * len(history))),
                 F.TARGET_ITEM_IDS: tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"i9"]))}
        examples.append(tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString())
    ranked = approximate.signatures[protocol.RANK_QUERIES](examples=tf.constant(examples))[protocol.RANKED_ROWS]
    served = _recommend(approximate, histories)[protocol.RECOMMEND_ITEM_IDS]
    assert [[f"i{r}".encode() for r in row] for row in ranked.numpy()] == served.tolist()


def test_default_export_has_no_scann_ops_and_scann_export_has_them(pair):
    from tensorflow.core.protobuf import saved_model_pb2

    def ops(path):
        saved = saved_model_pb2.SavedModel()
        with open(os.path.join(path, "saved_model.pb"), "rb") as f:
            saved.ParseFromString(f.read())
        graph = saved.meta_graphs[0].graph_def
        return scann_ops_used([n.op for n in graph.node] + [n.op for f in graph.library.function for n in f.node_def])

    _, _, _, scann_dir, exact_dir = pair
    assert ops(exact_dir) == ()
    assert ops(scann_dir) == ("Scann>ScannSearchBatched", "Scann>TensorsToScann")


def test_a_search_that_finds_too_few_items_is_answered_exactly(tmp_path):
    # One item per leaf and one leaf searched: ScaNN finds one item, fewer than K.
    model = _model("two_tower")
    histories = _histories(n=6)
    want = _recommend(_export(model, str(tmp_path / "exact")), histories)
    got = _recommend(_export(model, str(tmp_path / "scann"), scann=True, scann_num_leaves=NUM_ITEMS,
                             scann_num_leaves_to_search=1), histories)
    np.testing.assert_array_equal(got[protocol.RECOMMEND_ITEM_IDS], want[protocol.RECOMMEND_ITEM_IDS])
    np.testing.assert_allclose(got[protocol.RECOMMEND_SCORES], want[protocol.RECOMMEND_SCORES], rtol=1e-6)


def test_a_history_longer_than_the_reordering_excludes_all_its_items(pair):
    _, exact, approximate, _, _ = pair
    # The index reorders max(100, K + MAX_HISTORY) = 100 rows. A history whose older items
    # are the 120 best items of the query its most recent MAX_HISTORY items make leaves
    # none of those 100: it is answered exactly, without any of its items.
    recent = [f"i{r}" for r in range(1, MAX_HISTORY + 1)]
    items, behaviors = protocol.history_arrays([recent], None)
    example = tf.train.Example(features=tf.train.Features(feature={
        F.HISTORY_ITEM_IDS: tf.train.Feature(bytes_list=tf.train.BytesList(value=[r.encode() for r in recent])),
        F.HISTORY_BEHAVIORS: tf.train.Feature(bytes_list=tf.train.BytesList(value=[b""] * len(recent)))}))
    scores = exact.signatures[protocol.SCORE_QUERIES](examples=tf.constant([example.SerializeToString()]))
    ranking = [r for r in np.argsort(-scores[protocol.CATALOGUE_SCORES].numpy()[0]) if r > MAX_HISTORY]
    long = [f"i{r}" for r in ranking[:120]] + recent
    histories = [long, ["i3"]]
    want, got = _recommend(exact, histories), _recommend(approximate, histories)
    np.testing.assert_array_equal(got[protocol.RECOMMEND_ITEM_IDS], want[protocol.RECOMMEND_ITEM_IDS])
    assert not {i.decode() for i in got[protocol.RECOMMEND_ITEM_IDS][0]} & set(long)


def _recommend_excluding(loaded, histories, exclusions):
    items, behaviors = protocol.history_arrays(histories, None)
    out = loaded.signatures[protocol.RECOMMEND_EXCLUDING](
        history_item_ids=tf.constant(items), history_behaviors=tf.constant(behaviors),
        exclude_item_ids=tf.constant(protocol.exclusion_array(exclusions, len(histories))))
    return {key: value.numpy() for key, value in out.items()}


def _catalogue_scores(exact, histories):
    """[B, N] exact score of every row for each history (score_queries of the exact model)."""
    examples = []
    for history in histories:
        feats = {F.HISTORY_ITEM_IDS: tf.train.Feature(bytes_list=tf.train.BytesList(value=[h.encode() for h in history])),
                 F.HISTORY_BEHAVIORS: tf.train.Feature(bytes_list=tf.train.BytesList(value=[b""] * len(history)))}
        examples.append(tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString())
    out = exact.signatures[protocol.SCORE_QUERIES](examples=tf.constant(examples))
    return out[protocol.CATALOGUE_SCORES].numpy()


def _best_outside(scores, history, n):
    """The ids of the n best rows of one history's scores outside the history."""
    own = {int(i[1:]) for i in history if i[1:].isdigit()}
    return [f"i{r}" for r in np.argsort(-scores) if r not in own and VALID[r]][:n]


def test_scann_recommend_excluding_keeps_out_the_exclusions_and_finds_the_exact_top_items(pair):
    _, exact, approximate, _, _ = pair
    histories = _histories()  # those of the recommend test, whose recall the exclusions keep
    scores = _catalogue_scores(exact, histories)
    # Each row excludes its own 5 best items, 2 others and an unknown id (ignored); the last
    # one excludes its 120 best, more than the index reorders (100): it is answered exactly.
    exclusions = [_best_outside(s, h, 5) + [f"i{100 + b}", f"i{200 + b}", "unknown-id"]
                  for b, (s, h) in enumerate(zip(scores, histories))]
    exclusions[-1] = _best_outside(scores[-1], histories[-1], 120)
    want = _recommend_excluding(exact, histories, exclusions)
    got = _recommend_excluding(approximate, histories, exclusions)
    for key in want:
        assert got[key].shape == want[key].shape == (len(histories), K) and got[key].dtype == want[key].dtype
    recalls = [len(set(g) & set(w)) / K for g, w in zip(got[protocol.RECOMMEND_ITEM_IDS],
                                                         want[protocol.RECOMMEND_ITEM_IDS])]
    assert np.mean(recalls) >= 0.95, recalls
    for b, (ids, served) in enumerate(zip(got[protocol.RECOMMEND_ITEM_IDS], got[protocol.RECOMMEND_SCORES])):
        names = [i.decode() for i in ids]
        assert not set(names) & (set(histories[b]) | set(exclusions[b])), f"row {b} got a history or excluded item"
        assert len(set(names)) == K and all(VALID[int(n[1:])] for n in names)
        # reordered: the served scores are the exact ones
        np.testing.assert_allclose(served, scores[b][[int(n[1:]) for n in names]], atol=1e-4)
    np.testing.assert_array_equal(got[protocol.RECOMMEND_ITEM_IDS][-1], want[protocol.RECOMMEND_ITEM_IDS][-1])


def test_scann_recommend_excluding_asks_the_index_for_the_exclusions_too(tmp_path):
    # Without reordering the served scores of a row the index answers are its quantized
    # ones, and those of a row scored exactly the exact ones. Each history excludes its 40
    # best items: asked for K + the history's and the exclusions' items, the index still
    # finds K items outside them, so no row falls back to scoring every item.
    model = _model("two_tower")
    exact = _export(model, str(tmp_path / "exact"))
    approximate = _export(model, str(tmp_path / "scann"), scann=True,
                          **{**EASY, "scann_num_reordering_candidates": 0})
    histories = _histories(n=8, seed=11)[2:]
    scores = _catalogue_scores(exact, histories)
    exclusions = [_best_outside(s, h, 40) for s, h in zip(scores, histories)]
    got = _recommend_excluding(approximate, histories, exclusions)
    for b, (ids, served) in enumerate(zip(got[protocol.RECOMMEND_ITEM_IDS], got[protocol.RECOMMEND_SCORES])):
        names = [i.decode() for i in ids]
        assert len(set(names)) == K and not set(names) & (set(histories[b]) | set(exclusions[b]))
        exact_of_served = scores[b][[int(n[1:]) for n in names]]
        assert np.max(np.abs(served - exact_of_served)) > 1e-5, f"row {b} was scored exactly, not by the index"
        np.testing.assert_allclose(served, exact_of_served, atol=0.5)  # quantized, not another item's


def _small_index(reordering=40):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(40, 4)).astype(np.float32)
    valid = np.ones(40, bool)
    valid[0] = False
    params = ScannParams(scann=True, scann_num_leaves=4, scann_num_leaves_to_search=4,
                         scann_num_reordering_candidates=reordering)
    index = ScannTopK(vectors, np.zeros(40, np.float32), valid, params, k=5, max_history=3)
    queries = rng.normal(size=(2, 4)).astype(np.float32)
    scores = queries @ vectors.T
    scores[:, 0] = -np.inf
    return index, queries, scores


def test_index_top_k_drops_history_rows_and_adds_the_query_bias():
    index, queries, scores = _small_index()
    history = np.argsort(-scores, axis=1)[:, :2]  # each query's two best rows are its history

    def exact(which):
        raise AssertionError("the index fills every row: nothing is scored exactly")

    rows, values = index.top_k(tf.constant(queries), tf.constant([1.0, -1.0]), tf.constant(history, tf.int64), 5,
                               exact)
    np.testing.assert_array_equal(rows.numpy(), np.argsort(-scores, axis=1)[:, 2:7])
    np.testing.assert_allclose(values.numpy(), np.sort(scores, axis=1)[:, ::-1][:, 2:7] + [[1.0], [-1.0]],
                               rtol=1e-5)


def test_only_the_rows_the_index_leaves_short_are_scored_exactly():
    # The index reorders K + max_history = 8 rows: a history holding the first query's 10
    # best rows leaves it nothing; the second query keeps the index's answer.
    index, queries, scores = _small_index(reordering=1)
    assert index.reach == 8
    history = np.zeros((2, 10), np.int64)
    history[0] = np.argsort(-scores[0])[:10]
    asked = []

    def exact(which):
        asked.append(which.numpy().tolist())
        return tf.fill([1, 5], 7), tf.fill([1, 5], 99.0)

    rows, values = index.top_k(tf.constant(queries), tf.zeros([2]), tf.constant(history), 5, exact)
    assert asked == [[True, False]]
    assert rows.numpy()[0].tolist() == [7] * 5 and values.numpy()[0].tolist() == [99.0] * 5
    np.testing.assert_array_equal(rows.numpy()[1], np.argsort(-scores[1])[:5])
    assert index.unfilled(queries, np.zeros(2, np.float32), history, 5).tolist() == [True, False]


def test_scann_record_rejects_searching_more_leaves_than_it_has():
    with pytest.raises(ValueError, match="scann_num_leaves_to_search"):
        get_family("two_tower").hparams().override({"scann_num_leaves": "10", "scann_num_leaves_to_search": "11"})
    assert get_family("sasrec").hparams().scann is False and get_family("two_tower").hparams().scann is False


def test_local_server_loads_a_scann_model_in_a_fresh_process(pair):
    """A process that has not imported ScaNN cannot load the model with tf.saved_model.load;
    the local server's loading path registers the ops and serves the same answers."""
    _, _, approximate, scann_dir, _ = pair
    histories = _histories(n=4)
    want = _recommend(approximate, histories)
    script = textwrap.dedent(f"""
        import json, sys
        import numpy as np
        import tensorflow as tf
        from contract import protocol
        from serving import local_server
        assert "scann" not in sys.modules
        try:
            tf.saved_model.load({scann_dir!r})
            plain = "loaded"
        except Exception as exc:
            plain = str(exc)
        servable = local_server.load_servable("m", 1, {scann_dir!r})
        items, behaviors = protocol.history_arrays({histories!r}, None)
        from tensorflow_serving.apis import predict_pb2
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "m"
        request.model_spec.signature_name = protocol.RECOMMEND
        for key, proto in protocol.as_input_protos({{"history_item_ids": items, "history_behaviors": behaviors}}).items():
            request.inputs[key].CopyFrom(proto)
        out = local_server.predict(servable, request).outputs
        ids = protocol.tensor_proto_to_ndarray(out[protocol.RECOMMEND_ITEM_IDS])
        print(json.dumps({{"plain": plain, "ids": [[i.decode() for i in row] for row in ids]}}))
    """)
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert "Scann>" in result["plain"]  # the ops are what the plain load misses
    assert result["ids"] == [[i.decode() for i in row] for row in want[protocol.RECOMMEND_ITEM_IDS]]


def test_grpc_client_recommends_from_a_scann_model(pair, tmp_path):
    from serving import client as serving_client
    from serving import local_server

    family, _, approximate, scann_dir, _ = pair
    base = tmp_path / "serving"
    os.makedirs(base / family)
    os.symlink(scann_dir, base / family / "1")
    histories = _histories(n=5)
    want = _recommend(approximate, histories)
    server = local_server.serve(str(base), port=0, host="127.0.0.1", poll_seconds=0)
    try:
        with serving_client.ServingClient(server.address, timeout_s=60.0, retries=2) as client:
            got = client.recommend(family, histories)
    finally:
        server.stop()
    assert [[item for item, _ in row] for row in got] == [[i.decode() for i in row]
                                                          for row in want[protocol.RECOMMEND_ITEM_IDS]]
    np.testing.assert_allclose([[s for _, s in row] for row in got], want[protocol.RECOMMEND_SCORES], rtol=1e-5)


def test_local_server_names_the_missing_ops_when_scann_is_not_installed(pair, monkeypatch):
    import grpc

    from export import scann_index
    from serving import local_server

    def missing():
        raise ImportError("the model searches a ScaNN index and its ops are not available here: install scann==1.3.2")

    monkeypatch.setattr(scann_index, "load_scann_ops", missing)
    _, _, _, scann_dir, exact_dir = pair
    with pytest.raises(local_server.RequestError) as failed:
        local_server.load_servable("m", 1, scann_dir)
    assert failed.value.code == grpc.StatusCode.NOT_FOUND
    assert "Scann>ScannSearchBatched" in failed.value.message and "scann==1.3.2" in failed.value.message
    local_server.load_servable("m", 1, exact_dir)  # a model without ScaNN ops does not need them
