"""History construction, labels, splits, documents and negatives on small hand-made logs (no Beam)."""
import random

import pytest

from components.example_gen import histories, splits
from components.example_gen.config import IngestConfig
from components.example_gen.histories import Catalogue, build_examples, build_user_examples
from components.example_gen.parsing import MISSING_ITEM_METADATA, MISSING_USER_METADATA, Interaction
from contract import description as desc
from contract import features as F

ML = desc.load("movielens")
TB = desc.load("taobao")
TB_LABELS = ("viewed", "cart", "fav", "buy")


def ml_row(user, item, ts, rating=4.0, line=0):
    return Interaction(str(user), str(item), ts, ML.rating_behavior(rating), rating, (), (), "ratings.csv", line)


def tb_row(user, item, ts, behavior, category="c1", line=0):
    return Interaction(str(user), str(item), ts, behavior, None, (), (category,), "log.csv", line)


def ml_config(**overrides):
    return IngestConfig("movielens", **overrides)


def tb_config(**overrides):
    return IngestConfig("taobao", **overrides)


def ml_catalogue(n=50):
    return Catalogue({str(i): {"item_genres": ["Drama", f"g{i % 3}"], "item_year": [1990 + i]}
                      for i in range(1, n + 1)})


def positives(examples):
    return [e for e in examples if not e.negative]


def by_item(examples):
    return {e.features[F.ITEM_ID][0]: e for e in positives(examples)}


def _description(**interactions_extra):
    """A small description with a behavior column, a numeric and a text column (documents)."""
    values = {
        "name": "shop",
        "interactions": {
            "files": "log.csv", "user": "u", "item": "i", "time": "t",
            "behavior": {"column": "b", "vocabulary": ["view", "buy"]},
            "columns": {"stars": {"type": "numeric", "dtype": "int"},
                        "review": {"type": "text", "documents": True, "max_documents": 2}},
        },
        "labels": {"shown": {"implicit": True}, "bought": {"behavior": "buy"}, "good": {"expr": "stars >= 4"}},
        "tasks": [{"name": "shown", "kind": "binary"}, {"name": "bought", "kind": "binary"},
                  {"name": "good", "kind": "binary"}],
        "split": {"method": "leave_last_two_out"},
    }
    values["interactions"].update(interactions_extra)
    return values


def shop_row(user, item, ts, behavior="view", stars=None, review=None, line=0):
    return Interaction(str(user), str(item), ts, behavior, None, (stars, review), (), "log.csv", line)


def test_movielens_history_is_strictly_earlier_oldest_first():
    rows = [ml_row(1, 5, 300, 1.0), ml_row(1, 3, 100, 5.0), ml_row(1, 4, 200, 3.0), ml_row(1, 6, 400, 4.5)]
    result = build_user_examples("1", rows, ml_config(split="leave_last_two_out"), ml_catalogue())
    ex = by_item(result.examples)
    assert ex["3"].features[F.HISTORY_ITEM_IDS] == []
    assert ex["5"].features[F.HISTORY_ITEM_IDS] == ["3", "4"]
    assert ex["5"].features[F.HISTORY_BEHAVIORS] == ["liked", "neutral"]
    assert ex["6"].features[F.HISTORY_ITEM_IDS] == ["3", "4", "5"]
    assert ex["6"].features[F.HISTORY_BEHAVIORS] == ["liked", "neutral", "disliked"]
    assert [ex[i].split for i in "3456"] == ["train", "train", "eval", "test"]
    assert ex["5"].features["rating"] == [1.0] and ex["5"].features["watched"] == [1]
    assert ex["5"].features["item_genres"] == ["Drama", "g2"] and ex["5"].features["item_year"] == [1995]
    assert ex["5"].features[F.USER_ID] == ["1"] and ex["5"].features[F.TIMESTAMP] == [300]
    # expr labels are Transform's: not written, but counted for the training-positive check.
    assert "liked" not in ex["6"].features
    assert dict(result.stats[histories.STAT_LABEL_POSITIVES]["train"]) == {"watched": 2, "liked": 1, "loved": 1}


def test_same_timestamp_orders_ids_numerically_and_ties_see_nothing_of_each_other():
    rows = [ml_row(1, 10, 100), ml_row(1, 9, 100), ml_row(1, 2, 50)]
    ex = by_item(build_user_examples("1", rows, ml_config(split="leave_last_two_out"), ml_catalogue()).examples)
    assert ex["9"].features[F.HISTORY_ITEM_IDS] == ["2"]
    assert ex["10"].features[F.HISTORY_ITEM_IDS] == ["2", "9"]  # 9 < 10 numerically
    # An exact duplicate (same time, same item) is one position: neither copy sees the other.
    dup = build_user_examples("1", [ml_row(1, 7, 100, line=1), ml_row(1, 7, 100, line=2)],
                              ml_config(), ml_catalogue()).examples
    assert [e.features[F.HISTORY_ITEM_IDS] for e in dup] == [[], []]


