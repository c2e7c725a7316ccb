"""What each interaction-log dataset provides: behaviors, labels and item metadata.

The static facts of a dataset, read by every layer (ingest, Transform, models,
evaluation). How a dataset's files are parsed lives with the ingest adapters
(`components/example_gen/adapters.py`).
"""

from __future__ import annotations

import dataclasses
from typing import Tuple

from contract.features import (
    BUY,
    CART,
    DISLIKED_MAX_RATING,
    FAV,
    LIKED,
    LIKED_MIN_RATING,
    LOVED,
    RATING,
    VIEWED,
    WATCHED,
)


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What one interaction-log format provides.

    Attributes:
      name: dataset key used in configs (`movielens`, `taobao`).
      behaviors: the history behavior vocabulary, in a fixed order (ids 1..n).
      raw_labels: label features written by ExampleGen.
      labels: all labels after Transform (raw plus derived).
      implicit_label: the 1/0 label that sampled negatives set to 0.
      has_rating: the log has an explicit rating.
      has_year: the item metadata has a release year.
      default_behavior: the behavior assumed for a history item sent without one.
      genre_multi_hot: also emit a multi-hot of the genre vocabulary (small vocabularies
        only; Taobao's thousands of categories stay ids).
    """

    name: str
    behaviors: Tuple[str, ...]
    raw_labels: Tuple[str, ...]
    labels: Tuple[str, ...]
    implicit_label: str
    has_rating: bool
    has_year: bool
    default_behavior: str
    genre_multi_hot: bool


MOVIELENS = DatasetSpec(
    name="movielens",
    behaviors=("disliked", "neutral", "liked"),
    raw_labels=(RATING, WATCHED),
    labels=(RATING, WATCHED, LIKED, LOVED),
    implicit_label=WATCHED,
    has_rating=True,
    has_year=True,
    default_behavior="liked",
    genre_multi_hot=True,
)

TAOBAO = DatasetSpec(
    name="taobao",
    behaviors=("pv", "cart", "fav", "buy"),
    raw_labels=(VIEWED, CART, FAV, BUY),
    labels=(VIEWED, CART, FAV, BUY),
    implicit_label=VIEWED,
    has_rating=False,
    has_year=False,
    default_behavior="pv",
    genre_multi_hot=False,
)

DATASETS = {spec.name: spec for spec in (MOVIELENS, TAOBAO)}


def dataset_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(
            f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}"
        ) from None


def rating_behavior(rating: float) -> str:
    """MovieLens history behavior of a rating: disliked / neutral / liked."""
    if rating <= DISLIKED_MAX_RATING:
        return "disliked"
    if rating >= LIKED_MIN_RATING:
        return "liked"
    return "neutral"


