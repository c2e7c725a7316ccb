"""The Transform on small in-memory data: out-of-fold item statistics, slices, histories
(the shipped MovieLens description), and every feature type of a synthetic description
(vocabularies, normalizers and documents from the training split only)."""

import math
import tempfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import metadata_io

from contract import datasets as D
from contract import description as desc
from contract import features as F
from export.signatures import serving_feature_spec
from pipeline.configs import PipelineConfig
from transform.preprocessing import OOF_FOLDS, oof_fold, preprocessing_fn, tokenize
from typed_description import DAY, EVAL, ITEMS, TRAIN, TYPED, USERS

# tf.Transform's mode as the pipeline runs it (TF1 compat, faster; test_beam_profiles checks
# that the TF2 mode writes the same).
PIPELINE_TRANSFORM_MODE = PipelineConfig.transform_tf_compat_v1

MOVIELENS = D.dataset_spec("movielens")
ML_RAW_SPEC = {
    F.USER_ID: tf.io.FixedLenFeature([], tf.string),
    F.ITEM_ID: tf.io.FixedLenFeature([], tf.string),
    F.SPLIT: tf.io.FixedLenFeature([], tf.string),
    "item_genres": tf.io.VarLenFeature(tf.string),
    "item_year": tf.io.VarLenFeature(tf.int64),
    F.HISTORY_ITEM_IDS: tf.io.VarLenFeature(tf.string),
    F.HISTORY_BEHAVIORS: tf.io.VarLenFeature(tf.string),
    "rating": tf.io.VarLenFeature(tf.float32),
    "watched": tf.io.FixedLenFeature([], tf.int64),
}
ML_LABELS = {"rating", "liked", "loved", "watched"}
CATALOGUE = {F.catalogue_name(F.ITEM_AVG_RATING_MM), F.catalogue_name(F.ITEM_POPULARITY_MM)}
STATISTICS = (F.ITEM_AVG_RATING_MM, F.ITEM_POPULARITY_MM, F.ITEM_POPULARITY_LEVEL, F.USER_ACTIVITY)


def _config(spec, max_history):
    return {"description": spec.to_dict(), "max_history": max_history}


def _ml_row(user, item, rating, split="train"):
    """A MovieLens row; rating None: a sampled negative (watched 0, no rating)."""
    return {F.USER_ID: user, F.ITEM_ID: item, F.SPLIT: split, "item_genres": ["Drama"], "item_year": [1999],
            F.HISTORY_ITEM_IDS: ["b"], F.HISTORY_BEHAVIORS: ["liked"],
            "rating": [] if rating is None else [rating], "watched": 0 if rating is None else 1}


def _ml_rows(rating_of_first=4.0):
    """Six ratings; the last row's history is longer than max_history and holds an unknown behavior."""
    rows = [_ml_row(user, item, rating) for user, item, rating in [
        ("u1", "a", rating_of_first), ("u2", "a", 3.0), ("u3", "a", 1.0), ("u1", "solo", 5.0), ("u2", "b", 2.0),
        ("u3", "b", 4.5)]]
    rows[5][F.HISTORY_ITEM_IDS] = ["a", "b", "solo"]
    rows[5][F.HISTORY_BEHAVIORS] = ["liked", "hated", "disliked"]
    return rows


def _fold(user, item):
    return int(oof_fold(tf.constant([user]), tf.constant([item]))[0])


def _user_in_fold(item, fold, same, taken):
    """The first user n0, n1, ... not in `taken` whose pair with `item` is (same) or is not in `fold`."""
    for n in range(1000):
        user = f"n{n}"
        if user not in taken and (_fold(user, item) == fold) == same:
            return user
    raise AssertionError("no such user")


def _stat_rows():
    """Training rows: item a rated by 12 users, b by 3, solo by 1 (its only positive); sampled
    negatives of a and solo in a positive's fold, and of b in another fold."""
    rows = [_ml_row(f"u{i}", "a", [5.0, 4.0, 3.5, 2.0, 1.0, 4.5][i % 6]) for i in range(12)]
    rows += [_ml_row("u0", "b", 2.0), _ml_row("u1", "b", 3.0), _ml_row("u2", "b", 4.0), _ml_row("u0", "solo", 5.0)]
    taken = {r[F.USER_ID] for r in rows}
    for item, positive, same in (("a", "u0", True), ("solo", "u0", True), ("b", "u0", False), ("a", "u1", False)):
        user = _user_in_fold(item, _fold(positive, item), same, taken)
        taken.add(user)
        rows.append(_ml_row(user, item, None))
    return rows


