"""Top-K evaluation of a retrieving model on a user view, in-process.

Used by the Trainer for early stopping on the eval split, and by benchmarks and tests.
The Evaluator computes the same metrics through the exported `rank_queries` signature
(evaluation/tfma_metrics.py); both call `evaluation.definitions.topk_metrics`.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional

import numpy as np
import tensorflow as tf
import tf_keras as keras

from evaluation import definitions as d
from training.views import UserView, recent

POPULARITY = "popularity"


def rank(scores_fn: Callable[[np.ndarray, np.ndarray], np.ndarray], view: UserView, max_history: int,
         valid: np.ndarray, k: int, batch_size: int = 256) -> List[np.ndarray]:
    """Top-k item rows per user: scores of `scores_fn(items, behaviors)` ([B, N]) over the
    valid rows, never an item of the user's (whole) history."""
    items, behaviors = recent(view, max_history)
    invalid = np.flatnonzero(~valid)
    ranked = []
    for start in range(0, len(view), batch_size):
        scores = np.asarray(scores_fn(items[start: start + batch_size], behaviors[start: start + batch_size]))
        for offset, row in enumerate(scores):
            history = view.items[start + offset]
            exclude = np.concatenate([invalid, history[history < row.size]])
            ranked.append(d.top_k_excluding(row, exclude, k))
    return ranked


def evaluate(scores_fn, view: UserView, max_history: int, valid: np.ndarray, k: int = 10) -> Dict[str, float]:
    """Protocol K/S metrics of `scores_fn` on a user view (see `rank`)."""
    ranked = rank(scores_fn, view, max_history, valid, k)
    return d.topk_metrics(ranked, view.targets, k)


def model_scores(model) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    @tf.function(reduce_retracing=True)
    def score(items, behaviors):
        return model.score_catalogue(items, behaviors)

    return lambda items, behaviors: score(tf.constant(items), tf.constant(behaviors)).numpy()


def popularity_scores(counts: np.ndarray) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    return lambda items, behaviors: np.broadcast_to(counts, (len(items), counts.size))


class TopKCallback(keras.callbacks.Callback):
    """Adds `val_ndcg@k` (and HR, Recall, MRR) on a user view to each epoch's logs.

    Place it before EarlyStopping so the stopping rule sees the value.
    """

    def __init__(self, view: UserView, max_history: int, valid: np.ndarray, k: int = 10):
        super().__init__()
        self.view, self.max_history, self.valid, self.k = view, max_history, valid, k
        self.history: List[Dict[str, float]] = []

    def on_epoch_end(self, epoch: int, logs: Optional[Dict] = None) -> None:
        metrics = evaluate(model_scores(self.model), self.view, self.max_history, self.valid, self.k)
        self.history.append(metrics)
        if logs is not None:
            logs.update({f"val_{name}": value for name, value in metrics.items() if name != "users"})
