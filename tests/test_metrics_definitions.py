"""Protocol R metric definitions (pure numpy) against hand-computed values."""
import itertools
import math
import random
from fractions import Fraction

import numpy as np
import pytest

from evaluation import definitions as m

LIKED = 4.0  # the smallest liked rating of the hand-computed cases (MovieLens's: rating >= 4)


def log2(x):
    return math.log2(x)


# Four users, K = 10:
#   a: 3 items, two tied below the first (fewer than K items).
#   b: 12 items, a 3-way tie at ranks 9-11 straddling the cut-off.
#   c: 1 item, not relevant.
#   d: 4 items, all tied.
USERS = {
    b"a": ([0.9, 0.5, 0.5], [3.0, 5.0, 4.0]),
    b"b": (
        [12, 11, 10, 9, 8, 7, 6, 5, 4, 4, 4, 1],
        [5.0, 1.0, 4.0, 2.0, 3.0, 5.0, 1.0, 2.0, 5.0, 4.0, 1.0, 5.0],
    ),
    b"c": ([0.2], [2.0]),
    b"d": ([0.3, 0.3, 0.3, 0.3], [5.0, 3.0, 1.0, 4.0]),
}


def _disc(p):
    return 1 / log2(p + 1)


HAND_NDCG = {
    b"a": (3 * 1 + (5 + 4) * (_disc(2) + _disc(3)) / 2) / (5 + 4 * _disc(2) + 3 * _disc(3)),
    b"b": (
        sum(r * _disc(p) for p, r in enumerate([5, 1, 4, 2, 3, 5, 1, 2], start=1))
        + (5 + 4 + 1) * (_disc(9) + _disc(10) + 0) / 3
    )
    / sum(r * _disc(p) for p, r in enumerate([5, 5, 5, 5, 4, 4, 3, 2, 2, 1], start=1)),
    b"c": 1.0,
    b"d": (13 * (_disc(1) + _disc(2) + _disc(3) + _disc(4)) / 4)
    / (5 + 4 * _disc(2) + 3 * _disc(3) + 1 * _disc(4)),
}
HAND_P10 = {
    b"a": 2 / 3,  # both relevant items are in the top 10 of 3 items
    b"b": (3 + 2 * (2 / 3)) / 10,  # 3 above the tie; 2 relevant tied items, 2 of 3 slots in
    b"c": 0.0,
    b"d": 2 / 4,
}


def _flat(users):
    ids, scores, ratings = [], [], []
    for u, (s, r) in users.items():
        ids += [u] * len(s)
        scores += list(s)
        ratings += list(r)
    return np.array(ids), np.array(scores, np.float32), np.array(ratings, np.float32)


@pytest.mark.parametrize("user", sorted(USERS))
def test_per_user_ndcg_and_precision_match_hand_values(user):
    s, r = USERS[user]
    assert m.ndcg_at_k(s, r, 10) == pytest.approx(HAND_NDCG[user], abs=1e-12)
    assert m.precision_at_k(s, r, 10, LIKED) == pytest.approx(HAND_P10[user], abs=1e-12)


def test_ties_equal_the_average_over_all_orderings():
    s, r = USERS[b"b"]
    tied = [8, 9, 10]
    ndcgs, precs = [], []
    for perm in itertools.permutations(tied):
        # Break the tie in each possible order with tiny distinct scores.
        s2 = list(s)
        for rank, idx in enumerate(perm):
            s2[idx] = 4 + (3 - rank) * 1e-3
        ndcgs.append(m.ndcg_at_k(s2, r, 10))
        precs.append(m.precision_at_k(s2, r, 10, LIKED))
    assert m.ndcg_at_k(s, r, 10) == pytest.approx(np.mean(ndcgs), abs=1e-12)
    assert m.precision_at_k(s, r, 10, LIKED) == pytest.approx(np.mean(precs), abs=1e-12)


def test_small_k_and_perfect_ranking():
    # Perfect order without ties is exactly 1; K below the item count cuts DCG and IDCG.
    assert m.ndcg_at_k([3, 2, 1], [5.0, 4.0, 0.5], 2) == 1.0
    assert m.ndcg_at_k([1, 2, 3], [5.0, 4.0, 0.5], 1) == pytest.approx(0.5 / 5.0, abs=1e-15)
    assert m.precision_at_k([1, 2, 3], [5.0, 4.0, 0.5], 1, LIKED) == 0.0
    assert m.precision_at_k([1, 2, 3], [5.0, 4.0, 0.5], 2, LIKED) == 0.5
    # Zero ideal DCG (only possible with non-rating gains) counts 0.
    assert m.ndcg_at_k([1, 2], [0.0, 0.0], 10) == 0.0


def test_user_means_are_order_independent_and_match_hand_values():
    ids, scores, ratings = _flat(USERS)
    want_ndcg = math.fsum(HAND_NDCG.values()) / 4
    want_p = math.fsum(HAND_P10.values()) / 4
    got_ndcg = m.mean_ndcg_at_k(ids, scores, ratings, 10)
    got_p = m.mean_precision_at_k(ids, scores, ratings, 10, LIKED)
    assert got_ndcg == pytest.approx(want_ndcg, abs=1e-12)
    assert got_p == pytest.approx(want_p, abs=1e-12)
    rng = np.random.default_rng(0)
    for _ in range(5):
        perm = rng.permutation(ids.size)
        assert m.mean_ndcg_at_k(ids[perm], scores[perm], ratings[perm], 10) == got_ndcg
        assert m.mean_precision_at_k(ids[perm], scores[perm], ratings[perm], 10, LIKED) == got_p
    per_user = m.per_user_values(ids, scores, ratings, lambda s, r: m.ndcg_at_k(s, r, 10))
    assert set(per_user) == set(USERS)


