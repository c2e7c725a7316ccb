"""Recommendation metrics of protocol R: numpy definitions and their TFMA metrics.

The numpy functions (from `definitions`) import without TensorFlow, for
benchmarks; the TFMA metric classes and `recommendation_metrics_specs` load
TFMA on first use. An EvalConfig names the classes with
`module="evaluation"`.
"""

import importlib as _importlib

from evaluation.definitions import (  # noqa: F401
    LIKED_AUC_NAME,
    MAE_NAME,
    RMSE_NAME,
    ExactSum,
    absolute_errors,
    auc_from_counts,
    binary_auc,
    exact_mean,
    hit_rate_at_k,
    hit_rate_name,
    liked_auc,
    mae,
    mean_ndcg_at_k,
    mean_precision_at_k,
    merge_score_counts,
    mrr_at_k,
    mrr_name,
    ndcg_at_k,
    ndcg_name,
    per_user_values,
    precision_at_k,
    precision_name,
    recommendation_metrics,
    rmse,
    score_counts,
    squared_errors,
)

_LAZY = {
    "RatingNDCG": "evaluation.tfma_metrics",
    "RatingPrecision": "evaluation.tfma_metrics",
    "LikedAUC": "evaluation.tfma_metrics",
    "RatingRMSE": "evaluation.tfma_metrics",
    "RatingMAE": "evaluation.tfma_metrics",
    "recommendation_metrics_specs": "evaluation.specs",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(_importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