def test_truncation_keeps_most_recent_n():
    rows = [ml_row(1, i, 1000 + i) for i in range(1, 21)]
    ex = by_item(build_user_examples("1", rows, ml_config(split="leave_last_two_out", max_history=4),
                                     ml_catalogue()).examples)
    assert ex["20"].features[F.HISTORY_ITEM_IDS] == ["16", "17", "18", "19"]
    assert ex["3"].features[F.HISTORY_ITEM_IDS] == ["1", "2"]
    zero = by_item(build_user_examples("1", rows, ml_config(max_history=0), ml_catalogue()).examples)
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
    config = ml_config(split=split, max_history=6, eval_day="2017-12-02", test_day="2017-12-03")
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
    result = build_user_examples("1", rows, ml_config(split="leave_last_two_out"), ml_catalogue())
    assert [(b.reason, b.line) for b in result.bad_rows] == [(MISSING_ITEM_METADATA, 3)]
    assert result.bad_rows[0].message == "item 999 (user 1) is not in the items table (movies.csv)"
    assert by_item(result.examples)["2"].features[F.HISTORY_ITEM_IDS] == ["1"]


def test_taobao_anchored_rows_labels_and_history():
    rows = [
        tb_row(1, "A", 100, "pv", "cA"),
        tb_row(1, "A", 50, "cart", "cA"),   # before the first view: history, not a label
        tb_row(1, "B", 200, "pv", "cB"),
        tb_row(1, "B", 200, "buy", "cB"),   # same instant as the first view: a label
        tb_row(1, "A", 300, "fav", "cA"),   # after the eval row B: past A's split, not a label
        tb_row(1, "C", 400, "cart", "cC"),  # never viewed: no example, but history
        tb_row(1, "A", 500, "pv", "cA"),    # second view: no new example
        tb_row(1, "D", 600, "pv", "cD"),
    ]
    result = build_user_examples("1", rows, tb_config(split="leave_last_two_out"),
                                 histories.catalogue_from_interactions(rows, TB))
    ex = by_item(result.examples)
    assert sorted(ex) == ["A", "B", "D"]
    labels = {i: [ex[i].features[lab][0] for lab in TB_LABELS] for i in ex}
    assert labels == {"A": [1, 0, 0, 0], "B": [1, 0, 0, 1], "D": [1, 0, 0, 0]}
    assert ex["A"].features[F.TIMESTAMP] == [100] and ex["A"].features["item_category"] == ["cA"]
    assert "item_year" not in ex["A"].features and "rating" not in ex["A"].features
    assert ex["A"].features[F.HISTORY_ITEM_IDS] == ["A"]
    assert ex["A"].features[F.HISTORY_BEHAVIORS] == ["cart"]
    assert ex["B"].features[F.HISTORY_BEHAVIORS] == ["cart", "pv"]
    assert ex["D"].features[F.HISTORY_ITEM_IDS] == ["A", "A", "B", "B", "A", "C", "A"]
    assert ex["D"].features[F.HISTORY_BEHAVIORS] == ["cart", "pv", "pv", "buy", "fav", "cart", "pv"]
    assert [ex[i].split for i in "ABD"] == ["train", "eval", "test"]


EVAL_DAY = 1512172800  # 2017-12-02 00:00 UTC, Taobao's eval day
TEST_DAY = EVAL_DAY + 86400


