"""The MF-family benchmark: peers on raw examples, served scoring, goals, and one tiny end-to-end run."""
import json
import math

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("surprise")

from bench import mf_family, mf_tuning, peers  # noqa: E402
from evaluation import recommendation_metrics  # noqa: E402
from contract import features as F  # noqa: E402


def _example(user, item, rating=None, watched=1):
    feature = {
        F.USER_ID: tf.train.Feature(bytes_list=tf.train.BytesList(value=[user.encode()])),
        F.ITEM_ID: tf.train.Feature(bytes_list=tf.train.BytesList(value=[item.encode()])),
        F.WATCHED: tf.train.Feature(int64_list=tf.train.Int64List(value=[watched])),
    }
    if rating is not None:
        feature[F.RATING] = tf.train.Feature(float_list=tf.train.FloatList(value=[rating]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _write_split(directory, records):
    directory.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(directory / "data.gz"), options="GZIP") as w:
        for r in records:
            w.write(r)
    return str(directory)


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


def test_read_rated_rows_skips_negatives_and_keeps_served_examples(tmp_path):
    records = [_example("u1", "m1", 4.0), _example("u1", "m9", watched=0), _example("u2", "m1", 2.5)]
    rows = peers.read_rated_rows(_write_split(tmp_path / "Split-test", records))
    assert list(rows.users) == ["u1", "u2"] and list(rows.items) == ["m1", "m1"]
    assert rows.ratings.tolist() == [4.0, 2.5]
    assert rows.examples == [records[0], records[2]]


def test_read_rated_rows_names_the_record_of_a_missing_rating(tmp_path):
    split = _write_split(tmp_path / "Split-train", [_example("u1", "m1", 4.0), _example("u1", "m2")])
    with pytest.raises(ValueError, match=r"record 1: feature 'rating' has 0 values"):
        peers.read_rated_rows(split)


def test_read_rated_rows_rejects_out_of_range_rating(tmp_path):
    split = _write_split(tmp_path / "Split-train", [_example("u1", "m1", 7.0)])
    with pytest.raises(ValueError, match=r"record 0: rating 7.0 outside"):
        peers.read_rated_rows(split)


def test_peers_learn_biases_and_svd_is_deterministic(tmp_path):
    data = _rated()
    split = len(data) * 4 // 5
    to_rows = lambda part: peers.RatedRows(  # noqa: E731
        np.array([u for u, _, _ in part]), np.array([i for _, i, _ in part]),
        np.array([r for _, _, r in part]), [b""] * len(part))
    train, test = to_rows(data[:split]), to_rows(data[split:])
    mean = peers.global_mean(train, test)
    assert np.allclose(mean, np.mean(train.ratings))
    baseline = peers.baseline_only(train, test)
    svd_a, svd_b = peers.svd(train, test), peers.svd(train, test)
    assert np.array_equal(svd_a, svd_b)
    err = {name: recommendation_metrics(test.users, s, test.ratings)["rmse"]
           for name, s in (("mean", mean), ("baseline", baseline), ("svd", svd_a))}
    assert err["baseline"] < err["mean"] and err["svd"] < err["mean"]


def test_metric_row_leaves_rating_errors_null_for_the_liked_head():
    test = peers.RatedRows(np.array(["a", "a", "b", "b"]), np.array(["1", "2", "1", "2"]),
                           np.array([5.0, 1.0, 4.0, 2.0]), [b""] * 4)
    row = mf_family.metric_row("mf_dnn_liked", test, np.array([0.9, 0.1, 0.8, 0.3]), rating_errors=False)
    assert row["rmse"] is None and row["mae"] is None
    assert row["auc"] == 1.0 and row["ndcg_at_10"] == 1.0
    rated = mf_family.metric_row("mf", test, np.array([4.0, 1.0, 4.0, 2.0]), rating_errors=True)
    assert rated["rmse"] == pytest.approx(math.sqrt(1.0 / 4)) and rated["mae"] == pytest.approx(0.25)


def test_serve_scores_calls_serving_default_in_batches(tmp_path):
    class Doubler(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def serve(self, examples):
            parsed = tf.io.parse_example(examples, {F.RATING: tf.io.FixedLenFeature([1], tf.float32)})
            return {F.RATING: parsed[F.RATING][:, 0] * 2.0}

    module = Doubler()
    tf.saved_model.save(module, str(tmp_path / "m"), signatures={"serving_default": module.serve})
    examples = [_example("u", f"m{i}", 0.5 * (i % 10 + 1)) for i in range(7)]
    scores = mf_family.serve_scores(str(tmp_path / "m"), examples, F.RATING, batch_size=3)
    assert scores.tolist() == [1.0 * (i % 10 + 1) for i in range(7)]
    with pytest.raises(KeyError, match="expected 'liked'"):
        mf_family.serve_scores(str(tmp_path / "m"), examples, F.LIKED)


def test_goals_compare_with_svd_and_the_thresholds():
    def row(model, rmse, auc, ndcg):
        return {"model": model, "rmse": rmse, "auc": auc, "ndcg_at_10": ndcg}

    rows = [row("mf", 0.87, 0.79, 0.95), row("mf_dnn", 0.87, 0.81, 0.93), row(peers.SVD, 0.88, 0.78, 0.94)]
    lines = "\n".join(mf_family.goals(rows, make_run_seconds=None))
    assert "MF RMSE <= 0.88: 0.8700 — **met**" in lines
    assert "MF-DNN RMSE <= 0.86: 0.8700 — **not met**" in lines
    assert "mf NDCG@10 >= SVD's 0.9400: 0.9500 — **met**" in lines
    assert "mf_dnn NDCG@10 >= SVD's 0.9400: 0.9300 — **not met**" in lines
    assert "under 360 s: not measured" in lines
    assert "**not met**" in "\n".join(mf_family.goals(rows, make_run_seconds=400.0)).split("make run")[-1]


def test_expand_grid_covers_every_combination_and_rejects_empty_lists():
    grid = mf_tuning.expand_grid({"l2": [0.1, 0.2], "learning_rate": [0.01], "dim": [16, 32]})
    assert len(grid) == 4 and {"dim": 16, "l2": 0.2, "learning_rate": 0.01} in grid
    with pytest.raises(ValueError, match=r"grid\['l2'\]"):
        mf_tuning.expand_grid({"l2": []})


@pytest.fixture(scope="module")
def tiny_movielens(tmp_path_factory, movielens_dir):
    """The first 25 users of the shipped ratings (CRLF kept) and every movie."""
    out = tmp_path_factory.mktemp("ml-tiny")
    lines = (movielens_dir / "ratings.csv").read_bytes().split(b"\r\n")
    kept = [lines[0]] + [l for l in lines[1:] if l and int(l.split(b",")[0]) <= 25]
    (out / "ratings.csv").write_bytes(b"\r\n".join(kept) + b"\r\n")
    (out / "movies.csv").write_bytes((movielens_dir / "movies.csv").read_bytes())
    return out


def test_benchmark_end_to_end_on_tiny_data(tiny_movielens, tmp_path):
    out = tmp_path / "results"
    rc = mf_family.main(["--data_dir", str(tiny_movielens), "--families", "mf,mf_dnn_liked",
                         "--train_steps", "20", "--out", str(out), "--work_dir", str(tmp_path / "work")])
    assert rc == 0
    rows = json.loads((out / mf_family.JSON_NAME).read_text())
    by = {r["model"]: r for r in rows}
    assert list(by) == ["mf", "mf_dnn_liked", peers.GLOBAL_MEAN, peers.BASELINE_ONLY, peers.SVD]
    assert all(set(r) == set(mf_family.ROW_KEYS) for r in rows)
    assert by["mf_dnn_liked"]["rmse"] is None and by["mf"]["rmse"] is not None
    for r in rows:
        assert 0.0 <= r["ndcg_at_10"] <= 1.0 and 0.0 <= r["auc"] <= 1.0 and r["make_run_seconds"] is None
    assert by[peers.GLOBAL_MEAN]["auc"] == 0.5  # a constant score ranks nothing
    # Peers and families were measured on the same test rows: the raw test split.
    raw = next((tmp_path / "work").glob("pipeline/pipeline_root/InteractionExampleGen/examples/*"))
    train, test = peers.read_rated_rows(str(raw / "Split-train")), peers.read_rated_rows(str(raw / "Split-test"))
    expected = recommendation_metrics(test.users, np.full(len(test), np.mean(train.ratings)), test.ratings)
    assert by[peers.GLOBAL_MEAN]["rmse"] == expected["rmse"]
    md = (out / mf_family.MD_NAME).read_text()
    assert "| mf_dnn_liked | n/a | n/a |" in md and "## Goals" in md and "## Tuning" in md
