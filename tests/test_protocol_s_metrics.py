"""Protocol S metric definitions (one held-out next item, full and sampled candidates)
against hand-computed values, and the in-process evaluation that calls them."""
import math

import numpy as np
import pytest

from evaluation import definitions as d

NAMES = ["hit_rate@5", "hit_rate@10", "ndcg@10", "mrr@5", "mrr@10"]


def _close(actual, expected):
    assert set(actual) == set(expected)
    for name, value in expected.items():
        assert actual[name] == pytest.approx(value, abs=1e-12), name


def test_metric_names():
    assert d.next_item_metric_names() == NAMES
    assert d.protocol_s_metric_names() == NAMES + ["sampled_" + n for n in NAMES] + ["users"]


def test_rank_two_without_ties():
    # rows 0..5, row 0 padding; history row 1 (the best score) is never a candidate.
    scores = [9.0, 5.0, 3.0, 4.0, 1.0, 2.0]
    valid = np.array([False, True, True, True, True, True])
    full = np.flatnonzero(valid & ~np.isin(np.arange(6), [1]))
    assert d.target_rank_counts(scores, 2, full) == (1, 0)
    _close(d.next_item_user_metrics((1, 0)),
           {"hit_rate@5": 1.0, "hit_rate@10": 1.0, "ndcg@10": 1 / math.log2(3), "mrr@5": 0.5, "mrr@10": 0.5})


def test_rank_seven_counts_at_ten_only():
    _close(d.next_item_user_metrics((6, 0), prefix="sampled_"),
           {"sampled_hit_rate@5": 0.0, "sampled_hit_rate@10": 1.0, "sampled_ndcg@10": 1 / 3,
            "sampled_mrr@5": 0.0, "sampled_mrr@10": 1 / 7})


def test_ties_average_over_the_ranks_they_span():
    # 3 candidates above, 3 tied: the target is at rank 4, 5, 6 or 7 with probability 1/4 each.
    ranks = [4, 5, 6, 7]
    _close(d.next_item_user_metrics((3, 3)), {
        "hit_rate@5": 2 / 4,
        "hit_rate@10": 1.0,
        "ndcg@10": sum(1 / math.log2(r + 1) for r in ranks) / 4,
        "mrr@5": (1 / 4 + 1 / 5) / 4,
        "mrr@10": sum(1 / r for r in ranks) / 4,
    })
    # A tie across the cut-off at 10: ranks 9..12.
    assert d.next_item_user_metrics((8, 3))["hit_rate@10"] == pytest.approx(0.5)
    # Row 1 (2.0) against rows 0..4: row 4 above, rows 2 and 3 tied, itself skipped.
    assert d.target_rank_counts([1.0, 2.0, 2.0, 2.0, 3.0], 1, [0, 1, 2, 3, 4]) == (1, 2)


def test_unrankable_target_is_a_miss():
    assert d.target_rank_counts([1.0, 2.0], 5, [0]) is None
    assert d.target_rank_counts([1.0, -np.inf], 1, [0]) is None
    assert d.next_item_user_metrics(None) == dict.fromkeys(NAMES, 0.0)
    # Row 3 exists but is not an item (e.g. the unknown row): a miss both ways.
    out = d.protocol_s_user_metrics([0.0, 1.0, 2.0, 9.0], 3, [1], np.array([False, True, True, False]), b"u")
    assert all(v == 0.0 for v in out.values())
    with pytest.raises(ValueError, match="candidates hold rows outside"):
        d.target_rank_counts([1.0, 2.0], 0, [7])


def test_sampled_negatives_are_uniform_outside_the_users_items_and_fixed():
    n_rows = 1001
    valid = np.ones(n_rows, dtype=bool)
    valid[0] = False
    interacted = np.arange(1, 400)
    a = d.sampled_negatives(valid, interacted, b"user-1")
    assert a.size == 100 and np.unique(a).size == 100
    assert a.min() >= 400 and valid[a].all()
    np.testing.assert_array_equal(a, d.sampled_negatives(valid, interacted[::-1], b"user-1"))  # order-free
    np.testing.assert_array_equal(a, d.sampled_negatives(valid, interacted, "user-1"))  # str == bytes
    assert not np.array_equal(a, d.sampled_negatives(valid, interacted, b"user-2"))
    assert not np.array_equal(a, d.sampled_negatives(valid, interacted, b"user-1", seed=1))
    # Unknown rows in the input are ignored; fewer than n left: all of them.
    np.testing.assert_array_equal(d.sampled_negatives(valid, list(range(1, 996)) + [5000], 7), [996, 997, 998, 999, 1000])
    # Uniform: over many users, every allowed row is drawn about equally often.
    counts = np.zeros(n_rows)
    for u in range(600):
        counts[d.sampled_negatives(valid, interacted, u)] += 1
    allowed = counts[400:]
    assert counts[:400].sum() == 0
    assert allowed.mean() == pytest.approx(100 * 600 / 601)
    assert allowed.std() < 3 * math.sqrt(allowed.mean())


