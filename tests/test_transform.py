"""The Transform on small in-memory data: leave-one-out item statistics, slices, histories
(the shipped MovieLens description), and every feature type of a synthetic description
(vocabularies, normalizers and documents from the training split only)."""

import math
import tempfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam

from contract import datasets as D
from contract import description as desc
from contract import features as F
from transform.preprocessing import preprocessing_fn, tokenize
from typed_description import DAY, EVAL, ITEMS, TRAIN, TYPED, USERS

MOVIELENS = D.dataset_spec("movielens")
ML_RAW_SPEC = {
    F.USER_ID: tf.io.FixedLenFeature([], tf.string),
    F.ITEM_ID: tf.io.FixedLenFeature([], tf.string),
    "item_genres": tf.io.VarLenFeature(tf.string),
    "item_year": tf.io.VarLenFeature(tf.int64),
    F.HISTORY_ITEM_IDS: tf.io.VarLenFeature(tf.string),
    F.HISTORY_BEHAVIORS: tf.io.VarLenFeature(tf.string),
    "rating": tf.io.VarLenFeature(tf.float32),
    "watched": tf.io.FixedLenFeature([], tf.int64),
}
ML_LABELS = {"rating", "liked", "loved", "watched"}


def _config(spec, max_history):
    return {"description": spec.to_dict(), "max_history": max_history}


def _ml_rows(rating_of_first=4.0):
    """Six ratings; the last row's history is longer than max_history and holds an unknown behavior."""
    rows = []
    # item "a": three ratings; item "solo": a single rating (its average would be its label).
    for user, item, rating in [("u1", "a", rating_of_first), ("u2", "a", 3.0), ("u3", "a", 1.0),
                               ("u1", "solo", 5.0), ("u2", "b", 2.0), ("u3", "b", 4.5)]:
        rows.append({F.USER_ID: user, F.ITEM_ID: item, "item_genres": ["Drama"], "item_year": [1999],
                     F.HISTORY_ITEM_IDS: ["b"], F.HISTORY_BEHAVIORS: ["liked"], "rating": [rating],
                     "watched": 1})
    rows[5][F.HISTORY_ITEM_IDS] = ["a", "b", "solo"]
    rows[5][F.HISTORY_BEHAVIORS] = ["liked", "hated", "disliked"]
    return rows


def _transform(rows, max_history=2):
    metadata = tft.DatasetMetadata.from_feature_spec(ML_RAW_SPEC)
    with tempfile.TemporaryDirectory() as tmp, tft_beam.Context(temp_dir=tmp, force_tf_compat_v1=False):
        (transformed, _), _ = (rows, metadata) | tft_beam.AnalyzeAndTransformDataset(
            lambda inputs: preprocessing_fn(inputs, _config(MOVIELENS, max_history)),
            output_record_batches=False)
    return transformed


def _features(row):
    return {k: np.asarray(v).tolist() for k, v in row.items() if k not in ML_LABELS}


@pytest.fixture(scope="module")
def base():
    return _transform(_ml_rows(4.0))


def test_no_training_feature_depends_on_its_own_label(base):
    before = base
    after = _transform(_ml_rows(0.5))
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


def test_ids_with_spaces_get_the_same_statistics(base):
    """The leave-one-out statistics' frequency files hold `frequency key` lines: an id with a
    space (a log of one's own: `K 17`) is looked up whole, not by its first word."""
    rows = _ml_rows(4.0)
    for row in rows:
        row[F.USER_ID], row[F.ITEM_ID] = f"user {row[F.USER_ID]}", f"item {row[F.ITEM_ID]}"
        row[F.HISTORY_ITEM_IDS] = [f"item {i}" for i in row[F.HISTORY_ITEM_IDS]]
    got = _transform(rows)
    for name in (F.ITEM_POPULARITY_MM, F.ITEM_AVG_RATING_MM):
        assert [r[name] for r in got] == pytest.approx([r[name] for r in base]), name
    for name in (F.ITEM_POPULARITY_LEVEL, F.USER_ACTIVITY, F.USER_IDX, F.ITEM_IDX):
        assert [r[name] for r in got] == [r[name] for r in base], name
    assert [np.asarray(r[F.HISTORY_ITEM_IDX]).tolist() for r in got] == \
        [np.asarray(r[F.HISTORY_ITEM_IDX]).tolist() for r in base]


