"""History construction, labels, splits and negatives on small hand-made logs (no Beam)."""
import random

import pytest

from components.example_gen import histories, splits
from components.example_gen.config import IngestConfig
from components.example_gen.histories import Catalogue, build_examples, build_user_examples
from components.example_gen.parsing import MISSING_ITEM_METADATA, Interaction, ItemMeta
from contract import datasets as D
from contract import features as F

ML_GENRES = ("Drama",)


def ml_row(user, item, ts, rating=4.0, line=0):
    return Interaction(str(user), str(item), ts, D.rating_behavior(rating), rating, None, "ratings.csv", line)


def tb_row(user, item, ts, behavior, category="c1", line=0):
    return Interaction(str(user), str(item), ts, behavior, None, category, "log.csv", line)


def ml_catalogue(n=50):
    return Catalogue({str(i): ItemMeta(ML_GENRES + (f"g{i % 3}",), 1990 + i) for i in range(1, n + 1)})


def positives(examples):
    return [e for e in examples if not e.negative]


def by_item(examples):
    return {e.features[F.ITEM_ID][0]: e for e in positives(examples)}


def test_movielens_history_is_strictly_earlier_oldest_first():
    rows = [ml_row(1, 5, 300, 1.0), ml_row(1, 3, 100, 5.0), ml_row(1, 4, 200, 3.0), ml_row(1, 6, 400, 4.5)]
    result = build_user_examples("1", rows, IngestConfig.movielens(split="leave_last_two_out"), ml_catalogue())
    ex = by_item(result.examples)
    assert ex["3"].features[F.HISTORY_ITEM_IDS] == []
    assert ex["5"].features[F.HISTORY_ITEM_IDS] == ["3", "4"]
    assert ex["5"].features[F.HISTORY_BEHAVIORS] == ["liked", "neutral"]
    assert ex["6"].features[F.HISTORY_ITEM_IDS] == ["3", "4", "5"]
    assert ex["6"].features[F.HISTORY_BEHAVIORS] == ["liked", "neutral", "disliked"]
    assert [ex[i].split for i in "3456"] == ["train", "train", "eval", "test"]
    assert ex["5"].features[F.RATING] == [1.0] and ex["5"].features[F.WATCHED] == [1]
    assert ex["5"].features[F.ITEM_GENRES] == ["Drama", "g2"] and ex["5"].features[F.ITEM_YEAR] == [1995]
    assert ex["5"].features[F.USER_ID] == ["1"] and ex["5"].features[F.TIMESTAMP] == [300]


def test_same_timestamp_orders_ids_numerically_and_ties_see_nothing_of_each_other():
    rows = [ml_row(1, 10, 100), ml_row(1, 9, 100), ml_row(1, 2, 50)]
    ex = by_item(build_user_examples("1", rows, IngestConfig.movielens(split="leave_last_two_out"),
                                     ml_catalogue()).examples)
    assert ex["9"].features[F.HISTORY_ITEM_IDS] == ["2"]
    assert ex["10"].features[F.HISTORY_ITEM_IDS] == ["2", "9"]  # 9 < 10 numerically
    # An exact duplicate (same time, same item) is one position: neither copy sees the other.
    dup = build_user_examples("1", [ml_row(1, 7, 100, line=1), ml_row(1, 7, 100, line=2)],
                              IngestConfig.movielens(), ml_catalogue()).examples
    assert [e.features[F.HISTORY_ITEM_IDS] for e in dup] == [[], []]


def test_truncation_keeps_most_recent_n():
    rows = [ml_row(1, i, 1000 + i) for i in range(1, 21)]
    config = IngestConfig.movielens(split="leave_last_two_out", max_history=4)
    ex = by_item(build_user_examples("1", rows, config, ml_catalogue()).examples)
    assert ex["20"].features[F.HISTORY_ITEM_IDS] == ["16", "17", "18", "19"]
    assert ex["3"].features[F.HISTORY_ITEM_IDS] == ["1", "2"]
    zero = by_item(build_user_examples("1", rows, IngestConfig.movielens(max_history=0), ml_catalogue()).examples)
    assert all(e.features[F.HISTORY_ITEM_IDS] == [] for e in zero.values())


def _expected_history(rows, row, visible, keep):
    key = lambda r: (r.timestamp, int(r.item_id))  # noqa: E731
    earlier = sorted((r for r in rows if key(r) < key(row) and visible(r)), key=key)
    return [r.item_id for r in earlier][-keep:] if keep else []


