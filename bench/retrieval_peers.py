"""Retrieval peers of the top-K benchmarks (protocols K and S): score functions over item rows.

Every peer is fitted on the histories of a user view's train split and scores the item
rows 0..num_rows-1 (0 is padding, never valid) for inputs of another split. A score
function has the signature `training.topk` ranks with: (items, behaviors) -> scores, the
inputs [B, L] as item and behavior rows, oldest first, 0-padded on the right
(`training.views.recent`), the scores [B, num_rows]; `training.topk.evaluate` (protocol K)
and `evaluate_next_item` (protocol S) rank them and exclude the whole history.

- MostPopular: training interactions per item.
- ItemKNN: cosine between item columns of the user x item matrix, summed over the input.
- EASE (Steck, WWW'19): closed-form item-item ridge regression.
- Last-item Markov chain: item-to-next-item transitions of the training sequences.
- ALS and BPR: the `implicit` package (benchmark-only, requirements-bench.txt); imported
  only when fitted, so the rest of this module (and its tests) never need it.
"""

from __future__ import annotations

from typing import Callable, Dict

import numpy as np
import scipy.sparse as sp

from training import topk
from training.views import UserView

ScoreFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def interaction_matrix(view: UserView, num_rows: int, liked_row: int = 0) -> sp.csr_matrix:
    """Binary users x item rows of the training histories (only `liked_row` behaviors if given)."""
    rows, cols = [], []
    for u, (items, behaviors) in enumerate(zip(view.items, view.behaviors)):
        keep = items[(items < num_rows) & ((behaviors == liked_row) if liked_row else True)]
        rows.append(np.full(len(keep), u))
        cols.append(keep)
    data = np.ones(sum(len(c) for c in cols), dtype=np.float32)
    m = sp.csr_matrix((data, (np.concatenate(rows), np.concatenate(cols))), shape=(len(view), num_rows))
    m.data[:] = 1.0
    return m


def popularity_counts(train: UserView, num_rows: int) -> np.ndarray:
    """Training interactions per item row."""
    return np.asarray(interaction_matrix(train, num_rows).sum(axis=0)).reshape(-1).astype(np.float64)


def longest(view: UserView) -> int:
    """The longest input of a view: as `max_history`, the score functions read every input whole."""
    return max([1] + [len(items) for items in view.items])


def input_matrix(items: np.ndarray, behaviors: np.ndarray, num_rows: int, liked_row: int = 0) -> sp.csr_matrix:
    """Binary [B, num_rows] of padded inputs (only `liked_row` behaviors if given; padding and
    unknown rows dropped)."""
    keep = (items > 0) & (items < num_rows) & ((behaviors == liked_row) if liked_row else True)
    rows, cols = np.nonzero(keep)
    m = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, items[rows, cols])), shape=(len(items), num_rows))
    m.data[:] = 1.0
    return m


class FullHistoryScorer:
    """Scores from the user's input history: all of it (`max_history` 0) or its most recent
    `max_history` items, times an item x item weight matrix. Every history item is excluded
    from the ranking."""

    def __init__(self, view: UserView, num_rows: int, weights: np.ndarray, liked_row: int = 0,
                 max_history: int = 0):
        self.view, self.num_rows, self.weights, self.liked_row = view, num_rows, weights, liked_row
        self.max_history = max_history

    def scores(self, items: np.ndarray, behaviors: np.ndarray) -> np.ndarray:
        """A score function (module docstring) with this scorer's weights, reading the most
        recent `max_history` items of each input (all of them when 0)."""
        if self.max_history:
            lengths = np.count_nonzero(items, axis=1)
            recent = np.arange(items.shape[1])[None, :] >= (lengths - self.max_history)[:, None]
            items, behaviors = np.where(recent, items, 0), np.where(recent, behaviors, 0)
        return input_matrix(items, behaviors, self.num_rows, self.liked_row) @ self.weights

    def evaluate(self, valid: np.ndarray, k: int = 10) -> Dict[str, float]:
        """Protocol K metrics (`training.topk.evaluate`) on this scorer's view."""
        return topk.evaluate(self.scores, self.view, longest(self.view), valid, k)


def item_knn_weights(train: UserView, num_rows: int) -> np.ndarray:
    """Cosine similarity of item columns of the training user x item matrix, diagonal 0."""
    x = interaction_matrix(train, num_rows)
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=0)).reshape(-1)) + 1e-9
    gram = (x.T @ x).toarray().astype(np.float32)
    sim = gram / norms[:, None] / norms[None, :]
    np.fill_diagonal(sim, 0.0)
    return sim


def ease_weights(gram: np.ndarray, lam: float) -> np.ndarray:
    """EASE's item-item weights from the Gram matrix X^T X and the ridge penalty `lam`."""
    g = gram.astype(np.float64).copy()
    g[np.diag_indices_from(g)] += lam
    p = np.linalg.inv(g)
    b = -p / np.diag(p)
    np.fill_diagonal(b, 0.0)
    return b.astype(np.float32)


