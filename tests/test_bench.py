"""The benchmarks' own pieces: raw-row reading, the peers' closed forms, the served-score path.

The benchmarks run on the real data (bench/); these tests check on tiny synthetic data that
what they compare is computed as documented.
"""
import json
import time

import numpy as np
import pytest
import tensorflow as tf

from bench import common, mf_family, peers, topk, tune
from contract import description as desc
from contract import features as F
from evaluation import definitions as d
from training.views import UserView

RATING, WATCHED = "rating", "watched"  # the shipped MovieLens description's rating and implicit labels


def _example(user, item, rating=None, watched=1):
    feature = {
        F.USER_ID: tf.train.Feature(bytes_list=tf.train.BytesList(value=[user.encode()])),
        F.ITEM_ID: tf.train.Feature(bytes_list=tf.train.BytesList(value=[item.encode()])),
        WATCHED: tf.train.Feature(int64_list=tf.train.Int64List(value=[watched])),
    }
    if rating is not None:
        feature[RATING] = tf.train.Feature(float_list=tf.train.FloatList(value=[rating]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _write_split(directory, records):
    directory.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(directory / "data.gz"), options="GZIP") as w:
        for r in records:
            w.write(r)
    return str(directory)


MOVIELENS = desc.load("movielens")


def _renamed(d, implicit, rating):
    """`d` with its implicit and rating labels under other names (a description of one's own)."""
    raw = dict(d.to_dict())
    labels = dict(raw["labels"])
    labels[implicit] = labels.pop("watched")
    labels[rating] = labels.pop("rating")
    raw["labels"] = labels
    raw["tasks"] = [{"name": "stars", "kind": "regression", "label": rating}, {"name": "items", "kind": "retrieval"}]
    raw["interactions"] = dict(raw["interactions"], rating={"column": "rating", "min": 1, "max": 10})
    raw.pop("task_pair")
    return desc.from_dict(raw)


def test_read_rated_rows_skips_negatives_and_keeps_served_examples(tmp_path):
    records = [_example("u1", "m1", 4.0), _example("u1", "m9", watched=0), _example("u2", "m1", 2.5)]
    rows = peers.read_rated_rows(_write_split(tmp_path / "Split-test", records), MOVIELENS)
    assert list(rows.users) == ["u1", "u2"] and list(rows.items) == ["m1", "m1"]
    assert rows.ratings.tolist() == [4.0, 2.5]
    assert rows.examples == [records[0], records[2]]


def test_read_rated_rows_reads_the_descriptions_label_names_and_scale(tmp_path):
    mine = _renamed(MOVIELENS, implicit="bought", rating="stars")
    assert (peers.rating_label(mine), peers.rating_scale(mine)) == ("stars", (1.0, 10.0))

    def example(rating, bought=1):
        feature = {F.USER_ID: tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"u"])),
                   F.ITEM_ID: tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"i"])),
                   "bought": tf.train.Feature(int64_list=tf.train.Int64List(value=[bought]))}
        if rating is not None:
            feature["stars"] = tf.train.Feature(float_list=tf.train.FloatList(value=[rating]))
        return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()

    rows = peers.read_rated_rows(_write_split(tmp_path / "a", [example(9.0), example(None, bought=0)]), mine)
    assert rows.ratings.tolist() == [9.0]
    with pytest.raises(ValueError, match=r"record 0: stars 11.0 outside \[1, 10\]"):
        peers.read_rated_rows(_write_split(tmp_path / "b", [example(11.0)]), mine)
    with pytest.raises(ValueError, match="'taobao' has no rating label"):
        peers.rating_label(desc.load("taobao"))


def test_read_rated_rows_names_the_record_of_a_missing_rating(tmp_path):
    split = _write_split(tmp_path / "Split-train", [_example("u1", "m1", 4.0), _example("u1", "m2")])
    with pytest.raises(ValueError, match=r"record 1: feature 'rating' has 0 values"):
        peers.read_rated_rows(split, MOVIELENS)


def test_read_rated_rows_rejects_out_of_range_rating(tmp_path):
    split = _write_split(tmp_path / "Split-train", [_example("u1", "m1", 7.0)])
    with pytest.raises(ValueError, match=r"record 0: rating 7.0 outside"):
        peers.read_rated_rows(split, MOVIELENS)


