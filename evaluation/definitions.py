"""Recommendation metrics (protocols R, K and S) as pure numpy functions.

These functions are the single definition of every metric: the TFMA metrics in
`evaluation.tfma_metrics` call them from their combiners, and benchmarks
call them directly, so both report bit-identical numbers for the same inputs.

Conventions shared by all functions:
  * scores are model outputs (a predicted rating, a probability or a logit);
    higher means "rank first". Scores and ratings are cast to float64, so pass
    the model's own (float32) scores to reproduce the Evaluator's numbers.
  * liked (protocol R) = rating >= threshold, the dataset's (callers pass it: e.g. the
    first `rating >= x` label of its description).
  * Ties in score use the tie-aware expectation: the value is the average over
    every ordering of the tied items. Equivalently, a group of tied items that
    occupies ranks a..b shares those ranks' discounts (NDCG) or top-K slots
    (precision) evenly, so a group straddling the K cut-off counts
    proportionally. The result does not depend on the input order.
  * Averages over users are the exact (correctly rounded) sum of the per-user
    values divided by the number of users, so they do not depend on the order
    in which users are visited or how the work was split and merged.
  * Empty inputs give NaN (an empty slice has no value); malformed inputs raise
    ValueError naming the argument and what was expected.
"""

from __future__ import annotations

import math
import zlib
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from contract import tasks as T

# Metric names as they appear in TFMA results (and in benchmark reports).
LIKED_AUC_NAME = "liked_auc"
RMSE_NAME = "rmse"
MAE_NAME = "mae"


def ndcg_name(k: int) -> str:
    """The result name of NDCG@k, e.g. `ndcg@10`."""
    return f"ndcg@{_check_k(k)}"


def precision_name(k: int) -> str:
    """The result name of Precision@k, e.g. `precision@10`."""
    return f"precision@{_check_k(k)}"


def hit_rate_name(k: int) -> str:
    """The result name of HR@k, e.g. `hit_rate@10`."""
    return f"hit_rate@{_check_k(k)}"


def mrr_name(k: int) -> str:
    """The result name of MRR@k, e.g. `mrr@10`."""
    return f"mrr@{_check_k(k)}"


# --------------------------------------------------------------------------
# Validation helpers.
# --------------------------------------------------------------------------
def _check_k(k) -> int:
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def _float_vector(name: str, values) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name}[{i}] is {arr[i]}; expected a finite number")
    return arr


def _paired(scores, ratings, ratings_name: str = "ratings") -> Tuple[np.ndarray, np.ndarray]:
    s = _float_vector("scores", scores)
    r = _float_vector(ratings_name, ratings)
    if s.shape != r.shape:
        raise ValueError(
            f"scores and {ratings_name} must have the same length, got {s.size} and {r.size}"
        )
    return s, r


# --------------------------------------------------------------------------
# Exact, order-independent sums.
# --------------------------------------------------------------------------
class ExactSum:
    """A float sum kept exactly, so any split/merge order gives the same total.

    Holds the sum as non-overlapping partials (Shewchuk's algorithm, as in
    `math.fsum`); `value()` is the correctly rounded total, i.e. equal to
    `math.fsum` of every number ever added.

    Args:
      values: numbers to start with.
    """

    __slots__ = ("partials",)

    def __init__(self, values: Iterable[float] = ()):
        self.partials: List[float] = []
        for v in values:
            self.add(v)

    def add(self, x: float) -> None:
        """Adds one finite number."""
        x = float(x)
        if not math.isfinite(x):
            raise ValueError(f"ExactSum only adds finite numbers, got {x}")
        partials = self.partials
        i = 0
        for y in partials:
            if abs(x) < abs(y):
                x, y = y, x
            hi = x + y
            lo = y - (hi - x)
            if lo:
                partials[i] = lo
                i += 1
            x = hi
        partials[i:] = [x]

    def merge(self, other: "ExactSum") -> "ExactSum":
        """Adds another sum into this one and returns self."""
        for p in list(other.partials):
            self.add(p)
        return self

    def value(self) -> float:
        """The correctly rounded total."""
        return math.fsum(self.partials)


def exact_mean(values: Sequence[float]) -> float:
    """Mean as the correctly rounded sum over the count; NaN when empty.

    Args:
      values: finite numbers (e.g. one metric value per user).
    """
    values = list(values)
    if not values:
        return float("nan")
    return math.fsum(values) / len(values)


# --------------------------------------------------------------------------
# Rating errors.
# --------------------------------------------------------------------------
def squared_errors(scores, ratings) -> np.ndarray:
    """Per-example (score - rating)**2 in float64; summed exactly by `rmse`.

    Args:
      scores: predicted ratings, one per example.
      ratings: true ratings, aligned with scores.
    """
    s, r = _paired(scores, ratings)
    return (s - r) ** 2


