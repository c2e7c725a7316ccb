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

from bench import common
from contract import description as desc
from contract import features as F

GLOBAL_MEAN = "global_mean"
BASELINE_ONLY = "surprise_baseline_only"
SVD = "surprise_svd"
PEERS = (GLOBAL_MEAN, BASELINE_ONLY, SVD)

# The classic surprise SVD settings for MovieLens used as the reference.
SVD_PARAMS = dict(n_factors=50, n_epochs=40, lr_all=0.007, reg_all=0.05)

# The peers' searches on the eval split (bench.common.widening_search). The first grids are
# the ones these peers were tuned on before; each knob widens past the edge it chooses.
# The bounds are cost bounds on the benchmark machine (2 shared cores; a fit is run once
# per evaluated point) or where a setting stops being the model it names.
_SVD_COST = "cost: a surprise SVD fit grows with factors x epochs; 2 shared cores"
SVD_KNOBS = (
    common.Knob("n_factors", (50, 100), common.GEOMETRIC, 2.0, low=5, high=400, integer=True, why=_SVD_COST),
    # First grid where the last search on the embedded log chose (160 epochs, then its bound);
    # a fit's seconds are in bench/results/mf_family.md.
    common.Knob("n_epochs", (80, 160), common.GEOMETRIC, 2.0, low=5, high=640, integer=True, why=_SVD_COST),
    common.Knob("lr_all", (0.005, 0.01), common.GEOMETRIC, 2.0, low=1e-4, high=0.16,
                why="SGD steps past 0.16 (23x surprise's default) were not tried"),
    common.Knob("reg_all", (0.05, 0.1), common.GEOMETRIC, 2.0, low=1e-3, high=3.2,
                why="past 3.2 the factors are regularized to zero (BaselineOnly's model)"),
)
SVD_EVALUATIONS = 40  # the most SVD fits one search makes (cost on the shared machine)
# For logs of about 10,000 training ratings: the first grid where searches on such a log chose
# (reg_all near 1, hundreds of epochs; a first grid up to reg_all 0.1 and 40 epochs chose its
# edges), and an epoch bound at SVD_KNOBS' cost (a fit grows with ratings x epochs, and
# SVD_KNOBS' bound is sized for 80,000 ratings: 8 times as many). Every other bound is SVD_KNOBS'.
_SMALL_LOG_FIRST_GRID = {"n_factors": (10, 50, 100), "n_epochs": (80, 160, 320), "lr_all": (0.005, 0.01, 0.02),
                         "reg_all": (0.5, 1.0, 2.0)}
SMALL_LOG_SVD_KNOBS = tuple(
    dataclasses.replace(knob, values=_SMALL_LOG_FIRST_GRID[knob.name],
                        **({"high": 8 * knob.high} if knob.name == "n_epochs" else {}))
    for knob in SVD_KNOBS)
SMALL_LOG_SVD_EVALUATIONS = 160  # each fit on such a log takes under two seconds
# BaselineOnly: surprise's bsl_options, searched once per method; the method with the
# better eval RMSE is chosen. ALS's first grid holds surprise's defaults (reg_i 10,
# reg_u 15, 10 epochs), SGD's its defaults (reg 0.02, learning_rate 0.005, 20 epochs).
_EPOCHS_WHY = "cost: epochs double per step; 2 shared cores"
BASELINE_KNOBS = {
    "als": (common.Knob("reg_i", (5.0, 10.0, 20.0), common.GEOMETRIC, 2.0, low=0.01, high=1e4,
                        why="regularization below 0.01 or above 1e4 is no regularization / no bias"),
            common.Knob("reg_u", (7.5, 15.0, 30.0), common.GEOMETRIC, 2.0, low=0.01, high=1e4,
                        why="regularization below 0.01 or above 1e4 is no regularization / no bias"),
            common.Knob("n_epochs", (5, 10, 20), common.GEOMETRIC, 2.0, low=1, high=160, integer=True,
                        why=_EPOCHS_WHY)),
    "sgd": (common.Knob("reg", (0.01, 0.02, 0.04), common.GEOMETRIC, 2.0, low=1e-5, high=100.0,
                        why="regularization below 1e-5 or above 100 is no regularization / no bias"),
            common.Knob("learning_rate", (0.0025, 0.005, 0.01), common.GEOMETRIC, 2.0, low=1e-5, high=0.16,
                        why="SGD steps past 0.16 were not tried"),
            common.Knob("n_epochs", (10, 20, 40), common.GEOMETRIC, 2.0, low=1, high=320, integer=True,
                        why=_EPOCHS_WHY)),
}
BASELINE_EVALUATIONS = 80  # per method
# An eval RMSE change below this is a tie (the reported digits): ALS's biases converge, so
# more epochs change the RMSE in the sixth digit and would otherwise run to the bound.
RMSE_TOLERANCE = 1e-4
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
                  scale: Tuple[float, float] = DEFAULT_SCALE, **bsl_options) -> np.ndarray:
    """surprise BaselineOnly (user and item biases; surprise's default options unless
    `bsl_options` are given, e.g. from `tune_baseline_only`).

    Args:
      train / test: rated rows to fit on / to score.
      seed: numpy's global seed (surprise reads it).
      scale: the rating scale (rating_scale(description)); predictions are not clipped to it.
      bsl_options: surprise's bsl_options (method 'als' or 'sgd', reg_i, reg_u, reg,
        learning_rate, n_epochs).
    """
    from surprise import BaselineOnly

    np.random.seed(seed)
    return _surprise_scores(BaselineOnly(bsl_options=dict(bsl_options), verbose=False), train, test, scale)