def test_mf_family_goals_are_options():
    assert mf_family.parse_goal("mf:rmse<=0.875") == ("mf", "rmse", "<=", 0.875)
    assert mf_family.parse_goal("two_tower:auc>=0.8") == ("two_tower", "auc", ">=", 0.8)
    with pytest.raises(ValueError, match="expected MODEL:METRIC<=BOUND"):
        mf_family.parse_goal("mf rmse 0.8")
    rows = [{"model": "mf", "rmse": 0.86, "rmse_std": 0.001, "auc": 0.7, "auc_std": 0.0}]
    assert mf_family.goal_lines(rows, ["mf:rmse<=0.875", "mf:auc>=0.8", "mf_dnn:rmse<=0.9"]) == [
        "- mf rmse <= 0.875: 0.8600 +- 0.0010 — met", "- mf auc >= 0.8: 0.7000 +- 0.0000 — not met"]


def _rated(n_users=12, n_items=15, seed=0):
    """Ratings with a user and an item effect, so biases beat the global mean."""
    rng = np.random.default_rng(seed)
    user_bias, item_bias = rng.normal(0, 0.8, n_users), rng.normal(0, 0.8, n_items)
    rows = []
    for u in range(n_users):
        for i in range(n_items):
            if rng.random() < 0.7:
                r = float(np.clip(np.round((3.5 + user_bias[u] + item_bias[i] + rng.normal(0, 0.3)) * 2) / 2, 0.5, 5))
                rows.append((f"u{u}", f"m{i}", r))
    return rows


def test_rating_peers_learn_biases_and_svd_is_deterministic():
    data = _rated()
    split = len(data) * 4 // 5
    to_rows = lambda part: peers.RatedRows(  # noqa: E731
        np.array([u for u, _, _ in part]), np.array([i for _, i, _ in part]),
        np.array([r for _, _, r in part]), [b""] * len(part))
    train, test = to_rows(data[:split]), to_rows(data[split:])
    mean = peers.global_mean(train, test)
    assert np.allclose(mean, np.mean(train.ratings))
    svd_a, svd_b = peers.svd(train, test), peers.svd(train, test)
    assert np.array_equal(svd_a, svd_b)
    err = {name: d.rmse(s, test.ratings) for name, s in
           (("mean", mean), ("baseline", peers.baseline_only(train, test)), ("svd", svd_a))}
    assert err["baseline"] < err["mean"] and err["svd"] < err["mean"]


def test_protocol_r_metrics_read_liked_at_the_given_threshold():
    users = np.array(["a", "a", "a", "b", "b", "b"])
    ratings = np.array([5.0, 3.5, 1.0, 4.0, 3.0, 2.0])
    scores = np.array([4.0, 4.5, 1.0, 2.5, 3.5, 1.0])  # 3.5 ranks above 5.0, 3.0 above 4.0
    test = peers.RatedRows(users=users, items=np.array(list("xyzxyz")), ratings=ratings, examples=[])
    at_4, at_3 = mf_family.metrics(test, scores, 4.0), mf_family.metrics(test, scores, 3.0)
    assert at_4["auc"] == pytest.approx(d.binary_auc(scores, ratings >= 4.0))
    assert at_3["auc"] == pytest.approx(d.binary_auc(scores, ratings >= 3.0)) and at_3["auc"] != at_4["auc"]
    assert at_4["rmse"] == at_3["rmse"] == pytest.approx(d.rmse(scores, ratings))