@pytest.mark.parametrize("split", ["hash", "leave_last_two_out", "by_day"])
def test_random_logs_history_matches_definition(split):
    rng = random.Random(7)
    day = 86400
    base = 1512000000  # 2017-11-30
    rows = [ml_row(u, rng.randint(1, 40), base + rng.randint(0, 5 * day) // 600 * 600,
                   rng.choice([1.0, 3.0, 5.0]), line=n)
            for n, u in enumerate(rng.choice([1, 2, 3]) for _ in range(150))]
    # Unique (user, item): every row is its own example, addressable by (user, item).
    seen, unique = set(), []
    for r in rows:
        if (r.user_id, r.item_id) not in seen:
            seen.add((r.user_id, r.item_id))
            unique.append(r)
    config = IngestConfig.movielens(split=split, max_history=6, eval_day="2017-12-02", test_day="2017-12-03")
    examples, bad, stats = build_examples(reversed(unique), config, ml_catalogue())
    assert not bad
    written = {(e.features[F.USER_ID][0], e.features[F.ITEM_ID][0]): e for e in examples}
    if split == "hash":
        visible = lambda r: splits.hash_split(r.user_id, r.item_id) == "train"  # noqa: E731
    else:
        visible = lambda r: True  # noqa: E731
    for row in unique:
        mine = [r for r in unique if r.user_id == row.user_id]
        ex = written.get((row.user_id, row.item_id))
        if split == "by_day" and splits.utc_day(row.timestamp) > "2017-12-03":
            assert ex is None
            continue
        hist = ex.features[F.HISTORY_ITEM_IDS]
        assert row.item_id not in hist
        assert hist == _expected_history(mine, row, visible, 6)
        if split == "hash":
            assert all(splits.hash_split(row.user_id, i) == "train" for i in hist)
    if split == "by_day":
        assert stats[histories.STAT_DROPPED] == len(unique) - len(examples) > 0


def test_leave_last_two_out_short_users_are_train_only():
    assert splits.leave_last_two_out(2) == ["train", "train"]
    assert splits.leave_last_two_out(3) == ["train", "eval", "test"]


def test_by_day_boundaries_are_utc():
    # 2017-12-01T23:59:59Z, 2017-12-02T00:00:00Z, 2017-12-03T12:00:00Z, 2017-12-04T00:00:00Z
    ts = [1512172799, 1512172800, 1512302400, 1512345600]
    assert [splits.day_split(t, "2017-12-02", "2017-12-03") for t in ts] == ["train", "eval", "test", None]


def test_missing_item_metadata_is_a_bad_row_and_not_in_histories():
    rows = [ml_row(1, 1, 100, line=2), ml_row(1, 999, 150, line=3), ml_row(1, 2, 200, line=4)]
    result = build_user_examples("1", rows, IngestConfig.movielens(split="leave_last_two_out"), ml_catalogue())
    assert [(b.reason, b.line) for b in result.bad_rows] == [(MISSING_ITEM_METADATA, 3)]
    assert "999" in result.bad_rows[0].message
    assert by_item(result.examples)["2"].features[F.HISTORY_ITEM_IDS] == ["1"]


def test_taobao_rows_labels_and_history():
    rows = [
        tb_row(1, "A", 100, "pv", "cA"),
        tb_row(1, "A", 50, "cart", "cA"),   # before the first view: history, not a label
        tb_row(1, "B", 200, "pv", "cB"),
        tb_row(1, "B", 200, "buy", "cB"),   # same instant as the first view: a label
        tb_row(1, "A", 300, "fav", "cA"),
        tb_row(1, "C", 400, "cart", "cC"),  # never viewed: no example, but history
        tb_row(1, "A", 500, "pv", "cA"),    # second view: no new example
        tb_row(1, "D", 600, "pv", "cD"),
    ]
    config = IngestConfig.taobao(split="leave_last_two_out")
    result = build_user_examples("1", rows, config, histories.taobao_catalogue(rows))
    ex = by_item(result.examples)
    assert sorted(ex) == ["A", "B", "D"]
    labels = {i: [ex[i].features[lab][0] for lab in D.TAOBAO.raw_labels] for i in ex}
    assert labels == {"A": [1, 0, 1, 0], "B": [1, 0, 0, 1], "D": [1, 0, 0, 0]}
    assert ex["A"].features[F.TIMESTAMP] == [100] and ex["A"].features[F.ITEM_GENRES] == ["cA"]
    assert F.ITEM_YEAR not in ex["A"].features and F.RATING not in ex["A"].features
    assert ex["A"].features[F.HISTORY_ITEM_IDS] == ["A"]
    assert ex["A"].features[F.HISTORY_BEHAVIORS] == ["cart"]
    assert ex["B"].features[F.HISTORY_BEHAVIORS] == ["cart", "pv"]
    assert ex["D"].features[F.HISTORY_ITEM_IDS] == ["A", "A", "B", "B", "A", "C", "A"]
    assert ex["D"].features[F.HISTORY_BEHAVIORS] == ["cart", "pv", "pv", "buy", "fav", "cart", "pv"]
    assert [ex[i].split for i in "ABD"] == ["train", "eval", "test"]


