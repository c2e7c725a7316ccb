"""Interaction logs laid out as spans: TFX span patterns, the carried per-user state, and one
span's ingest against a from-scratch run over the same days (small synthetic daily logs)."""
import collections
import glob
import os

import pytest
import tensorflow as tf

import daily_logs as L
from components.example_gen import encoding, inmemory, span_ingest, spans
from components.example_gen.config import SPLIT_NAMES, IngestConfig
from contract import features as F

DAYS = 3


def _config(d, **overrides):
    return IngestConfig(d, **{"max_history": 5, "negatives_per_positive": 1, **overrides})


@pytest.mark.parametrize("pattern,first", [(L.SPAN_PATTERN, 0), (L.DATE_PATTERN, 19675)])
def test_available_spans_reads_span_and_date_specs(tmp_path, pattern, first):
    d = L.write_log(tmp_path, DAYS, pattern=pattern)
    found = spans.available_spans(str(tmp_path), [pattern])
    assert [s.span for s in found] == [first, first + 1, first + 2]
    assert all(s.version is None for s in found)
    assert os.path.isfile(os.path.join(tmp_path, found[1].patterns[0].replace("part-*", "part-0")))
    assert spans.is_spanned(d)
    assert spans.spans_to_ingest(found, first) == found[1:]
    assert spans.spans_to_ingest(found, None) == found
    if pattern == L.DATE_PATTERN:
        assert spans.span_date(found[0].span) == "2023-11-14"


def test_available_spans_takes_each_spans_latest_version(tmp_path):
    pattern = "logs/{SPAN}/v{VERSION}/part-*.csv"
    for span, version in ((0, 1), (1, 1), (1, 2)):
        path = tmp_path / "logs" / str(span) / f"v{version}" / "part-0.csv"
        path.parent.mkdir(parents=True)
        path.write_text(L.HEADER + "1,2,4.0,1700000000\n")
    found = spans.available_spans(str(tmp_path), [pattern])
    assert [(s.span, s.version, s.patterns) for s in found] == [
        (0, 1, ("logs/0/v1/part-*.csv",)), (1, 2, ("logs/1/v2/part-*.csv",))]


def test_patterns_are_checked(tmp_path):
    d = L.description(tmp_path, L.SPAN_PATTERN)
    assert not spans.is_spanned(L.description(tmp_path, "ratings.csv"))
    mixed = dict(d, interactions=dict(d["interactions"], files=[L.SPAN_PATTERN, "ratings.csv"]))
    with pytest.raises(spans.SpanError, match="mix patterns with and without span specs"):
        spans.is_spanned(mixed)
    side = dict(d, items=dict(d["items"], files="movies/{SPAN}.csv"))
    with pytest.raises(spans.SpanError, match="side tables are read whole"):
        spans.is_spanned(side)
    with pytest.raises(spans.SpanError, match="nothing matches 'logs/{SPAN}/part-\\*.csv'"):
        spans.available_spans(str(tmp_path), [L.SPAN_PATTERN])


