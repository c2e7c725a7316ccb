"""bench/multitask.py's own computations on tiny synthetic data: AUC intervals, rows, goals,
the peers' features. The benchmark itself runs on the real data (bench/)."""
import argparse

import numpy as np
import pytest

from bench import common
from bench import multitask as mt
from contract import datasets as D
from contract import description as desc
from contract import features as F
from evaluation import definitions as d


def _scores(n=400, seed=0, signal=1.0):
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.2
    s = rng.normal(size=n) + signal * y
    s[:20] = np.round(s[:20])  # some ties
    s[20:40] = s[0]
    return s, y


def test_bootstrap_interval_agrees_with_hanley_mcneil_and_covers_the_auc():
    s, y = _scores(n=600, seed=2)
    auc = d.binary_auc(s, y)
    summary = common.Measured.of("m", [common.auc_statistic(s, y)], len(s), resamples=400).summary()
    low, high = summary["low"], summary["high"]
    se, hm_low, hm_high = mt.hanley_mcneil(auc, int(y.sum()), int((~y).sum()))
    assert low < auc < high and hm_low < auc < hm_high
    assert abs((high - low) - (hm_high - hm_low)) < 0.5 * (hm_high - hm_low)
    assert 0 < se < 0.1


def test_hanley_mcneil_shrinks_with_more_positives():
    assert mt.hanley_mcneil(0.75, 17, 6000)[0] > mt.hanley_mcneil(0.75, 500, 6000)[0]


def test_tasks_drop_the_implicit_label_without_negatives_and_masks_follow_conditions():
    assert [t.name for t in mt.dataset_tasks("taobao", 0)] == ["cart", "fav", "buy"]
    assert {t.name for t in mt.dataset_tasks("movielens", 1)} == {"rating", "liked", "loved", "watched"}
    data = {F.ITEM_IDX: np.arange(4), "watched": np.array([1, 0, 1, 0])}
    spec = D.dataset_spec("movielens")
    assert mt.task_mask(data, spec.task("liked")).tolist() == [True, False, True, False]
    assert mt.task_mask(data, spec.task("watched")).all()


def test_rows_have_one_metric_each_with_mean_and_std_over_seeds():
    task = D.dataset_spec("taobao").task("buy")
    y = np.array([0, 1, 0, 1, 1, 0], dtype=float)
    mask = np.array([True] * 5 + [False])
    p1 = np.array([0.1, 0.9, 0.2, 0.8, 0.3, 0.99])
    p2 = np.array([0.1, 0.2, 0.3, 0.8, 0.9, 0.0])
    rows = mt.summarize("taobao", "mmoe", task, [p1, p2], y, mask)
    assert [r["metric"] for r in rows] == list(mt.BINARY_METRICS)
    for r in rows:
        assert set(r) == {"dataset", "model", "task", "metric", "value", "std", "seeds"} and r["seeds"] == 2
    auc = rows[0]
    per_seed = [d.binary_auc(p[mask], y[mask] > 0.5) for p in (p1, p2)]
    assert np.isclose(auc["value"], np.mean(per_seed)) and np.isclose(auc["std"], np.std(per_seed, ddof=1))
    rating = D.dataset_spec("movielens").task("rating")
    rrows = mt.summarize("movielens", "nmtr", rating, [np.array([3.0, 4.0])], np.array([3.5, 4.0]),
                         np.array([True, True]))
    assert [r["metric"] for r in rrows] == ["rmse", "mae"] and rrows[0]["std"] == 0.0