def svd(train: RatedRows, test: RatedRows, seed: int = 0, scale: Tuple[float, float] = DEFAULT_SCALE,
        **params) -> np.ndarray:
    """surprise SVD with `SVD_PARAMS` (or `params`) and a fixed random state; `scale` as in
    baseline_only."""
    from surprise import SVD as SurpriseSVD

    return _surprise_scores(SurpriseSVD(random_state=seed, **(params or SVD_PARAMS)), train, test, scale)


def _rmse(scores: np.ndarray, rows: RatedRows) -> float:
    return float(np.sqrt(np.mean((scores - rows.ratings) ** 2)))


def _log(model: str) -> Callable[[str], None]:
    import sys

    return lambda line: print(f"{model} {line}", file=sys.stderr, flush=True)


def tune_svd(train: RatedRows, evaluation: RatedRows, seed: int, scale: Tuple[float, float] = DEFAULT_SCALE,
             knobs=SVD_KNOBS, max_evaluations: int = SVD_EVALUATIONS) -> common.Tuned:
    """SVD's setting chosen by eval RMSE (`common.widening_search` over `knobs`, at one seed).

    Args:
      train / evaluation: rated rows to fit on / to choose on.
      seed: SVD's random state during the search.
      scale: the rating scale.
      knobs / max_evaluations: the search (default: SVD_KNOBS, SVD_EVALUATIONS).
    """
    return common.widening_search(lambda g: _rmse(svd(train, evaluation, seed=seed, scale=scale, **g), evaluation),
                                  knobs, higher_is_better=False, max_evaluations=max_evaluations, log=_log(SVD),
                                  tolerance=RMSE_TOLERANCE)


def tune_baseline_only(train: RatedRows, evaluation: RatedRows, scale: Tuple[float, float] = DEFAULT_SCALE,
                       knobs=None, max_evaluations: int = BASELINE_EVALUATIONS) -> Dict[str, common.Tuned]:
    """BaselineOnly's bsl_options chosen by eval RMSE: one `common.widening_search` per
    method ('als', 'sgd'); returns method -> its search. `best_baseline` picks the method.

    Args:
      train / evaluation: rated rows to fit on / to choose on.
      scale: the rating scale.
      knobs: method -> its knobs (default BASELINE_KNOBS).
      max_evaluations: per method.
    """
    out = {}
    for method, method_knobs in (knobs or BASELINE_KNOBS).items():
        out[method] = common.widening_search(
            lambda g: _rmse(baseline_only(train, evaluation, scale=scale, **g), evaluation), method_knobs,
            higher_is_better=False, max_evaluations=max_evaluations, fixed={"method": method},
            log=_log(f"{BASELINE_ONLY} {method}"), tolerance=RMSE_TOLERANCE)
    return out


def best_baseline(searches: Dict[str, common.Tuned]) -> common.Tuned:
    """The method's search with the lowest eval RMSE (the first of equals)."""
    return searches[common.best_by_eval({m: t.score for m, t in searches.items()}, higher_is_better=False)]


PEER_FUNCTIONS: Dict[str, Callable[[RatedRows, RatedRows], np.ndarray]] = {
    GLOBAL_MEAN: global_mean,
    BASELINE_ONLY: baseline_only,
    SVD: svd,
}