def _brute_auc(scores, positives):
    num = Fraction(0)
    pos = [s for s, p in zip(scores, positives) if p]
    neg = [s for s, p in zip(scores, positives) if not p]
    for sp in pos:
        for sn in neg:
            num += 1 if sp > sn else Fraction(1, 2) if sp == sn else 0
    return num / (len(pos) * len(neg))


def test_auc_hand_value_and_brute_force_with_ties():
    assert m.binary_auc([0.1, 0.4, 0.4, 0.8], [0, 1, 0, 1]) == 0.875
    rng = random.Random(3)
    for _ in range(5):
        n = rng.randint(5, 60)
        scores = [round(rng.random(), 1) for _ in range(n)]  # many ties
        ratings = [rng.choice(np.arange(0.5, 5.5, 0.5)) for _ in range(n)]
        liked = [r >= LIKED for r in ratings]
        if all(liked) or not any(liked):
            continue
        # Exact integer arithmetic: equal to the correctly rounded fraction.
        assert m.liked_auc(scores, ratings, LIKED) == float(_brute_auc(scores, liked))


def test_auc_counts_merge_in_any_order():
    rng = np.random.default_rng(1)
    scores = np.round(rng.random(200), 2)
    liked = rng.random(200) < 0.4
    whole = m.auc_from_counts(m.score_counts(scores, liked))
    parts = [m.score_counts(scores[i:i + 37], liked[i:i + 37]) for i in range(0, 200, 37)]
    assert m.auc_from_counts(m.merge_score_counts(parts)) == whole
    assert m.auc_from_counts(m.merge_score_counts(parts[::-1])) == whole
    assert math.isnan(m.binary_auc([0.1, 0.2], [1, 1]))


def test_rating_errors():
    s, r = [3.0, 4.5, 2.0], [4.0, 4.5, 5.0]
    assert m.rmse(s, r) == pytest.approx(math.sqrt((1 + 0 + 9) / 3), abs=1e-15)
    assert m.mae(s, r) == pytest.approx(4 / 3, abs=1e-15)
    assert math.isnan(m.rmse([], []))


def test_hit_rate_and_mrr():
    ranks = [1, 3, 10, 11, 2]
    assert m.hit_rate_at_k(ranks, 10) == 4 / 5
    assert m.hit_rate_at_k(ranks, 2) == 2 / 5
    assert m.mrr_at_k(ranks, 10) == pytest.approx((1 + 1 / 3 + 1 / 10 + 0 + 1 / 2) / 5, abs=1e-15)
    assert m.mrr_at_k(ranks, 1) == 1 / 5
    with pytest.raises(ValueError, match=r"rank_of_target\[1\].*integer rank >= 1"):
        m.hit_rate_at_k([1, 0], 10)
    with pytest.raises(ValueError, match="positive integer"):
        m.mrr_at_k([1], 0)


def test_exact_sum_is_order_independent():
    rng = np.random.default_rng(2)
    values = list(rng.standard_normal(500) * 10.0 ** rng.integers(-8, 8, 500))
    want = math.fsum(values)
    a, b, c = m.ExactSum(values[:100]), m.ExactSum(values[100:333]), m.ExactSum(values[333:])
    assert m.ExactSum().merge(c).merge(a).merge(b).value() == want
    assert m.ExactSum(reversed(values)).value() == want


def test_recommendation_metrics_names_and_bad_input():
    ids, scores, ratings = _flat(USERS)
    got = m.recommendation_metrics(ids, scores, ratings, LIKED, top_k=10)
    assert set(got) == {"ndcg@10", "precision@10", "liked_auc", "rmse", "mae"}
    assert got["ndcg@10"] == m.mean_ndcg_at_k(ids, scores, ratings, 10)
    with pytest.raises(ValueError, match="same length"):
        m.liked_auc([1.0, 2.0], [4.0], LIKED)
    with pytest.raises(ValueError, match=r"scores\[1\] is nan"):
        m.ndcg_at_k([1.0, float("nan")], [4.0, 3.0], 10)
    with pytest.raises(ValueError, match=r"gains\[0\] is -1.0"):
        m.ndcg_at_k([1.0], [-1.0], 10)
    with pytest.raises(ValueError, match="user_ids must be one id per example"):
        m.mean_ndcg_at_k([b"a"], [1.0, 2.0], [4.0, 3.0], 10)
    assert math.isnan(m.mean_ndcg_at_k([], [], [], 10))


def test_calibration_bins_are_mean_prediction_and_label_per_bin():
    p = [0.05, 0.15, 0.12, 0.95, 1.0, -0.2]
    y = [0.0, 1.0, 0.0, 1.0, 1.0, 0.0]
    bins = m.calibration_bins(p, y, 0.0, 1.0, bins=10)
    assert bins.shape == (10, 3)
    # -0.2 falls in the first bin with 0.05, 1.0 in the last with 0.95.
    np.testing.assert_allclose(bins[0], [(0.05 - 0.2) / 2, 0.0, 2])
    np.testing.assert_allclose(bins[1], [(0.15 + 0.12) / 2, 0.5, 2])
    np.testing.assert_allclose(bins[9], [(0.95 + 1.0) / 2, 1.0, 2])
    empty = bins[2:9]
    assert np.all(empty[:, 2] == 0) and np.all(np.isnan(empty[:, :2]))
    assert bins[:, 2].sum() == len(p)


def test_calibration_bins_reject_mismatched_input():
    with pytest.raises(ValueError, match="same length"):
        m.calibration_bins([0.1, 0.2], [1.0], 0.0, 1.0)
    with pytest.raises(ValueError, match="high > low"):
        m.calibration_bins([0.1], [1.0], 1.0, 1.0)
