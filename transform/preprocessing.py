"""The Transform `preprocessing_fn`: raw interaction examples -> model features.

What it writes follows the dataset description (`custom_config["description"]`), by
feature type, never by a feature's name:

- ids: user_idx, item_idx (0 padding, 1..V the training vocabulary, V + 1 unknown);
- item statistics from the training split, out of fold for training rows (see
  `_item_statistics`): item_avg_rating_mm (when the description has a rating, scaled by
  its declared rating_min / rating_max), item_popularity_mm, item_popularity_level,
  user_activity; and the full statistics on every row as catalogue_item_avg_rating_mm /
  catalogue_item_popularity_mm (`F.catalogue_name`), the models' item table;
- histories: history_item_idx / history_behavior_idx padded to their bucket, with
  history_length and history_bucket;
- every item and user side-table feature, by `Feature.transformed_names()`:
  categorical: <raw>_idx [B] (0 missing, 1..V, V + 1 unknown);
  multi_categorical: <raw>_idx [B, max_values] 0-padded, and <raw>_multi_hot [B, V + 1]
  with `multi_hot`;
  numeric / time: <raw>_<z|mm|log|bucket> [B] (time: days since the epoch first);
  z: (x - mean) / std, missing -> 0 (the mean); mm: (x - min) / (max - min), missing
  -> 0; log: the z-score of log1p(max(x, 0)), missing -> 0; bucket: 1..n + 1 by the
  declared boundaries, missing -> 0;
  text: <raw>_tokens [B, max_tokens] 0-padded;
- documents of an interaction text column (user_<c>_docs / item_<c>_docs): <doc>_tokens
  [B, max_documents, max_tokens] in the column's vocabulary;
- labels: raw labels passed through (missing -> 0), `expr` labels from their condition
  on the rating or a numeric interaction column (missing -> 0), and <c>_tokens of each
  interaction text column (a target: never read as an input of its own row).

Tokenization (text features, interaction texts and documents alike): the text is
lower-cased (UTF-8), every run of characters that are not letters or digits
(`[^\\p{L}\\p{N}]+`) becomes a separator, and the first `max_tokens` tokens are kept. The
vocabulary is the training split's tokens, the `vocabulary_size` most frequent (0: all);
other tokens get the unknown id V + 1.

Every analyzer (vocabularies, means, min / max, item and user statistics) runs on the
training split only: the pipeline's Transform uses `splits_config(analyze=["train"])`.
The same graph is applied inside exported models, so serving sees exactly the features
training saw; an output whose inputs a request does not carry (labels, interaction
outcomes) is simply not computed there.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

import tensorflow as tf
import tensorflow_transform as tft

from contract import datasets as D
from contract import description as desc
from contract import features as F

ITEM_COUNT_VOCAB = "item_positive_count"
ITEM_RATING_SUM_VOCAB = "item_rating_sum"
USER_COUNT_VOCAB = "user_positive_count"
FOLD_SUFFIX = "_fold"  # the same sums per (key, fold): ITEM_COUNT_VOCAB + FOLD_SUFFIX, ...
PAIR_SEPARATOR = "\x1f"  # joins two ids (user and item; a key and its fold) into one key
# Out-of-fold statistics: a training row reads its item's statistics from the other
# OOF_FOLDS - 1 folds of the training rows (see `_item_statistics`).
OOF_FOLDS = 5
TRAIN_SPLIT = desc.SPLIT_VALUES[0]  # the raw `split` of a training row
TOKEN_SEPARATORS = r"[^\p{L}\p{N}]+"  # what splits a text into tokens (after lower-casing)
SECONDS_PER_DAY = 86400.0
_MILLI = 1000.0

# custom_config keys.
DESCRIPTION = "description"
MAX_HISTORY = "max_history"
_OPS = {">=": tf.greater_equal, "<=": tf.less_equal, "==": tf.equal, "!=": tf.not_equal, ">": tf.greater,
        "<": tf.less}


def _dense(x, default) -> tf.Tensor:
    """A [batch] tensor from a [batch, 1] dense or sparse feature (missing -> default)."""
    if isinstance(x, tf.SparseTensor):
        x = tf.sparse.to_dense(
            tf.sparse.reset_shape(x, [x.dense_shape[0], 1]), default_value=default
        )
    elif isinstance(x, tf.RaggedTensor):
        x = x.to_tensor(default_value=default, shape=[None, 1])
    return tf.reshape(x, [-1])


def _present(x) -> tf.Tensor:
    """[batch] bool: the one-valued feature has a value in the row."""
    if isinstance(x, tf.SparseTensor):
        return _dense(tf.sparse.map_values(tf.ones_like, tf.cast(x, tf.int64)), 0) > 0
    if isinstance(x, tf.RaggedTensor):
        return x.row_lengths() > 0
    return tf.ones(tf.shape(tf.reshape(x, [-1])), tf.bool)


def _map_values(fn, x):
    """`fn` applied to the values of a dense, sparse or ragged tensor (missing stay missing)."""
    if isinstance(x, tf.SparseTensor):
        return tf.sparse.map_values(fn, x)
    if isinstance(x, tf.RaggedTensor):
        return tf.ragged.map_flat_values(fn, x)
    return fn(x)


def _ragged(x) -> tf.RaggedTensor:
    """A [batch, None] ragged tensor from a sparse, ragged or dense multi-valued feature."""
    if isinstance(x, tf.SparseTensor):
        return tf.RaggedTensor.from_sparse(x)
    if isinstance(x, tf.RaggedTensor):
        return x
    return tf.RaggedTensor.from_tensor(x if x.shape.rank != 1 else x[:, None])


def _shift(ids):
    """Vocabulary ids shifted by one so that 0 is free for padding (OOV after the vocab)."""
    if isinstance(ids, tf.RaggedTensor):
        return ids.with_flat_values(ids.flat_values + 1)
    return ids + 1


def _shifted_vocab_ids(x, vocab_filename: str, deferred_vocab=None, top_k: Optional[int] = None):
    """Vocabulary ids shifted by one so that 0 is free for padding (OOV after the vocab)."""
    if deferred_vocab is None:
        ids = tft.compute_and_apply_vocabulary(
            x, top_k=top_k, num_oov_buckets=F.OOV_BUCKETS, vocab_filename=vocab_filename
        )
    else:
        ids = tft.apply_vocabulary(x, deferred_vocab, num_oov_buckets=F.OOV_BUCKETS)
    return _shift(ids)


def tokenize(texts: tf.Tensor, max_tokens: int) -> tf.RaggedTensor:
    """[N] strings -> [N, <= max_tokens] tokens (see the module docstring's rule)."""
    lower = tf.strings.lower(texts, encoding="utf-8")
    return tf.strings.split(tf.strings.regex_replace(lower, TOKEN_SEPARATORS, " "))[:, :max_tokens]


def _top_k(feature: desc.Feature) -> Optional[int]:
    return feature.vocabulary_size or None


def _frequency_key(ids: tf.Tensor) -> tf.Tensor:
    """The key of an id in a frequency vocabulary: its web-safe base64, which holds no space
    or line break (a frequency file's line is `frequency key`, split at the first space, so an
    id such as `K 17` would otherwise be read as `K`)."""
    return tf.io.encode_base64(ids)


def _frequency_lookup(keys: tf.Tensor, frequency_vocab, default: float) -> tf.Tensor:
    """Looks each key (`_frequency_key`) up in a `tft.vocabulary(..., store_frequency=True)` file.

    The file's lines are `frequency key`; with weights, frequency is the sum of the
    weights. Keys absent from the training split get `default`. `tft.apply_vocabulary`
    only accepts integer lookups, so values travel as integer thousandths (float64 [B]).
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
    return tf.cast(milli, tf.float64) / _MILLI


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


# ----------------------------------------------------------------------------------------
# Side-table features by type
# ----------------------------------------------------------------------------------------
def _categorical(x, feature: desc.Feature) -> Dict[str, tf.Tensor]:
    ids = _shifted_vocab_ids(_ragged(x)[:, :1], feature.vocabulary_name, top_k=_top_k(feature))
    return {feature.transformed_name(): tf.reshape(ids.to_tensor(default_value=0, shape=[None, 1]), [-1])}


def _multi_categorical(x, feature: desc.Feature) -> Dict[str, tf.Tensor]:
    width = feature.max_values
    ids = _shifted_vocab_ids(_ragged(x)[:, :width], feature.vocabulary_name, top_k=_top_k(feature))
    idx_name = feature.transformed_names()[0]
    out = {idx_name: ids.to_tensor(default_value=0, shape=[None, width])}
    if feature.multi_hot:
        depth = tf.cast(
            tft.experimental.get_vocabulary_size_by_name(feature.vocabulary_name) + F.OOV_BUCKETS + 1, tf.int32)
        multi_hot = tf.reduce_max(tf.one_hot(out[idx_name], depth=depth, dtype=tf.float32), axis=1)
        out[feature.transformed_names()[1]] = multi_hot[:, 1:]  # drop the padding column
    return out


def _numeric(x, feature: desc.Feature) -> Dict[str, tf.Tensor]:
    """A numeric or time feature normalized by its declared normalizer (training statistics)."""
    if feature.type == desc.TIME:
        x = _map_values(lambda v: tf.cast(tf.cast(v, tf.float64) / SECONDS_PER_DAY, tf.float32), x)
    else:
        x = tf.cast(x, tf.float32)
    name = feature.transformed_name()
    normalizer = feature.normalizer
    if normalizer == desc.Z_SCORE:
        return {name: _dense(tft.scale_to_z_score(x), 0.0)}
    if normalizer == desc.MIN_MAX:
        return {name: _dense(tft.scale_to_0_1(x), 0.0)}
    if normalizer == desc.LOG:
        # log1p in float64, cast back: float32 log1p differs in the last digit with the batch.
        def log1p(v):
            return tf.cast(tf.math.log1p(tf.maximum(tf.cast(v, tf.float64), 0.0)), tf.float32)

        return {name: _dense(tft.scale_to_z_score(_map_values(log1p, x)), 0.0)}
    boundaries = tf.constant([list(feature.boundaries)], tf.float32)
    return {name: _dense(_map_values(lambda b: b + 1, tft.apply_buckets(x, boundaries)), tf.constant(0, tf.int64))}


def _text(x, feature: desc.Feature, vocab=None) -> Dict[str, tf.Tensor]:
    """<raw>_tokens [B, max_tokens] of a one-valued text feature (its own vocabulary, or `vocab`)."""
    tokens = tokenize(_dense(x, b""), feature.max_tokens)
    if vocab is None:
        vocab = tft.vocabulary(tokens, top_k=_top_k(feature), vocab_filename=feature.vocabulary_name)
    ids = _shifted_vocab_ids(tokens, feature.vocabulary_name, deferred_vocab=vocab)
    return {feature.transformed_name(): ids.to_tensor(default_value=0, shape=[None, feature.max_tokens])}


def _documents(x, column: desc.Feature, vocab) -> tf.Tensor:
    """[B, max_documents, max_tokens] token ids of a documents feature (the column's vocabulary)."""
    docs = _ragged(x)[:, -column.max_documents:]
    tokens = tokenize(docs.flat_values, column.max_tokens)
    ids = tokens.with_flat_values(tft.apply_vocabulary(tokens.flat_values, vocab, num_oov_buckets=F.OOV_BUCKETS) + 1)
    nested = docs.with_flat_values(ids)
    return nested.to_tensor(default_value=0, shape=[None, column.max_documents, column.max_tokens])


def _side_feature(inputs, feature: desc.Feature) -> Dict[str, tf.Tensor]:
    if feature.raw_name not in inputs:
        raise ValueError(f"Transform: the description declares the {feature.side} feature {feature.name!r} "
                         f"({feature.type}), but the examples carry no raw feature {feature.raw_name!r}; raw "
                         f"features given: {sorted(inputs)}")
    x = inputs[feature.raw_name]
    if feature.type == desc.CATEGORICAL:
        return _categorical(x, feature)
    if feature.type == desc.MULTI_CATEGORICAL:
        return _multi_categorical(x, feature)
    if feature.type in (desc.NUMERIC, desc.TIME):
        return _numeric(x, feature)
    return _text(x, feature)


def _interaction_texts(inputs, d: desc.Description) -> Dict[str, tf.Tensor]:
    """Each interaction text column's tokens (a target) and its documents' tokens (inputs)."""
    out = {}
    for column in d.text_columns:
        # The vocabulary analyzer reads the training rows' own texts; at serving time the
        # column is absent and only the documents (which need only the vocabulary) are built.
        tokens = tokenize(_dense(inputs[column.raw_name], b""), column.max_tokens)
        vocab = tft.vocabulary(tokens, top_k=_top_k(column), vocab_filename=column.vocabulary_name)
        ids = _shifted_vocab_ids(tokens, column.vocabulary_name, deferred_vocab=vocab)
        out[column.transformed_name()] = ids.to_tensor(default_value=0, shape=[None, column.max_tokens])
        for doc, name in zip(column.document_names(), column.document_transformed_names()):
            if doc in inputs:
                out[name] = _documents(inputs[doc], column, vocab)
    return out


# ----------------------------------------------------------------------------------------
# Labels and statistics
# ----------------------------------------------------------------------------------------
def _condition(inputs, d: desc.Description, condition: desc.Condition) -> Optional[tf.Tensor]:
    """int64 [B]: 1 where the field has a value and the condition holds (None: field absent)."""
    field = d.rating_label if condition.field == desc.RATING else d.column(condition.field).raw_name
    if field not in inputs:
        return None
    x = inputs[field]
    value = _dense(tf.cast(x, tf.float32), 0.0)
    holds = _OPS[condition.op](value, tf.constant(float(condition.value), tf.float32))
    return tf.cast(_present(x) & holds, tf.int64)


def _labels(inputs, d: desc.Description) -> Dict[str, tf.Tensor]:
    """Labels after Transform (absent at serving time, when labels are not sent)."""
    out = {}
    for label in d.labels:
        if label.source == desc.EXPR:
            value = _condition(inputs, d, label.condition)
            if value is not None:
                out[label.name] = value
        elif label.name in inputs:
            default = 0.0 if label.source == desc.RATING else 0
            out[label.name] = _dense(inputs[label.name], default)
    return out


def _level(count: tf.Tensor, first_max: int, second_max: int, levels) -> tf.Tensor:
    return tf.where(count <= first_max, tf.constant(levels[0]),
                    tf.where(count <= second_max, tf.constant(levels[1]), tf.constant(levels[2])))


def oof_fold(user: tf.Tensor, item: tf.Tensor) -> tf.Tensor:
    """int64 [B]: the fold (0..OOF_FOLDS - 1) of each (user, item) pair for the out-of-fold
    statistics, a fingerprint of the raw ids (the same on every machine and in every run).

    Args:
      user, item: [B] raw user and item ids.
    """
    return tf.strings.to_hash_bucket_fast(tf.strings.join([user, item], separator=PAIR_SEPARATOR), OOF_FOLDS)


def _training_rows(inputs) -> tf.Tensor:
    """[B] bool: the row's raw `split` is train. Eval and test rows, and serving requests
    (export's serving spec gives them the split "", as clients send none), are not."""
    if F.SPLIT not in inputs:
        return tf.zeros(tf.shape(_dense(inputs[F.USER_ID], b"")), tf.bool)
    return tf.equal(_dense(inputs[F.SPLIT], b""), TRAIN_SPLIT)


class _OutOfFold:
    """Sums over the training rows per key (an item or a user): in full, and without the
    row's own fold.

    Args:
      keys: [B] each row's key.
      fold: [B] each row's fold (`oof_fold`).
      training: [B] bool, the rows that read the other folds' sums (the others read the full sums).
    """

    def __init__(self, keys: tf.Tensor, fold: tf.Tensor, training: tf.Tensor):
        self.key = _frequency_key(keys)
        self.fold_key = _frequency_key(tf.strings.join([keys, tf.strings.as_string(fold)], separator=PAIR_SEPARATOR))
        self.training = training

    def sums(self, weights: tf.Tensor, vocab_filename: str) -> Tuple[tf.Tensor, tf.Tensor]:
        """(full, row's) float64 [B]: each row's key's sum of `weights` over the training rows, and
        the sum the row reads: the other folds' for a training row, the full one for any other.

        Args:
          weights: [B] float32 per row.
          vocab_filename: the frequency file of the full sums; the folds' is `<name>_fold`.
        """
        full_vocab = tft.vocabulary(self.key, weights=weights, store_frequency=True, vocab_filename=vocab_filename)
        fold_vocab = tft.vocabulary(self.fold_key, weights=weights, store_frequency=True,
                                    vocab_filename=vocab_filename + FOLD_SUFFIX)
        full = _frequency_lookup(self.key, full_vocab, default=0.0)
        own_fold = _frequency_lookup(self.fold_key, fold_vocab, default=0.0)
        return full, tf.where(self.training, full - own_fold, full)


def _popularity(count: tf.Tensor, rows: tf.Tensor) -> tf.Tensor:
    """log1p(count) / log1p(training rows) in [0, 1], in float64 (float32 log1p differs in the
    last digit with the batch a row is transformed in), cast to float32."""
    return tf.cast(tf.clip_by_value(tf.math.log1p(count) / tf.math.log1p(rows), 0.0, 1.0), tf.float32)


def _item_statistics(inputs, d: desc.Description, user, item, positive) -> Dict[str, tf.Tensor]:
    """Item statistics and the user activity slice from the training split's positives, out of fold.

    Every training-split row (a positive or a sampled negative) reads the statistics of
    the training rows in the other OOF_FOLDS - 1 folds (`oof_fold` of its (user, item)
    pair): the sums of its own fold are subtracted from its item's (user's) totals. So no
    feature of a training row moves with its own label, and the positives and negatives
    of an item in one fold read the same values. A count out of fold is scaled by
    OOF_FOLDS / (OOF_FOLDS - 1), the full count's expected size; an average is not
    scaled (an item without a positive in the other folds gets the other folds' global
    mean). Eval, test and serving rows read the full training statistics, and so does
    every row's catalogue copy (`F.catalogue_name`) of the item average rating and
    popularity: the columns the models' item table is built from (what serving sees),
    never a row's own input. Scaled by constants that no label moves (a min-max over the
    rows would let a row's label shift its own scaled value through the range).
    """
    out = {}
    training = _training_rows(inputs)
    fold = oof_fold(user, item)
    scale = tf.where(training, tf.constant(OOF_FOLDS / (OOF_FOLDS - 1), tf.float64), tf.constant(1.0, tf.float64))
    items = _OutOfFold(item, fold, training)
    full_count, other_count = items.sums(positive, ITEM_COUNT_VOCAB)
    count = other_count * scale
    rows = tf.cast(tft.size(positive), tf.float64)
    out[F.ITEM_POPULARITY_MM] = _popularity(count, rows)
    out[F.catalogue_name(F.ITEM_POPULARITY_MM)] = _popularity(full_count, rows)
    out[F.ITEM_POPULARITY_LEVEL] = _level(count, F.POPULARITY_TAIL_MAX, F.POPULARITY_TORSO_MAX, F.POPULARITY_LEVELS)
    rating_name = d.rating_label
    if rating_name:
        if d.rating_min is None or d.rating_max is None or d.rating_max <= d.rating_min:
            raise ValueError(f"Transform: description {d.name!r} ({d.path or 'a mapping'}) has a rating label "
                             f"{rating_name!r} but no rating scale: item_avg_rating_mm is scaled by "
                             f"interactions.rating.min and .max (min < max), got min={d.rating_min}, "
                             f"max={d.rating_max}")
        weighted = _dense(inputs[rating_name], 0.0) * positive
        full_sum, other_sum = items.sums(weighted, ITEM_RATING_SUM_VOCAB)
        # The global means that stand in for an item without positives: every fold's, and
        # for a training row the other folds'.
        in_fold = tf.one_hot(fold, OOF_FOLDS, dtype=tf.float64)
        fold_sums = tft.sum(in_fold * tf.cast(weighted, tf.float64)[:, None], reduce_instance_dims=False)
        fold_counts = tft.sum(in_fold * tf.cast(positive, tf.float64)[:, None], reduce_instance_dims=False)
        own_sum = tf.where(training, tf.gather(fold_sums, fold), tf.zeros_like(full_sum))
        own_count = tf.where(training, tf.gather(fold_counts, fold), tf.zeros_like(full_sum))
        low, high = float(d.rating_min), float(d.rating_max)

        def scaled_average(total, n, mean):
            average = tf.where(n > 0, total / tf.maximum(n, 1.0), mean)
            return tf.cast(tf.clip_by_value((average - low) / (high - low), 0.0, 1.0), tf.float32)

        global_sum, global_count = tf.reduce_sum(fold_sums), tf.reduce_sum(fold_counts)
        out[F.ITEM_AVG_RATING_MM] = scaled_average(
            other_sum, other_count, (global_sum - own_sum) / tf.maximum(global_count - own_count, 1.0))
        out[F.catalogue_name(F.ITEM_AVG_RATING_MM)] = scaled_average(
            full_sum, full_count, global_sum / tf.maximum(global_count, 1.0))

    # User activity level (for slicing), from the training split's positives, out of fold.
    _, activity = _OutOfFold(user, fold, training).sums(positive, USER_COUNT_VOCAB)
    out[F.USER_ACTIVITY] = _level(activity * scale, F.ACTIVITY_LIGHT_MAX, F.ACTIVITY_MEDIUM_MAX, F.ACTIVITY_LEVELS)
    return out


def description_of(custom_config: Optional[Mapping[str, Any]]) -> desc.Description:
    """The description a Transform custom config carries (`DatasetSpec.to_dict()`)."""
    config = dict(custom_config or {})
    if not config.get(DESCRIPTION):
        raise ValueError(f"Transform custom_config needs {DESCRIPTION!r}: the dataset description mapping "
                         f"(contract.datasets.DatasetSpec.to_dict()); got keys {sorted(config)}")
    return D.dataset_spec(config[DESCRIPTION]).description


def preprocessing_fn(
    inputs: Dict[str, Any], custom_config: Optional[Dict[str, Any]] = None
) -> Dict[str, Any]:
    """tf.Transform entry point.

    `custom_config`: `description`, the dataset description mapping
    (`contract.datasets.DatasetSpec.to_dict()`); `max_history`, the most recent history
    items kept (the pipeline's setting, the same the ExampleGen used).
    """
    custom_config = dict(custom_config or {})
    unknown = sorted(set(custom_config) - {DESCRIPTION, MAX_HISTORY})
    if unknown:
        raise ValueError(f"Transform custom_config: unknown keys {unknown}; expected {DESCRIPTION!r} and "
                         f"{MAX_HISTORY!r}")
    d = description_of(custom_config)
    spec = D.spec_of(d)
    max_history = int(custom_config.get(MAX_HISTORY, F.MAX_HISTORY))
    outputs: Dict[str, Any] = {}

    user = _dense(inputs[F.USER_ID], b"")
    item = _dense(inputs[F.ITEM_ID], b"")
    positive = tf.cast(_dense(inputs[spec.implicit_label], 1), tf.float32)

    # Ids. The item vocabulary is shared by the target item and the history items.
    outputs[F.USER_IDX] = _shifted_vocab_ids(user, F.USER_VOCAB)
    item_vocab = tft.vocabulary(item, vocab_filename=F.ITEM_VOCAB)
    outputs[F.ITEM_IDX] = _shifted_vocab_ids(item, F.ITEM_VOCAB, deferred_vocab=item_vocab)

    for feature in d.features:
        outputs.update(_side_feature(inputs, feature))
    outputs.update(_interaction_texts(inputs, d))
    outputs.update(_item_statistics(inputs, d, user, item, positive))
    outputs.update(_history(inputs, spec, item_vocab, max_history))
    outputs.update(_labels(inputs, d))
    return outputs
