"""A synthetic dataset description with every feature type (a test fixture, not shipped).

Items: a one-hot categorical, an embedded categorical cut to its 2 most frequent values, a
multi-valued feature with a multi-hot vector, numerics with each normalizer, a time and a
text; users: a categorical and a numeric; the interactions: a rating, a numeric outcome
(an `expr` label reads it) and a review text with user / item documents.
"""

DAY = 86400

TYPED = {
    "name": "typed",
    "interactions": {
        "files": "log.csv",
        "user": "u",
        "item": "i",
        "time": {"column": "t", "unit": "seconds"},
        "rating": {"column": "stars", "min": 1, "max": 5},
        "behavior": {"from_rating": [{"name": "low", "when": "rating <= 2"}, {"name": "high"}]},
        "columns": {
            "votes": {"type": "numeric", "dtype": "int"},
            "review": {"type": "text", "max_tokens": 4, "documents": True, "max_documents": 2},
        },
    },
    "items": {
        "files": "items.csv",
        "key": "i",
        "features": {
            "brand": {"type": "categorical", "encoding": "one_hot"},
            "shape": {"type": "categorical", "vocabulary_size": 2},
            "tags": {"type": "multi_categorical", "separator": "|", "max_values": 3, "multi_hot": True},
            "price": {"type": "numeric", "normalize": "z_score"},
            "weight": {"type": "numeric", "normalize": "min_max"},
            "sales": {"type": "numeric", "dtype": "int", "normalize": "log"},
            "size": {"type": "numeric", "normalize": "buckets", "boundaries": [10, 20]},
            "released": {"type": "time", "normalize": "min_max"},
            "title": {"type": "text", "max_tokens": 3, "vocabulary_size": 3},
        },
    },
    "users": {
        "files": "users.csv",
        "key": "u",
        "features": {
            "country": {"type": "categorical"},
            "age": {"type": "numeric"},
        },
    },
    "labels": {
        "stars": {"rating": True},
        "seen": {"implicit": True},
        "good": {"expr": "rating >= 4"},
        "helpful": {"expr": "votes >= 2"},
    },
    "tasks": [
        {"name": "stars", "kind": "regression", "condition": "seen"},
        {"name": "good", "kind": "binary", "condition": "seen"},
        {"name": "helpful", "kind": "binary", "condition": "seen"},
        {"name": "items", "kind": "retrieval"},
    ],
}

# Side tables (None: missing). i4 and u9 appear only in the eval rows.
ITEMS = {
    "i1": dict(brand="acme", shape="round", tags=["a", "b"], price=10.0, weight=2.0, sales=100, size=25.0,
               released=10 * DAY, title="Red Shoe, red! extra"),
    "i2": dict(brand="acme", shape="square", tags=["a", "c", "e", "d"], price=20.0, weight=4.0, sales=-5, size=5.0,
               released=20 * DAY, title="Blue shoe"),
    "i3": dict(brand="bolt", shape="flat", tags=["b"], price=None, weight=6.0, sales=0, size=None,
               released=30 * DAY, title="big RED box"),
    "i4": dict(brand="zeta", shape=None, tags=["zz", "a"], price=40.0, weight=10.0, sales=50, size=10.0,
               released=40 * DAY, title="Green hat"),
}
USERS = {"u1": dict(country="fr", age=20.0), "u2": dict(country="de", age=30.0), "u3": dict(country="fr", age=None),
         "u9": dict(country="it", age=25.0)}

# (user, item, stars, votes, review, user documents, item documents)
TRAIN = [
    ("u1", "i1", 5.0, 3, "Great shoe. Great fit!", [], []),
    ("u2", "i1", 4.0, 0, "ok", [], ["Great shoe. Great fit!"]),
    ("u3", "i1", 2.0, 2, "fine shoe", [], ["Great shoe. Great fit!", "ok"]),
    ("u1", "i2", 3.0, None, None, ["Great shoe. Great fit!"], []),
    ("u2", "i2", 5.0, 5, "great", ["ok"], []),
    ("u3", "i3", 1.0, 1, "bad", ["fine shoe"], []),
]
EVAL = [
    ("u9", "i4", 4.0, 2, "awful", [], ["great", "awful shoe fit", "x"]),
    ("u1", "i3", None, None, None, [], ["bad"]),
]