def _transform(rows, max_history=2, eval_rows=None, batch_size=None):
    """The transformed `rows` (the statistics' training data) and, given, `eval_rows` (transformed only)."""
    metadata = tft.DatasetMetadata.from_feature_spec(ML_RAW_SPEC)
    with tempfile.TemporaryDirectory() as tmp, tft_beam.Context(temp_dir=tmp, desired_batch_size=batch_size,
                                                                force_tf_compat_v1=PIPELINE_TRANSFORM_MODE):
        transform_fn = (rows, metadata) | tft_beam.AnalyzeDataset(
            lambda inputs: preprocessing_fn(inputs, _config(MOVIELENS, max_history)))
        out = []
        for name, part in (("train", rows), ("eval", eval_rows)):
            if part is not None:
                (transformed, _) = ((part, metadata), transform_fn) | f"apply_{name}" >> tft_beam.TransformDataset(
                    output_record_batches=False)
                out.append(transformed)
    return out[0] if eval_rows is None else out


def _features(row):
    """A transformed row's inputs: everything but its labels and the catalogue copies."""
    return {k: np.asarray(v).tolist() for k, v in row.items() if k not in ML_LABELS | CATALOGUE}


def _level(count, first_max, second_max, levels):
    return levels[0] if count <= first_max else levels[1] if count <= second_max else levels[2]


def _expected(rows, analyzed):
    """The statistics of `rows` (numpy, from the definition) with `analyzed` as the training rows:
    a training row reads the other folds, scaled by K / (K - 1); any other row the full sums."""
    scale = OOF_FOLDS / (OOF_FOLDS - 1)
    positives = [(r[F.USER_ID], r[F.ITEM_ID], r["rating"][0], _fold(r[F.USER_ID], r[F.ITEM_ID]))
                 for r in analyzed if r["watched"] == 1]
    out = []
    for row in rows:
        user, item = row[F.USER_ID], row[F.ITEM_ID]
        training = row[F.SPLIT] == "train"
        seen = [p for p in positives if not training or p[3] != _fold(user, item)]
        factor = scale if training else 1.0
        ratings = [p[2] for p in seen if p[1] == item] or [np.mean([p[2] for p in seen])]
        count = factor * sum(1 for p in seen if p[1] == item)
        activity = factor * sum(1 for p in seen if p[0] == user)
        full = [p[2] for p in positives if p[1] == item] or [np.mean([p[2] for p in positives])]
        full_count = sum(1 for p in positives if p[1] == item)
        out.append({
            F.ITEM_AVG_RATING_MM: (np.mean(ratings) - 0.5) / 4.5,
            F.ITEM_POPULARITY_MM: min(np.log1p(count) / np.log1p(len(analyzed)), 1.0),
            F.ITEM_POPULARITY_LEVEL: _level(count, F.POPULARITY_TAIL_MAX, F.POPULARITY_TORSO_MAX,
                                            F.POPULARITY_LEVELS).encode(),
            F.USER_ACTIVITY: _level(activity, F.ACTIVITY_LIGHT_MAX, F.ACTIVITY_MEDIUM_MAX, F.ACTIVITY_LEVELS).encode(),
            F.catalogue_name(F.ITEM_AVG_RATING_MM): (np.mean(full) - 0.5) / 4.5,
            F.catalogue_name(F.ITEM_POPULARITY_MM): np.log1p(full_count) / np.log1p(len(analyzed)),
        })
    return out


def _assert_statistics(got, expected):
    for i, (row, want) in enumerate(zip(got, expected)):
        for name, value in want.items():
            if isinstance(value, bytes):
                assert row[name] == value, (i, name)
            else:
                assert row[name] == pytest.approx(value, abs=1e-6), (i, name)


@pytest.fixture(scope="module")
def base():
    return _transform(_ml_rows(4.0))


@pytest.fixture(scope="module")
def stats():
    rows = _stat_rows()
    return rows, _transform(rows)


def _negative(row):
    return {**row, "rating": [], "watched": 0}


