"""Top-K evaluation of a retrieving model on a user view, in-process.

Used by the Trainer for early stopping on the eval split, and by benchmarks and tests.
Protocol K (`evaluate`): top-K lists against the held-out targets
(`evaluation.definitions.topk_metrics`). Protocol S (`evaluate_next_item`): the rank of
the one held-out next item among all items (full) and among 100 sampled ones
(`evaluation.definitions.protocol_s_user_metrics`). The Evaluator computes the same
metrics through the exported signatures (evaluation/tfma_metrics.py) with the same
definitions.
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


def evaluate_next_item(scores_fn: Callable[[np.ndarray, np.ndarray], np.ndarray], view: UserView,
                       max_history: int, valid: np.ndarray, batch_size: int = 256,
                       seed: int = d.SAMPLED_SEED) -> Dict[str, float]:
    """Protocol S metrics (full and `sampled_`) of `scores_fn` on a user view whose every
    user has exactly one target (leave_last_two_out's eval or test split); the input is
    the most recent `max_history` items, and every history item is kept out of the ranking."""
    return d.mean_user_metrics(next_item_user_metrics(scores_fn, view, max_history, valid, batch_size, seed))


def next_item_user_metrics(scores_fn: Callable[[np.ndarray, np.ndarray], np.ndarray], view: UserView,
                           max_history: int, valid: np.ndarray, batch_size: int = 256,
                           seed: int = d.SAMPLED_SEED) -> List[Dict[str, float]]:
    """`evaluate_next_item`'s metrics of each user, in the view's order (for a paired
    comparison of two models over the same users)."""
    items, behaviors = recent(view, max_history)
    per_user = []
    for start in range(0, len(view), batch_size):
        scores = np.asarray(scores_fn(items[start: start + batch_size], behaviors[start: start + batch_size]))
        for offset, row in enumerate(scores):
            u = start + offset
            if len(view.targets[u]) != 1:
                raise ValueError(f"protocol S ranks one next item per user; user {view.users[u]!r} has "
                                 f"{len(view.targets[u])} targets (use the leave_last_two_out split)")
            per_user.append(d.protocol_s_user_metrics(row, view.targets[u][0], view.items[u], valid,
                                                      view.users[u], seed=seed))
    return per_user


def model_scores(model) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    @tf.function(reduce_retracing=True)
    def score(items, behaviors):
        return model.score_catalogue(items, behaviors)

    return lambda items, behaviors: score(tf.constant(items), tf.constant(behaviors)).numpy()


def popularity_scores(counts: np.ndarray) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    return lambda items, behaviors: np.broadcast_to(counts, (len(items), counts.size))


PROTOCOL_K = "K"
PROTOCOL_S = "S"


class TopKCallback(keras.callbacks.Callback):
    """Adds `val_ndcg@k` (and HR, Recall, MRR) on a user view to each epoch's logs.

    Protocol K: `evaluate` at k; protocol S: `evaluate_next_item` (its full `ndcg@10`
    is `val_ndcg@10`, the sampled metrics are `val_sampled_*`). Place it before
    EarlyStopping so the stopping rule sees the value.
    """

    def __init__(self, view: UserView, max_history: int, valid: np.ndarray, k: int = 10,
                 protocol: str = PROTOCOL_K):
        super().__init__()
        if protocol not in (PROTOCOL_K, PROTOCOL_S):
            raise ValueError(f"protocol must be {PROTOCOL_K!r} or {PROTOCOL_S!r}, got {protocol!r}")
        self.view, self.max_history, self.valid, self.k, self.protocol = view, max_history, valid, k, protocol
        self.history: List[Dict[str, float]] = []

    def on_epoch_end(self, epoch: int, logs: Optional[Dict] = None) -> None:
        if self.protocol == PROTOCOL_S:
            metrics = evaluate_next_item(model_scores(self.model), self.view, self.max_history, self.valid)
        else:
            metrics = evaluate(model_scores(self.model), self.view, self.max_history, self.valid, self.k)
        self.history.append(metrics)
        if logs is not None:
            logs.update({f"val_{name}": value for name, value in metrics.items() if name != "users"})