def absolute_errors(scores, ratings) -> np.ndarray:
    """Per-example |score - rating| in float64; averaged exactly by `mae`.

    Args:
      scores: predicted ratings, one per example.
      ratings: true ratings, aligned with scores.
    """
    s, r = _paired(scores, ratings)
    return np.abs(s - r)


def rmse(scores, ratings) -> float:
    """Root mean squared error of the scores against the ratings; NaN when empty.

    Args:
      scores: predicted ratings, one per example.
      ratings: true ratings, aligned with scores.
    """
    errors = squared_errors(scores, ratings)
    return math.sqrt(exact_mean(errors)) if errors.size else float("nan")


def mae(scores, ratings) -> float:
    """Mean absolute error of the scores against the ratings; NaN when empty.

    Args:
      scores: predicted ratings, one per example.
      ratings: true ratings, aligned with scores.
    """
    return exact_mean(absolute_errors(scores, ratings))


# --------------------------------------------------------------------------
# AUC (exact Mann-Whitney, ties count 1/2).
# --------------------------------------------------------------------------
ScoreCounts = Tuple[np.ndarray, np.ndarray, np.ndarray]


def score_counts(scores, positives) -> ScoreCounts:
    """Positive and negative example counts per distinct score.

    The mergeable summary behind `binary_auc`: AUC depends on the data only
    through these counts, so partial counts can be merged (`merge_score_counts`)
    in any order without changing the result.

    Args:
      scores: one score per example.
      positives: one bool per example, aligned with scores.

    Returns:
      (distinct scores ascending, int64 positive counts, int64 negative counts).
    """
    s = _float_vector("scores", scores)
    p = np.asarray(positives).reshape(-1)
    if p.shape != s.shape:
        raise ValueError(
            f"scores and positives must have the same length, got {s.size} and {p.size}"
        )
    p = p.astype(bool)
    unique, inverse = np.unique(s, return_inverse=True)
    pos = np.bincount(inverse[p], minlength=unique.size).astype(np.int64)
    neg = np.bincount(inverse[~p], minlength=unique.size).astype(np.int64)
    return unique, pos, neg


def merge_score_counts(counts: Iterable[ScoreCounts]) -> ScoreCounts:
    """Merges `score_counts` summaries into one.

    Args:
      counts: summaries as returned by `score_counts`.
    """
    counts = list(counts)
    if not counts:
        return np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64)
    if len(counts) == 1:
        return counts[0]
    scores = np.concatenate([c[0] for c in counts])
    unique, inverse = np.unique(scores, return_inverse=True)
    pos = np.zeros(unique.size, np.int64)
    neg = np.zeros(unique.size, np.int64)
    np.add.at(pos, inverse, np.concatenate([c[1] for c in counts]))
    np.add.at(neg, inverse, np.concatenate([c[2] for c in counts]))
    return unique, pos, neg


def auc_from_counts(counts: ScoreCounts) -> float:
    """Exact AUC from per-score counts; NaN without both classes.

    AUC = (pairs with the positive scored higher + 1/2 tied pairs) / (P * N),
    computed in integers and divided once, so it is exact to the last bit.

    Args:
      counts: (distinct scores ascending, positive counts, negative counts).
    """
    _, pos, neg = counts
    n_pos = int(np.sum(pos))
    n_neg = int(np.sum(neg))
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    neg_below = np.cumsum(neg) - neg
    twice_u = int(np.sum(pos * (2 * neg_below + neg)))
    return twice_u / (2 * n_pos * n_neg)


def binary_auc(scores, positives) -> float:
    """Exact ROC AUC (rank-based Mann-Whitney, tied scores count 1/2).

    NaN when there are no positives or no negatives.

    Args:
      scores: one score per example.
      positives: one bool per example.
    """
    return auc_from_counts(score_counts(scores, positives))


def set_accuracy(scores, targets) -> float:
    """Share of examples whose top-scored class is one of their target classes.

    A multi-class accuracy for labels that may hold several right answers (a movie's
    values of a multi-valued feature); with exactly one target per example it is the usual accuracy. Ties in
    score count fractionally: the expected hit over the tied top classes. NaN when empty.

    Args:
      scores: [n, C] class scores (higher is more likely).
      targets: [n, C] 0/1 (or nonnegative weights): nonzero marks a target class.
    """
    hits = set_hits(scores, targets)
    return exact_mean(hits.tolist()) if hits.size else float("nan")


