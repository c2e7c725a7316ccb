"""Custom TFMA metrics of protocol R, computed by the functions in `definitions`.

Each metric reads the true rating from the example's raw features (not the
model's label), so any output can be evaluated: a predicted rating, a liked
probability or a logit. Use them from an EvalConfig, e.g.

    tfma.MetricConfig(class_name="RatingNDCG", module="evaluation",
                      config='{"top_k": 10, "gain_key": "rating"}')

RatingNDCG and RatingPrecision rank each user's items, so their MetricsSpec
needs `query_key` (the user id). TFMA groups a user's examples before slicing,
and such a group belongs to every slice any of its examples falls in, with all
of the user's items; slice query-based metrics on user-level features.

The metrics are unweighted by definition and reject `example_weighted=True`
(set `MetricsSpec.example_weights.unweighted`). Accumulators are exact
(integer counts and `ExactSum`s), so results do not depend on how Beam splits
and merges bundles, and equal the numpy functions bit for bit.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Tuple

import apache_beam as beam
import numpy as np
import tensorflow_model_analysis as tfma

from evaluation import definitions as d
from contract.features import LIKED_MIN_RATING, RATING

_FLUSH_EVERY = 4096  # buffered examples before AUC compacts its counts


# --------------------------------------------------------------------------
# Reading scores and ratings from StandardMetricInputs.
# --------------------------------------------------------------------------
def _one_value_per_row(value: Any, rows: int, what: str) -> np.ndarray:
    """Float64 vector of one value per example; NaN where the example has none."""
    out = np.full(rows, np.nan)
    if value is None:
        return out
    if hasattr(value, "indices") and hasattr(value, "dense_shape"):
        # VarLenTensorValue / SparseTensorValue: some examples lack the feature.
        indices = np.asarray(value.indices).reshape(-1, 2) if np.size(value.indices) else np.zeros((0, 2), np.int64)
        row_of = indices[:, 0].astype(np.int64)
        if int(value.dense_shape[0]) != rows:
            raise ValueError(f"{what}: {int(value.dense_shape[0])} rows for {rows} examples")
        counts = np.bincount(row_of, minlength=rows)
        if (counts > 1).any():
            raise ValueError(f"{what}: expected one value per example, got {counts.max()}")
        out[row_of] = np.asarray(value.values, dtype=np.float64).reshape(-1)
        return out
    arr = np.asarray(value)
    if arr.size == 0:
        return out
    if arr.dtype == object:
        for i, row in enumerate(arr.reshape(-1)):
            row = np.asarray(row).reshape(-1)
            if row.size > 1:
                raise ValueError(f"{what}: expected one value per example, got {row.size}")
            if row.size:
                out[i] = float(row[0])
        return out
    if arr.size != rows:
        raise ValueError(
            f"{what}: got shape {arr.shape} for {rows} prediction value(s); expected one "
            "rating per example and one score per example (a single-score output)"
        )
    return arr.astype(np.float64).reshape(-1)


class _RatingCombinerBase(beam.CombineFn):
    """Reads (score, rating) pairs of one model output from the metric inputs."""

    def __init__(
        self,
        key: tfma.metrics.MetricKey,
        eval_config: Optional[tfma.EvalConfig],
        rating_key: str,
        query_key: str,
        skip_unrated: bool,
    ):
        self._key = key
        self._eval_config = eval_config
        self._rating_key = rating_key
        self._query_key = query_key
        self._skip_unrated = skip_unrated

    def _where(self, features: Dict[str, Any]) -> str:
        where = f"metric {self._key.name!r}"
        if self._key.output_name:
            where += f" (output {self._key.output_name!r})"
        if self._query_key and features and features.get(self._query_key) is not None:
            ids = np.asarray(getattr(features[self._query_key], "values", features[self._query_key]))
            if ids.size:
                where += f", {self._query_key}={ids.reshape(-1)[0]!r}"
        return where

    def _scores_ratings(
        self, element: tfma.metrics.StandardMetricInputs
    ) -> Tuple[np.ndarray, np.ndarray]:
        # Labels are not used (the rating comes from the features) and are left
        # out: a label missing on some of a user's examples (e.g. the rating of
        # sampled negatives) arrives as a ragged value TFMA cannot convert.
        without_labels = tfma.metrics.StandardMetricInputs(
            {k: v for k, v in element.items() if k != tfma.LABELS_KEY}
        )
        _, predictions, _ = next(
            tfma.metrics.to_label_prediction_example_weight(
                without_labels,
                eval_config=self._eval_config,
                model_name=self._key.model_name,
                output_name=self._key.output_name,
                example_weighted=False,
                flatten=False,
                allow_none=True,
                require_single_example_weight=True,
            )
        )
        scores = np.asarray(predictions, dtype=np.float64).reshape(-1)
        features = element.features or {}
        where = self._where(features)
        ratings = _one_value_per_row(
            features.get(self._rating_key), scores.size, f"{where}, feature {self._rating_key!r}"
        )
        bad_score = ~np.isfinite(scores)
        if bad_score.any():
            raise ValueError(
                f"{where}: prediction {scores[bad_score][0]} is not a finite number"
            )
        missing = np.isnan(ratings)
        if missing.any():
            if not self._skip_unrated:
                raise ValueError(
                    f"{where}: {int(missing.sum())} of {scores.size} example(s) have no "
                    f"{self._rating_key!r} feature; expected one float rating per example "
                    "(set skip_unrated=True to leave unrated examples out)"
                )
            scores, ratings = scores[~missing], ratings[~missing]
        bad = ~np.isfinite(ratings)
        if bad.any():
            raise ValueError(f"{where}: {self._rating_key!r} is {ratings[bad][0]}; expected a finite float")
        return scores, ratings


def _check_unweighted(metric: str, example_weighted: bool) -> None:
    if example_weighted:
        raise ValueError(
            f"{metric} is defined without example weights; set "
            "MetricsSpec.example_weights = tfma.ExampleWeightOptions(unweighted=True)"
        )


def _keys(name: str, model_names, output_names) -> List[tfma.metrics.MetricKey]:
    return [
        tfma.metrics.MetricKey(name=name, model_name=model_name, output_name=output_name)
        for model_name in (model_names or [""])
        for output_name in (output_names or [""])
    ]


def _computations(
    keys: List[tfma.metrics.MetricKey], feature_keys: List[str], make_combiner
) -> tfma.metrics.MetricComputations:
    return [
        tfma.metrics.MetricComputation(
            keys=[key],
            preprocessors=[tfma.metrics.FeaturePreprocessor(feature_keys=feature_keys)],
            combiner=make_combiner(key),
        )
        for key in keys
    ]


def _merge(accumulators: Iterable[Any], merge_into) -> Any:
    accumulators = iter(accumulators)
    result = next(accumulators)
    for accumulator in accumulators:
        merge_into(result, accumulator)
    return result


# --------------------------------------------------------------------------
# Per-user means: NDCG@K and Precision@K.
# --------------------------------------------------------------------------
class _UserMeanAccumulator:
    """Exact sum of per-user values and the number of users."""

    __slots__ = ("total", "users")

    def __init__(self):
        self.total = d.ExactSum()
        self.users = 0


class _UserMeanCombiner(_RatingCombinerBase):
    """Averages a per-user value over the users (query groups) it sees."""

    def __init__(self, key, eval_config, rating_key, query_key, skip_unrated, top_k, threshold, kind):
        super().__init__(key, eval_config, rating_key, query_key, skip_unrated)
        self._top_k = top_k
        self._threshold = threshold
        self._kind = kind

    def _user_value(self, scores: np.ndarray, ratings: np.ndarray) -> float:
        if self._kind == "ndcg":
            return d.ndcg_at_k(scores, ratings, self._top_k)
        return d.precision_at_k(scores, ratings, self._top_k, self._threshold)

    def create_accumulator(self) -> _UserMeanAccumulator:
        return _UserMeanAccumulator()

    def add_input(self, accumulator: _UserMeanAccumulator, element) -> _UserMeanAccumulator:
        scores, ratings = self._scores_ratings(element)
        if scores.size:  # a user whose examples were all unrated (and skipped) has no value
            accumulator.total.add(self._user_value(scores, ratings))
            accumulator.users += 1
        return accumulator

    def merge_accumulators(self, accumulators) -> _UserMeanAccumulator:
        def merge_into(result, other):
            result.total.merge(other.total)
            result.users += other.users

        return _merge(accumulators, merge_into)

    def extract_output(self, accumulator: _UserMeanAccumulator) -> Dict[Any, float]:
        value = accumulator.total.value() / accumulator.users if accumulator.users else float("nan")
        return {self._key: value}


def _user_mean_computations(
    kind: str,
    name: str,
    top_k: int,
    rating_key: str,
    threshold: float,
    skip_unrated: bool,
    eval_config,
    model_names,
    output_names,
    example_weighted: bool,
    query_key: str,
) -> tfma.metrics.MetricComputations:
    _check_unweighted(name, example_weighted)
    if not query_key:
        raise ValueError(f"{name} ranks each user's items: set MetricsSpec.query_key (e.g. the user id)")
    return _computations(
        _keys(name, model_names, output_names),
        [query_key, rating_key],
        lambda key: _UserMeanCombiner(
            key, eval_config, rating_key, query_key, skip_unrated, top_k, threshold, kind
        ),
    )


def _ndcg_computations(
    top_k: int = 10,
    gain_key: str = RATING,
    skip_unrated: bool = False,
    name: Optional[str] = None,
    eval_config: Optional[tfma.EvalConfig] = None,
    model_names: Optional[List[str]] = None,
    output_names: Optional[List[str]] = None,
    example_weighted: bool = False,
    query_key: str = "",
) -> tfma.metrics.MetricComputations:
    return _user_mean_computations(
        "ndcg", name or d.ndcg_name(top_k), top_k, gain_key, 0.0, skip_unrated,
        eval_config, model_names, output_names, example_weighted, query_key,
    )


def _precision_computations(
    top_k: int = 10,
    rating_key: str = RATING,
    threshold: float = LIKED_MIN_RATING,
    skip_unrated: bool = False,
    name: Optional[str] = None,
    eval_config: Optional[tfma.EvalConfig] = None,
    model_names: Optional[List[str]] = None,
    output_names: Optional[List[str]] = None,
    example_weighted: bool = False,
    query_key: str = "",
) -> tfma.metrics.MetricComputations:
    return _user_mean_computations(
        "precision", name or d.precision_name(top_k), top_k, rating_key, threshold, skip_unrated,
        eval_config, model_names, output_names, example_weighted, query_key,
    )


class RatingNDCG(tfma.metrics.Metric):
    """NDCG@K per user with the true rating as gain, averaged over users (`ndcg@K`).

    See `definitions.ndcg_at_k` for ties and edge cases. Needs
    `MetricsSpec(query_key=<user id>)`.

    Args:
      top_k: the rank cut-off K.
      gain_key: raw feature holding the gain (the rating).
      skip_unrated: leave out examples without the gain feature instead of failing.
      name: result name; `ndcg@{top_k}` by default.
    """

    def __init__(self, top_k: int = 10, gain_key: str = RATING, skip_unrated: bool = False, name: Optional[str] = None):
        self._top_k = d._check_k(top_k)
        super().__init__(
            _ndcg_computations, top_k=top_k, gain_key=gain_key, skip_unrated=skip_unrated, name=name
        )

    def _default_name(self) -> str:
        return d.ndcg_name(self._top_k)


class RatingPrecision(tfma.metrics.Metric):
    """Precision@K per user (relevant = rating >= threshold), averaged over users (`precision@K`).

    See `definitions.precision_at_k` for ties and users with fewer than K items.
    Needs `MetricsSpec(query_key=<user id>)`.

    Args:
      top_k: the rank cut-off K.
      rating_key: raw feature holding the true rating.
      threshold: the smallest relevant rating.
      skip_unrated: leave out examples without the rating feature instead of failing.
      name: result name; `precision@{top_k}` by default.
    """

    def __init__(
        self,
        top_k: int = 10,
        rating_key: str = RATING,
        threshold: float = LIKED_MIN_RATING,
        skip_unrated: bool = False,
        name: Optional[str] = None,
    ):
        self._top_k = d._check_k(top_k)
        super().__init__(
            _precision_computations, top_k=top_k, rating_key=rating_key, threshold=threshold,
            skip_unrated=skip_unrated, name=name,
        )

    def _default_name(self) -> str:
        return d.precision_name(self._top_k)


# --------------------------------------------------------------------------
# Liked AUC.
# --------------------------------------------------------------------------
class _ScoreCountsAccumulator:
    """Per-distinct-score positive/negative counts plus a buffer of new examples."""

    __slots__ = ("counts", "scores", "liked", "buffered")

    def __init__(self):
        self.counts: Optional[d.ScoreCounts] = None
        self.scores: List[np.ndarray] = []
        self.liked: List[np.ndarray] = []
        self.buffered = 0

    def flush(self) -> "_ScoreCountsAccumulator":
        if self.scores:
            new = d.score_counts(np.concatenate(self.scores), np.concatenate(self.liked))
            self.counts = new if self.counts is None else d.merge_score_counts([self.counts, new])
            self.scores, self.liked, self.buffered = [], [], 0
        return self


class _LikedAUCCombiner(_RatingCombinerBase):
    """Counts liked/not liked examples per score; AUC from the merged counts."""

    def __init__(self, key, eval_config, rating_key, query_key, skip_unrated, threshold):
        super().__init__(key, eval_config, rating_key, query_key, skip_unrated)
        self._threshold = threshold

    def create_accumulator(self) -> _ScoreCountsAccumulator:
        return _ScoreCountsAccumulator()

    def add_input(self, accumulator: _ScoreCountsAccumulator, element) -> _ScoreCountsAccumulator:
        scores, ratings = self._scores_ratings(element)
        accumulator.scores.append(scores)
        accumulator.liked.append(ratings >= self._threshold)
        accumulator.buffered += scores.size
        if accumulator.buffered >= _FLUSH_EVERY:
            accumulator.flush()
        return accumulator

    def merge_accumulators(self, accumulators) -> _ScoreCountsAccumulator:
        def merge_into(result, other):
            result.flush()
            other.flush()
            if other.counts is not None:
                result.counts = (
                    other.counts if result.counts is None
                    else d.merge_score_counts([result.counts, other.counts])
                )

        return _merge(accumulators, merge_into)

    def compact(self, accumulator: _ScoreCountsAccumulator) -> _ScoreCountsAccumulator:
        return accumulator.flush()

    def extract_output(self, accumulator: _ScoreCountsAccumulator) -> Dict[Any, float]:
        counts = accumulator.flush().counts
        return {self._key: float("nan") if counts is None else d.auc_from_counts(counts)}


def _liked_auc_computations(
    rating_key: str = RATING,
    threshold: float = LIKED_MIN_RATING,
    skip_unrated: bool = False,
    name: str = d.LIKED_AUC_NAME,
    eval_config: Optional[tfma.EvalConfig] = None,
    model_names: Optional[List[str]] = None,
    output_names: Optional[List[str]] = None,
    example_weighted: bool = False,
    query_key: str = "",
) -> tfma.metrics.MetricComputations:
    _check_unweighted(name, example_weighted)
    feature_keys = [rating_key] + ([query_key] if query_key else [])
    return _computations(
        _keys(name, model_names, output_names),
        feature_keys,
        lambda key: _LikedAUCCombiner(key, eval_config, rating_key, query_key, skip_unrated, threshold),
    )


class LikedAUC(tfma.metrics.Metric):
    """Exact AUC of the score against liked = (rating feature >= threshold) (`liked_auc`).

    Rank-based (Mann-Whitney) over all examples, tied scores count 1/2; NaN
    when a slice lacks liked or not-liked examples.

    Args:
      rating_key: raw feature holding the true rating.
      threshold: the smallest liked rating.
      skip_unrated: leave out examples without the rating feature instead of failing.
      name: result name.
    """

    def __init__(
        self,
        rating_key: str = RATING,
        threshold: float = LIKED_MIN_RATING,
        skip_unrated: bool = False,
        name: str = d.LIKED_AUC_NAME,
    ):
        super().__init__(
            _liked_auc_computations, rating_key=rating_key, threshold=threshold,
            skip_unrated=skip_unrated, name=name,
        )


# --------------------------------------------------------------------------
# RMSE and MAE against the rating feature.
# --------------------------------------------------------------------------
class _ErrorAccumulator:
    """Exact sum of per-example errors and the example count."""

    __slots__ = ("total", "count")

    def __init__(self):
        self.total = d.ExactSum()
        self.count = 0


class _RatingErrorCombiner(_RatingCombinerBase):
    """Mean squared (then rooted) or absolute error of the score against the rating."""

    def __init__(self, key, eval_config, rating_key, query_key, skip_unrated, squared):
        super().__init__(key, eval_config, rating_key, query_key, skip_unrated)
        self._squared = squared

    def create_accumulator(self) -> _ErrorAccumulator:
        return _ErrorAccumulator()

    def add_input(self, accumulator: _ErrorAccumulator, element) -> _ErrorAccumulator:
        scores, ratings = self._scores_ratings(element)
        errors = (d.squared_errors if self._squared else d.absolute_errors)(scores, ratings)
        for e in errors:
            accumulator.total.add(e)
        accumulator.count += errors.size
        return accumulator

    def merge_accumulators(self, accumulators) -> _ErrorAccumulator:
        def merge_into(result, other):
            result.total.merge(other.total)
            result.count += other.count

        return _merge(accumulators, merge_into)

    def extract_output(self, accumulator: _ErrorAccumulator) -> Dict[Any, float]:
        if not accumulator.count:
            return {self._key: float("nan")}
        mean = accumulator.total.value() / accumulator.count
        return {self._key: float(np.sqrt(mean)) if self._squared else mean}


def _rating_error_computations(
    squared: bool,
    rating_key: str,
    skip_unrated: bool,
    name: str,
    eval_config,
    model_names,
    output_names,
    example_weighted: bool,
    query_key: str,
) -> tfma.metrics.MetricComputations:
    _check_unweighted(name, example_weighted)
    feature_keys = [rating_key] + ([query_key] if query_key else [])
    return _computations(
        _keys(name, model_names, output_names),
        feature_keys,
        lambda key: _RatingErrorCombiner(key, eval_config, rating_key, query_key, skip_unrated, squared),
    )


def _rmse_computations(
    rating_key: str = RATING,
    skip_unrated: bool = False,
    name: str = d.RMSE_NAME,
    eval_config: Optional[tfma.EvalConfig] = None,
    model_names: Optional[List[str]] = None,
    output_names: Optional[List[str]] = None,
    example_weighted: bool = False,
    query_key: str = "",
) -> tfma.metrics.MetricComputations:
    return _rating_error_computations(
        True, rating_key, skip_unrated, name, eval_config, model_names, output_names,
        example_weighted, query_key,
    )


def _mae_computations(
    rating_key: str = RATING,
    skip_unrated: bool = False,
    name: str = d.MAE_NAME,
    eval_config: Optional[tfma.EvalConfig] = None,
    model_names: Optional[List[str]] = None,
    output_names: Optional[List[str]] = None,
    example_weighted: bool = False,
    query_key: str = "",
) -> tfma.metrics.MetricComputations:
    return _rating_error_computations(
        False, rating_key, skip_unrated, name, eval_config, model_names, output_names,
        example_weighted, query_key,
    )


class RatingRMSE(tfma.metrics.Metric):
    """Root mean squared error of the score against the rating feature (`rmse`).

    Args:
      rating_key: raw feature holding the true rating.
      skip_unrated: leave out examples without the rating feature instead of failing.
      name: result name.
    """

    def __init__(self, rating_key: str = RATING, skip_unrated: bool = False, name: str = d.RMSE_NAME):
        super().__init__(_rmse_computations, rating_key=rating_key, skip_unrated=skip_unrated, name=name)


class RatingMAE(tfma.metrics.Metric):
    """Mean absolute error of the score against the rating feature (`mae`).

    Args:
      rating_key: raw feature holding the true rating.
      skip_unrated: leave out examples without the rating feature instead of failing.
      name: result name.
    """

    def __init__(self, rating_key: str = RATING, skip_unrated: bool = False, name: str = d.MAE_NAME):
        super().__init__(_mae_computations, rating_key=rating_key, skip_unrated=skip_unrated, name=name)
