"""bench/reviews.py's pieces on synthetic rows, and the Amazon reviews description they read.

The benchmark itself runs on the real reviews (`make bench-reviews`); these check that what
it compares is computed as documented.
"""
import re

import numpy as np
import pytest
import tensorflow as tf

from bench import common, peers, reviews
from contract import datasets as D
from contract import description as desc
from contract import features as F
from evaluation import definitions as d

AMAZON = desc.load("amazon_reviews")


def _raw(rating=None, helpful_yes=None, watched=1):
    feature = {F.USER_ID: tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"u"])),
               "watched": tf.train.Feature(int64_list=tf.train.Int64List(value=[watched]))}
    if rating is not None:
        feature["rating"] = tf.train.Feature(float_list=tf.train.FloatList(value=[rating]))
    if helpful_yes is not None:
        feature["helpful_yes"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[helpful_yes]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def test_the_amazon_description_reads_what_its_comment_says():
    assert AMAZON.data_dir == ""  # the data is not shipped
    assert (AMAZON.user, AMAZON.item, AMAZON.time, AMAZON.rating) == ("reviewerID", "asin", "unixReviewTime", "overall")
    assert AMAZON.interactions.header and AMAZON.interactions.quotechar == '"'
    assert [AMAZON.rating_behavior(r) for r in (1, 2, 3, 4, 5)] == ["disliked", "disliked", "neutral", "liked", "liked"]
    read = {c.column for c in AMAZON.columns} | {AMAZON.user, AMAZON.item, AMAZON.time, AMAZON.rating}
    assert "reviewerName" not in read and "reviewTime" not in read
    texts = {c.name: c for c in AMAZON.text_columns}
    assert set(texts) == {"review", "summary"} and all(c.documents for c in texts.values())
    assert texts["review"].column == "reviewText"
    pattern = re.compile(AMAZON.column("helpful_yes").pattern)
    assert [int(pattern.search(v).group(1)) for v in ("[0, 0]", "[13, 14]", "[ 2,3]")] == [0, 13, 2]
    spec = D.dataset_spec("amazon_reviews")
    assert [t.name for t in spec.tasks] == ["rating", "liked", "helpful", "watched", "items"]
    assert spec.binary_tasks() == ("liked", "helpful") and spec.default_split == "hash"
    assert str(AMAZON.label("helpful").condition) == "helpful_yes >= 1.0"


def test_the_amazon_csv_reads_as_described(tmp_path):
    (tmp_path / "Musical_instruments_reviews.csv").write_bytes(
        b'reviewerID,asin,reviewerName,helpful,reviewText,overall,summary,unixReviewTime,reviewTime\r\n'
        b'A1,B1,"cassandra ""Yeah""","[2, 3]","Two lines,\r\nand ""quotes""",5.0,good,1393545600,"02 28, 2014"\r\n'
        b'A2,B1,Jake,"[0, 0]",,1.0,bad,1363392000,"03 16, 2013"\r\n')
    frame = common.read_table(AMAZON.interactions, str(tmp_path))
    assert frame["reviewText"].tolist() == ['Two lines,\r\nand "quotes"', ""]
    assert frame["overall"].tolist() == ["5.0", "1.0"] and frame["helpful"].tolist() == ["[2, 3]", "[0, 0]"]


def test_expr_labels_follow_the_description_and_missing_values_are_zero():
    examples = [_raw(5.0, 2), _raw(3.0, 0), _raw(4.0), _raw(None, None, watched=0)]
    assert reviews.label_values(AMAZON, examples, "liked").tolist() == [1, 0, 1, 0]
    assert reviews.label_values(AMAZON, examples, "helpful").tolist() == [1, 0, 0, 0]
    assert reviews.label_values(AMAZON, examples, "watched").tolist() == [1, 1, 1, 0]
    assert reviews.label_values(AMAZON, examples, "rating").tolist() == [5, 3, 4, 0]
    tasks = D.dataset_spec("amazon_reviews").tasks
    assert [t.name for t in reviews.binary_tasks(AMAZON, tasks, "watched")] == ["liked", "helpful"]


def test_item_prior_shrinks_each_items_rate_to_the_global_one():
    items, labels = ["a", "a", "a", "b"], np.array([1.0, 1.0, 0.0, 0.0])  # global rate 0.5
    got = reviews.item_prior(items, labels, ["a", "b", "c"], strength=2.0)
    assert got.tolist() == pytest.approx([(2 + 2 * 0.5) / (3 + 2), (0 + 1.0) / (1 + 2), 0.5])


def test_binary_metrics_read_only_the_order():
    rng = np.random.default_rng(0)
    labels = (rng.random(200) < 0.3).astype(float)
    scores = labels + rng.normal(0, 0.8, 200)
    a, b = reviews.binary_metrics(scores, labels), reviews.binary_metrics(3.0 + 2.0 * scores, labels)
    assert a == b and a["auc"] == d.binary_auc(scores, labels > 0.5)
    assert a["positive_rate"] == pytest.approx(labels.mean())


def _rows():
    rating = lambda model, kind, rmse, std=None: {  # noqa: E731
        "section": reviews.RATING, "model": model, "kind": kind, "task": "rating", "rmse": rmse, "rmse_std": std,
        "mae": rmse * 0.8, "seeds": 1, "train_seconds": 1.0, "setting": "s"}
    retrieval = lambda model, kind, ndcg: {  # noqa: E731
        "section": reviews.RETRIEVAL, "model": model, "kind": kind, "task": "", "ndcg_at_10": ndcg,
        "ndcg_at_10_std": None, "hr_at_10": ndcg * 2, "recall_at_10": ndcg, "mrr_at_10": ndcg, "users": 9.0,
        "seeds": 1, "train_seconds": 1.0, "setting": "s"}
    return [rating(reviews.BASELINE, "peer", 0.90), rating("mf", "family", 0.88, 0.001), rating("mf_dnn", "family", 0.93),
            rating("mmoe", "family", 0.89), retrieval(reviews.MOST_POPULAR, "peer", 0.02),
            retrieval(reviews.EASE, "peer", 0.05), retrieval("two_tower", "family", 0.05),
            {"section": reviews.BINARY, "model": "mmoe", "kind": "family", "task": "helpful", "auc": 0.7,
             "auc_std": None, "pr_auc": 0.4, "positive_rate": 0.3, "seeds": 1, "train_seconds": 1.0, "setting": "s"}]


def test_goals_compare_every_rating_family_with_baseline_only_and_two_tower_with_the_peers():
    lines = reviews.goals(_rows(), ["mf", "mf_dnn", "mmoe", "absent"], "two_tower")
    assert lines == [
        "- mf test RMSE 0.8800 +- 0.0010 below surprise_baseline_only 0.9000: met",
        "- mf_dnn test RMSE 0.9300 below surprise_baseline_only 0.9000: not met",
        "- mmoe test RMSE 0.8900 below surprise_baseline_only 0.9000: met",
        "- two_tower test NDCG@10 0.0500 above most_popular 0.0200: met; at or above ease 0.0500: met",
    ]
    worse = [dict(r, ndcg_at_10=0.049) if r["model"] == "two_tower" else r for r in _rows()]
    assert reviews.goals(worse, [], "two_tower")[-1].endswith("at or above ease 0.0500: not met")
    # With paired intervals, the means decide nothing the intervals call no difference.
    intervals = {reviews.rating_pair("mf", "rating"): {"diff": -0.02, "low": -0.03, "high": 0.001},
                 reviews.rating_pair("mmoe", "rating"): {"diff": -0.01, "low": -0.02, "high": -0.001},
                 reviews.retrieval_pair("two_tower", "most_popular"): {"diff": 0.03, "low": -0.001, "high": 0.05},
                 reviews.retrieval_pair("two_tower", "ease"): {"diff": 0.0, "low": -0.01, "high": 0.01}}
    lines = reviews.goals(_rows(), ["mf", "mmoe"], "two_tower", intervals)
    assert lines[0] == "- mf test RMSE 0.8800 +- 0.0010 below surprise_baseline_only 0.9000 (paired interval " \
                       "[-0.0300, +0.0010]): not met"
    assert lines[1].endswith("(paired interval [-0.0200, -0.0010]): met")
    assert lines[2].endswith("most_popular 0.0200 (paired interval [-0.0010, +0.0500]): not met; at or above ease "
                             "0.0500 (paired interval [-0.0100, +0.0100]): met")
    intervals[reviews.retrieval_pair("two_tower", "ease")] = {"diff": -0.02, "low": -0.03, "high": -0.001}
    assert reviews.goals(_rows(), [], "two_tower", intervals)[-1].endswith("not met")


def test_summary_rows_and_the_results_page():
    row = reviews.summary_row(reviews.RATING, "mf", "family", "rating", [{"rmse": 0.9}, {"rmse": 0.8}], [2.0, 4.0], "x")
    assert row["rmse"] == pytest.approx(0.85) and row["rmse_std"] == pytest.approx(np.std([0.9, 0.8], ddof=1))
    assert (row["seeds"], row["train_seconds"]) == (2, 3.0)
    one = reviews.summary_row(reviews.RATING, reviews.BASELINE, "peer", "rating", [{"rmse": 0.9}], [0.0], "x")
    assert one["rmse_std"] is None
    users = reviews.summary_row(reviews.RETRIEVAL, "x", "peer", "", [{"ndcg_at_10": 0.1, "users": 9},
                                                                      {"ndcg_at_10": 0.2, "users": 9}], [], "")
    assert users["users"] == 9 and "users_std" not in users and users["ndcg_at_10"] == pytest.approx(0.15)
    meta = {"dataset": "amazon_reviews", "data": "amazon_reviews (datasets/amazon_reviews.yaml), hash split",
            "rows": [8, 1, 1], "seeds": [42], "tuning": {"ease": {"chosen": 100.0}}, "name": "amazon_reviews",
            "peer_status": {"surprise_svd": "n_epochs: interior; lr_all: at the lower bound 0.0001"}}
    text = reviews.markdown(_rows(), meta, ["- a goal"])
    for heading in ("## Rating (test rows)", "## Binary tasks (test rows)", "## Retrieval", "## Goals"):
        assert heading in text
    assert "| mf | family | rating | 0.8800 | 0.0010 |" in text and "- a goal" in text
    assert "`amazon_reviews_tuning.json`" in text
    assert "- surprise_svd: n_epochs: interior; lr_all: at the lower bound 0.0001" in text


def test_served_outputs_reads_the_tasks_outputs_in_batches(tmp_path):
    class Model(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def serve(self, examples):
            parsed = tf.io.parse_example(examples, {"rating": tf.io.FixedLenFeature([1], tf.float32)})
            return {"rating": parsed["rating"][:, 0] + 1.0, "liked": tf.sigmoid(parsed["rating"][:, 0])}

    model = Model()
    tf.saved_model.save(model, str(tmp_path / "m"), signatures={"serving_default": model.serve})
    examples = [_raw(float(i % 5 + 1)) for i in range(7)]
    out = reviews.served_outputs(str(tmp_path / "m"), examples, ["rating", "helpful"], batch=3)
    assert list(out) == ["rating"] and out["rating"].tolist() == [float(i % 5 + 2) for i in range(7)]


def test_results_files_name_the_commit(tmp_path):
    common.write_results("x", [{"a": 1}], "# x", {"command": "c", "machine": "m", "commit": "abc123"}, str(tmp_path))
    text = (tmp_path / "x.md").read_text()
    assert "Produced by: `c`" in text and "Commit: abc123" in text and "Machine: m" in text
    assert common.commit() != ""


def test_small_log_svd_search_keeps_the_shared_bounds_but_the_epochs():
    by_name = {k.name: k for k in peers.SMALL_LOG_SVD_KNOBS}
    shared = {k.name: k for k in peers.SVD_KNOBS}
    assert list(by_name) == list(shared)
    assert by_name["n_epochs"].values == (80, 160, 320) and by_name["n_epochs"].high > max(by_name["n_epochs"].values)
    for name in ("n_factors", "lr_all", "reg_all"):  # only the first grid differs
        assert (by_name[name].low, by_name[name].high, by_name[name].why) == \
            (shared[name].low, shared[name].high, shared[name].why)
    # A search on a small log widens epochs past the shared bound when eval asks for it.
    assert peers.SMALL_LOG_SVD_KNOBS[1].past(640, up=True) == 1280 and peers.SVD_KNOBS[1].past(640, up=True) is None
    assert reviews.setting_of({}) == "defaults" and reviews.setting_of({"l2": "1", "dim": "16"}) == '{"dim": "16", "l2": "1"}'


def test_paired_interval_of_rmse_and_of_per_user_means():
    rng = np.random.default_rng(1)
    ratings = rng.integers(1, 6, 400).astype(float)
    peer = ratings + rng.normal(0, 1.0, 400)
    good = np.stack([ratings + rng.normal(0, 0.5, 400) for _ in range(3)])
    same = reviews.paired_interval(np.stack([(peer - ratings) ** 2]), (peer - ratings) ** 2, "rmse", resamples=200)
    assert same == {"diff": 0.0, "low": 0.0, "high": 0.0}
    assert reviews.interval_text("x", same, lower_is_better=True).endswith("no difference")
    better = reviews.paired_interval((good - ratings) ** 2, (peer - ratings) ** 2, "rmse", resamples=200)
    want = np.mean([d.rmse(g, ratings) for g in good]) - d.rmse(peer, ratings)
    assert better["diff"] == pytest.approx(want) and better["low"] <= better["diff"] <= better["high"] < 0
    assert reviews.interval_text("x", better, lower_is_better=True).endswith("family better")
    ndcg = reviews.paired_interval(np.array([[0.5, 0.5, 0.5, 0.5]]), np.array([0.0, 1.0, 0.0, 1.0]), "mean",
                                   resamples=500)
    assert ndcg["diff"] == 0.0 and ndcg["low"] < 0 < ndcg["high"]  # same mean, different users: no difference
    worse = {"diff": -0.02, "low": -0.03, "high": -0.01}
    assert reviews.interval_text("ndcg", worse, lower_is_better=False) == "- ndcg: -0.0200 [-0.0300, -0.0100], peer better"
    with pytest.raises(ValueError, match="paired units differ: family 3, peer 2"):
        reviews.paired_interval(np.ones((2, 3)), np.ones(2), "mean")


def test_user_ndcg_averages_to_the_protocol_metric():
    ranked = [np.array([3, 1, 2]), np.array([5, 6, 7]), np.array([9, 8, 4])]
    targets = [np.array([1]), np.array([4]), np.array([4, 9])]
    per_user = reviews.user_ndcg(ranked, targets, k=3)
    assert per_user[1] == 0.0 and per_user.mean() == pytest.approx(d.topk_metrics(ranked, targets, 3)["ndcg@3"])