def test_taobao_labels_stay_within_a_day_of_the_view_and_inside_its_split():
    """By day: a cart / fav / buy labels its view when it is within the 1-day horizon and on a
    day of the view's split; one past the horizon or the split's last day labels nothing (the
    history still holds it)."""
    hour = 3600
    rows = [
        tb_row(1, "A", EVAL_DAY - 20 * hour, "pv"), tb_row(1, "A", EVAL_DAY - 2 * hour, "buy"),  # train: 1
        tb_row(1, "B", EVAL_DAY - 2 * hour, "pv"), tb_row(1, "B", EVAL_DAY + hour, "buy"),       # eval day: 0
        tb_row(1, "C", EVAL_DAY - 30 * hour, "pv"), tb_row(1, "C", EVAL_DAY - 5 * hour, "cart"),  # 25 h: 0
        tb_row(1, "D", TEST_DAY - hour, "pv"), tb_row(1, "D", TEST_DAY + hour, "fav"),           # test day: 0
        tb_row(1, "E", TEST_DAY - 2 * hour, "pv"), tb_row(1, "E", TEST_DAY - hour, "fav"),       # eval: 1
        tb_row(1, "F", TEST_DAY + hour, "pv"), tb_row(1, "F", TEST_DAY + 23 * hour, "cart"),     # test: 1
        tb_row(1, "G", TEST_DAY + 20 * hour, "pv"), tb_row(1, "G", TEST_DAY + 26 * hour, "buy"),  # next day: 0
    ]
    result = build_user_examples("1", rows, tb_config(), histories.catalogue_from_interactions(rows, TB))
    ex = by_item(result.examples)
    assert {i: ex[i].split for i in ex} == {"A": "train", "B": "train", "C": "train", "D": "eval", "E": "eval",
                                            "F": "test", "G": "test"}
    labels = {i: [ex[i].features[lab][0] for lab in TB_LABELS] for i in ex}
    assert labels == {"A": [1, 0, 0, 1], "B": [1, 0, 0, 0], "C": [1, 0, 0, 0], "D": [1, 0, 0, 0],
                      "E": [1, 0, 1, 0], "F": [1, 1, 0, 0], "G": [1, 0, 0, 0]}
    assert result.stats[histories.STAT_LABEL_POSITIVES]["train"]["buy"] == 1
    assert "fav" in ex["G"].features[F.HISTORY_BEHAVIORS]  # D's test-day fav: history, not D's label


def test_anchored_labels_without_a_horizon_stop_at_the_next_split_and_the_hash_split_has_none():
    """Leave-last-two-out: a training row's label event after the user's eval row (and an eval
    row's after the test row) is past its split. Hash: every event of a pair is in the pair's
    split, so a late buy still labels it."""
    values = _description(examples={"anchor": "view"})
    rows = [shop_row(1, "A", 0), shop_row(1, "B", 100), shop_row(1, "A", 150, "buy"),   # A train: 1
            shop_row(1, "C", 200), shop_row(1, "A", 250, "buy"),                         # eval C starts
            shop_row(1, "D", 300), shop_row(1, "B", 350, "buy"), shop_row(1, "C", 400, "buy"),
            shop_row(1, "D", 500, "buy")]
    config = IngestConfig(values)
    catalogue = histories.catalogue_from_interactions(rows, config.spec.description)
    ex = by_item(build_user_examples("1", rows, config, catalogue).examples)
    assert {i: ex[i].split for i in ex} == {"A": "train", "B": "train", "C": "eval", "D": "test"}
    assert {i: ex[i].features["bought"] for i in ex} == {"A": [1], "B": [0], "C": [0], "D": [1]}
    values["split"] = {"method": "hash"}
    config = IngestConfig(values)
    ex = by_item(build_user_examples("1", rows, config, catalogue).examples)
    assert {i: ex[i].features["bought"] for i in ex} == {"A": [1], "B": [1], "C": [1], "D": [1]}


def test_an_item_takes_the_features_of_its_earliest_row():
    rows = [tb_row(1, "A", 100, "pv", "later"), tb_row(2, "A", 50, "cart", "first"), tb_row(2, "A", 70, "pv", "x")]
    catalogue = histories.catalogue_from_interactions(rows, TB)
    assert catalogue.features == {"A": {"item_category": ["first"]}}
    ex = build_user_examples("1", rows[:1], tb_config(split="leave_last_two_out"), catalogue).examples
    assert ex[0].features["item_category"] == ["first"]


def test_anchored_behavior_labels_within_a_horizon():
    values = _description(examples={"anchor": "view"})
    values["labels"]["bought"]["horizon"] = "1h"
    values["split"] = {"method": "hash"}  # pairs' splits: no split boundary between a view and its buy
    config = IngestConfig(values)
    rows = [shop_row(1, "A", 0), shop_row(1, "A", 3600, "buy"),       # at the horizon: 1
            shop_row(1, "B", 0), shop_row(1, "B", 3601, "buy"),       # after it: 0
            shop_row(1, "C", 100, "buy"), shop_row(1, "C", 200)]      # bought before the view: 0
    catalogue = histories.catalogue_from_interactions(rows, config.spec.description)
    ex = by_item(build_user_examples("1", rows, config, catalogue).examples)
    assert {i: ex[i].features["bought"] for i in ex} == {"A": [1], "B": [0], "C": [0]}
    assert {i: ex[i].features[F.TIMESTAMP] for i in ex} == {"A": [0], "B": [0], "C": [200]}