def _synthetic_run(eval_of):
    """Rows and paired comparisons of a synthetic Taobao fav run: `strong` models learn the
    label, `weak` ones barely; `eval_of` gives each model's eval AUC."""
    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.1).astype(float)
    strong = [y + rng.normal(scale=0.5, size=300) for _ in range(3)]
    weak = [y + rng.normal(scale=3.0, size=300) for _ in range(3)]
    task = D.dataset_spec("taobao").task("fav")
    rows, scores = [], {}
    for model, preds in (("mmoe", strong), ("dtrn", strong[::-1]), ("single_task", weak), ("logreg", weak[:1]),
                         ("lightgbm", strong[:1])):
        probs = [1 / (1 + np.exp(-p)) for p in preds]
        rows += mt.summarize("taobao", model, task, probs, y, np.ones(300, bool), eval_values=[eval_of[model]])
        scores[(model, "fav")] = probs
    measured = mt.add_intervals(rows, "taobao", scores, {"fav": y}, resamples=200, bootstrap=True)
    families = ["single_task", "mmoe", "dtrn"]
    paired = {f"taobao/{k}": v for k, v in mt.comparisons(rows, "taobao", measured, families).items()}
    return rows, paired, families


def test_intervals_comparisons_and_goals_on_synthetic_rows():
    # Eval prefers single_task among the families and logreg among the peers, though both
    # are the weak ones on test (the test split would pick mmoe or dtrn, and lightgbm): the
    # goal line compares the eval choices.
    rows, paired, families = _synthetic_run({"mmoe": 0.70, "dtrn": 0.71, "single_task": 0.72, "logreg": 0.80,
                                             "lightgbm": 0.60})
    auc_rows = [r for r in rows if r["metric"] == "auc"]
    assert all(r["ci_low"] <= r["value"] <= r["ci_high"] and r["hm_low"] <= r["value"] <= r["hm_high"]
               for r in auc_rows)
    # dtrn is compared with single_task like every family (it used to be left out).
    for family in ("mmoe", "dtrn"):
        c = paired[f"taobao/{family}/fav"]
        assert c["b"] == "single_task" and c["low"] > 0 and c["p_not_better"] == 0.0 and c["verdict"] == "better"
        assert c["a_std"] is not None and c["b_std"] is not None
    test_auc = {r["model"]: r["value"] for r in auc_rows}
    assert test_auc["lightgbm"] > test_auc["logreg"] and test_auc["mmoe"] > test_auc["single_task"]
    best = paired["taobao/best/fav"]
    assert (best["a"], best["b"], best["chosen_by"]) == ("single_task", "logreg", "eval AUC")
    lines = mt.goals(rows, ["taobao"], families, paired, sparse={"taobao": ("fav",)},
                     references={"taobao": {"fav": 0.778}})
    goal = next(l for l in lines if l.startswith("- taobao fav: best family by eval AUC single_task"))
    assert "best peer by eval AUC logreg" in goal and "0.778" in goal and "paired 95% bootstrap" in goal
    assert "single_task" in goal and " ± " in goal and "— not met" in goal
    sparse = next(l for l in lines if "(sparse)" in l)
    assert "met by mmoe, dtrn" in sparse and sparse.count("paired 95% bootstrap") == 2


def test_goal_lines_choose_by_eval_not_test():
    rows, paired, families = _synthetic_run({"mmoe": 0.70, "dtrn": 0.75, "single_task": 0.60, "logreg": 0.50,
                                             "lightgbm": 0.65})
    best = paired["taobao/best/fav"]
    assert (best["a"], best["b"]) == ("dtrn", "lightgbm")
    goal = next(l for l in mt.goals(rows, ["taobao"], families, paired) if "best family by eval AUC" in l)
    assert "best family by eval AUC dtrn (eval 0.7500)" in goal and "best peer by eval AUC lightgbm" in goal
    # Without eval values nothing is chosen on test: an error.
    for r in rows:
        r.pop("eval_value", None)
    with pytest.raises(ValueError, match="chosen on the eval split"):
        mt.goals(rows, ["taobao"], families, paired)


MOVIELENS = desc.load("movielens")
GENRES_IDX = mt.set_feature(MOVIELENS).transformed_names()[0]  # the description's multi-valued item feature


