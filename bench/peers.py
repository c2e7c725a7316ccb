"""Reference rating predictors (global mean, scikit-surprise BaselineOnly and SVD) on raw examples.

The peers train on the rated rows of the raw training split that ExampleGen wrote
and score any other split's rows, so they see exactly the pairs the pipeline's
models see.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from typing import Callable, Dict, List, Tuple

import numpy as np
import tensorflow as tf

from contract import description as desc
from contract import features as F

GLOBAL_MEAN = "global_mean"
BASELINE_ONLY = "surprise_baseline_only"
SVD = "surprise_svd"
PEERS = (GLOBAL_MEAN, BASELINE_ONLY, SVD)

# The classic surprise SVD settings for MovieLens used as the reference.
SVD_PARAMS = dict(n_factors=50, n_epochs=40, lr_all=0.007, reg_all=0.05)
# surprise's rating scale when none is given (surprise's own default, 1..5). Predictions are
# never clipped to it; BaselineOnly and SVD read it only to fill its `Trainset`.
DEFAULT_SCALE = (1.0, 5.0)


@dataclasses.dataclass
class RatedRows:
    """Rated (user, item) rows of one split, with the serialized raw examples they came from.

    Attributes:
      users / items: id strings, one per row.
      ratings: float64 ratings.
      examples: serialized raw `tf.Example`s (the served input), aligned with the rows.
    """

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    examples: List[bytes]

    def __len__(self) -> int:
        return len(self.ratings)


def _single(example: tf.train.Example, name: str, kind: str, where: str):
    feature = example.features.feature.get(name)
    values = list(getattr(feature, kind).value) if feature is not None else []
    if len(values) != 1:
        raise ValueError(f"{where}: feature {name!r} has {len(values)} values; expected exactly one")
    return values[0]


def rating_label(d: desc.Description) -> str:
    """The description's rating label (the raw feature holding the rating); ValueError without one."""
    for label in d.labels:
        if label.source == desc.RATING:
            return label.name
    raise ValueError(f"dataset {d.name!r} has no rating label: the rating peers need a rating column "
                     f"(interactions.rating and a label `{{rating: true}}`)")


def rating_scale(d: desc.Description) -> Tuple[float, float]:
    """(lowest, highest) rating of the description's scale (surprise's rating_scale)."""
    if d.rating_min is None or d.rating_max is None:
        raise ValueError(f"dataset {d.name!r}: interactions.rating needs its min and max (the rating scale)")
    return float(d.rating_min), float(d.rating_max)


def read_rated_rows(split_dir: str, d: desc.Description) -> RatedRows:
    """Reads the rated rows of one raw ExampleGen split directory (GZIP TFRecords).

    Sampled negatives (implicit label 0, no rating) are skipped.

    Args:
      split_dir: e.g. `<pipeline_root>/InteractionExampleGen/examples/<n>/Split-test`.
      d: the dataset's description (its implicit and rating labels, the rating scale).
    """
    implicit, rating_name = d.implicit_label, rating_label(d)
    low, high = rating_scale(d)
    files = sorted(glob.glob(os.path.join(split_dir, "*")))
    if not files:
        raise FileNotFoundError(f"no raw examples in {split_dir}")
    users, items, ratings, examples = [], [], [], []
    for path in files:
        for i, record in enumerate(tf.data.TFRecordDataset(path, compression_type="GZIP").as_numpy_iterator()):
            where = f"{path} record {i}"
            example = tf.train.Example.FromString(record)
            watched = example.features.feature.get(implicit)
            if watched is not None and list(watched.int64_list.value) == [0]:
                continue
            users.append(_single(example, F.USER_ID, "bytes_list", where).decode())
            items.append(_single(example, F.ITEM_ID, "bytes_list", where).decode())
            rating = float(_single(example, rating_name, "float_list", where))
            if not low <= rating <= high:
                raise ValueError(f"{where}: {rating_name} {rating} outside [{low:g}, {high:g}]")
            ratings.append(rating)
            examples.append(record)
    if not ratings:
        raise ValueError(f"{split_dir} holds no rated examples")
    return RatedRows(np.array(users), np.array(items), np.array(ratings, dtype=np.float64), examples)


def _surprise_trainset(train: RatedRows, scale: Tuple[float, float]):
    import pandas as pd
    from surprise import Dataset, Reader

    frame = pd.DataFrame({"user": train.users, "item": train.items, "rating": train.ratings})
    reader = Reader(rating_scale=scale)
    return Dataset.load_from_df(frame[["user", "item", "rating"]], reader).build_full_trainset()


def _surprise_scores(algo, train: RatedRows, test: RatedRows, scale: Tuple[float, float]) -> np.ndarray:
    algo.fit(_surprise_trainset(train, scale))
    # Unclipped, like the families' predictions (surprise clips to the rating scale by default).
    return np.array([algo.predict(u, i, clip=False).est for u, i in zip(test.users, test.items)], dtype=np.float64)


def global_mean(train: RatedRows, test: RatedRows) -> np.ndarray:
    """The mean training rating for every test row."""
    return np.full(len(test), float(np.mean(train.ratings)))


def baseline_only(train: RatedRows, test: RatedRows, seed: int = 0,
                  scale: Tuple[float, float] = DEFAULT_SCALE) -> np.ndarray:
    """surprise BaselineOnly (ALS user and item biases, default options).

    Args:
      train / test: rated rows to fit on / to score.
      seed: numpy's global seed (surprise reads it).
      scale: the rating scale (rating_scale(description)); predictions are not clipped to it.
    """
    from surprise import BaselineOnly

    np.random.seed(seed)
    return _surprise_scores(BaselineOnly(verbose=False), train, test, scale)


def svd(train: RatedRows, test: RatedRows, seed: int = 0, scale: Tuple[float, float] = DEFAULT_SCALE,
        **params) -> np.ndarray:
    """surprise SVD with `SVD_PARAMS` (or `params`) and a fixed random state; `scale` as in
    baseline_only."""
    from surprise import SVD as SurpriseSVD

    return _surprise_scores(SurpriseSVD(random_state=seed, **(params or SVD_PARAMS)), train, test, scale)


PEER_FUNCTIONS: Dict[str, Callable[[RatedRows, RatedRows], np.ndarray]] = {
    GLOBAL_MEAN: global_mean,
    BASELINE_ONLY: baseline_only,
    SVD: svd,
}