def test_protocol_s_user_metrics_full_and_sampled():
    n_rows = 301
    valid = np.ones(n_rows, dtype=bool)
    valid[0] = False
    # Higher row = lower score. Target row 3 behind history rows 1, 2: first among the rest.
    scores = -np.arange(n_rows, dtype=np.float64)
    out = d.protocol_s_user_metrics(scores, 3, [1, 2], valid, b"u")
    assert all(v == 1.0 for v in out.values())
    # The lowest-scored row as target: rank 300 of all (a miss at 10), rank 101 of 100
    # sampled negatives + target (a miss), rank 6 of 5 sampled negatives.
    out = d.protocol_s_user_metrics(scores, 300, [], valid, b"u")
    assert all(v == 0.0 for v in out.values())
    out = d.protocol_s_user_metrics(scores, 300, [], valid, b"u", n_negatives=5)
    assert out["sampled_hit_rate@5"] == 0.0 and out["sampled_hit_rate@10"] == 1.0
    assert out["sampled_mrr@10"] == pytest.approx(1 / 6)
    assert out["sampled_ndcg@10"] == pytest.approx(1 / math.log2(7))
    assert out["ndcg@10"] == 0.0
    # Sampled negatives never include the target or the history, so a target at rank 2 of
    # the full catalogue behind a non-history item ranks 1 or 2 among the sampled.
    out = d.protocol_s_user_metrics(scores, 2, [], valid, b"u")
    assert out["mrr@10"] == 0.5 and out["sampled_mrr@10"] in (0.5, 1.0)


def test_mean_user_metrics_is_exact():
    per_user = [{"ndcg@10": 0.1}, {"ndcg@10": 0.2}, {"ndcg@10": 0.3}]
    out = d.mean_user_metrics(per_user)
    assert out == {"ndcg@10": math.fsum([0.1, 0.2, 0.3]) / 3, "users": 3.0}
    assert d.mean_user_metrics([]) == {"users": 0.0}


def test_evaluate_next_item_reads_the_recent_history_and_masks_all_of_it():
    from training import topk
    from training.views import UserView

    n_rows = 12
    valid = np.zeros(n_rows, dtype=bool)
    valid[1:11] = True  # row 11 = unknown
    seen = []

    def scores_fn(items, behaviors):
        seen.append(items.copy())
        # Prefer low rows: the history rows 1, 2 would win if they were not masked.
        return np.tile(-np.arange(n_rows, dtype=np.float64), (len(items), 1))

    view = UserView(users=[b"a", b"b", b"c"], activity=[b"x"] * 3,
                    items=[np.array([1, 2]), np.array([4, 5, 6]), np.array([1])],
                    behaviors=[np.array([1, 1]), np.array([1, 2, 3]), np.array([2])],
                    targets=[np.array([3]), np.array([9]), np.array([11])])
    out = topk.evaluate_next_item(scores_fn, view, max_history=2, valid=valid)
    # a: rank 1; b: rows 1, 2, 3, 7, 8 ahead of 9 -> rank 6; c: unknown target -> a miss.
    assert out["users"] == 3.0
    assert out["hit_rate@5"] == pytest.approx(1 / 3)
    assert out["hit_rate@10"] == pytest.approx(2 / 3)
    assert out["mrr@10"] == pytest.approx((1 + 1 / 6) / 3)
    assert out["ndcg@10"] == pytest.approx((1 + 1 / math.log2(7)) / 3)
    np.testing.assert_array_equal(seen[0], [[1, 2], [5, 6], [1, 0]])
    view.targets[0] = np.array([3, 4])
    with pytest.raises(ValueError, match="one next item per user"):
        topk.evaluate_next_item(scores_fn, view, max_history=2, valid=valid)