def test_per_dataset_options_default_to_the_description():
    args = argparse.Namespace(data_dir=["taobao=/data/tb"], negatives=None, work_dir="w",
                              sparse_tasks=None, reference_auc=["taobao=cart:0.6,buy:0.7"])
    mt.parse_data_arguments(args)
    assert args.negatives == list(mt.DEFAULT_NEGATIVES)
    assert mt.data_options(args, "taobao") == {"data_dir": "/data/tb"}
    assert mt.data_options(args, "movielens") == {"negatives_per_positive": 1}
    assert mt.reference_aucs(args, "taobao") == {"cart": 0.6, "buy": 0.7} and mt.reference_aucs(args, "movielens") == {}
    args.sparse_tasks = ["taobao=fav,buy"]
    assert mt.sparse_tasks(args, "taobao") == ("fav", "buy") and mt.sparse_tasks(args, "amazon_reviews") == ()
    # A description file is keyed by the file or by its description's name.
    shipped = str(desc.SHIPPED_DIR / "taobao.yaml")
    assert mt.data_options(args, shipped)["data_dir"] == "/data/tb"
    with pytest.raises(ValueError, match="--data_dir 'taobao': expected DATASET=VALUE"):
        mt.per_dataset(["taobao"], "--data_dir")


def test_dense_item_features_follow_the_description():
    assert mt.dense_item_features(MOVIELENS) == ("item_year_z", F.ITEM_POPULARITY_MM, F.ITEM_AVG_RATING_MM)
    assert mt.dense_item_features(desc.load("taobao")) == (F.ITEM_POPULARITY_MM, F.ITEM_AVG_RATING_MM)
    assert mt.set_feature(desc.load("taobao")).name == "category"
    assert mt.set_feature(desc.load("amazon_reviews")) is None


def _tiny_rows(n=6, hist=8):
    rng = np.random.default_rng(1)
    return {
        F.USER_IDX: rng.integers(1, 4, n), F.ITEM_IDX: np.arange(1, n + 1),
        GENRES_IDX: np.array([[1, 2], [2, 0], [3, 0], [1, 0], [2, 3], [1, 0]])[:n],
        F.ITEM_POPULARITY_MM: np.linspace(0, 1, n).astype(np.float32),
        F.HISTORY_ITEM_IDX: np.array([[1, 2, 0, 0, 0, 0, 0, 0]] * n)[:, :hist],
        F.HISTORY_BEHAVIOR_IDX: np.array([[1, 2, 0, 0, 0, 0, 0, 0]] * n)[:, :hist],
    }


def test_peer_features_on_a_tiny_array():
    data = _tiny_rows()
    feats = mt.PeerFeatures([data], num_behaviors=2, max_history=64, d=MOVIELENS)
    assert feats.set_of.tolist() == [0, 1, 2, 3, 1, 2, 1]
    x, names = feats.dense(data)
    assert names == [F.ITEM_POPULARITY_MM, "history_log_length", "history_share_behavior_1",
                     "history_share_behavior_2", "history_share_same_genres"]
    assert np.allclose(x[:, 1], np.log1p(2) / np.log1p(64)) and np.allclose(x[:, 2:4], 0.5)
    # history items 1 (genre 1) and 2 (genre 2): item 1 (genre 1) -> 1/2, item 3 (genre 3) -> 0
    assert x[0, 4] == 0.5 and x[2, 4] == 0.0 and x[1, 4] == 0.5
    feats.fit_scaler(data)
    m = feats.linear(data)
    assert m.shape == (6, feats.users + feats.items + feats.sets + 5)
    block = m[:, :feats.users + feats.items + feats.sets].toarray()
    assert block[0, data[F.USER_IDX][0]] == 1 and block[0, feats.users + 1] == 1
    assert block[0, feats.users + feats.items + 1] == 1 and block[0, feats.users + feats.items + 2] == 1
    assert block.sum(axis=1).tolist() == [4, 3, 3, 3, 4, 3]  # user + item + genres (padding dropped)
    trees, tnames, categorical = feats.trees(data)
    assert categorical == [0, 1, 2] and tnames[:3] == ["user_idx", "item_idx", GENRES_IDX]
    assert trees[:, 2].tolist() == [1, 2, 3, 1, 2, 1]
    assert feats.trees(data, ids=False)[2] == []
    # A description without a categorical item feature: ids and dense features only.
    bare = mt.PeerFeatures([data], num_behaviors=2, max_history=64, d=desc.load("amazon_reviews"))
    assert bare.dense(data)[1][-1] == "history_share_behavior_2" and bare.trees(data)[2] == [0, 1]
    bare.fit_scaler(data)
    assert bare.linear(data).shape == (6, bare.users + bare.items + 4)