# --------------------------------------------------------------------------
# Last-item Markov chain.
# --------------------------------------------------------------------------
def markov_transitions(train: UserView, num_rows: int) -> sp.csr_matrix:
    """[from row, to row] counts of consecutive items (t, t + 1) in the training sequences.

    Pairs with an item outside 0..num_rows-1 (an unknown item) are not counted.
    """
    src, dst = [], []
    for items in train.items:
        a, b = items[:-1], items[1:]
        keep = (a < num_rows) & (b < num_rows) & (a > 0) & (b > 0)
        src.append(a[keep])
        dst.append(b[keep])
    src_all = np.concatenate(src) if src else np.zeros(0, np.int64)
    dst_all = np.concatenate(dst) if dst else np.zeros(0, np.int64)
    # Duplicate (i, j) entries are summed by the csr constructor: counts.
    return sp.csr_matrix((np.ones(src_all.size, np.float64), (src_all, dst_all)), shape=(num_rows, num_rows))


def markov_scores(transitions: sp.csr_matrix, counts: np.ndarray, backoff: float) -> ScoreFn:
    """P(next = j | last input item) + backoff * P_popularity(j).

    The transition probability is the row of the input's last item, normalized; an input
    whose last item is unknown or never followed by anything in training scores by
    popularity alone. `backoff` > 0 also orders the items the transitions leave tied.
    """
    out_degree = np.asarray(transitions.sum(axis=1)).reshape(-1)
    prior = backoff * counts / max(float(counts.sum()), 1e-12)
    num_rows = transitions.shape[0]

    def scores(items: np.ndarray, behaviors: np.ndarray) -> np.ndarray:
        out = np.tile(prior, (len(items), 1))
        lengths = np.count_nonzero(items, axis=1)
        for i, n in enumerate(lengths):
            last = int(items[i, n - 1]) if n else -1
            if 0 < last < num_rows and out_degree[last] > 0:
                row = transitions.getrow(last)
                out[i, row.indices] += row.data / out_degree[last]
        return out

    return scores


# --------------------------------------------------------------------------
# Matrix factorization peers from `implicit` (benchmark-only).
# --------------------------------------------------------------------------
def als_fit(train: UserView, num_rows: int, factors: int, regularization: float, alpha: float, seed: int):
    """implicit's ALS on the binary training matrix (15 iterations)."""
    from implicit.cpu.als import AlternatingLeastSquares

    model = AlternatingLeastSquares(factors=factors, regularization=regularization, alpha=alpha,
                                    iterations=15, random_state=seed)
    model.fit(interaction_matrix(train, num_rows), show_progress=False)
    return model


def als_input_scores(model, num_rows: int) -> ScoreFn:
    """ALS scores with the user vector solved from the example's input (the fitted item
    factors fixed: one least-squares step), so an input longer than the training history
    (protocol S's test input holds the eval item) is read whole."""
    item_factors = np.asarray(model.item_factors)

    def scores(items: np.ndarray, behaviors: np.ndarray) -> np.ndarray:
        users = np.asarray(model.recalculate_user(np.arange(len(items)), input_matrix(items, behaviors, num_rows)))
        return users @ item_factors.T

    return scores


def fitted_user_scores(user_factors: np.ndarray, item_factors: np.ndarray, train_users, view: UserView) -> ScoreFn:
    """Scores from the user vectors fitted on the train split, for the users of `view` in
    its order: `training.topk` scores a view's inputs in order, in batches, and each call
    takes the next users (after the last user, the first again)."""
    index = {u: i for i, u in enumerate(train_users)}
    missing = [u for u in view.users if u not in index]
    if missing:
        raise ValueError(f"users {missing[:5]} have no training history, so no fitted vector")
    vectors = np.asarray(user_factors)[[index[u] for u in view.users]]
    done = [0]

    def scores(items: np.ndarray, behaviors: np.ndarray) -> np.ndarray:
        batch = vectors[done[0]: done[0] + len(items)]
        if len(batch) != len(items):
            raise ValueError(f"scored {done[0] + len(items)} inputs; the view has {len(vectors)} users")
        done[0] = (done[0] + len(items)) % len(vectors)
        return batch @ np.asarray(item_factors).T

    return scores


def bpr_fit(train: UserView, num_rows: int, factors: int, learning_rate: float, regularization: float,
            iterations: int, seed: int):
    """implicit's BPR on the binary training matrix; one thread, so a seed fixes the result."""
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    model = BayesianPersonalizedRanking(factors=factors, learning_rate=learning_rate,
                                        regularization=regularization, iterations=iterations,
                                        num_threads=1, random_state=seed)
    model.fit(interaction_matrix(train, num_rows), show_progress=False)
    return model