def test_served_ratings_reads_serving_default_in_batches(tmp_path):
    class Doubler(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def serve(self, examples):
            parsed = tf.io.parse_example(examples, {RATING: tf.io.FixedLenFeature([1], tf.float32)})
            return {RATING: parsed[RATING][:, 0] * 2.0}

    module = Doubler()
    tf.saved_model.save(module, str(tmp_path / "m"), signatures={"serving_default": module.serve})
    examples = [_example("u", f"m{i}", 0.5 * (i % 10 + 1)) for i in range(7)]
    scores = mf_family.served_ratings(str(tmp_path / "m"), examples, RATING, batch=3)
    assert scores.tolist() == [1.0 * (i % 10 + 1) for i in range(7)]


def _view(histories, behaviors=None, targets=None):
    n = len(histories)
    return UserView(users=[f"u{i}".encode() for i in range(n)], activity=[b"light"] * n,
                    items=[np.array(h, np.int64) for h in histories],
                    behaviors=[np.array(b, np.int64) for b in (behaviors or [[1] * len(h) for h in histories])],
                    targets=[np.array(t, np.int64) for t in (targets or [[] for _ in histories])])


def test_interaction_matrix_keeps_only_the_liked_behavior_when_asked():
    view = _view([[1, 2, 3], [2, 4]], behaviors=[[1, 2, 1], [2, 2]])
    full = topk.interaction_matrix(view, num_rows=6).toarray()
    liked = topk.interaction_matrix(view, num_rows=6, liked_row=1).toarray()
    assert full.tolist() == [[0, 1, 1, 1, 0, 0], [0, 0, 1, 0, 1, 0]]
    assert liked.tolist() == [[0, 1, 0, 1, 0, 0], [0] * 6]


def test_item_knn_is_the_cosine_of_item_columns_without_self_similarity():
    rng = np.random.default_rng(1)
    histories = [sorted(rng.choice(np.arange(1, 8), size=rng.integers(1, 6), replace=False)) for _ in range(30)]
    view = _view(histories)
    sim = topk.item_knn_weights(view, num_rows=8)
    x = topk.interaction_matrix(view, 8).toarray()
    for a in range(1, 8):
        for b in range(1, 8):
            want = 0.0 if a == b else x[:, a] @ x[:, b] / (np.linalg.norm(x[:, a]) * np.linalg.norm(x[:, b]))
            assert sim[a, b] == pytest.approx(want, abs=1e-5)


def test_ease_column_is_the_ridge_regression_on_the_other_items():
    rng = np.random.default_rng(2)
    x = (rng.random((40, 6)) < 0.4).astype(np.float64)
    lam = 3.0
    b = topk.ease_weights(x.T @ x, lam)
    assert np.all(np.diag(b) == 0)
    for j in range(6):
        others = [i for i in range(6) if i != j]
        xo = x[:, others]
        want = np.linalg.solve(xo.T @ xo + lam * np.eye(5), xo.T @ x[:, j])
        assert np.allclose(b[others, j], want, atol=1e-4)


def test_full_history_scorer_excludes_the_history_and_invalid_rows():
    # item rows 1..5; row 0 padding and row 6 unknown are invalid. Popularity: 3 > 2 > 4 > 5.
    train = _view([[3, 2, 4], [3, 2], [3, 5]])
    counts = np.asarray(topk.interaction_matrix(train, 7).sum(axis=0)).reshape(-1)
    test = _view([[3], [2, 4]], targets=[[2], [5]])
    valid = np.array([False, True, True, True, True, True, False])
    scorer = topk.FullHistoryScorer(test, 7, np.diag(np.ones(7, np.float32)))
    scorer.weights = np.tile(counts.astype(np.float32), (7, 1))  # every history scores items by popularity
    got = scorer.evaluate(valid)
    # user 0: history {3} -> ranking 2, 4, 5, 1: target 2 at rank 1; user 1: history {2, 4} -> 3, 5, 1: rank 2
    assert got["hit_rate@10"] == 1.0
    assert got["mrr@10"] == pytest.approx((1.0 + 0.5) / 2)
    assert got["ndcg@10"] == pytest.approx((1.0 + 1 / np.log2(3)) / 2)


def test_topk_keeps_each_users_ndcg_and_compares_the_eval_choices():
    train = _view([[3, 2, 4], [3, 2], [3, 5]])
    counts = np.asarray(topk.interaction_matrix(train, 7).sum(axis=0)).reshape(-1)
    test = _view([[3], [2, 4]], targets=[[2], [5]])
    valid = np.array([False, True, True, True, True, True, False])
    scorer = topk.FullHistoryScorer(test, 7, np.tile(counts.astype(np.float32), (7, 1)))
    metrics, users = topk.scorer_users(scorer, valid)
    assert metrics == scorer.evaluate(valid)
    assert users == pytest.approx([1.0, 1 / np.log2(3)]) and np.mean(users) == pytest.approx(metrics["ndcg@10"])

    # Synthetic runs: test prefers ease and two_tower_b; eval prefers item_knn and two_tower_a.
    rng = np.random.default_rng(0)

    def runs(p, seeds):
        return [list(1.0 * (rng.random(300) < p)) for _ in range(seeds)]

    per_user = {"item_knn": runs(0.10, 1), "ease": runs(0.20, 1), "two_tower_a": runs(0.25, 3),
                "two_tower_b": runs(0.30, 3)}
    evals = {"item_knn": 0.12, "ease": 0.11, "two_tower_a": 0.20, "two_tower_b": 0.19}
    results = [{"model": m, "eval_ndcg_at_10": evals[m]} for m in per_user]
    [line] = topk.comparison_lines(results, ["two_tower_a", "two_tower_b"], per_user)
    assert "best family by eval (two_tower_a, eval 0.2000)" in line and "best peer by eval (item_knn" in line
    mean_a = np.mean([np.mean(r) for r in per_user["two_tower_a"]])
    assert f"two_tower_a {mean_a:.4f} ± " in line and "(3 seeds) vs item_knn" in line
    assert "paired 95% bootstrap" in line and "over 300 test users; better" in line


def test_serving_bench_counts_cpu_per_request_of_a_process_and_compares_merging():
    import os

    from bench import serving

    before = serving.process_cpu_seconds(os.getpid())
    end = time.process_time() + 0.2
    while time.process_time() < end:
        pass
    assert serving.process_cpu_seconds(os.getpid()) - before >= 0.1
    stats = serving.run_cell(lambda: sum(range(2000)), 2, 200, 5.0, warm=2, server_pid=os.getpid())
    assert stats["requests"] == 200 and stats["client_cpu_ms"] > 0 and stats["server_cpu_ms"] is not None
    assert "latencies_ms" not in stats  # a results row carries no per-request values unless asked
    kept = serving.run_cell(lambda: sum(range(2000)), 1, 50, 5.0, warm=0, keep_latencies=True)
    assert len(kept["latencies_ms"]) == kept["requests"] == 50 and min(kept["latencies_ms"]) > 0
    assert kept["p50_ms"] == round(float(np.percentile(kept["latencies_ms"], 50)), 3)
    rows = [{"path": "in_process", "signature": "s", "batch": 1, "concurrency": 8, "client_cpu_ms": 0.25,
             "server_cpu_ms": None, "max_batch_rows": None},
            {"path": "grpc", "signature": "s", "batch": 1, "concurrency": 8, "client_cpu_ms": 0.25,
             "server_cpu_ms": 0.5, "max_batch_rows": 512},
            {"path": "grpc", "signature": "s", "batch": 1, "concurrency": 8, "client_cpu_ms": 0.25,
             "server_cpu_ms": 1.25, "max_batch_rows": 0}]
    assert serving.cpu_lines(rows) == [
        "s, batch 1, concurrency 8: gRPC client + server merging 512: 0.750 ms, merging 0: 1.500 ms; in-process "
        "0.250 ms, so gRPC adds 0.500 ms (merging 512), 1.250 ms (merging 0); merging changes it by -50%"]


def test_serving_goals_are_decided_by_an_interval_over_repeated_cells():
    from bench import serving
    from contract import protocol

    def cell(p50, qps):
        return {"p50_ms": p50, "p95_ms": p50 * 2, "p99_ms": p50 * 3, "qps": qps, "requests": 100, "errors": 0,
                "client_cpu_ms": 0.1, "server_cpu_ms": None, "first_error": None}

    def rows(grpc_p50s, local_p50s, qps8):
        out = []
        for path, p50s, conc, qps in (("grpc", grpc_p50s, 1, [500.0] * len(grpc_p50s)),
                                      ("in_process", local_p50s, 1, [900.0] * len(local_p50s)),
                                      ("grpc", [1.0] * len(qps8), 8, qps8)):
            out.append({"path": path, "signature": protocol.SERVING_DEFAULT, "batch": 1, "concurrency": conc,
                        **serving.pooled([cell(p, q) for p, q in zip(p50s, qps)])})
        return out

    pooled = rows([1.0, 1.2, 1.1], [0.3, 0.3, 0.3], [1500.0, 1600.0, 1550.0])[0]
    assert pooled["p50_ms"] == 1.1 and pooled["p50_std_ms"] == 0.1 and pooled["requests"] == 300
    assert [r["p50_ms"] for r in pooled["repeats"]] == [1.0, 1.2, 1.1]
    gap, qps = serving.goals(rows([0.9, 1.0, 0.95], [0.3, 0.3, 0.3], [1500.0, 1600.0, 1550.0]))
    assert gap.endswith(": met") and "gap 0.650 ms [" in gap and "(3 repeats, 95% t interval)" in gap
    assert qps.endswith(": met") and qps.startswith(">= 1000 requests/s at concurrency 8, batch 1: 1550 [")
    # A mean gap under the bound whose interval reaches past it, and requests/s clearly below.
    gap, qps = serving.goals(rows([0.5, 1.9, 1.0], [0.2, 0.2, 0.2], [700.0, 720.0, 710.0]))
    assert gap.endswith("not decided (the interval holds the bound)") and qps.endswith(": NOT met")
    gap, qps = serving.goals(rows([1.0], [0.3], [1500.0]))  # one measurement decides nothing
    assert "not decided (one measurement" in gap and "not decided (one measurement" in qps


def test_combiner_cost_times_the_real_task_combiners_on_weighted_rows():
    from bench import combiner_cost

    outputs = {"liked": "binary", "rating": "regression"}
    data = combiner_cost.elements(outputs, 300)
    results = combiner_cost.run_combiners(outputs, data, {"auc_threshold": 4.0, "value_range": [0.5, 5.0]})
    column = lambda key, output: np.array([float(e[key][output][0]) for e in data])
    kept = column("example_weights", "liked") > 0
    assert results["liked"]["examples"] == kept.sum() < 300
    p, y = column("predictions", "liked")[kept], column("labels", "liked")[kept]
    assert results["liked"]["auc"] == pytest.approx(d.binary_auc(p, y > 0.5))
    assert np.isfinite(results["rating"]["rmse"])
    rated = column("example_weights", "rating") > 0
    p, y = column("predictions", "rating")[rated], column("labels", "rating")[rated]
    assert results["rating"]["auc"] == pytest.approx(d.binary_auc(p, y >= 4.0))  # the rating's AUC is timed too
    assert "auc" not in combiner_cost.run_combiners(outputs, data)["rating"]


def test_tune_selects_another_eval_metric_at_the_early_stopped_epoch():
    summary = {"family": "mmoe", "best_epoch": 2, "best_value": 0.7,
               "history": {"val_mean_auc": [0.6, 0.7, 0.65], "val_rating_rmse": [1.1, 0.95, 0.9], "loss": [1, 1, 1]}}
    assert tune.selected_value(summary, "") == 0.7
    assert tune.selected_value(summary, "val_rating_rmse") == 0.95  # the kept weights' value, not the lowest
    with pytest.raises(ValueError, match="'val_rmse' is not an eval metric of mmoe; known: val_mean_auc, val_rating_rmse"):
        tune.selected_value(summary, "val_rmse")


def test_tune_grid_parses_choices_and_names_a_bad_item():
    assert tune.parse_grid(["dim=16,32", "hidden=64;128,64"]) == {"dim": ["16", "32"], "hidden": ["64", "128,64"]}
    with pytest.raises(ValueError, match="'dim'"):
        tune.parse_grid(["dim"])


def test_tuning_prefers_the_fastest_setting_within_the_noise_of_the_best():
    trials = [{"hparams": {"dim": 128}, "eval_mean": 0.8684, "eval_std": 0.002, "train_seconds": 60.0},
              {"hparams": {"dim": 64}, "eval_mean": 0.8690, "eval_std": 0.001, "train_seconds": 20.0},
              {"hparams": {"dim": 8}, "eval_mean": 0.8800, "eval_std": 0.001, "train_seconds": 5.0}]
    assert tune.choose(trials, lower=True)["hparams"] == {"dim": 64}
    single = [dict(t, eval_std=None) for t in trials]  # one seed: no noise estimate, the best mean
    assert tune.choose(single, lower=True)["hparams"] == {"dim": 128}
    auc = [dict(t, eval_mean=1 - t["eval_mean"]) for t in trials]
    assert tune.choose(auc, lower=False)["hparams"] == {"dim": 64}


def test_similar_bench_queries_neighbours_and_genre_measures():
    from bench import similar

    liked = 3
    train = UserView(users=[b"a", b"b", b"c"], activity=[b"light"] * 3,
                     items=[np.array([1, 2, 3]), np.array([4, 5]), np.array([2])],
                     behaviors=[np.array([3, 3, 1]), np.array([1, 2]), np.array([3])],
                     targets=[np.zeros(0, np.int64)] * 3)
    split = UserView(users=[b"c", b"a", b"b"], activity=[b"light"] * 3,
                     items=[np.zeros(0, np.int64)] * 3, behaviors=[np.zeros(0, np.int64)] * 3,
                     targets=[np.array([5]), np.array([4, 0]), np.array([1])])
    rows, targets = similar.item_to_item_queries(train, split, liked)
    # c: most recent liked is 2; a: most recent liked is 2 (3 was disliked); b liked nothing
    assert rows.tolist() == [2, 2] and targets == [{5}, {4}]

    vectors = np.eye(6)
    vectors[4] = vectors[2] * 0.9 + vectors[5] * 0.1
    valid = np.ones(6, bool)
    valid[0] = False
    top = similar.top_similar(similar.dot_scores(vectors), np.array([2]), valid, k=2)
    assert top[0, 0] == 4 and 2 not in top[0]  # the item itself is never its own neighbour
    assert similar.hit_rate(top, [{4}]) == 1.0 and similar.hit_rate(top, [{3}]) == 0.0

    genres = np.array([[0, 0, 0], [1, 1, 0], [1, 0, 0], [0, 0, 1]], float)  # focus values: columns 0 and 1
    measures = similar.set_measures(np.array([[2, 3], [1, 3]]), np.array([1, 2]), genres, np.array([0, 1]))
    assert measures["set_jaccard_at_10"] == pytest.approx((0.5 + 0 + 0.5 + 0) / 4)
    assert measures["focus_items"] == 1  # only row 1 has both focus values
    assert measures["focus_share"] == pytest.approx(0.5)


def test_similar_bench_reads_the_descriptions_set_feature_from_transformed_rows():
    from bench import similar

    assert similar.set_feature(desc.load("movielens")).name == "genres"
    assert similar.set_feature(desc.load("taobao")).name == "category"  # a categorical one when no multi-valued
    with pytest.raises(ValueError, match="'amazon_reviews' has no categorical item feature"):
        similar.set_feature(desc.load("amazon_reviews"))
    with pytest.raises(ValueError, match="no categorical item feature 'year'.*\\['genres'\\]"):
        similar.set_feature(desc.load("movielens"), "year")
    genres = similar.set_feature(desc.load("movielens"))
    name = genres.transformed_names()[0]
    parts = [{F.ITEM_IDX: np.array([1, 2, 1]), name: np.array([[1, 2, 0], [3, 0, 0], [1, 2, 0]])},
             {F.ITEM_IDX: np.array([3, 9]), name: np.array([[4, 4, 0], [1, 0, 0]])}]  # row 9: not a catalogue row
    sets = similar.feature_sets(parts, genres, num_rows=4, width=5)
    assert sets.tolist() == [[0] * 5, [0, 1, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 1]]


def _blend_scorer(cuts, num_rows):
    """A similarity whose query i (row 1 + i) ranks its target (row 1 + Q + i) above ten
    decoys only when w > cuts[i]: eval HR@10 keeps rising with w up to max(cuts)."""
    q = len(cuts)
    decoys = np.arange(1 + 2 * q, 11 + 2 * q)

    def scores_for(w):
        s = np.zeros((num_rows, num_rows))
        s[np.arange(1, q + 1)[:, None], decoys[None, :]] = 1.0
        s[np.arange(1, q + 1), np.arange(1 + q, 1 + 2 * q)] = w / np.asarray(cuts)
        return lambda rows: s[rows]

    return scores_for


def _blend_data(q):
    num_rows = 2 * q + 11
    valid = np.ones(num_rows, bool)
    valid[0] = False
    split = (np.arange(1, q + 1), [{1 + q + i} for i in range(q)])
    return num_rows, valid, {"eval": split, "test": split}


def _measure(similar, name, scorers, seeds, num_rows, valid, queries):
    return similar.measure_model(name, scorers, seeds, queries, valid, np.arange(1, 5),
                                 np.zeros((num_rows, 3), np.float32), np.zeros(0, np.int64),
                                 [1.0] * len(seeds), similar.weight_knob())


def test_similar_bench_widens_w_past_the_first_grid_and_keeps_each_test_querys_hit_per_seed(tmp_path):
    from bench import similar

    q = 30
    num_rows, valid, queries = _blend_data(q)
    cuts = 0.1 * (np.arange(q) + 0.5)  # 0.05 .. 2.95: eval HR rises past the first grid's top, w = 1
    scorers = [_blend_scorer(cuts, num_rows), _blend_scorer(cuts * 1.02, num_rows)]  # two "seeds"
    rows, entry, tuned = _measure(similar, "mf", scorers, [42, 43], num_rows, valid, queries)
    # Seed 42 hits every query from w = 3, seed 43 (cut 3.009) from w = 3.5; 4.0 is no better.
    assert entry["chosen"] == 3.5 and tuned.status == {"similar_category_weight": "interior"}
    assert [r["similar_category_weight"] for r in rows] == [0.0, 0.1, 0.2, 0.3, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0]
    chosen = [r for r in rows if r["chosen"]]
    assert len(chosen) == 1 and chosen[0]["tuning_status"] == "similar_category_weight: interior"
    assert rows[5]["eval_hr_at_10"] == pytest.approx(np.mean([10 / 30, 10 / 30]), abs=1e-4)  # w = 1: cuts < 1
    assert rows[9]["test_hr_at_10_per_seed"] == [1.0, round(29 / 30, 4)]

    path = similar.write_runs(str(tmp_path), {"seeds": [42, 43], "models": {"mf": entry}})
    with open(path) as f:
        hits = json.load(f)["models"]["mf"]["test_hits"]
    assert set(hits) == {similar.weight_key(r["similar_category_weight"]) for r in rows}
    assert hits["3.5"] == [[1] * q, [1] * q]
    assert hits["3"] == [[1] * q, [1] * (q - 1) + [0]]  # the last query's cut is 3.009 with seed 43
    assert hits["0"] == [[0] * q, [0] * q] and not list(tmp_path.glob("*.tmp*"))


def test_similar_bench_stops_widening_at_its_stated_bound():
    from bench import similar

    grid = np.concatenate([similar.WEIGHTS, np.arange(1.5, 40.01, 0.5)])
    cuts = (grid[:-1] + grid[1:]) / 2  # one between each two w: eval HR rises with every w up to 40, past the bound
    num_rows, valid, queries = _blend_data(len(cuts))
    _, entry, tuned = _measure(similar, "mf", [_blend_scorer(cuts, num_rows)], [42], num_rows, valid, queries)
    assert entry["chosen"] == similar.WEIGHT_HIGH == 20.0
    assert tuned.status["similar_category_weight"].startswith("at the upper bound 20 (w = 0 is the learned cosine")


def test_similar_bench_pairs_each_family_with_the_one_run_peer_and_with_its_own_w_0():
    from bench import similar

    q = 30
    num_rows, valid, queries = _blend_data(q)
    cuts = 0.1 * (np.arange(q) + 0.5)
    models = {}
    for name, scorers, seeds in (("mf", [_blend_scorer(cuts, num_rows), _blend_scorer(cuts * 1.02, num_rows)],
                                  [42, 43]),
                                 ("item_knn", [_blend_scorer(cuts * 0.3, num_rows)], [None])):
        models[name] = _measure(similar, name, scorers, seeds, num_rows, valid, queries)[1]
    models["mf_flat"] = {"chosen": 0.0, "test_hits": {"0": [[0] * q, [0] * q]}}
    lines = similar.paired_lines({"models": models})
    assert models["item_knn"]["chosen"] == 1.0  # cuts 0.015 .. 0.885: every query hit from w = 1
    assert lines[0].startswith("- mf (w=3.5) 1.0000 ± 0.0000 (2 seeds) vs item_knn (w=1) 1.0000 (1 seed): "
                               "diff +0.0000, paired 95% bootstrap [+0.0000, +0.0000] over 30 test queries; "
                               "no difference (the interval includes 0")
    assert lines[1].startswith("- mf_flat (w=0) 0.0000 ± 0.0000 (2 seeds) vs item_knn (w=1)")
    assert lines[1].endswith("; worse")
    assert lines[2] == ("- mf (w=3.5) 1.0000 ± 0.0000 (2 seeds) vs mf (w=0) 0.0000 ± 0.0000 (2 seeds): diff +1.0000, "
                        "paired 95% bootstrap [+1.0000, +1.0000] over 30 test queries; better")
    assert lines[3].startswith("- item_knn (w=1) 1.0000 (1 seed) vs item_knn (w=0) 0.0000 (1 seed)")
    assert lines[4] == "- mf_flat: its chosen w is 0, which is the w = 0 it would be compared with"
    assert len(lines) == 5


def test_read_table_reads_a_descriptions_table_in_its_format(tmp_path):
    from bench import common

    (tmp_path / "items.csv").write_text('id;name\r\n1;"A; quoted\r\nname"\r\n2;B\r\n', encoding="utf-8")
    source = desc.Source(files=("items.csv",), format=desc.CSV, delimiter=";")
    frame = common.read_table(source, str(tmp_path))
    assert frame["id"].tolist() == ["1", "2"] and frame["name"].tolist() == ["A; quoted\r\nname", "B"]
    (tmp_path / "log.jsonl").write_text('{"u": 1, "i": "x"}\n{"u": 2, "i": "y"}\n')
    frame = common.read_table(desc.Source(files=("*.jsonl",), format=desc.JSONL), str(tmp_path))
    assert frame["u"].tolist() == ["1", "2"]
    with pytest.raises(FileNotFoundError, match="no file matches"):
        common.read_table(desc.Source(files=("none.csv",), format=desc.CSV), str(tmp_path))


def _rated_rows(part):
    return peers.RatedRows(np.array([u for u, _, _ in part]), np.array([i for _, i, _ in part]),
                           np.array([r for _, _, r in part], dtype=np.float64), [b""] * len(part))


def test_baseline_only_is_tuned_per_method_on_eval_and_its_options_reach_surprise():
    data = _rated()
    a, b = len(data) * 3 // 5, len(data) * 4 // 5
    train, evaluation = _rated_rows(data[:a]), _rated_rows(data[a:b])
    knobs = {"als": (common.Knob("reg_i", (10.0,), common.GEOMETRIC, 4.0),
                     common.Knob("reg_u", (15.0,), common.GEOMETRIC, 4.0),
                     common.Knob("n_epochs", (10,), common.GEOMETRIC, 2.0, high=20, integer=True, why="test")),
             "sgd": (common.Knob("reg", (0.02,), common.GEOMETRIC, 4.0),
                     common.Knob("learning_rate", (0.005,), common.GEOMETRIC, 4.0, high=0.1, why="test"),
                     common.Knob("n_epochs", (20,), common.GEOMETRIC, 2.0, high=40, integer=True, why="test"))}
    searches = peers.tune_baseline_only(train, evaluation, knobs=knobs, max_evaluations=40)
    assert set(searches) == {"als", "sgd"}
    defaults = d.rmse(peers.baseline_only(train, evaluation), evaluation.ratings)
    for method, t in searches.items():
        assert t.chosen["method"] == method and not t.higher_is_better
        assert len(t.points) > 1 and set(t.status) == {k.name for k in knobs[method]}
        # The recorded score is the eval RMSE of the options it names.
        assert t.score == pytest.approx(d.rmse(peers.baseline_only(train, evaluation, **t.chosen), evaluation.ratings))
    assert searches["als"].score <= defaults + 1e-12  # surprise's defaults are the ALS search's first point
    best = peers.best_baseline(searches)
    assert best.score == min(t.score for t in searches.values())


def test_mf_family_compares_every_family_with_the_best_peer_by_eval_on_paired_test_rows():
    rng = np.random.default_rng(0)
    n = 600
    test = peers.RatedRows(np.array([f"u{i % 40}" for i in range(n)]), np.array([f"m{i}" for i in range(n)]),
                           rng.integers(1, 6, size=n).astype(np.float64), [b""] * n)
    per_seed = {"peer_a": [test.ratings + rng.normal(0, 1.0, n)],
                "peer_b": [test.ratings + rng.normal(0, 0.9, n)],
                "fam": [test.ratings + rng.normal(0, 0.5, n) for _ in range(3)]}
    # peer_b is better on test, but peer_a is chosen: it has the better eval value.
    rows = [{"model": "peer_a", "eval_rmse": 0.8}, {"model": "peer_b", "eval_rmse": 0.9},
            {"model": "fam", "eval_rmse": 0.7}]
    out, lines = mf_family.comparisons(rows, ["fam"], ["peer_a", "peer_b"], per_seed, test, 4.0)
    assert set(out) == {"fam"} and out["fam"]["b"] == "peer_a"
    assert out["fam"]["verdict"] == "better" and out["fam"]["high"] < 0 and out["fam"]["a_seeds"] == 3
    assert "best peer by eval (peer_a, eval 0.8000)" in lines[0] and "paired 95% bootstrap" in lines[0]
    assert lines[-1].startswith("- AUC (liked: rating >= 4), the best family by eval (fam")
