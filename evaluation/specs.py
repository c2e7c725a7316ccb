"""The Evaluator's recommendation MetricsSpecs, built in one place."""

from __future__ import annotations

import json
from typing import List, Optional, Sequence

import tensorflow_model_analysis as tfma

from contract.features import LIKED_MIN_RATING, RATING, USER_ID

_MODULE = "evaluation"


def _config(class_name: str, module: Optional[str] = _MODULE, **config) -> tfma.MetricConfig:
    return tfma.MetricConfig(
        class_name=class_name,
        module=module or "",
        config=json.dumps(config, sort_keys=True) if config else "",
    )


def recommendation_metrics_specs(
    output_name: str,
    label_is_rating: bool,
    top_k: int = 10,
    *,
    rating_key: str = RATING,
    query_key: str = USER_ID,
    threshold: float = LIKED_MIN_RATING,
    skip_unrated: bool = False,
    model_names: Sequence[str] = (),
) -> List[tfma.MetricsSpec]:
    """MetricsSpecs of protocol R for one model output.

    Always `liked_auc`, `ndcg@K` and `precision@K` (the last two per user, with
    `query_key`); for an output predicting the rating also `rmse`, `mae` and
    TFMA's `calibration` (mean prediction / mean label); for an output predicting
    liked, `calibration` against its label. All unweighted.

    Args:
      output_name: the model output to evaluate ("" for a single-output model).
      label_is_rating: the output predicts the rating (else a liked probability/logit).
      top_k: the K of NDCG@K and Precision@K.
      rating_key: raw feature with the true rating.
      query_key: raw feature that groups examples into users.
      threshold: the smallest liked rating.
      skip_unrated: leave out examples without a rating (e.g. sampled negatives)
        instead of failing on them.
      model_names: models to evaluate (empty for a single-model EvalConfig).
    """
    common = dict(rating_key=rating_key, skip_unrated=skip_unrated)
    per_example = [_config("LikedAUC", threshold=threshold, **common)]
    if label_is_rating:
        per_example += [_config("RatingRMSE", **common), _config("RatingMAE", **common)]
    per_example.append(_config("Calibration", module=None))
    per_user = [
        _config("RatingNDCG", top_k=top_k, gain_key=rating_key, skip_unrated=skip_unrated),
        _config("RatingPrecision", top_k=top_k, threshold=threshold, **common),
    ]
    scope = dict(
        model_names=list(model_names),
        output_names=[output_name] if output_name else [],
        example_weights=tfma.ExampleWeightOptions(unweighted=True),
    )
    return [
        tfma.MetricsSpec(metrics=per_example, **scope),
        tfma.MetricsSpec(metrics=per_user, query_key=query_key, **scope),
    ]