def test_movielens_features_and_labels_come_from_its_description(base):
    row = base[0]
    assert set(row) >= {"item_genres_idx", "item_genres_multi_hot", "item_year_z", "rating", "liked", "loved",
                        "watched"}
    assert np.asarray(row["item_genres_idx"]).tolist() == [1] + [0] * 9  # max_values: 10
    assert (row["liked"], row["loved"]) == (1, 0)  # rating 4: liked (>= 4), not loved (>= 5)
    assert (base[3]["liked"], base[3]["loved"]) == (1, 1)


def test_histories_are_cut_to_max_history_and_unknown_behaviors_get_their_own_id(base):
    last = base[5]
    assert last[F.HISTORY_LENGTH] == 2 and last[F.HISTORY_BUCKET] == 2
    assert np.asarray(last[F.HISTORY_BEHAVIOR_IDX]).tolist() == [4, 1]  # hated -> unknown (n + 1)
    assert np.asarray(base[0][F.HISTORY_ITEM_IDX]).tolist()[1:] == [0]  # one item, padded to the bucket


def test_custom_config_without_a_description_is_a_clear_error():
    with pytest.raises(ValueError, match="custom_config needs 'description'"):
        preprocessing_fn({}, {"max_history": 8})
    with pytest.raises(ValueError, match=r"unknown keys \['dataset'\]"):
        preprocessing_fn({}, {"dataset": "movielens", "max_history": 8})


def test_tokenize_lower_cases_and_splits_on_anything_but_letters_and_digits():
    tokens = tokenize(tf.constant(["Hello, WORLD!! Ça-va 42x", "", "  a  "]), 4)
    assert tokens.to_list() == [[b"hello", b"world", "ça".encode(), b"va"], [], [b"a"]]


# -- every feature type of a synthetic description ---------------------------------
TYPED_SPEC = D.dataset_spec(TYPED)


def _typed_raw_spec():
    spec = {}
    for f in desc.raw_features(TYPED_SPEC.description):
        dtype = {desc.BYTES: tf.string, desc.INT: tf.int64, desc.FLOAT: tf.float32}[f.dtype]
        spec[f.name] = (tf.io.FixedLenFeature([], dtype) if f.name in (F.USER_ID, F.ITEM_ID)
                        else tf.io.VarLenFeature(dtype))
    return spec


def _typed_row(user, item, stars, votes, review, user_docs, item_docs):
    i, u = ITEMS[item], USERS[user]

    def one(value):
        return [] if value is None else [value]

    return {
        F.USER_ID: user, F.ITEM_ID: item, F.TIMESTAMP: [0], F.HISTORY_ITEM_IDS: [], F.HISTORY_BEHAVIORS: [],
        "item_brand": one(i["brand"]), "item_shape": one(i["shape"]), "item_tags": i["tags"],
        "item_price": one(i["price"]), "item_weight": one(i["weight"]), "item_sales": one(i["sales"]),
        "item_size": one(i["size"]), "item_released": one(i["released"]), "item_title": one(i["title"]),
        "user_country": one(u["country"]), "user_age": one(u["age"]),
        "votes": one(votes), "review": one(review), "user_review_docs": user_docs, "item_review_docs": item_docs,
        "stars": one(stars), "seen": [0 if stars is None else 1], "split": ["x"],
    }


@pytest.fixture(scope="module")
def typed():
    """(train rows, eval rows) transformed with statistics of the train rows only."""
    metadata = tft.DatasetMetadata.from_feature_spec(_typed_raw_spec())
    train = [_typed_row(*r) for r in TRAIN]
    evals = [_typed_row(*r) for r in EVAL]
    with tempfile.TemporaryDirectory() as tmp, tft_beam.Context(temp_dir=tmp, force_tf_compat_v1=False):
        transform_fn = (train, metadata) | tft_beam.AnalyzeDataset(
            lambda inputs: preprocessing_fn(inputs, _config(TYPED_SPEC, 8)))
        out = {}
        for name, rows in (("train", train), ("eval", evals)):
            (out[name], _) = ((rows, metadata), transform_fn) | f"apply_{name}" >> tft_beam.TransformDataset(
                output_record_batches=False)
    return out["train"], out["eval"]


def _ids(row, name):
    return np.asarray(row[name]).tolist()


def test_every_declared_feature_is_written_under_its_transformed_names(typed):
    train, _ = typed
    expected = {n for f in TYPED_SPEC.description.features for n in f.transformed_names()}
    expected |= {"review_tokens", "user_review_docs_tokens", "item_review_docs_tokens", "stars", "seen", "good",
                 "helpful", F.ITEM_AVG_RATING_MM, F.ITEM_POPULARITY_MM}
    assert expected <= set(train[0])


