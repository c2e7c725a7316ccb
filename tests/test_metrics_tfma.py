"""The TFMA metrics of protocol R reproduce the numpy definitions exactly."""
import json
import math

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
tfma = pytest.importorskip("tensorflow_model_analysis")

import evaluation as m  # noqa: E402
from evaluation import tfma_metrics  # noqa: E402
from contract.features import LIKED, RATING, USER_ID  # noqa: E402

K = 10


def _data(seed=0, users=12):
    """Users with 1..25 rated items; scores rounded so that ties are common."""
    rng = np.random.default_rng(seed)
    ids, scores, ratings = [], [], []
    for u in range(users):
        n = int(rng.integers(1, 26))
        r = rng.choice(np.arange(0.5, 5.5, 0.5), n)
        ids += [f"u{u}".encode()] * n
        ratings += list(r)
        scores += list(np.round(r + rng.normal(0, 1.2, n)))
    return np.array(ids), np.array(scores, np.float32), np.array(ratings, np.float32)


def _extract(user, score, rating):
    return {
        "labels": None,
        "predictions": np.array([score], np.float32),
        "example_weights": np.array([1.0], np.float32),
        "features": {USER_ID: np.array([user]), RATING: np.array([rating], np.float32)},
    }


def _user_inputs(ids, scores, ratings):
    """One StandardMetricInputs per user, as TFMA builds them for a query_key."""
    out = []
    for u in np.unique(ids):
        idx = np.flatnonzero(ids == u)
        merged = tfma.utils.merge_extracts([_extract(u, scores[i], ratings[i]) for i in idx])
        out.append(tfma.metrics.to_standard_metric_inputs(merged, include_labels=False, include_features=True))
    return out


def _example_inputs(ids, scores, ratings):
    return [
        tfma.metrics.to_standard_metric_inputs(
            _extract(u, s, r), include_labels=False, include_features=True
        )
        for u, s, r in zip(ids, scores, ratings)
    ]


def _combiner(metric, query_key=None):
    (computation,) = metric.computations(query_key=query_key)
    return computation.keys[0], computation.combiner


def _run(combiner, inputs, parts=1):
    """Adds inputs into `parts` accumulators, merges them as a list, extracts."""
    accs = [combiner.create_accumulator() for _ in range(parts)]
    for i, x in enumerate(inputs):
        accs[i % parts] = combiner.add_input(accs[i % parts], x)
    if hasattr(combiner, "compact"):
        accs = [combiner.compact(a) for a in accs]
    return combiner.extract_output(combiner.merge_accumulators(accs))


@pytest.mark.parametrize("parts", [1, 3])
def test_combiners_equal_numpy_and_merge_like_single_pass(parts, monkeypatch):
    monkeypatch.setattr(tfma_metrics, "_FLUSH_EVERY", 7)  # exercise buffered AUC counts
    ids, scores, ratings = _data()
    want = m.recommendation_metrics(ids, scores, ratings, top_k=K)
    users, examples = _user_inputs(ids, scores, ratings), _example_inputs(ids, scores, ratings)
    cases = [
        (m.RatingNDCG(top_k=K), USER_ID, users, want["ndcg@10"]),
        (m.RatingPrecision(top_k=K), USER_ID, users, want["precision@10"]),
        (m.LikedAUC(), None, examples, want["liked_auc"]),
        (m.RatingRMSE(), None, examples, want["rmse"]),
        (m.RatingMAE(), None, examples, want["mae"]),
    ]
    for metric, query_key, inputs, value in cases:
        key, combiner = _combiner(metric, query_key)
        got = _run(combiner, inputs, parts)
        assert got == {key: value}, key.name  # bit-identical, whatever the split


def test_hand_case_through_the_combiner():
    # Ties straddling the cut-off: scores 2,1,1,1 with K=2, ratings 1,5,4,1.
    ids = np.array([b"x"] * 4)
    scores = np.array([2, 1, 1, 1], np.float32)
    ratings = np.array([1, 5, 4, 1], np.float32)
    d = [1 / math.log2(p + 1) for p in (1, 2, 3, 4)]
    want_ndcg = (1 * d[0] + (5 + 4 + 1) * d[1] / 3) / (5 * d[0] + 4 * d[1])
    want_p = (2 * (1 / 3)) / 2
    key, combiner = _combiner(m.RatingNDCG(top_k=2), USER_ID)
    assert key.name == "ndcg@2"
    assert _run(combiner, _user_inputs(ids, scores, ratings))[key] == pytest.approx(want_ndcg, abs=1e-12)
    key, combiner = _combiner(m.RatingPrecision(top_k=2), USER_ID)
    assert key.name == "precision@2"
    assert _run(combiner, _user_inputs(ids, scores, ratings))[key] == pytest.approx(want_p, abs=1e-12)


