"""The hand-written tf.Example wire format equals protobuf's deterministic serialization; feature
types come from the dataset description."""
import random

import pytest
import tensorflow as tf

from components.example_gen import encoding
from contract import description as desc
from contract import features as F

ML_TYPES = encoding.feature_types("movielens")


def _protobuf(values, types=ML_TYPES):
    return encoding.to_tf_example(values, types).SerializeToString(deterministic=True)


def test_types_come_from_the_description():
    assert {n: ML_TYPES[n] for n in ("item_genres", "item_year", "rating", "watched", "timestamp")} == {
        "item_genres": "bytes", "item_year": "int", "rating": "float", "watched": "int", "timestamp": "int"}
    assert "liked" not in ML_TYPES  # an expr label is Transform's
    assert ML_TYPES[F.TARGET_ITEM_IDS] == ML_TYPES[F.USER_ACTIVITY_LEVEL] == "bytes"  # the user view
    taobao = encoding.feature_types("taobao")
    assert taobao["item_category"] == "bytes" and taobao["buy"] == "int" and "rating" not in taobao
    shop = desc.from_dict({
        "name": "shop", "interactions": {"files": "x.csv", "user": "u", "item": "i", "time": "t",
                                         "columns": {"price": {"type": "numeric"},
                                                     "review": {"type": "text", "documents": True}}},
        "users": {"files": "u.csv", "key": "u", "features": {"joined": {"type": "time"}}},
        "labels": {"seen": {"implicit": True}}, "tasks": [{"name": "seen", "kind": "binary"}]})
    types = encoding.feature_types(shop)
    assert {n: types[n] for n in ("price", "review", "user_review_docs", "item_review_docs", "user_joined")} == {
        "price": "float", "review": "bytes", "user_review_docs": "bytes", "item_review_docs": "bytes",
        "user_joined": "int"}


def test_serialize_equals_protobuf_on_edge_values():
    values = {
        F.USER_ID: ["1"], F.ITEM_ID: ["ü" * 200],  # non-ASCII, and a length that needs a 2-byte varint
        "item_genres": [], F.HISTORY_ITEM_IDS: [], F.HISTORY_BEHAVIORS: [],  # empty lists keep their type
        F.TIMESTAMP: [-(2 ** 63)], "item_year": [0], "watched": [2 ** 63 - 1],
        "rating": [0.1],  # not exact in float32: rounded as protobuf rounds
    }
    assert encoding.serialize(values, ML_TYPES) == _protobuf(values)
    assert encoding.serialize({"rating": []}, ML_TYPES) == _protobuf({"rating": []})
    assert encoding.serialize({}, ML_TYPES) == _protobuf({}) == b""
    decoded = encoding.from_tf_example(tf.train.Example.FromString(encoding.serialize(values, ML_TYPES)))
    assert decoded[F.ITEM_ID] == values[F.ITEM_ID] and decoded[F.TIMESTAMP] == values[F.TIMESTAMP]


def test_serialize_equals_protobuf_on_random_examples():
    rnd = random.Random(7)
    ids = [str(rnd.randrange(10 ** 7)) for _ in range(500)]
    for _ in range(2000):
        n = rnd.randrange(0, 70)
        values = {
            F.USER_ID: [str(rnd.randrange(10 ** 6))], F.ITEM_ID: [rnd.choice(ids)],
            "item_genres": rnd.sample(["Comedy", "Drama", "(no genres listed)", "Sci-Fi"], rnd.randrange(0, 4)),
            F.HISTORY_ITEM_IDS: [rnd.choice(ids) for _ in range(n)],
            F.HISTORY_BEHAVIORS: [rnd.choice(["liked", "neutral", "disliked"]) for _ in range(n)],
            F.TIMESTAMP: [rnd.randrange(-2 ** 40, 2 ** 40)], "rating": [rnd.randrange(1, 11) / 2],
            "watched": [rnd.randrange(2)],
        }
        if rnd.random() < 0.5:
            values["item_year"] = [rnd.randrange(1900, 2020)]
        assert encoding.serialize(values, ML_TYPES) == _protobuf(values)


def test_unknown_feature_is_named():
    with pytest.raises(ValueError, match="'mystery' has no declared type"):
        encoding.serialize({"mystery": [1]}, ML_TYPES)
    with pytest.raises(ValueError, match="'mystery' has no declared type"):
        encoding.to_tf_example({"mystery": [1]}, ML_TYPES)