def test_categorical_vocabularies_come_from_the_training_rows_with_padding_and_oov(typed):
    train, evals = typed
    # brand (one_hot): acme in 5 training rows, bolt in 1 -> 1, 2; zeta (eval only) -> OOV 3.
    assert [r["item_brand_idx"] for r in train] == [1, 1, 1, 1, 1, 2]
    assert evals[0]["item_brand_idx"] == 3
    # shape, vocabulary_size 2: round (3 rows), square (2) kept; flat -> OOV 3; missing -> 0.
    assert [r["item_shape_idx"] for r in train] == [1, 1, 1, 2, 2, 3]
    assert evals[0]["item_shape_idx"] == 0
    # users: fr (4 rows) 1, de 2; it (eval only) OOV 3.
    assert [r["user_country_idx"] for r in train[:3]] == [1, 2, 1] and evals[0]["user_country_idx"] == 3


def test_multi_valued_features_are_cut_padded_and_multi_hot(typed):
    train, evals = typed
    # a: 5 rows, b: 4 rows; c and e: 2 rows each (3, 4 in some order); d is the 4th tag of
    # i2 (max_values 3), so never kept. V = 4, OOV = 5.
    assert _ids(train[0], "item_tags_idx") == [1, 2, 0]
    i2 = _ids(train[3], "item_tags_idx")
    assert i2[0] == 1 and sorted(i2[1:]) == [3, 4]
    assert _ids(evals[0], "item_tags_idx") == [5, 1, 0]  # zz unknown, then a
    assert _ids(train[0], "item_tags_multi_hot") == [1.0, 1.0, 0.0, 0.0, 0.0]  # width V + OOV
    assert _ids(evals[0], "item_tags_multi_hot") == [1.0, 0.0, 0.0, 0.0, 1.0]


def test_numeric_normalizers_use_training_statistics_and_missing_values_get_zero(typed):
    train, evals = typed
    # z-score of the price over the training rows that have one: 10 (x3), 20 (x2).
    mean, std = 14.0, math.sqrt((3 * 16 + 2 * 36) / 5)
    assert train[0]["item_price_z"] == pytest.approx((10 - mean) / std, rel=1e-5)
    assert train[5]["item_price_z"] == 0.0  # missing: the mean
    assert evals[0]["item_price_z"] == pytest.approx((40 - mean) / std, rel=1e-5)  # eval value, train statistics
    # min-max of the weight over the training rows: 2..6; an eval value outside stays outside.
    assert train[3]["item_weight_mm"] == pytest.approx(0.5) and evals[0]["item_weight_mm"] == pytest.approx(2.0)
    # log: the z-score of log1p(max(x, 0)); a negative count is 0.
    logs = np.log1p([100.0] * 3 + [0.0] * 3)
    assert train[0]["item_sales_log"] == pytest.approx((logs[0] - logs.mean()) / logs.std(), rel=1e-5)
    assert train[3]["item_sales_log"] == pytest.approx((0.0 - logs.mean()) / logs.std(), rel=1e-5)
    # buckets by the boundaries [10, 20]: 1..3, a boundary goes up, missing 0.
    assert [r["item_size_bucket"] for r in (train[0], train[3], train[5], evals[0])] == [3, 1, 0, 2]
    # time: days since the epoch (10, 20, 30 in training), then min-max.
    assert train[3]["item_released_mm"] == pytest.approx(0.5) and evals[0]["item_released_mm"] == pytest.approx(1.5)
    assert train[0]["user_age_z"] == pytest.approx(-1.0) and train[2]["user_age_z"] == 0.0
    assert DAY == 86400


def test_text_tokens_use_a_training_vocabulary_cut_to_its_size(typed):
    train, evals = typed
    # Kept tokens: red shoe red (x3), blue shoe (x2), big red box: red 7, shoe 5, blue 2 -> 1..3;
    # big, box -> OOV 4 ("extra" is the 4th token of i1's title: never kept, never counted).
    assert _ids(train[0], "item_title_tokens") == [1, 2, 1]
    assert _ids(train[3], "item_title_tokens") == [3, 2, 0]
    assert _ids(train[5], "item_title_tokens") == [4, 1, 4]
    assert _ids(evals[0], "item_title_tokens") == [4, 4, 0]