def _tiny_buy_rows(seed: int, train: int, evaluation: int, test: int):
    """Taobao-shaped rows whose `buy` follows item popularity, cut into train / eval / test,
    with the peers' features fitted on the train part."""
    rng = np.random.default_rng(seed)
    n = train + evaluation + test
    data = {
        F.USER_IDX: rng.integers(1, 5, n), F.ITEM_IDX: rng.integers(1, 20, n),
        "item_category_idx": rng.integers(1, 4, (n, 1)), F.ITEM_POPULARITY_MM: rng.random(n).astype(np.float32),
        F.HISTORY_ITEM_IDX: rng.integers(0, 20, (n, 8)), F.HISTORY_BEHAVIOR_IDX: rng.integers(0, 3, (n, 8)),
    }
    data["buy"] = (data[F.ITEM_POPULARITY_MM] + 0.3 * rng.random(n) > 0.7).astype(np.int64)
    cuts = (slice(0, train), slice(train, train + evaluation), slice(train + evaluation, n))
    parts = [{k: v[s] for k, v in data.items()} for s in cuts]
    feats = mt.PeerFeatures(parts, num_behaviors=2, max_history=8, d=desc.load("taobao"))
    feats.fit_scaler(parts[0])
    return parts, feats, D.dataset_spec("taobao").task("buy")


def test_peers_fit_and_predict_on_tiny_data():
    parts, feats, task = _tiny_buy_rows(0, 120, 40, 40)
    pred, setting, value = mt.fit_logreg(task, feats, *parts, seed=0)
    assert pred.shape == (40,) and np.all((pred >= 0) & (pred <= 1)) and "C" in setting and value > 0.7
    # LightGBM's input (LightGBM itself is a benchmark-only package, not in the test install):
    # the ids as categorical columns first, then the same dense features the linear peer reads.
    x, names, categorical = feats.trees(parts[2])
    dense, dense_names = feats.dense(parts[2])
    assert x.shape == (40, 3 + dense.shape[1]) and categorical == [0, 1, 2]
    assert names == ["user_idx", "item_idx", "item_category_idx"] + dense_names
    assert np.array_equal(x[:, 0], parts[2][F.USER_IDX]) and np.array_equal(x[:, 3:], dense)
    assert feats.trees(parts[2], ids=False)[2] == []


def test_linear_peer_widens_its_penalty_until_the_choice_is_interior(monkeypatch):
    # Eval AUC peaks at C = 30, past the first grid's top (3): the search must go past it.
    from sklearn.linear_model import LogisticRegression

    parts, feats, task = _tiny_buy_rows(1, 180, 60, 60)
    seen = []
    real_auc = mt._auc_or_neg_rmse

    class Recording(LogisticRegression):
        def fit(self, x, y):
            seen.append(self.C)
            return super().fit(x, y)

    import sklearn.linear_model
    monkeypatch.setattr(sklearn.linear_model, "LogisticRegression", Recording)
    monkeypatch.setattr(mt, "_auc_or_neg_rmse", lambda t, p, y: -abs(np.log10(seen[-1]) - np.log10(30.0)))
    pred, setting, value = mt.fit_logreg(task, feats, *parts, seed=0)
    monkeypatch.setattr(mt, "_auc_or_neg_rmse", real_auc)
    assert setting["C"] == pytest.approx(30.0) and setting["status"] == {"C": "interior"}
    assert sorted(round(c, 6) for c in seen) == [0.03, 0.3, 3.0, 30.0, 300.0]
    assert [p["C"] for p in setting["eval"]] == seen and value == pytest.approx(0.0)
    assert pred.shape == (60,)