def test_behavior_labels_outcomes_and_documents():
    config = IngestConfig(_description())  # leave_last_two_out: each user's last two rows are eval, test
    rows = [shop_row(1, 10, 100, "view", 5, "u1 first"), shop_row(1, 11, 200, "buy", 2, "u1 second"),
            shop_row(1, 12, 300, "view", None, "u1 third"), shop_row(1, 13, 400, "view", 4, "u1 eval"),
            shop_row(1, 14, 500, "buy", 3, "u1 test"),
            shop_row(2, 11, 50, "view", 4, "u2 on 11 early"), shop_row(2, 12, 300, "view", 1, "u2 on 12 tie"),
            shop_row(2, 11, 250, "view", 4, "u2 on 11 late"), shop_row(2, 10, 600, "buy", 5, "u2 eval"),
            shop_row(2, 13, 700, "view", 5, "u2 test")]
    catalogue = histories.catalogue_from_interactions(rows, config.spec.description)
    examples, bad, stats = build_examples(rows, config, catalogue)
    ex = {(e.features[F.USER_ID][0], e.features[F.ITEM_ID][0], e.features[F.TIMESTAMP][0]): e.features
          for e in examples}
    one = ex[("1", "11", 200)]
    assert one["bought"] == [1] and one["shown"] == [1] and "good" not in one
    assert one["stars"] == [2] and one["review"] == ["u1 second"]
    assert "stars" not in ex[("1", "12", 300)]  # a missing outcome is absent
    # The user's training texts strictly before the row, oldest first, at most 2; never its own.
    assert one["user_review_docs"] == ["u1 first"]
    assert ex[("1", "13", 400)]["user_review_docs"] == ["u1 second", "u1 third"]
    assert ex[("1", "14", 500)]["user_review_docs"] == ["u1 second", "u1 third"]  # the eval text is no input
    # The item's training texts of every user strictly before the row (not at the same time).
    assert one["item_review_docs"] == ["u2 on 11 early"]
    assert ex[("1", "12", 300)]["item_review_docs"] == []  # user 2's text on 12 is at the same time
    assert ex[("2", "10", 600)]["item_review_docs"] == ["u1 first"]
    assert ex[("2", "11", 50)]["item_review_docs"] == [] and ex[("2", "11", 50)]["user_review_docs"] == []
    assert ex[("2", "11", 250)]["item_review_docs"] == ["u2 on 11 early", "u1 second"]
    assert ex[("2", "13", 700)]["item_review_docs"] == []  # user 1's text on 13 is an eval text
    assert dict(stats[histories.STAT_LABEL_POSITIVES]["train"]) == {"shown": 6, "bought": 1, "good": 3}
    # Documents also reach sampled negatives: the negative item's training texts before the row's time.
    more = rows + [shop_row(3, 20, 10, "view", 1, "u3 on 20"), shop_row(3, 21, 20), shop_row(3, 22, 30)]
    train_texts = [(100, "1", "10", "u1 first"), (200, "1", "11", "u1 second"), (300, "1", "12", "u1 third"),
                   (50, "2", "11", "u2 on 11 early"), (250, "2", "11", "u2 on 11 late"),
                   (300, "2", "12", "u2 on 12 tie"), (10, "3", "20", "u3 on 20")]
    negs = [e for e in build_examples(more, IngestConfig(_description(), negatives_per_positive=1),
                                      histories.catalogue_from_interactions(more, config.spec.description))[0]
            if e.negative]
    assert len(negs) == 13 and any(n.features["item_review_docs"] for n in negs)
    for n in negs:
        item, ts = n.features[F.ITEM_ID][0], n.features[F.TIMESTAMP][0]
        want = [text for t, _, i, text in sorted(train_texts) if i == item and t < ts][-2:]
        assert n.features["item_review_docs"] == want
        user = n.features[F.USER_ID][0]
        if user != "3":
            (positive,) = [f for k, f in ex.items() if k[0] == user and k[2] == ts]
            assert n.features["user_review_docs"] == positive["user_review_docs"]
        assert "review" not in n.features and "stars" not in n.features
        assert n.features["bought"] == [0] and n.features["shown"] == [0]