def test_taobao_hash_history_uses_pair_split():
    items = [str(i) for i in range(1, 30)]
    rows = [tb_row(7, i, 100 * n, "pv") for n, i in enumerate(items)] + [tb_row(7, "99", 5000, "pv")]
    ex = by_item(build_user_examples("7", rows, IngestConfig.taobao(split="hash"),
                                     histories.taobao_catalogue(rows)).examples)
    expected = [i for i in items if splits.hash_split("7", i) == "train"]
    assert 0 < len(expected) < len(items)
    assert ex["99"].features[F.HISTORY_ITEM_IDS] == expected


def test_negatives_untouched_copied_and_deterministic():
    rows = [ml_row(3, i, 100 * i, 4.0, line=i) for i in (1, 2, 3, 4, 5)]
    catalogue = ml_catalogue(12)
    config = IngestConfig.movielens(split="leave_last_two_out", negatives_per_positive=3, seed=5)
    first = build_user_examples("3", rows, config, catalogue).examples
    again = build_user_examples("3", list(reversed(rows)), config, catalogue).examples
    assert first == again
    other_seed = build_user_examples("3", rows, IngestConfig.movielens(
        split="leave_last_two_out", negatives_per_positive=3, seed=6), catalogue).examples
    assert [e.features[F.ITEM_ID] for e in other_seed] != [e.features[F.ITEM_ID] for e in first]

    negs = [e for e in first if e.negative]
    assert len(negs) == 15
    touched = {r.item_id for r in rows}
    pos = {e.features[F.TIMESTAMP][0]: e for e in positives(first)}
    for n in negs:
        item = n.features[F.ITEM_ID][0]
        assert item not in touched and item in catalogue
        p = pos[n.features[F.TIMESTAMP][0]]
        assert n.split == p.split
        for name in (F.USER_ID, F.HISTORY_ITEM_IDS, F.HISTORY_BEHAVIORS):
            assert n.features[name] == p.features[name]
        assert n.features[F.WATCHED] == [0] and F.RATING not in n.features
        assert n.features[F.ITEM_GENRES] == list(catalogue.meta[item].genres)
        assert n.features[F.ITEM_YEAR] == [catalogue.meta[item].year]
    # k negatives of one positive are distinct.
    for ts in pos:
        items = [n.features[F.ITEM_ID][0] for n in negs if n.features[F.TIMESTAMP][0] == ts]
        assert len(set(items)) == 3


def test_negatives_when_catalogue_nearly_exhausted():
    rows = [ml_row(1, i, 10 * i) for i in range(1, 9)]
    ex = build_user_examples("1", rows, IngestConfig.movielens(negatives_per_positive=5), ml_catalogue(10)).examples
    negs = [e for e in ex if e.negative]
    assert len(negs) == 8 * 2
    assert {e.features[F.ITEM_ID][0] for e in negs} == {"9", "10"}


def test_taobao_negatives_avoid_items_touched_without_a_view():
    rows = [tb_row(1, "A", 10, "pv"), tb_row(1, "B", 20, "cart"), tb_row(2, "C", 5, "pv", "cC")]
    catalogue = histories.taobao_catalogue(rows)
    config = IngestConfig.taobao(split="hash", negatives_per_positive=2)
    ex = build_user_examples("1", rows[:2], config, catalogue).examples
    negs = [e for e in ex if e.negative]
    assert [e.features[F.ITEM_ID] for e in negs] == [["C"]]
    assert negs[0].features[F.ITEM_GENRES] == ["cC"]
    assert [negs[0].features[lab] for lab in D.TAOBAO.raw_labels] == [[0], [0], [0], [0]]