# Each changes one training row's labels (index in _stat_rows): a rating, a positive that
# becomes a sampled negative, a negative that becomes a positive, the only positive of its item.
LABEL_CHANGES = {
    "rating": (0, lambda r: {**r, "rating": [0.5]}),
    "positive_to_negative": (1, _negative),
    "negative_to_positive": (17, lambda r: {**r, "rating": [5.0], "watched": 1}),
    "only_positive_of_its_item": (15, lambda r: {**r, "rating": [1.0]}),
}


@pytest.mark.parametrize("change", sorted(LABEL_CHANGES))
def test_no_training_feature_depends_on_its_own_label(stats, change):
    """Every statistic Transform computes from labels (item average rating, popularity,
    popularity level, user activity): a training row's own value does not move with its
    labels (implicit, rating and the expr labels read from it), while the item's full
    statistics (its catalogue copies) do."""
    rows, before = stats
    i, edit = LABEL_CHANGES[change]
    changed = list(rows)
    changed[i] = edit(rows[i])
    after = _transform(changed)
    assert _features(before[i]) == _features(after[i])
    assert set(STATISTICS) <= set(_features(before[i]))
    assert any(before[i][name] != after[i][name] for name in CATALOGUE), "the statistics must read the labels"
    _assert_statistics(after, _expected(changed, changed))


def test_positives_and_negatives_of_an_item_and_fold_read_the_same_statistics(stats):
    rows, got = stats
    pairs = 0
    for p, n in ((r, s) for r in range(len(rows)) for s in range(len(rows))):
        same = (rows[p][F.ITEM_ID] == rows[n][F.ITEM_ID]
                and _fold(rows[p][F.USER_ID], rows[p][F.ITEM_ID]) == _fold(rows[n][F.USER_ID], rows[n][F.ITEM_ID]))
        if same and rows[p]["watched"] == 1 and rows[n]["watched"] == 0:
            pairs += 1
            for name in (F.ITEM_AVG_RATING_MM, F.ITEM_POPULARITY_MM, F.ITEM_POPULARITY_LEVEL):
                assert got[p][name] == got[n][name], (p, n, name)
    assert pairs >= 2  # a's and solo's negatives share a positive's fold


def test_out_of_fold_statistics_popularity_slices_and_catalogue_copies(stats):
    rows, got = stats
    _assert_statistics(got, _expected(rows, rows))
    # The only positive of "solo" reads no solo rating: the other folds' global mean, count 0.
    solo = got[15]
    assert solo[F.ITEM_POPULARITY_MM] == 0.0 and solo[F.ITEM_POPULARITY_LEVEL] == b"tail"
    # "a" (12 positives) is torso in full; a training row sees about 4/5 of it, scaled by 5/4.
    assert got[0][F.catalogue_name(F.ITEM_POPULARITY_MM)] == pytest.approx(np.log1p(12) / np.log1p(len(rows)))


def test_eval_and_serving_rows_read_the_full_training_statistics(stats):
    """Statistics come from the analyzed (training) rows only: eval rows, an eval-only item
    and eval labels change nothing; a row whose split is not train reads the full values."""
    rows, train = stats
    evals = [_ml_row("u0", "a", 0.5, "eval"), _ml_row("u5", "b", 5.0, "eval"), _ml_row("u9", "new", 5.0, "eval"),
             _ml_row("u3", "a", None, "eval"), _ml_row("u0", "a", 3.0, "")]
    got_train, got_eval = _transform(rows, eval_rows=evals)
    assert [_features(r) for r in got_train] == [_features(r) for r in train]
    _assert_statistics(got_eval, _expected(evals, rows))
    catalogue = F.catalogue_name(F.ITEM_AVG_RATING_MM)
    assert got_eval[0][F.ITEM_AVG_RATING_MM] == pytest.approx(train[0][catalogue])
    assert got_eval[2][F.ITEM_POPULARITY_LEVEL] == b"tail" and got_eval[2][F.ITEM_POPULARITY_MM] == 0.0


def test_statistics_do_not_depend_on_the_batches_rows_are_transformed_in(stats):
    """Two runs with other batch sizes write identical values (float32 log1p differs in the last
    digit between a vectorized batch and a short tail; the statistics are computed in float64)."""
    rows, _ = stats
    many = rows * 3
    one, seven = _transform(many, batch_size=1), _transform(many, batch_size=7)
    for a, b in zip(one, seven):
        assert {k: np.asarray(v).tolist() for k, v in a.items()} == {k: np.asarray(v).tolist() for k, v in b.items()}


