"""The Transform on small in-memory data: leave-one-out item statistics, slices, histories."""

import tempfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam

from contract import features as F
from transform.preprocessing import preprocessing_fn

RAW_SPEC = {
    F.USER_ID: tf.io.FixedLenFeature([], tf.string),
    F.ITEM_ID: tf.io.FixedLenFeature([], tf.string),
    F.ITEM_GENRES: tf.io.VarLenFeature(tf.string),
    F.ITEM_YEAR: tf.io.VarLenFeature(tf.int64),
    F.HISTORY_ITEM_IDS: tf.io.VarLenFeature(tf.string),
    F.HISTORY_BEHAVIORS: tf.io.VarLenFeature(tf.string),
    F.RATING: tf.io.VarLenFeature(tf.float32),
    F.WATCHED: tf.io.FixedLenFeature([], tf.int64),
}

LABELS = {F.RATING, F.LIKED, F.LOVED, F.WATCHED}


def _rows(rating_of_first=4.0):
    """Six ratings; the last row's history is longer than max_history and holds an unknown behavior."""
    rows = []
    # item "a": three ratings; item "solo": a single rating (its average would be its label).
    for user, item, rating in [("u1", "a", rating_of_first), ("u2", "a", 3.0), ("u3", "a", 1.0),
                               ("u1", "solo", 5.0), ("u2", "b", 2.0), ("u3", "b", 4.5)]:
        rows.append({F.USER_ID: user, F.ITEM_ID: item, F.ITEM_GENRES: ["Drama"], F.ITEM_YEAR: [1999],
                     F.HISTORY_ITEM_IDS: ["b"], F.HISTORY_BEHAVIORS: ["liked"], F.RATING: [rating],
                     F.WATCHED: 1})
    rows[5][F.HISTORY_ITEM_IDS] = ["a", "b", "solo"]
    rows[5][F.HISTORY_BEHAVIORS] = ["liked", "hated", "disliked"]
    return rows


def _transform(rows, max_history=2):
    metadata = tft.DatasetMetadata.from_feature_spec(RAW_SPEC)
    with tempfile.TemporaryDirectory() as tmp, tft_beam.Context(temp_dir=tmp, force_tf_compat_v1=False):
        (transformed, _), _ = (rows, metadata) | tft_beam.AnalyzeAndTransformDataset(
            lambda inputs: preprocessing_fn(inputs, {"dataset": "movielens", "max_history": max_history}),
            output_record_batches=False)
    return transformed


def _features(row):
    return {k: np.asarray(v).tolist() for k, v in row.items() if k not in LABELS}


@pytest.fixture(scope="module")
def base():
    return _transform(_rows(4.0))


def test_no_training_feature_depends_on_its_own_label(base):
    before = base
    after = _transform(_rows(0.5))
    # The changed row: every non-label feature is identical...
    assert _features(before[0]) == _features(after[0])
    # ...while the rows that share its item see the change (the statistic is live).
    assert _features(before[1])[F.ITEM_AVG_RATING_MM] != _features(after[1])[F.ITEM_AVG_RATING_MM]


def test_leave_one_out_statistics_and_popularity_slices(base):
    rows = base
    # "solo" has no other training rating: its average is the other rows' mean, not its 5.0.
    solo = rows[3]
    assert solo[F.ITEM_POPULARITY_LEVEL] == b"tail"
    assert solo[F.ITEM_POPULARITY_MM] == pytest.approx(0.0)
    assert rows[0][F.ITEM_POPULARITY_MM] == pytest.approx(np.log1p(2) / np.log1p(6), rel=1e-5)
    others_mean = (4.0 + 3.0 + 1.0 + 2.0 + 4.5) / 5
    averages = {  # leave-one-out average rating per row, before min-max scaling
        0: (3.0 + 1.0) / 2, 1: (4.0 + 1.0) / 2, 2: (4.0 + 3.0) / 2, 3: others_mean, 4: 4.5, 5: 2.0,
    }
    for i, row in enumerate(rows):
        assert row[F.ITEM_AVG_RATING_MM] == pytest.approx((averages[i] - 0.5) / 4.5, abs=1e-5), i


def test_histories_are_cut_to_max_history_and_unknown_behaviors_get_their_own_id(base):
    last = base[5]
    assert last[F.HISTORY_LENGTH] == 2 and last[F.HISTORY_BUCKET] == 2
    assert np.asarray(last[F.HISTORY_BEHAVIOR_IDX]).tolist() == [4, 1]  # hated -> unknown (n + 1)
    assert np.asarray(base[0][F.HISTORY_ITEM_IDX]).tolist()[1:] == [0]  # one item, padded to the bucket
