"""The hand-written tf.Example wire format equals protobuf's deterministic serialization."""
import random

import pytest
import tensorflow as tf

from components.example_gen import encoding
from contract import features as F


def _protobuf(values):
    return encoding.to_tf_example(values).SerializeToString(deterministic=True)


def test_serialize_equals_protobuf_on_edge_values():
    values = {
        F.USER_ID: ["1"], F.ITEM_ID: ["ü" * 200],  # non-ASCII, and a length that needs a 2-byte varint
        F.ITEM_GENRES: [], F.HISTORY_ITEM_IDS: [], F.HISTORY_BEHAVIORS: [],  # empty lists keep their type
        F.TIMESTAMP: [-(2 ** 63)], F.ITEM_YEAR: [0], F.WATCHED: [2 ** 63 - 1],
        F.RATING: [0.1],  # not exact in float32: rounded as protobuf rounds
    }
    assert encoding.serialize(values) == _protobuf(values)
    assert encoding.serialize({F.RATING: []}) == _protobuf({F.RATING: []})
    assert encoding.serialize({}) == _protobuf({}) == b""
    decoded = encoding.from_tf_example(tf.train.Example.FromString(encoding.serialize(values)))
    assert decoded[F.ITEM_ID] == values[F.ITEM_ID] and decoded[F.TIMESTAMP] == values[F.TIMESTAMP]


def test_serialize_equals_protobuf_on_random_examples():
    rnd = random.Random(7)
    ids = [str(rnd.randrange(10 ** 7)) for _ in range(500)]
    for _ in range(2000):
        n = rnd.randrange(0, 70)
        values = {
            F.USER_ID: [str(rnd.randrange(10 ** 6))], F.ITEM_ID: [rnd.choice(ids)],
            F.ITEM_GENRES: rnd.sample(["Comedy", "Drama", "(no genres listed)", "Sci-Fi"], rnd.randrange(0, 4)),
            F.HISTORY_ITEM_IDS: [rnd.choice(ids) for _ in range(n)],
            F.HISTORY_BEHAVIORS: [rnd.choice(["liked", "neutral", "disliked"]) for _ in range(n)],
            F.TIMESTAMP: [rnd.randrange(-2 ** 40, 2 ** 40)], F.RATING: [rnd.randrange(1, 11) / 2],
            F.WATCHED: [rnd.randrange(2)],
        }
        if rnd.random() < 0.5:
            values[F.ITEM_YEAR] = [rnd.randrange(1900, 2020)]
        assert encoding.serialize(values) == _protobuf(values)


def test_unknown_feature_is_named():
    with pytest.raises(ValueError, match="'mystery' has no declared type"):
        encoding.serialize({"mystery": [1]})
