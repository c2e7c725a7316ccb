"""Split counts of the shipped MovieLens data and a synthetic Taobao-format log, read through their
shipped descriptions (pure-Python path, same rules as the Beam pipeline)."""
import pytest

from components.example_gen import histories, inmemory, splits
from components.example_gen.config import IngestConfig
from contract import description as desc
from contract import features as F
from test_example_gen_formats import check_against_raw_features


@pytest.fixture(scope="module")
def movielens(movielens_dir):
    return inmemory.load_inputs(str(movielens_dir), IngestConfig("movielens"))


def _counts(examples):
    out = {"train": 0, "eval": 0, "test": 0}
    for e in examples:
        out[e.split] += 1
    return out


def test_hash_split_function():
    # Buckets 0-7 train, 8 eval, 9 test; the formula itself is pinned by the counts below.
    buckets = {}
    for u in range(1, 30):
        for i in range(1, 30):
            b = splits.hash_bucket(str(u), str(i))
            buckets.setdefault(splits.hash_split(str(u), str(i)), set()).add(b)
    assert buckets == {"train": set(range(8)), "eval": {8}, "test": {9}}


def test_movielens_hash_counts(movielens):
    assert movielens.rows_read == {"interactions": 100004, "items": 9125} and not movielens.bad_rows
    examples, bad, stats = histories.build_examples(movielens.interactions, IngestConfig("movielens"),
                                                    movielens.catalogue)
    assert not bad
    assert _counts(examples) == {"train": 80217, "eval": 9871, "test": 9916}
    check_against_raw_features(examples[::20], desc.load("movielens"))
    for e in examples[:2000]:
        assert all(splits.hash_split(e.features[F.USER_ID][0], i) == "train" for i in e.features[F.HISTORY_ITEM_IDS])
        assert len(e.features[F.HISTORY_ITEM_IDS]) <= 64


def test_movielens_leave_last_two_out_counts(movielens):
    config = IngestConfig("movielens", split="leave_last_two_out")
    examples, _, stats = histories.build_examples(movielens.interactions, config, movielens.catalogue)
    assert stats[histories.STAT_USERS] == 671
    assert _counts(examples) == {"train": 100004 - 2 * 671, "eval": 671, "test": 671}
    last = {}
    for e in examples:
        u = e.features[F.USER_ID][0]
        last[u] = max(last.get(u, 0), e.features[F.TIMESTAMP][0])
    for e in examples:
        if e.split == "test":
            assert e.features[F.TIMESTAMP][0] == last[e.features[F.USER_ID][0]]


def test_taobao_by_day_counts(taobao_dir):
    """Rows, splits and labels equal a direct count over the synthetic log."""
    import collections
    import datetime

    rows = [line.split(",") for line in open(taobao_dir / "UserBehavior_sample.csv").read().splitlines()]
    day = lambda ts: datetime.datetime.fromtimestamp(int(ts), datetime.timezone.utc).strftime("%Y-%m-%d")  # noqa
    first_pv = {}
    for user, item, _, behavior, ts in rows:
        if behavior == "pv" and ((user, item) not in first_pv or int(ts) < first_pv[(user, item)]):
            first_pv[(user, item)] = int(ts)
    split_of = lambda ts: "test" if day(ts) == "2017-12-03" else "eval" if day(ts) == "2017-12-02" else (  # noqa
        None if day(ts) > "2017-12-03" else "train")
    want = collections.Counter(split_of(ts) for ts in first_pv.values())
    # A label: the behavior within the horizon (1 day) of the first view and in its split.
    labels = collections.Counter()
    crossing = 0  # label events within the horizon but past the view's split
    for user, item, _, behavior, ts in rows:
        start = first_pv.get((user, item))
        if behavior == "pv" or start is None or not start <= int(ts) <= start + 86400:
            continue
        if split_of(int(ts)) == split_of(start):
            labels[(user, item, behavior, split_of(start))] = 1
        else:
            crossing += 1
    assert crossing > 0  # the log has labels the split boundary removes
    examples, report = inmemory.ingest_in_memory(str(taobao_dir), IngestConfig("taobao"))
    assert report["rows_read"] == {"interactions": len(rows)}
    assert report["rows_written"] == {s: want[s] for s in ("train", "eval", "test")}
    assert report["dropped_after_test_day"] == want[None] > 0
    assert _counts(examples) == report["rows_written"]
    for split in ("train", "eval", "test"):
        assert sum(1 for key in labels if key[3] == split) > 0, split
        for label in ("cart", "fav", "buy"):
            expected = sum(1 for (_, _, b, s) in labels if b == label and s == split)
            assert report["label_positives"][split].get(label, 0) == expected, (split, label)
    assert report["bad_rows"]["total"] == 0
    assert {splits.utc_day(e.features[F.TIMESTAMP][0]) for e in examples if e.split == "test"} == {"2017-12-03"}
    check_against_raw_features(examples, desc.load("taobao"))