def _from_scratch(tmp_path, days, config_overrides):
    """Every example record of one from-scratch ingest over `days` (every row a training row)."""
    full = tmp_path / "full"
    L.write_movies(full)
    rows = [r for day in days for r in L.day_rows(day)]
    (full / "ratings.csv").write_text(L.HEADER + "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in rows))
    config = spans.span_config(_config(L.description(full, "ratings.csv"), **config_overrides))
    records, _ = inmemory.ingest_in_memory(str(full), config)
    return records


def _day_of(features):
    return (features[F.TIMESTAMP][0] - L.FIRST_DAY) // L.DAY


def _positives_by_row(feature_dicts):
    out = {}
    for f in feature_dicts:
        if f["watched"] == [1]:
            key = (f[F.USER_ID][0], f[F.ITEM_ID][0], f[F.TIMESTAMP][0])
            assert key not in out
            out[key] = {k: v for k, v in f.items() if k != F.SPLIT}
    return out


def _carried_spans(d, config, days):
    """Per day, the (role, serialized) examples of build_span_user run span by span with the state."""
    loaded = inmemory.load_inputs(d["data_dir"], _config(L.description(d["data_dir"], L.SPAN_PATTERN)),
                                  {inmemory.INTERACTIONS: [], inmemory.ITEMS: [os.path.join(d["data_dir"],
                                                                                             "movies.csv")]})
    types = encoding.feature_types(config.spec.description)
    parser_d = config.spec.description
    from components.example_gen import parsing

    state, out = {}, []
    for day in days:
        by_user = collections.defaultdict(list)
        for parsed in parsing.read_interactions(L.day_path(d["data_dir"], day), parser_d,
                                                parsing.InteractionParser(parser_d)):
            by_user[parsed.user_id].append(parsed)
        examples, users = [], []
        for user, rows in sorted(by_user.items()):
            result = spans.build_span_user(user, rows, state.get(user), spans.span_config(config),
                                           loaded.catalogue, None, types)
            state[user] = result.state
            examples += result.examples
            users += result.user_examples
        out.append((examples, users, dict(state)))
    return out


def test_a_spans_histories_equal_a_from_scratch_run_over_the_same_days(tmp_path):
    d = L.write_log(tmp_path / "log", DAYS)
    config = _config(d)
    carried = _carried_spans(d, config, range(DAYS))
    expected = _from_scratch(tmp_path, range(DAYS), {})
    for day, (examples, _, _) in enumerate(carried):
        train = [encoding.from_tf_example(tf.train.Example.FromString(b)) for role, b in examples if role == "train"]
        assert len([1 for role, _ in examples if role == "eval"]) == len(train)  # one copy per role
        got = _positives_by_row(train)
        want = _positives_by_row([e.features for e in expected if _day_of(e.features) == day])
        assert got == want and len(got) == len(L.day_rows(day))
        if day:
            assert any(f[F.HISTORY_ITEM_IDS] for f in got.values())
        # negatives: one per positive, never an item of the carried history or of the user's span
        touched = collections.defaultdict(set)
        for (user, item, _), f in got.items():
            touched[user].update([item, *f[F.HISTORY_ITEM_IDS]])
        negatives = [f for f in train if f["watched"] == [0]]
        assert len(negatives) == len(got)
        assert all(f[F.ITEM_ID][0] not in touched[f[F.USER_ID][0]] for f in negatives)


def test_the_carried_state_keeps_each_users_last_interactions_and_count(tmp_path):
    d = L.write_log(tmp_path / "log", DAYS)
    _, _, state = _carried_spans(d, _config(d, max_history=3), range(DAYS))[-1]
    rows = collections.defaultdict(list)
    for day in range(DAYS):
        for u, i, _, t in L.day_rows(day):
            rows[str(u)].append((t, i))
    for user, events in rows.items():
        assert state[user].count == len(events)
        assert [(e.timestamp, int(e.item_id)) for e in state[user].events] == sorted(events)[-3:]
        line = spans.state_record(user, state[user])
        assert spans.parse_state_record(line) == (user, state[user])


def _read(directory, role):
    files = sorted(glob.glob(os.path.join(directory, f"Split-{role}", "*.gz")))
    return sorted(tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator()) if files else []


def test_beam_ingest_of_two_spans_matches_the_carried_path_and_writes_the_state(tmp_path):
    d = L.write_log(tmp_path / "log", 2)
    config = _config(d)
    found = spans.available_spans(d["data_dir"], [L.SPAN_PATTERN])
    carried = _carried_spans(d, config, range(2))
    state_path = ""
    for span, (examples, users, state) in zip(found, carried):
        ex, us = str(tmp_path / f"ex{span.span}"), str(tmp_path / f"us{span.span}")
        state_out = str(tmp_path / f"state{span.span}.jsonl.gz")
        report = span_ingest.ingest_span(d["data_dir"], config, span, state_path, ex, us, state_out)
        for role in SPLIT_NAMES:
            assert _read(ex, role) == sorted(b for r, b in examples if r == role)
            assert _read(us, role) == sorted(b for r, b in users if r == role)
        assert report["span"] == span.span and report["state_users"] == len(state)
        assert report["rows_read"]["interactions"] == len(L.day_rows(span.span))
        assert spans.read_span_report(ex)["fingerprint"] == span.fingerprint
        assert spans.read_state(state_out) == state
        state_path = state_out
    # the first span's users have no carried history: no eval/test user-view examples
    assert not _read(str(tmp_path / "us0"), "eval") and _read(str(tmp_path / "us1"), "eval")


def test_a_span_over_the_bad_row_limit_publishes_nothing(tmp_path):
    d = L.write_log(tmp_path / "log", 1)
    path = L.day_path(d["data_dir"], 0)
    with open(path, "a") as f:
        f.write("7,3,4.0,not-a-time\n")
    span = spans.available_spans(d["data_dir"], [L.SPAN_PATTERN])[0]
    ex, us = str(tmp_path / "ex"), str(tmp_path / "us")
    with pytest.raises(ValueError, match="part-0.csv"):
        span_ingest.ingest_span(d["data_dir"], _config(d), span, "", ex, us, str(tmp_path / "state.jsonl.gz"))
    assert not glob.glob(os.path.join(ex, "*")) and not glob.glob(os.path.join(us, "*"))
    assert not os.path.exists(tmp_path / "state.jsonl.gz")