def test_users_table_features_and_the_missing_user_rule():
    values = _description()
    values["users"] = {"files": "users.csv", "key": "id", "features": {"age": {"type": "numeric", "dtype": "int"}}}
    config = IngestConfig(values)
    rows = [shop_row(1, 10, 100), shop_row(2, 10, 100), shop_row(2, 11, 200, "buy")]
    catalogue = histories.catalogue_from_interactions(rows, config.spec.description)
    users = {"1": {"user_age": [33]}}
    examples, bad, _ = build_examples(rows, config, catalogue, users)
    got = {e.features[F.USER_ID][0]: e.features.get("user_age") for e in examples}
    assert got == {"1": [33], "2": None} and not bad  # not required: a missing user has no user features
    values["users"]["features"]["age"]["required"] = True
    examples, bad, _ = build_examples(rows, IngestConfig(values), catalogue, users)
    assert {e.features[F.USER_ID][0] for e in examples} == {"1"}
    assert [b.reason for b in bad] == [MISSING_USER_METADATA] * 2
    assert "user 2 is not in the users table (users.csv), whose features are required" in bad[0].message


def test_taobao_hash_history_uses_pair_split():
    items = [str(i) for i in range(1, 30)]
    rows = [tb_row(7, i, 100 * n, "pv") for n, i in enumerate(items)] + [tb_row(7, "99", 5000, "pv")]
    ex = by_item(build_user_examples("7", rows, tb_config(split="hash"),
                                     histories.catalogue_from_interactions(rows, TB)).examples)
    expected = [i for i in items if splits.hash_split("7", i) == "train"]
    assert 0 < len(expected) < len(items)
    assert ex["99"].features[F.HISTORY_ITEM_IDS] == expected


def test_negatives_untouched_copied_and_deterministic():
    rows = [ml_row(3, i, 100 * i, 4.0, line=i) for i in (1, 2, 3, 4, 5)]
    catalogue = ml_catalogue(12)
    config = ml_config(split="leave_last_two_out", negatives_per_positive=3, seed=5)
    first = build_user_examples("3", rows, config, catalogue).examples
    again = build_user_examples("3", list(reversed(rows)), config, catalogue).examples
    assert first == again
    other_seed = build_user_examples("3", rows, ml_config(
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
        assert n.features["watched"] == [0] and "rating" not in n.features
        assert n.features["item_genres"] == catalogue.features[item]["item_genres"]
        assert n.features["item_year"] == catalogue.features[item]["item_year"]
    # k negatives of one positive are distinct.
    for ts in pos:
        items = [n.features[F.ITEM_ID][0] for n in negs if n.features[F.TIMESTAMP][0] == ts]
        assert len(set(items)) == 3


def test_negatives_when_catalogue_nearly_exhausted():
    rows = [ml_row(1, i, 10 * i) for i in range(1, 9)]
    ex = build_user_examples("1", rows, ml_config(negatives_per_positive=5), ml_catalogue(10)).examples
    negs = [e for e in ex if e.negative]
    assert len(negs) == 8 * 2
    assert {e.features[F.ITEM_ID][0] for e in negs} == {"9", "10"}


def test_taobao_negatives_avoid_items_touched_without_a_view():
    rows = [tb_row(1, "A", 10, "pv"), tb_row(1, "B", 20, "cart"), tb_row(2, "C", 5, "pv", "cC")]
    catalogue = histories.catalogue_from_interactions(rows, TB)
    ex = build_user_examples("1", rows[:2], tb_config(split="hash", negatives_per_positive=2), catalogue).examples
    negs = [e for e in ex if e.negative]
    assert [e.features[F.ITEM_ID] for e in negs] == [["C"]]
    assert negs[0].features["item_category"] == ["cC"]
    assert [negs[0].features[lab] for lab in TB_LABELS] == [[0], [0], [0], [0]]


def test_user_view_targets_follow_the_retrieval_target_behaviors():
    """MovieLens's hash split keeps liked (rating >= 4) eval / test items as targets."""
    rng = random.Random(3)
    rows = [ml_row(1, i, 100 * i, rng.choice([1.0, 3.0, 4.0, 5.0])) for i in range(1, 60)]
    result = build_user_examples("1", rows, ml_config(), ml_catalogue(60))
    view = {e.split: e.features for e in result.user_examples}
    split_of = {r.item_id: splits.hash_split("1", r.item_id) for r in rows}
    for split in ("eval", "test"):
        want = [r.item_id for r in rows if split_of[r.item_id] == split and r.rating >= 4]
        assert view[split][F.TARGET_ITEM_IDS] == want and set(view[split][F.TARGET_BEHAVIORS]) == {"liked"}
    assert view["train"][F.TARGET_ITEM_IDS] == [r.item_id for r in rows if split_of[r.item_id] == "train"]
