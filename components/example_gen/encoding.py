"""Serialization of example records into `tf.train.Example` protos.

The type of each feature comes from the dataset description
(`contract.description.raw_features`: the interaction view) plus the user view's own
features; `feature_types(description)` gives the map that `serialize` and
`to_tf_example` take. `serialize` writes the protobuf wire format directly: the bytes
are exactly those of `to_tf_example(values, types).SerializeToString(deterministic=True)`
(a test compares them), at a fraction of the cost. Building the message through the
protobuf API dominated the ingest's per-example work: every history value was encoded
and copied into a repeated field, up to 2 x 64 per example.
"""

from __future__ import annotations

import struct
from typing import Dict, Mapping

import tensorflow as tf

from contract import datasets
from contract import description as desc
from contract import features

BYTES, INT, FLOAT = desc.BYTES, desc.INT, desc.FLOAT

# The user view's features (one example per user and split), the same for every dataset.
USER_VIEW_TYPES: Dict[str, str] = {
    features.USER_ID: BYTES, features.SPLIT: BYTES, features.USER_ACTIVITY_LEVEL: BYTES,
    features.HISTORY_ITEM_IDS: BYTES, features.HISTORY_BEHAVIORS: BYTES,
    features.TARGET_ITEM_IDS: BYTES, features.TARGET_BEHAVIORS: BYTES,
}


def feature_types(description: datasets.DatasetRef) -> Dict[str, str]:
    """Raw feature name -> bytes / int / float of both views of a dataset.

    Args:
      description: the dataset (a Description, its mapping, a shipped name or a file).
    """
    d = description if isinstance(description, desc.Description) else datasets.dataset_spec(description).description
    out = dict(USER_VIEW_TYPES)
    for f in desc.raw_features(d):
        if out.get(f.name, f.dtype) != f.dtype:
            raise ValueError(f"{d.name}: raw feature {f.name!r} is {f.dtype} and also {out[f.name]}")
        out[f.name] = f.dtype
    return out


def _type_of(types: Mapping[str, str], name: str) -> str:
    kind = types.get(name)
    if kind is None:
        raise ValueError(f"feature {name!r} has no declared type; declared: {', '.join(sorted(types))}")
    return kind


def to_tf_example(values: Mapping[str, list], types: Mapping[str, str]) -> tf.train.Example:
    """Builds a tf.Example from raw feature name -> list of values.

    Args:
      values: feature name -> values; bytes features take str values.
      types: feature name -> bytes / int / float (`feature_types`).
    """
    example = tf.train.Example()
    feature = example.features.feature
    # Filling the message in place is about twice as fast as building Feature objects.
    for name, vals in values.items():
        kind = _type_of(types, name)
        # SetInParent keeps the type of an empty list (e.g. a first interaction's history).
        if kind == BYTES:
            target = feature[name].bytes_list
            vals = [v.encode() for v in vals]
        elif kind == INT:
            target = feature[name].int64_list
        else:
            target = feature[name].float_list
        target.SetInParent()
        target.value.extend(vals)
    return example


def _varint(n: int) -> bytes:
    """Protobuf base-128 varint; negative int64 values take ten bytes (two's complement)."""
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL_VARINTS = [_varint(n) for n in range(128)]
# Encoded BytesList entries (tag, length, bytes) of recently seen strings: item ids, genres
# and behaviors repeat across examples. Cleared when it grows past _CACHE_LIMIT entries.
_BYTES_ENTRY_CACHE: Dict[str, bytes] = {}
_CACHE_LIMIT = 1 << 20
_KEY_CACHE: Dict[str, bytes] = {}  # feature name -> its encoded map key (tag, length, name)


def _length_delimited(tag: bytes, payload: bytes) -> bytes:
    n = len(payload)
    return tag + (_SMALL_VARINTS[n] if n < 128 else _varint(n)) + payload


def _bytes_entry(value: str) -> bytes:
    entry = _BYTES_ENTRY_CACHE.get(value)
    if entry is None:
        if len(_BYTES_ENTRY_CACHE) >= _CACHE_LIMIT:
            _BYTES_ENTRY_CACHE.clear()
        entry = _BYTES_ENTRY_CACHE[value] = _length_delimited(b"\x0a", value.encode())
    return entry


def _feature(kind: str, vals: list) -> bytes:
    """One wire-format `Feature` message (BytesList = 1, FloatList = 2, Int64List = 3; packed)."""
    if kind == BYTES:
        try:  # every value seen before: one C-level pass
            body = b"".join(map(_BYTES_ENTRY_CACHE.__getitem__, vals))
        except KeyError:
            body = b"".join([_bytes_entry(v) for v in vals])
        return _length_delimited(b"\x0a", body)
    if kind == INT:
        packed = b"".join([_SMALL_VARINTS[v] if 0 <= v < 128 else _varint(v) for v in vals])
    else:
        packed = struct.pack(f"<{len(vals)}f", *vals)
    list_message = _length_delimited(b"\x0a", packed) if vals else b""
    return _length_delimited(b"\x1a" if kind == INT else b"\x12", list_message)


def serialize(values: Mapping[str, list], types: Mapping[str, str]) -> bytes:
    """`to_tf_example(values, types)` serialized with sorted map keys, so equal inputs give equal bytes.

    Written directly in the wire format: Example.features (1) -> Features.feature (1), a
    map whose entries (key = 1, value = 2) come in key order, as deterministic
    serialization orders them.

    Args:
      values: feature name -> values.
      types: feature name -> bytes / int / float (`feature_types`).
    """
    entries = []
    for name in sorted(values):
        key = _KEY_CACHE.get(name)
        if key is None:
            key = _KEY_CACHE[name] = _length_delimited(b"\x0a", name.encode())
        kind = types.get(name) or _type_of(types, name)
        entries.append(_length_delimited(b"\x0a", key + _length_delimited(b"\x12", _feature(kind, values[name]))))
    return _length_delimited(b"\x0a", b"".join(entries)) if entries else b""  # no features: an empty Example


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