def test_unrated_examples_fail_clearly_or_are_skipped():
    extracts = [_extract(b"u1", 3.0, 4.0), _extract(b"u1", 2.0, 5.0), _extract(b"u1", 1.0, 1.0)]
    del extracts[1]["features"][RATING]  # a sampled negative has no rating
    merged = tfma.utils.merge_extracts(extracts)
    inputs = tfma.metrics.to_standard_metric_inputs(merged, include_labels=False, include_features=True)
    _, combiner = _combiner(m.RatingNDCG(top_k=K), USER_ID)
    with pytest.raises(ValueError, match=r"ndcg@10.*user_id=b'u1'.*1 of 3 example\(s\) have no 'rating'"):
        combiner.add_input(combiner.create_accumulator(), inputs)
    key, combiner = _combiner(m.RatingNDCG(top_k=K, skip_unrated=True), USER_ID)
    got = combiner.extract_output(combiner.add_input(combiner.create_accumulator(), inputs))
    assert got[key] == m.ndcg_at_k([3.0, 1.0], [4.0, 1.0], K)

    single = tfma.metrics.to_standard_metric_inputs(
        extracts[1], include_labels=False, include_features=True
    )
    key, combiner = _combiner(m.LikedAUC(skip_unrated=True))
    acc = combiner.add_input(combiner.create_accumulator(), single)
    assert math.isnan(combiner.extract_output(acc)[key])
    _, combiner = _combiner(m.LikedAUC())
    with pytest.raises(ValueError, match="liked_auc.*no 'rating' feature"):
        combiner.add_input(combiner.create_accumulator(), single)


def test_configuration_errors_are_clear():
    with pytest.raises(ValueError, match="query_key"):
        m.RatingNDCG(top_k=K).computations()
    with pytest.raises(ValueError, match="unweighted"):
        m.LikedAUC().computations(example_weighted=True)
    with pytest.raises(ValueError, match="positive integer"):
        m.RatingPrecision(top_k=0)


def test_specs_helper_builds_loadable_metric_configs():
    rating_specs = m.recommendation_metrics_specs(RATING, label_is_rating=True, top_k=5)
    liked_specs = m.recommendation_metrics_specs(LIKED, label_is_rating=False)
    names = lambda specs: sorted(c.class_name for s in specs for c in s.metrics)  # noqa: E731
    assert names(rating_specs) == [
        "Calibration", "LikedAUC", "RatingMAE", "RatingNDCG", "RatingPrecision", "RatingRMSE"
    ]
    assert names(liked_specs) == ["Calibration", "LikedAUC", "RatingNDCG", "RatingPrecision"]
    for spec in rating_specs + liked_specs:
        assert spec.example_weights.unweighted and not spec.example_weights.weighted
        assert list(spec.output_names) in ([RATING], [LIKED])
    assert [s.query_key for s in rating_specs] == ["", USER_ID]
    # The configs name importable classes whose JSON config round-trips.
    for config in rating_specs[1].metrics:
        cls = getattr(m, config.class_name)
        metric = cls(**json.loads(config.config))
        assert metric.get_config()["name"] in ("ndcg@5", "precision@5")
    assert m.recommendation_metrics_specs("", True)[0].output_names == []


def test_multi_value_predictions_are_rejected():
    extract = _extract(b"u1", 0.0, 4.0)
    extract["predictions"] = np.array([0.3, 0.7], np.float32)  # a two-class output
    inputs = tfma.metrics.to_standard_metric_inputs(extract, include_labels=False, include_features=True)
    _, combiner = _combiner(m.LikedAUC())
    with pytest.raises(ValueError, match=r"feature 'rating': got shape \(1,\) for 2 prediction value"):
        combiner.add_input(combiner.create_accumulator(), inputs)
