"""The Transform `preprocessing_fn`: raw interaction examples -> model features.

Every analyzer (vocabularies, means, min/max, item and user statistics) runs on the
training split only: the pipeline's Transform uses `splits_config(analyze=["train"])`.
The same graph is applied inside exported models, so serving sees exactly the
features training saw.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import tensorflow as tf
import tensorflow_transform as tft

from contract import datasets as D
from contract import features as F

ITEM_COUNT_VOCAB = "item_positive_count"
ITEM_RATING_SUM_VOCAB = "item_rating_sum"
PAIR_COUNT_VOCAB = "pair_positive_count"
PAIR_RATING_SUM_VOCAB = "pair_rating_sum"
USER_COUNT_VOCAB = "user_positive_count"
PAIR_SEPARATOR = "\x1f"  # joins user and item ids into a (user, item) key
_MILLI = 1000.0


def _dense(x, default) -> tf.Tensor:
    """A [batch] tensor from a [batch, 1] dense or sparse feature (missing -> default)."""
    if isinstance(x, tf.SparseTensor):
        x = tf.sparse.to_dense(
            tf.sparse.reset_shape(x, [x.dense_shape[0], 1]), default_value=default
        )
    elif isinstance(x, tf.RaggedTensor):
        x = x.to_tensor(default_value=default, shape=[None, 1])
    return tf.reshape(x, [-1])


def _ragged(x) -> tf.RaggedTensor:
    """A [batch, None] ragged tensor from a sparse, ragged or dense multi-valued feature."""
    if isinstance(x, tf.SparseTensor):
        return tf.RaggedTensor.from_sparse(x)
    if isinstance(x, tf.RaggedTensor):
        return x
    return tf.RaggedTensor.from_tensor(x)


def _shifted_vocab_ids(x, vocab_filename: str, deferred_vocab=None):
    """Vocabulary ids shifted by one so that 0 is free for padding (OOV after the vocab)."""
    if deferred_vocab is None:
        ids = tft.compute_and_apply_vocabulary(
            x, num_oov_buckets=F.OOV_BUCKETS, vocab_filename=vocab_filename
        )
    else:
        ids = tft.apply_vocabulary(x, deferred_vocab, num_oov_buckets=F.OOV_BUCKETS)
    if isinstance(ids, tf.RaggedTensor):
        return ids.with_flat_values(ids.flat_values + 1)
    return ids + 1


def _frequency_lookup(keys: tf.Tensor, frequency_vocab, default: float) -> tf.Tensor:
    """Looks each key up in a `tft.vocabulary(..., store_frequency=True)` file.

    The file's lines are `frequency key`; with weights, frequency is the sum of the
    weights. Keys absent from the training split get `default`. `tft.apply_vocabulary`
    only accepts integer lookups, so values travel as integer thousandths.
    """

    def lookup_fn(x, asset_path):
        initializer = tf.lookup.TextFileInitializer(
            asset_path,
            key_dtype=tf.string,
            key_index=1,
            value_dtype=tf.float64,
            value_index=0,
            delimiter=" ",
        )
        table = tf.lookup.StaticHashTable(initializer, default_value=float(default))
        milli = tf.cast(tf.round(table.lookup(x) * _MILLI), tf.int64)
        return milli, table.size()

    milli = tft.apply_vocabulary(keys, frequency_vocab, lookup_fn=lookup_fn)
    return tf.cast(milli, tf.float32) / _MILLI


def _history(inputs, spec: D.DatasetSpec, item_vocab, max_history: int) -> Dict[str, tf.Tensor]:
    """History -> item and behavior ids, most recent `max_history` kept, padded to a bucket.

    The padded lists are sparse outputs whose row length is the example's bucket
    (`features.history_buckets(max_history)`: 8, 16, 32, 64 by default), so the trainer
    can batch examples of one bucket together instead of padding every history to the
    longest.
    """
    buckets = F.history_buckets(max_history)
    items = _ragged(inputs[F.HISTORY_ITEM_IDS])[:, -max_history:]
    behaviors = _ragged(inputs[F.HISTORY_BEHAVIORS])[:, -max_history:]
    item_ids = _shifted_vocab_ids(items, F.ITEM_VOCAB, deferred_vocab=item_vocab)
    # Known behaviors -> 1..n, anything else -> n + 1 (0 stays padding). The table's
    # values must be 0..n-1: its OOV bucket is numbered after the table size.
    behavior_table = tf.lookup.StaticVocabularyTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(spec.behaviors),
            tf.range(len(spec.behaviors), dtype=tf.int64),
        ),
        num_oov_buckets=1,
    )
    behavior_ids = tf.ragged.map_flat_values(lambda b: behavior_table.lookup(b) + 1, behaviors)

    length = tf.cast(items.row_lengths(), tf.int64)
    bucket = tf.fill(tf.shape(length), tf.constant(buckets[-1], tf.int64))
    for size in reversed(buckets[:-1]):
        bucket = tf.where(length <= size, tf.constant(size, tf.int64), bucket)

    def pad_to_bucket(ragged_ids):
        dense = ragged_ids.to_tensor(default_value=0, shape=[None, max_history])
        return tf.RaggedTensor.from_tensor(dense, lengths=bucket).to_sparse()

    return {
        F.HISTORY_ITEM_IDX: pad_to_bucket(item_ids),
        F.HISTORY_BEHAVIOR_IDX: pad_to_bucket(behavior_ids),
        F.HISTORY_LENGTH: length,
        F.HISTORY_BUCKET: bucket,
    }


def _labels(inputs, spec: D.DatasetSpec) -> Dict[str, tf.Tensor]:
    """Labels after Transform (absent at serving time, when labels are not sent)."""
    out = {}
    for name in spec.raw_labels:
        if name not in inputs:
            continue
        if name == F.RATING:
            rating = _dense(inputs[F.RATING], 0.0)
            out[F.RATING] = rating
            out[F.LIKED] = tf.cast(rating >= F.LIKED_MIN_RATING, tf.int64)
            out[F.LOVED] = tf.cast(rating >= F.LOVED_RATING, tf.int64)
        else:
            out[name] = _dense(inputs[name], 0)
    return out


def preprocessing_fn(
    inputs: Dict[str, Any], custom_config: Optional[Dict[str, Any]] = None
) -> Dict[str, Any]:
    """tf.Transform entry point.

    `custom_config`: `dataset` names the DatasetSpec; `max_history` the most recent history
    items kept (the pipeline's setting, the same the ExampleGen used).
    """
    custom_config = custom_config or {}
    spec = D.dataset_spec(custom_config.get("dataset", D.MOVIELENS.name))
    max_history = int(custom_config.get("max_history", F.MAX_HISTORY))
    outputs: Dict[str, Any] = {}

    user = _dense(inputs[F.USER_ID], b"")
    item = _dense(inputs[F.ITEM_ID], b"")
    positive = tf.cast(_dense(inputs[spec.implicit_label], 1), tf.float32)

    # Ids. The item vocabulary is shared by the target item and the history items.
    outputs[F.USER_IDX] = _shifted_vocab_ids(user, F.USER_VOCAB)
    item_vocab = tft.vocabulary(item, vocab_filename=F.ITEM_VOCAB)
    outputs[F.ITEM_IDX] = _shifted_vocab_ids(item, F.ITEM_VOCAB, deferred_vocab=item_vocab)

    # Genres (MovieLens) / category (Taobao): padded ids, plus multi-hot when small.
    genres = _ragged(inputs[F.ITEM_GENRES])[:, : F.MAX_GENRES]
    genre_ids = _shifted_vocab_ids(genres, F.GENRE_VOCAB)
    outputs[F.ITEM_GENRE_IDX] = genre_ids.to_tensor(default_value=0, shape=[None, F.MAX_GENRES])
    if spec.genre_multi_hot:
        depth = tf.cast(
            tft.experimental.get_vocabulary_size_by_name(F.GENRE_VOCAB) + F.OOV_BUCKETS + 1,
            tf.int32,
        )
        multi_hot = tf.reduce_max(
            tf.one_hot(outputs[F.ITEM_GENRE_IDX], depth=depth, dtype=tf.float32), axis=1
        )
        outputs[F.ITEM_GENRES_MULTI_HOT] = multi_hot[:, 1:]  # drop the padding column

    if spec.has_year:
        year = tf.cast(inputs[F.ITEM_YEAR], tf.float32)
        outputs[F.ITEM_YEAR_Z] = _dense(tft.scale_to_z_score(year), 0.0)

    # Item statistics from the training split's positives only, leave-one-out: a
    # training row's own interaction is subtracted (its (user, item) pair is looked
    # up in the training pairs), so no feature of a training row holds its own label.
    # Eval, test and serving rows are not training pairs and see the full statistics.
    pair = tf.strings.join([user, item], separator=PAIR_SEPARATOR)
    item_count = tft.vocabulary(
        item, weights=positive, store_frequency=True, vocab_filename=ITEM_COUNT_VOCAB
    )
    pair_count = tft.vocabulary(
        pair, weights=positive, store_frequency=True, vocab_filename=PAIR_COUNT_VOCAB
    )
    own = _frequency_lookup(pair, pair_count, default=0.0)
    count = _frequency_lookup(item, item_count, default=0.0) - own
    # Scaled by constants that no label moves (a min-max over the rows would let a
    # row's label shift its own scaled value through the range).
    rows = tf.cast(tft.size(positive), tf.float32)
    outputs[F.ITEM_POPULARITY_MM] = tf.clip_by_value(tf.math.log1p(count) / tf.math.log1p(rows), 0.0, 1.0)
    outputs[F.ITEM_POPULARITY_LEVEL] = tf.where(
        count <= F.POPULARITY_TAIL_MAX,
        tf.constant(F.POPULARITY_LEVELS[0]),
        tf.where(
            count <= F.POPULARITY_TORSO_MAX,
            tf.constant(F.POPULARITY_LEVELS[1]),
            tf.constant(F.POPULARITY_LEVELS[2]),
        ),
    )
    if spec.has_rating:
        rating = _dense(inputs[F.RATING], 0.0)
        weighted = rating * positive
        rating_sum = tft.vocabulary(
            item, weights=weighted, store_frequency=True, vocab_filename=ITEM_RATING_SUM_VOCAB
        )
        pair_sum = tft.vocabulary(
            pair, weights=weighted, store_frequency=True, vocab_filename=PAIR_RATING_SUM_VOCAB
        )
        own_sum = _frequency_lookup(pair, pair_sum, default=0.0)
        total = _frequency_lookup(item, rating_sum, default=0.0) - own_sum
        global_mean = (tft.sum(weighted) - own_sum) / tf.maximum(tft.sum(positive) - own, 1.0)
        average = tf.where(count > 0, total / tf.maximum(count, 1.0), global_mean)
        outputs[F.ITEM_AVG_RATING_MM] = tf.clip_by_value(
            (average - F.MIN_RATING) / (F.MAX_RATING - F.MIN_RATING), 0.0, 1.0)

    # User activity level (for slicing), from the training split's positives.
    user_count = tft.vocabulary(
        user, weights=positive, store_frequency=True, vocab_filename=USER_COUNT_VOCAB
    )
    activity = _frequency_lookup(user, user_count, default=0.0)
    outputs[F.USER_ACTIVITY] = tf.where(
        activity <= F.ACTIVITY_LIGHT_MAX,
        tf.constant(F.ACTIVITY_LEVELS[0]),
        tf.where(
            activity <= F.ACTIVITY_MEDIUM_MAX,
            tf.constant(F.ACTIVITY_LEVELS[1]),
            tf.constant(F.ACTIVITY_LEVELS[2]),
        ),
    )

    outputs.update(_history(inputs, spec, item_vocab, max_history))
    outputs.update(_labels(inputs, spec))
    return outputs
