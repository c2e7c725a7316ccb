"""Serialization of example records into `tf.train.Example` protos."""

from __future__ import annotations

from typing import Dict, Mapping

import tensorflow as tf

from contract import features

BYTES_FEATURES = frozenset({
    features.USER_ID, features.ITEM_ID, features.ITEM_GENRES,
    features.HISTORY_ITEM_IDS, features.HISTORY_BEHAVIORS, features.SPLIT,
    features.TARGET_ITEM_IDS, features.USER_ACTIVITY_LEVEL,
})
INT64_FEATURES = frozenset({
    features.TIMESTAMP, features.ITEM_YEAR,
    features.WATCHED, features.VIEWED, features.CART, features.FAV, features.BUY,
})
FLOAT_FEATURES = frozenset({features.RATING})


def to_tf_example(values: Mapping[str, list]) -> tf.train.Example:
    """Builds a tf.Example from raw feature name -> list of values.

    Args:
      values: names from contract.features; bytes features take str values.
    """
    example = tf.train.Example()
    feature = example.features.feature
    # Filling the message in place is about twice as fast as building Feature objects.
    for name, vals in values.items():
        # SetInParent keeps the type of an empty list (e.g. a first interaction's history).
        if name in BYTES_FEATURES:
            target = feature[name].bytes_list
            vals = [v.encode() for v in vals]
        elif name in INT64_FEATURES:
            target = feature[name].int64_list
        elif name in FLOAT_FEATURES:
            target = feature[name].float_list
        else:
            raise ValueError(f"feature {name!r} has no declared type")
        target.SetInParent()
        target.value.extend(vals)
    return example


def serialize(values: Mapping[str, list]) -> bytes:
    """`to_tf_example` serialized with sorted map keys, so equal inputs give equal bytes."""
    return to_tf_example(values).SerializeToString(deterministic=True)


def from_tf_example(example: tf.train.Example) -> Dict[str, list]:
    """The inverse of `to_tf_example`: feature name -> list of Python values (bytes decoded)."""
    out: Dict[str, list] = {}
    for name, feat in example.features.feature.items():
        kind = feat.WhichOneof("kind")
        if kind == "bytes_list":
            out[name] = [v.decode() for v in feat.bytes_list.value]
        elif kind == "int64_list":
            out[name] = list(feat.int64_list.value)
        elif kind == "float_list":
            out[name] = list(feat.float_list.value)
        else:
            out[name] = []
    return out
