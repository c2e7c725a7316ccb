"""End to end: tfma.run_model_analysis reports the numpy values, overall and per slice."""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
tfma = pytest.importorskip("tensorflow_model_analysis")

import evaluation as m  # noqa: E402
from contract.features import ITEM_ID, LIKED, LIKED_MIN_RATING, RATING, USER_ACTIVITY, USER_ID  # noqa: E402

K = 10
# Model-agnostic evaluation: each output's predictions are stored in the examples.
PREDICTION_KEYS = {RATING: f"{RATING}_prediction", LIKED: f"{LIKED}_prediction"}


def _rows(seed=7, users=30):
    """A few hundred examples, some unrated (sampled negatives); predictions rounded so ties occur."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        n = int(rng.integers(1, 25))
        activity = b"heavy" if n > 12 else b"light"
        for i in range(n):
            rating = float(rng.choice(np.arange(0.5, 5.5, 0.5)))
            pred = float(np.float32(np.round((rating + rng.normal(0, 1.0)) * 2) / 2))
            prob = float(np.float32(np.round(1 / (1 + np.exp(-(rating - 3.5 + rng.normal(0, 1)))), 1)))
            rows.append(dict(user=f"u{u}".encode(), item=f"i{i}".encode(), activity=activity,
                             rating=rating, pred=pred, prob=prob))
        for i in range(int(rng.integers(0, 3))):
            rows.append(dict(user=f"u{u}".encode(), item=f"n{i}".encode(), activity=activity,
                             rating=None, pred=0.5, prob=0.0))
    return rows


def _write(rows, path):
    def f(values):
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))

    def b(values):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))

    with tf.io.TFRecordWriter(str(path)) as w:
        for r in rows:
            feature = {
                USER_ID: b([r["user"]]),
                ITEM_ID: b([r["item"]]),
                USER_ACTIVITY: b([r["activity"]]),
                LIKED: f([float(r["rating"] is not None and r["rating"] >= LIKED_MIN_RATING)]),
                PREDICTION_KEYS[RATING]: f([r["pred"]]),
                PREDICTION_KEYS[LIKED]: f([r["prob"]]),
            }
            if r["rating"] is not None:
                feature[RATING] = f([r["rating"]])
            ex = tf.train.Example(features=tf.train.Features(feature=feature))
            w.write(ex.SerializeToString())


def _numpy_metrics(rows, rating_errors, score_field):
    rows = [r for r in rows if r["rating"] is not None]
    ids = np.array([r["user"] for r in rows])
    scores = np.array([r[score_field] for r in rows], np.float32)
    ratings = np.array([r["rating"] for r in rows], np.float32)
    return m.recommendation_metrics(ids, scores, ratings, top_k=K, rating_errors=rating_errors)


def test_run_model_analysis_reports_numpy_values_per_output_and_slice(tmp_path):
    rows = _rows()
    data = tmp_path / "examples.tfrecord"
    _write(rows, data)
    eval_config = tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(
            prediction_keys=PREDICTION_KEYS, label_keys={RATING: RATING, LIKED: LIKED}
        )],
        metrics_specs=(
            m.recommendation_metrics_specs(RATING, label_is_rating=True, top_k=K, skip_unrated=True)
            + m.recommendation_metrics_specs(LIKED, label_is_rating=False, top_k=K, skip_unrated=True)
        ),
        slicing_specs=[tfma.SlicingSpec(), tfma.SlicingSpec(feature_keys=[USER_ACTIVITY])],
    )
    result = tfma.run_model_analysis(
        eval_config=eval_config, data_location=str(data), output_path=str(tmp_path / "out")
    )
    got = {}
    for slice_key, by_output in result.slicing_metrics:
        for output, by_sub_key in by_output.items():
            for name, value in by_sub_key[""].items():
                got[(slice_key, output, name)] = value["doubleValue"]

    slices = {(): rows}
    for activity in (b"light", b"heavy"):
        slices[((USER_ACTIVITY, activity.decode()),)] = [r for r in rows if r["activity"] == activity]
    assert all(len(v) > 20 for v in slices.values())
    assert any(r["rating"] is None for r in rows)
    for slice_key, slice_rows in slices.items():
        for output, rating_errors, field in ((RATING, True, "pred"), (LIKED, False, "prob")):
            want = _numpy_metrics(slice_rows, rating_errors, field)
            for name, value in want.items():
                # Bit-identical to the numpy definition.
                assert got[(slice_key, output, name)] == value, (slice_key, output, name)
        # TFMA's built-in calibration against the rating label (unrated rows have none).
        rated = [r for r in slice_rows if r["rating"] is not None]
        preds = np.array([r["pred"] for r in rated], np.float32).astype(np.float64)
        ratings = np.array([r["rating"] for r in rated])
        assert got[(slice_key, RATING, "calibration")] == pytest.approx(preds.sum() / ratings.sum(), rel=1e-6)
    assert {k[2] for k in got} >= {"ndcg@10", "precision@10", "liked_auc", "rmse", "mae", "calibration"}