def test_documents_use_their_text_columns_training_vocabulary(typed):
    train, evals = typed
    # review vocabulary (training rows' own reviews): great 3, shoe 2, then fit, ok, fine, bad; OOV 7.
    assert _ids(train[0], "review_tokens") == [1, 2, 1, _ids(train[0], "review_tokens")[3]]
    fit = _ids(train[0], "review_tokens")[3]
    assert 3 <= fit <= 6
    assert _ids(evals[0], "review_tokens") == [7, 0, 0, 0]  # an eval review's tokens: OOV
    docs = np.asarray(evals[0]["item_review_docs_tokens"])
    assert docs.shape == (2, 4)  # max_documents x max_tokens
    # The most recent max_documents documents, oldest first; tokens in the review vocabulary.
    assert docs.tolist() == [[7, 2, fit, 0], [7, 0, 0, 0]]
    assert np.asarray(train[0]["user_review_docs_tokens"]).tolist() == [[0] * 4] * 2  # no documents
    assert np.asarray(train[2]["item_review_docs_tokens"]).tolist()[0] == [1, 2, 1, fit]


def test_labels_pass_through_and_expr_labels_hold_only_where_their_field_has_a_value(typed):
    train, evals = typed
    assert [r["stars"] for r in train] == [5.0, 4.0, 2.0, 3.0, 5.0, 1.0]
    assert [r["good"] for r in train] == [1, 1, 0, 0, 1, 0]  # stars >= 4
    assert [r["helpful"] for r in train] == [1, 0, 1, 0, 1, 0]  # votes >= 2; votes missing -> 0
    assert (evals[1]["seen"], evals[1]["stars"], evals[1]["good"], evals[1]["helpful"]) == (0, 0.0, 0, 0)


def test_item_average_rating_is_scaled_by_the_declared_rating_scale(typed):
    train, _ = typed
    # i3 has one training rating: leave-one-out gives the other rows' mean, on the 1..5 scale.
    others = (5.0 + 4.0 + 2.0 + 3.0 + 5.0) / 5
    assert train[5][F.ITEM_AVG_RATING_MM] == pytest.approx((others - 1.0) / 4.0, rel=1e-5)


def test_a_serving_request_without_labels_or_outcomes_still_gets_every_input_feature(tmp_path):
    """What `serving_default` sends (the raw features with serving=True: no labels, outcomes,
    timestamp or split) is enough for every feature a model reads, documents included."""
    metadata = tft.DatasetMetadata.from_feature_spec(_typed_raw_spec())
    train = [_typed_row(*r) for r in TRAIN]
    with tft_beam.Context(temp_dir=str(tmp_path / "tmp"), force_tf_compat_v1=False):
        transform_fn = (train, metadata) | tft_beam.AnalyzeDataset(
            lambda inputs: preprocessing_fn(inputs, _config(TYPED_SPEC, 8)))
        _ = transform_fn | tft_beam.WriteTransformFn(str(tmp_path / "out"))
    output = tft.TFTransformOutput(str(tmp_path / "out"))
    served = [f.name for f in desc.raw_features(TYPED_SPEC.description) if f.serving]
    assert "review" not in served and "stars" not in served and "item_review_docs" in served
    spec = {name: value for name, value in _typed_raw_spec().items() if name in served}
    row = {k: v for k, v in _typed_row(*EVAL[0]).items() if k in served}
    example = tf.train.Example()
    for name, value in row.items():
        values = value if isinstance(value, list) else [value]
        feature = example.features.feature[name]
        if spec[name].dtype == tf.string:
            feature.bytes_list.value.extend([v.encode() for v in values])
        elif spec[name].dtype == tf.int64:
            feature.int64_list.value.extend(values)
        else:
            feature.float_list.value.extend(values)
    out = output.transform_raw_features(tf.io.parse_example([example.SerializeToString()], spec))
    inputs = {f.transformed_name() for f in TYPED_SPEC.description.features}
    assert inputs | {"item_review_docs_tokens", "user_review_docs_tokens", F.ITEM_AVG_RATING_MM} <= set(out)
    assert not {"stars", "good", "helpful", "review_tokens"} & set(out)  # targets: not computed
    docs = np.asarray(out["item_review_docs_tokens"])[0]  # "awful shoe fit", "x" in the review vocabulary
    assert docs[0, :2].tolist() == [7, 2] and 3 <= docs[0, 2] <= 6 and docs[1].tolist() == [7, 0, 0, 0]