def set_hits(scores, targets) -> np.ndarray:
    """Each example's hit of `set_accuracy` (their mean): 1 when its top-scored class is one
    of its target classes, the share of target classes among tied top classes otherwise.

    Args:
      scores: [n, C] class scores (higher is more likely).
      targets: [n, C] 0/1 (or nonnegative weights): nonzero marks a target class.
    """
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(targets, dtype=np.float64)
    if s.ndim != 2 or s.shape != t.shape:
        raise ValueError(f"scores and targets must both be [n, C], got {s.shape} and {t.shape}")
    if s.shape[0] == 0:
        return np.zeros(0)
    if not np.all((t > 0).any(axis=1)):
        raise ValueError("targets: every example needs at least one target class")
    top = s == s.max(axis=1, keepdims=True)
    return (top & (t > 0)).sum(axis=1) / top.sum(axis=1)


def liked_auc(scores, ratings, threshold: float) -> float:
    """AUC of the scores against liked = (rating >= threshold), over all examples.

    Args:
      scores: one score per example (predicted rating, probability or logit).
      ratings: true ratings, aligned with scores.
      threshold: the smallest liked rating.
    """
    s, r = _paired(scores, ratings)
    return binary_auc(s, r >= threshold)


# --------------------------------------------------------------------------
# Per-user ranking metrics (tie-aware).
# --------------------------------------------------------------------------
def _tie_groups(sorted_scores: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """0-based [start, end) positions of runs of equal scores in a sorted vector."""
    n = sorted_scores.size
    breaks = np.flatnonzero(sorted_scores[1:] != sorted_scores[:-1]) + 1
    starts = np.concatenate([[0], breaks]).astype(np.int64)
    ends = np.concatenate([breaks, [n]]).astype(np.int64)
    return starts, ends


def _discounts(n: int, k: int) -> np.ndarray:
    """1/log2(rank + 1) for ranks 1..n, zero beyond rank k."""
    disc = 1.0 / np.log2(np.arange(2, n + 2, dtype=np.float64))
    disc[k:] = 0.0
    return disc


def _check_user_items(scores, ratings, name: str) -> Tuple[np.ndarray, np.ndarray]:
    s, r = _paired(scores, ratings, name)
    if s.size == 0:
        raise ValueError("a user needs at least one item to be ranked")
    return s, r


def ndcg_at_k(scores, gains, k: int) -> float:
    """NDCG@k of one user's items ranked by score.

    DCG@k = sum over ranks p <= k of gain(p) / log2(p + 1); the ideal DCG ranks
    the same items by gain. With K >= the item count every item counts. Tied
    scores share their ranks' discounts evenly (expected DCG over all orderings
    of the tie). A user whose ideal DCG is 0 (every gain 0) scores 0; with
    ratings as gains this cannot happen since ratings are >= 0.5.

    Args:
      scores: the user's item scores.
      gains: the true relevance of each item (the rating), >= 0.
      k: rank cut-off, >= 1.
    """
    k = _check_k(k)
    s, g = _check_user_items(scores, gains, "gains")
    if (g < 0).any():
        i = int(np.flatnonzero(g < 0)[0])
        raise ValueError(f"gains[{i}] is {g[i]}; expected a gain >= 0")
    # Canonical order (score desc, then gain desc) makes the result independent
    # of the input order, bit for bit.
    order = np.lexsort((-g, -s))
    s, g = s[order], g[order]
    disc = _discounts(s.size, k)
    starts, ends = _tie_groups(s)
    sizes = ends - starts
    group_disc = np.add.reduceat(disc, starts) / sizes
    dcg = float(np.sum(g * np.repeat(group_disc, sizes)))
    idcg = float(np.sum(np.sort(g)[::-1] * disc))
    return dcg / idcg if idcg > 0 else 0.0


def precision_at_k(scores, ratings, k: int, threshold: float) -> float:
    """Precision@k of one user's items ranked by score.

    Relevant = rating >= threshold; precision = relevant items in the top k
    divided by min(k, the user's item count). A tied group straddling the cut-off
    puts the fraction (its slots within the top k) / (its size) of each of its
    relevant items in the top k.

    Args:
      scores: the user's item scores.
      ratings: the user's true ratings, aligned with scores.
      k: rank cut-off, >= 1.
      threshold: the smallest relevant rating.
    """
    k = _check_k(k)
    s, r = _check_user_items(scores, ratings, "ratings")
    relevant = (r >= threshold).astype(np.float64)
    order = np.lexsort((-relevant, -s))
    s, relevant = s[order], relevant[order]
    starts, ends = _tie_groups(s)
    sizes = ends - starts
    in_top = np.clip(np.minimum(ends, k) - starts, 0, None) / sizes
    hits = float(np.sum(relevant * np.repeat(in_top, sizes)))
    return hits / min(k, s.size)


def per_user_values(
    user_ids, scores, ratings, fn: Callable[[np.ndarray, np.ndarray], float]
) -> Dict[object, float]:
    """`fn(scores, ratings)` of each user's own items, keyed by user id.

    Args:
      user_ids: one id per example (bytes, str or int).
      scores: one score per example.
      ratings: one true rating per example.
      fn: a per-user metric such as `ndcg_at_k` with k bound.
    """
    s, r = _paired(scores, ratings)
    users = np.asarray(user_ids)
    if users.ndim != 1 or users.size != s.size:
        raise ValueError(
            f"user_ids must be one id per example ({s.size}), got shape {users.shape}"
        )
    if s.size == 0:
        return {}
    unique, inverse = np.unique(users, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.flatnonzero(np.diff(inverse[order])) + 1
    return {
        unique[inverse[idx[0]]].item(): fn(s[idx], r[idx])
        for idx in np.split(order, bounds)
    }


def mean_ndcg_at_k(user_ids, scores, ratings, k: int) -> float:
    """NDCG@k (gain = rating) averaged over users with at least one item; NaN if none.

    Args:
      user_ids: one id per example.
      scores: one score per example.
      ratings: one true rating per example (the gain).
      k: rank cut-off.
    """
    k = _check_k(k)
    return exact_mean(per_user_values(user_ids, scores, ratings, lambda s, r: ndcg_at_k(s, r, k)).values())


def mean_precision_at_k(
    user_ids, scores, ratings, k: int, threshold: float
) -> float:
    """Precision@k averaged over users with at least one item; NaN if none.

    Args:
      user_ids: one id per example.
      scores: one score per example.
      ratings: one true rating per example.
      k: rank cut-off.
      threshold: the smallest relevant rating.
    """
    k = _check_k(k)
    return exact_mean(
        per_user_values(
            user_ids, scores, ratings, lambda s, r: precision_at_k(s, r, k, threshold)
        ).values()
    )


# --------------------------------------------------------------------------
# Next-item metrics over the rank of the held-out target.
# --------------------------------------------------------------------------
def _ranks(rank_of_target) -> np.ndarray:
    ranks = _float_vector("rank_of_target", rank_of_target)
    bad = (ranks < 1) | (ranks != np.floor(ranks))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"rank_of_target[{i}] is {ranks[i]}; expected an integer rank >= 1")
    return ranks


def hit_rate_at_k(rank_of_target, k: int) -> float:
    """Share of targets ranked within the top k; NaN when empty.

    Args:
      rank_of_target: 1-based rank of each query's target item.
      k: rank cut-off.
    """
    k = _check_k(k)
    ranks = _ranks(rank_of_target)
    return exact_mean((ranks <= k).astype(np.float64))


def mrr_at_k(rank_of_target, k: int) -> float:
    """Mean reciprocal rank, counting targets ranked below k as 0; NaN when empty.

    Args:
      rank_of_target: 1-based rank of each query's target item.
      k: rank cut-off.
    """
    k = _check_k(k)
    ranks = _ranks(rank_of_target)
    return exact_mean(np.where(ranks <= k, 1.0 / ranks, 0.0))


# --------------------------------------------------------------------------
# Everything at once, named as in the TFMA results.
# --------------------------------------------------------------------------
def recommendation_metrics(
    user_ids,
    scores,
    ratings,
    threshold: float,
    top_k: int = 10,
    rating_errors: bool = True,
) -> Dict[str, float]:
    """The protocol R metrics of one model output, keyed by their TFMA result names.

    Args:
      user_ids: one id per example.
      scores: one score per example.
      ratings: one true rating per example.
      threshold: the smallest liked rating.
      top_k: the K of NDCG@K and Precision@K.
      rating_errors: also report RMSE and MAE (when the scores are predicted ratings).
    """
    result = {
        ndcg_name(top_k): mean_ndcg_at_k(user_ids, scores, ratings, top_k),
        precision_name(top_k): mean_precision_at_k(user_ids, scores, ratings, top_k, threshold),
        LIKED_AUC_NAME: liked_auc(scores, ratings, threshold),
    }
    if rating_errors:
        result[RMSE_NAME] = rmse(scores, ratings)
        result[MAE_NAME] = mae(scores, ratings)
    return result


# --------------------------------------------------------------------------
# Top-K retrieval over the catalogue (protocols K and S): each user has a ranked list
# of recommended items and a set of held-out target items.
# --------------------------------------------------------------------------
HIT_RATE_PREFIX = "hit_rate"
RECALL_PREFIX = "recall"
NDCG_PREFIX = "ndcg"
MRR_PREFIX = "mrr"


def topk_user_metrics(ranked, targets, k: int) -> Dict[str, float]:
    """HR@k, Recall@k, NDCG@k and MRR@k of one user's ranked list.

    Binary gain: an item is relevant when it is a target. Recall divides by
    min(k, number of targets); NDCG's ideal ranks min(k, targets) relevant items
    first; MRR@k is 1 / the rank of the first relevant item within k (0 if none).
    Targets that were never recommendable (e.g. unknown items) still count in the
    denominators.

    Args:
      ranked: item ids (or rows) in ranked order; at least k of them are read when present.
      targets: the user's held-out item ids (at least one; duplicates count once).
      k: rank cut-off.
    """
    k = _check_k(k)
    wanted = set(np.asarray(targets).reshape(-1).tolist())
    if not wanted:
        raise ValueError("targets is empty; a user needs at least one held-out item")
    top = list(np.asarray(ranked).reshape(-1)[:k].tolist())
    hits = np.array([1.0 if item in wanted else 0.0 for item in top] + [0.0] * (k - len(top)))
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = discounts[: min(k, len(wanted))].sum()
    first = int(np.argmax(hits)) if hits.any() else -1
    return {
        HIT_RATE_PREFIX: float(hits.max()),
        RECALL_PREFIX: float(hits.sum() / min(k, len(wanted))),
        NDCG_PREFIX: float((hits * discounts).sum() / ideal),
        MRR_PREFIX: 1.0 / (first + 1) if first >= 0 else 0.0,
    }


def topk_metrics(ranked_lists, target_lists, k: int) -> Dict[str, float]:
    """Protocol K/S metrics averaged over users: `hit_rate@k`, `recall@k`, `ndcg@k`, `mrr@k`
    and `users`. Averages are exact sums over the user count (NaN when no users).

    Args:
      ranked_lists: one ranked list per user.
      target_lists: one target list per user, aligned.
      k: rank cut-off.
    """
    if len(ranked_lists) != len(target_lists):
        raise ValueError(f"{len(ranked_lists)} ranked lists for {len(target_lists)} target lists")
    per_user = [topk_user_metrics(r, t, k) for r, t in zip(ranked_lists, target_lists)]
    out = {f"{name}@{k}": exact_mean([u[name] for u in per_user])
           for name in (HIT_RATE_PREFIX, RECALL_PREFIX, NDCG_PREFIX, MRR_PREFIX)}
    out["users"] = float(len(per_user))
    return out


def top_k_excluding(scores: np.ndarray, exclude, k: int) -> np.ndarray:
    """Indices of the k highest scores, skipping `exclude`; ties broken by lower index.

    Args:
      scores: [N] scores of every candidate.
      exclude: indices that may not be returned (e.g. the user's history, padding rows).
      k: how many.
    """
    s = np.array(scores, dtype=np.float64, copy=True)
    s[np.asarray(list(exclude), dtype=np.int64)] = -np.inf
    k = min(_check_k(k), int(np.isfinite(s).sum()))
    part = np.argpartition(-s, k - 1)[:k] if k < s.size else np.arange(s.size)
    return part[np.lexsort((part, -s[part]))][:k]


# --------------------------------------------------------------------------
# Protocol S: one held-out next item per user, ranked against two candidate sets.
#
#   full:    every valid item row (the training vocabulary) except the input's items;
#   sampled: 100 item rows the user never interacted with, drawn uniformly without
#            replacement with a fixed seed, plus the target.
#
# "Never interacted with" is decided per example from what that example holds: an
# item of its input (history) or its target. For the test split the input holds every
# earlier interaction, so the negatives are items the user never rated at all; for the
# eval split the test item (rated later) may be drawn, since an eval example does not
# know the future. The draw depends only on (seed, user id, the candidate rows), never
# on the order users are visited in, so the Trainer's callback, the Evaluator and the
# benchmarks draw the same negatives for the same user and vocabulary.
#
# A target that cannot be scored (not in the training vocabulary) is a miss in both.
# Ties with the target use the tie-aware expectation (module docstring): with `better`
# candidates scored above it and `tied` candidates scored equal, the target is equally
# likely at each rank better + 1 .. better + tied + 1.
# --------------------------------------------------------------------------
NEXT_ITEM_HIT_RATE_KS = (5, 10)
NEXT_ITEM_NDCG_KS = (T.NEXT_ITEM_NDCG_K,)
NEXT_ITEM_MRR_KS = (5, 10)
SAMPLED_PREFIX = "sampled_"
SAMPLED_NEGATIVES = 100
SAMPLED_SEED = 20200701


def next_item_metric_names(prefix: str = "") -> List[str]:
    """Per-target metric names of protocol S (`hit_rate@5`, ..., `mrr@10`), with `prefix`."""
    return ([prefix + hit_rate_name(k) for k in NEXT_ITEM_HIT_RATE_KS]
            + [prefix + ndcg_name(k) for k in NEXT_ITEM_NDCG_KS]
            + [prefix + mrr_name(k) for k in NEXT_ITEM_MRR_KS])


def protocol_s_metric_names() -> List[str]:
    """Every protocol S result name: full (no prefix), sampled (`sampled_`), and `users`."""
    return next_item_metric_names() + next_item_metric_names(SAMPLED_PREFIX) + ["users"]


def target_rank_counts(scores, target: int, candidates) -> Optional[Tuple[int, int]]:
    """(candidates scored above the target, candidates tied with it); None when the target
    cannot be ranked (a row outside `scores`, or a score that is not finite).

    Args:
      scores: [N] scores of every item row.
      target: the target's row.
      candidates: rows the target is ranked against (the target itself is skipped).
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    target = int(target)
    if not 0 <= target < s.size or not np.isfinite(s[target]):
        return None
    rows = np.asarray(candidates, dtype=np.int64).reshape(-1)
    if rows.size and (rows.min() < 0 or rows.max() >= s.size):
        raise ValueError(f"candidates hold rows outside 0..{s.size - 1}")
    rows = rows[rows != target]
    others = s[rows]
    return int(np.sum(others > s[target])), int(np.sum(others == s[target]))


def next_item_user_metrics(counts: Optional[Tuple[int, int]], prefix: str = "") -> Dict[str, float]:
    """HR@5/10, NDCG@10 and MRR@5/10 of one target from `target_rank_counts` (None: a miss).

    With one relevant item, NDCG@k = 1 / log2(rank + 1) within k, MRR@k = 1 / rank within
    k and HR@k = [rank <= k]; ties average over the ranks the tie spans.
    """
    names = next_item_metric_names(prefix)
    if counts is None:
        return dict.fromkeys(names, 0.0)
    better, tied = counts
    if better < 0 or tied < 0:
        raise ValueError(f"rank counts must be >= 0, got better={better}, tied={tied}")
    ranks = np.arange(better + 1, better + tied + 2, dtype=np.float64)
    share = 1.0 / ranks.size

    def within(k, values):
        return float(np.sum(values[ranks <= k]) * share)

    out = {}
    for k in NEXT_ITEM_HIT_RATE_KS:
        out[prefix + hit_rate_name(k)] = within(k, np.ones_like(ranks))
    for k in NEXT_ITEM_NDCG_KS:
        out[prefix + ndcg_name(k)] = within(k, 1.0 / np.log2(ranks + 1.0))
    for k in NEXT_ITEM_MRR_KS:
        out[prefix + mrr_name(k)] = within(k, 1.0 / ranks)
    return out


def _user_key(user) -> int:
    if isinstance(user, (bytes, bytearray)):
        raw = bytes(user)
    elif isinstance(user, (int, np.integer)):
        raw = str(int(user)).encode()
    else:
        raw = str(user).encode()
    return zlib.crc32(raw)


def sampled_negatives(valid, interacted, user, n: int = SAMPLED_NEGATIVES, seed: int = SAMPLED_SEED) -> np.ndarray:
    """`n` valid item rows outside `interacted`, uniform without replacement (all of them
    when fewer remain), sorted; the draw depends only on (seed, user, the remaining rows).

    Args:
      valid: bool [N], the rows that are items (the training vocabulary).
      interacted: rows the user interacted with (see the section comment); out-of-range
        rows (unknown items) are ignored.
      user: the user id (bytes, str or int).
      n: how many negatives.
      seed: the fixed seed.
    """
    valid = np.asarray(valid, dtype=bool).reshape(-1)
    pool = valid.copy()
    rows = np.asarray(interacted, dtype=np.int64).reshape(-1)
    pool[rows[(rows >= 0) & (rows < pool.size)]] = False
    pool = np.flatnonzero(pool)
    if pool.size <= n:
        return pool
    rng = np.random.default_rng([int(seed), _user_key(user)])
    return np.sort(rng.choice(pool, size=n, replace=False))


def protocol_s_user_metrics(scores, target: int, history, valid, user, n_negatives: int = SAMPLED_NEGATIVES,
                            seed: int = SAMPLED_SEED) -> Dict[str, float]:
    """Protocol S metrics of one example: full (no prefix) and sampled (`sampled_`).

    Args:
      scores: [N] the model's scores of every item row for this example's input.
      target: the held-out item's row.
      history: the input's item rows (never candidates; not drawn as negatives).
      valid: bool [N], which rows are items.
      user: the user id (seeds the sampled negatives).
      n_negatives: size of the sampled candidate set.
      seed: the fixed seed of the draw.
    """
    valid = np.asarray(valid, dtype=bool).reshape(-1)
    history = np.asarray(history, dtype=np.int64).reshape(-1)
    target = int(target)
    rankable = 0 <= target < valid.size and valid[target]
    full = valid.copy()
    full[history[(history >= 0) & (history < full.size)]] = False
    full_counts = target_rank_counts(scores, target, np.flatnonzero(full)) if rankable else None
    negatives = sampled_negatives(valid, np.append(history, target), user, n_negatives, seed)
    sampled_counts = target_rank_counts(scores, target, negatives) if rankable else None
    out = next_item_user_metrics(full_counts)
    out.update(next_item_user_metrics(sampled_counts, SAMPLED_PREFIX))
    return out


def mean_user_metrics(per_user: Sequence[Dict[str, float]]) -> Dict[str, float]:
    """Exact means over users of per-user metric dicts (same keys), plus `users`."""
    if not per_user:
        return {"users": 0.0}
    out = {name: exact_mean([u[name] for u in per_user]) for name in per_user[0]}
    out["users"] = float(len(per_user))
    return out


# --------------------------------------------------------------------------
# Binary task metrics beyond AUC.
# --------------------------------------------------------------------------
def average_precision(scores, positives) -> float:
    """Area under the precision-recall curve as average precision (PR-AUC); NaN without
    positives. Tied scores form one threshold, so the input order does not matter.

    Args:
      scores: one score per example.
      positives: one bool per example.
    """
    unique, pos, neg = score_counts(scores, positives)
    n_pos = int(pos.sum())
    if n_pos == 0:
        return float("nan")
    # Thresholds from the highest score down.
    tp = np.cumsum(pos[::-1])
    fp = np.cumsum(neg[::-1])
    precision = tp / (tp + fp)
    recall_step = pos[::-1] / n_pos
    return math.fsum((precision * recall_step).tolist())


def log_loss(probabilities, labels, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities (clipped to [eps, 1 - eps]); NaN when empty.

    Args:
      probabilities: predicted P(label = 1), one per example.
      labels: 0/1 labels, aligned.
    """
    p = np.clip(_float_vector("probabilities", probabilities), eps, 1 - eps)
    y = _float_vector("labels", labels)
    if p.shape != y.shape:
        raise ValueError(f"probabilities and labels must have the same length, got {p.size} and {y.size}")
    return exact_mean((-(y * np.log(p) + (1 - y) * np.log(1 - p))).tolist())


def calibration(predictions, labels) -> float:
    """Mean prediction over mean label (1.0 is calibrated on average); NaN when the mean label is 0."""
    p, y = _float_vector("predictions", predictions), _float_vector("labels", labels)
    total = math.fsum(y.tolist())
    return math.fsum(p.tolist()) / total if total else float("nan")


CALIBRATION_BINS = "calibration_bins"
CALIBRATION_BIN_COUNT = 10


def calibration_bins(predictions, labels, low: float, high: float, bins: int = CALIBRATION_BIN_COUNT) -> np.ndarray:
    """The reliability diagram's data: [bins, 3] rows of (mean prediction, mean label, count)
    over `bins` equal-width bins of the prediction on [low, high] (values outside go to the
    end bins); an empty bin is (NaN, NaN, 0).

    Args:
      predictions: predicted probabilities (binary task) or values (regression).
      labels: aligned labels.
      low, high: the prediction range the bins cover.
      bins: number of bins.
    """
    p, y = _float_vector("predictions", predictions), _float_vector("labels", labels)
    if p.shape != y.shape:
        raise ValueError(f"predictions and labels must have the same length, got {p.size} and {y.size}")
    if not high > low or bins < 1:
        raise ValueError(f"calibration bins need high > low and bins >= 1, got [{low}, {high}] and {bins}")
    index = np.clip(((p - low) / (high - low) * bins).astype(np.int64), 0, bins - 1) if p.size else p.astype(np.int64)
    count = np.bincount(index, minlength=bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(index, weights=p, minlength=bins) / count
        mean_y = np.bincount(index, weights=y, minlength=bins) / count
    return np.stack([mean_p, mean_y, count], axis=1)


def binary_task_metrics(probabilities, labels) -> Dict[str, float]:
    """`auc`, `pr_auc`, `log_loss`, `calibration`, `positive_rate` and `examples` of a 0/1 task."""
    p, y = _float_vector("probabilities", probabilities), _float_vector("labels", labels)
    positives = y > 0.5
    return {
        "auc": binary_auc(p, positives),
        "pr_auc": average_precision(p, positives),
        "log_loss": log_loss(p, y) if p.size else float("nan"),
        "calibration": calibration(p, y) if p.size else float("nan"),
        "positive_rate": exact_mean(y.tolist()),
        "examples": float(p.size),
    }


def history_share(behaviors, behavior, window: int = 0) -> float:
    """The history peer of a next-behavior task: the share of the input's interactions whose
    behavior is `behavior` (0 for an empty input), over its `window` most recent ones (0: all).
    `behaviors` holds no padding, oldest first; bytes and strings compare equal."""
    values = [b.decode() if isinstance(b, bytes) else b for b in np.asarray(behaviors, dtype=object).reshape(-1)]
    values = values[-window:] if window > 0 else values
    target = behavior.decode() if isinstance(behavior, bytes) else behavior
    return float(np.mean([v == target for v in values])) if values else 0.0


def regression_task_metrics(predictions, labels, auc_threshold=None) -> Dict[str, float]:
    """`rmse`, `mae`, `calibration`, `examples` (and `auc` of the prediction against
    label >= auc_threshold when given) of a regression task."""
    p, y = _paired(predictions, labels)
    out = {
        RMSE_NAME: rmse(p, y),
        MAE_NAME: mae(p, y),
        "calibration": calibration(p, y) if p.size else float("nan"),
        "examples": float(p.size),
    }
    if auc_threshold is not None:
        out["auc"] = binary_auc(p, y >= auc_threshold) if p.size else float("nan")
    return out


# --------------------------------------------------------------------------
# Multi-AUC of a pair of binary tasks (multipartite ranking over label pairs).
# --------------------------------------------------------------------------
MULTI_AUC_PREFIX = "multi_auc"
PAIR_CLASSES = 4  # label pairs ordered -- < -+ < +- < ++ (classes 0..3)


def multi_auc_name(task: str) -> str:
    """The result name of the Multi-AUC of one task's scores, e.g. `multi_auc_loved`."""
    return f"{MULTI_AUC_PREFIX}_{task}"


def pair_classes(labels_a, labels_b, weights_a=None, weights_b=None) -> Tuple[np.ndarray, np.ndarray]:
    """The ordered class of each row of a task pair (A, B), and which rows have one.

    Class = 2 * [A] + [B]: 3 = ++, 2 = +-, 1 = -+, 0 = -- (the order the pair ranks by: A
    first, then B). A task's weight is its condition (None: every row); a row counts when
    either task's condition holds, and a task whose condition fails there counts as
    negative (MovieLens liked / watched: an unwatched row is `--`; loved / liked share the
    condition `watched`, so unwatched rows are left out).

    Returns:
      (int64 classes of every row, bool rows that count).
    """
    a, b = _float_vector("labels_a", labels_a), _float_vector("labels_b", labels_b)
    if a.shape != b.shape:
        raise ValueError(f"labels_a and labels_b must have the same length, got {a.size} and {b.size}")
    wa = np.ones_like(a) if weights_a is None else _float_vector("weights_a", weights_a)
    wb = np.ones_like(b) if weights_b is None else _float_vector("weights_b", weights_b)
    if wa.shape != a.shape or wb.shape != b.shape:
        raise ValueError(f"weights must have one value per row ({a.size}), got {wa.size} and {wb.size}")
    pos_a = (a > 0.5) & (wa > 0)
    pos_b = (b > 0.5) & (wb > 0)
    return 2 * pos_a.astype(np.int64) + pos_b.astype(np.int64), (wa > 0) | (wb > 0)


def multi_auc(scores, classes, num_classes: int = PAIR_CLASSES) -> float:
    """Multipartite ranking AUC of scores over ordered classes (higher class ranks first).

    Multi-AUC = sum_{j<k} p(j or k) * AUC(k, j) / sum_{j<k} p(j or k), over the pairs of
    classes that both have rows, where AUC(k, j) is the AUC of class k against class j and
    p(j or k) the share of rows in either. With c classes present the weights sum to
    (c - 1), so this is `2 / (c (c - 1)) * sum_{j<k} p(j or k) * AUC(k, j)` rescaled by
    c / 2: a perfect ranking scores 1, a random one 0.5. NaN with fewer than two classes.

    Args:
      scores: one score per example.
      classes: one int class per example in [0, num_classes).
      num_classes: the number of ordered classes.
    """
    s = _float_vector("scores", scores)
    c = np.asarray(classes).reshape(-1)
    if c.shape != s.shape:
        raise ValueError(f"scores and classes must have the same length, got {s.size} and {c.size}")
    if c.size and (c.min() < 0 or c.max() >= num_classes):
        raise ValueError(f"classes must be in [0, {num_classes}), got values {sorted(set(c.tolist()))[:8]}")
    present = [k for k in range(num_classes) if np.any(c == k)]
    total = weight = 0.0
    for j_index, j in enumerate(present):
        for k in present[j_index + 1:]:
            rows = (c == j) | (c == k)
            w = float(np.mean(rows))
            total += w * binary_auc(s[rows], c[rows] == k)
            weight += w
    return total / weight if weight else float("nan")
