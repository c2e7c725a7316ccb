"""The feature names every dataset shares, named once.

ExampleGen writes the *raw* features below into `tf.Example`s; the Transform
`preprocessing_fn` turns them into the *transformed* features; models and the
serving signatures read these constants instead of repeating strings. A dataset's own
side-table features and labels are named by its description
(`contract.description.raw_features`, `Feature.transformed_names()`), not here.

Raw features are also the serving contract of `serving_default`: a client sends
serialized `tf.Example`s with the raw features (labels optional) and the model
applies the Transform graph itself.
"""

from __future__ import annotations

from typing import Tuple

# --------------------------------------------------------------------------
# Raw features (written by ExampleGen).
# --------------------------------------------------------------------------
USER_ID = "user_id"  # bytes, one value
ITEM_ID = "item_id"  # bytes, one value
TIMESTAMP = "timestamp"  # int64 unix seconds, one value
HISTORY_ITEM_IDS = "history_item_ids"  # bytes, 0..N values, oldest first
HISTORY_BEHAVIORS = "history_behaviors"  # bytes, aligned with HISTORY_ITEM_IDS
SPLIT = "split"  # bytes, the split the example belongs to (train / eval / test); for slicing

# The two views ExampleGen writes (see README "Data views"): one example per interaction,
# and one example per user and split.
INTERACTION_VIEW = "interactions"
USER_VIEW = "users"

# Raw features of the user view.
TARGET_ITEM_IDS = "target_item_ids"  # bytes, the items the split holds out for the user
TARGET_BEHAVIORS = "target_behaviors"  # bytes, aligned with TARGET_ITEM_IDS
USER_ACTIVITY_LEVEL = "user_activity_level"  # bytes light / medium / heavy (training interactions)

# --------------------------------------------------------------------------
# Transformed features (written by Transform, read by models).
# Id conventions: 0 is padding, 1..V the training-split vocabulary, V+1.. OOV.
# --------------------------------------------------------------------------
USER_IDX = "user_idx"
ITEM_IDX = "item_idx"
# Item statistics and slices: training-split statistics, out of fold for a training row
# (transform/preprocessing.py `_item_statistics`), full for any other row.
ITEM_AVG_RATING_MM = "item_avg_rating_mm"  # float in [0, 1]: (avg - rating_min) / rating range
ITEM_POPULARITY_MM = "item_popularity_mm"  # float in [0, 1]: log1p(count) / log1p(training rows)
USER_ACTIVITY = "user_activity"  # bytes light / medium / heavy (training rating count)
ITEM_POPULARITY_LEVEL = "item_popularity_level"  # bytes head / torso / tail (training count)
CATALOGUE_PREFIX = "catalogue_"  # see catalogue_name
HISTORY_ITEM_IDX = "history_item_idx"  # int64, padded to HISTORY_BUCKET
HISTORY_BEHAVIOR_IDX = "history_behavior_idx"  # int64, padded to HISTORY_BUCKET
HISTORY_LENGTH = "history_length"  # int64, true length after truncation
HISTORY_BUCKET = "history_bucket"  # int64, the padded length (one of HISTORY_BUCKETS)

OOV_BUCKETS = 1
MAX_HISTORY = 64  # default of the pipeline's `max_history`: most recent N history items kept
MIN_HISTORY_BUCKET = 8
HISTORY_BUCKETS: Tuple[int, ...] = (8, 16, 32, 64)  # history_buckets(MAX_HISTORY)

# User activity slices: training-split interaction count thresholds.
ACTIVITY_LIGHT_MAX = 30  # <= 30 training interactions: light
ACTIVITY_MEDIUM_MAX = 150  # 31..150: medium; more: heavy
ACTIVITY_LEVELS = ("light", "medium", "heavy")

# Item popularity slices: training-split interaction count thresholds (out of fold for a
# training row, so a row's own interaction never decides its slice).
POPULARITY_TAIL_MAX = 5  # <= 5 training interactions: tail
POPULARITY_TORSO_MAX = 50  # 6..50: torso; more: head
POPULARITY_LEVELS = ("tail", "torso", "head")


def activity_level(count: int) -> str:
    """User activity slice of a training interaction count (light / medium / heavy)."""
    if count <= ACTIVITY_LIGHT_MAX:
        return ACTIVITY_LEVELS[0]
    return ACTIVITY_LEVELS[1] if count <= ACTIVITY_MEDIUM_MAX else ACTIVITY_LEVELS[2]


def catalogue_name(name: str) -> str:
    """The catalogue copy of an item statistic: the full training statistic on every row (a
    training row's own is out of fold), what serving computes; the models' item table is
    built from it, and no model reads it as a row's input.

    Args:
      name: the statistic (ITEM_AVG_RATING_MM, ITEM_POPULARITY_MM).
    """
    return CATALOGUE_PREFIX + name

# Vocabulary file names (Transform output assets).
USER_VOCAB = "user_id_vocab"
ITEM_VOCAB = "item_id_vocab"


def history_buckets(max_history: int = MAX_HISTORY) -> Tuple[int, ...]:
    """Padded history lengths for a `max_history`: 8, 16, 32, ... and max_history itself."""
    if max_history < 1:
        raise ValueError(f"max_history must be >= 1, got {max_history}")
    buckets = []
    size = MIN_HISTORY_BUCKET
    while size < max_history:
        buckets.append(size)
        size *= 2
    buckets.append(max_history)
    return tuple(buckets)


def history_bucket(length: int, max_history: int = MAX_HISTORY) -> int:
    """The smallest bucket of `history_buckets(max_history)` that holds `length` items."""
    for bucket in history_buckets(max_history):
        if length <= bucket:
            return bucket
    return max_history