def test_ids_with_spaces_get_their_statistics():
    """The statistics' frequency files hold `frequency key` lines: an id with a space (a log of
    one's own: `K 17`) is looked up whole, not by its first word."""
    rows = _stat_rows()
    for row in rows:
        row[F.USER_ID], row[F.ITEM_ID] = f"user {row[F.USER_ID]}", f"item {row[F.ITEM_ID]}"
        row[F.HISTORY_ITEM_IDS] = [f"item {i}" for i in row[F.HISTORY_ITEM_IDS]]
    _assert_statistics(_transform(rows), _expected(rows, rows))


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


def _typed_row(user, item, stars, votes, review, user_docs, item_docs, split="train"):
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
        "stars": one(stars), "seen": [0 if stars is None else 1], F.SPLIT: [split],
    }


@pytest.fixture(scope="module")
def typed():
    """(train rows, eval rows) transformed with statistics of the train rows only."""
    metadata = tft.DatasetMetadata.from_feature_spec(_typed_raw_spec())
    train = [_typed_row(*r) for r in TRAIN]
    evals = [_typed_row(*r, split="eval") for r in EVAL]
    with tempfile.TemporaryDirectory() as tmp, tft_beam.Context(temp_dir=tmp, force_tf_compat_v1=PIPELINE_TRANSFORM_MODE):
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
    train, evals = typed
    # i1's training ratings 5, 4, 2 and i3's 1, on the declared 1..5 scale: the full
    # statistics of the catalogue copy and of an eval row.
    assert train[0][F.catalogue_name(F.ITEM_AVG_RATING_MM)] == pytest.approx((11 / 3 - 1.0) / 4.0, rel=1e-6)
    assert evals[1][F.ITEM_AVG_RATING_MM] == 0.0  # i3: (1 - 1) / 4


def test_a_serving_request_without_labels_or_outcomes_still_gets_every_input_feature(tmp_path):
    """What `serving_default` sends (the raw features with serving=True: no labels, outcomes,
    timestamp or split) is enough for every feature a model reads, documents included."""
    metadata = tft.DatasetMetadata.from_feature_spec(_typed_raw_spec())
    train = [_typed_row(*r) for r in TRAIN]
    # TF2 mode: this test applies the transform eagerly, which a TF1 compat graph cannot.
    with tft_beam.Context(temp_dir=str(tmp_path / "tmp"), force_tf_compat_v1=False):
        transform_fn = (train, metadata) | tft_beam.AnalyzeDataset(
            lambda inputs: preprocessing_fn(inputs, _config(TYPED_SPEC, 8)))
        _ = transform_fn | tft_beam.WriteTransformFn(str(tmp_path / "out"))
    metadata_io.write_metadata(metadata, str(tmp_path / "out" / tft.TFTransformOutput.RAW_METADATA_DIR))
    output = tft.TFTransformOutput(str(tmp_path / "out"))
    served = [f.name for f in desc.raw_features(TYPED_SPEC.description) if f.serving]
    assert "review" not in served and "stars" not in served and "item_review_docs" in served
    assert F.SPLIT not in served
    # What serving_default parses: the served features, and the split a client does not send.
    spec = serving_feature_spec(output, TYPED_SPEC)
    assert set(spec) == set(served) | {F.SPLIT}
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
    assert inputs | {"item_review_docs_tokens", "user_review_docs_tokens", F.ITEM_AVG_RATING_MM,
                     F.ITEM_POPULARITY_MM} <= set(out)
    # The request reads the full training statistics, as an eval row does (i4: no training row).
    assert float(out[F.ITEM_POPULARITY_MM][0]) == 0.0
    others = (5.0 + 4.0 + 2.0 + 3.0 + 5.0 + 1.0) / 6  # no rating of i4: the global training mean
    assert float(out[F.ITEM_AVG_RATING_MM][0]) == pytest.approx((others - 1.0) / 4.0, rel=1e-6)
    assert not {"stars", "good", "helpful", "review_tokens"} & set(out)  # targets: not computed
    docs = np.asarray(out["item_review_docs_tokens"])[0]  # "awful shoe fit", "x" in the review vocabulary
    assert docs[0, :2].tolist() == [7, 2] and 3 <= docs[0, 2] <= 6 and docs[1].tolist() == [7, 0, 0, 0]
