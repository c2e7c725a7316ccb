"""Simulated days: a log cut into daily span partitions that the span ExampleGen reads."""
import json
import os

import pytest

import daily_logs as L
from components.example_gen import spans
from pipeline import replay


@pytest.fixture()
def log(tmp_path):
    src = tmp_path / "src"
    L.write_movies(src)
    rows = [r for day in range(4) for r in L.day_rows(day, rows=10)]
    (src / "ratings.csv").write_text(L.HEADER + "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in reversed(rows)))
    return L.description(src, "ratings.csv"), rows


def test_slices_replay_the_last_rows_in_time_order_as_consecutive_days(log, tmp_path):
    d, rows = log
    r = replay.prepare(d, mode=replay.SLICES, spans=3, rows=30, start_date="2024-01-01")
    assert r.dates() == ["2024-01-01", "2024-01-02", "2024-01-03"]
    assert [len(part) for _, part in r.days] == [10, 10, 10] and r.left_out == 10
    ordered = sorted(rows, key=lambda x: x[3])[10:]
    assert [int(row[3]) for _, part in r.days for row in part] == [t for *_, t in ordered]
    out = tmp_path / "out"
    path = replay.write_description(r, str(out))
    for index in range(2):
        replay.write_day(r, str(out), index)
    spanned = json.loads(open(path).read())
    assert spanned["interactions"]["files"] == "log/date={YYYY}-{MM}-{DD}/part-*.csv"
    assert spans.is_spanned(spanned) and os.path.exists(out / "movies.csv")
    found = spans.available_spans(str(out), [spanned["interactions"]["files"]])
    assert [spans.span_date(s.span) for s in found] == ["2024-01-01", "2024-01-02"]


def test_days_replay_calendar_days_and_corrupted_copies(log):
    d, rows = log
    r = replay.prepare(d, mode=replay.DAYS, first_day="2023-11-15")
    assert r.dates() == ["2023-11-15", "2023-11-16", "2023-11-17"] and r.left_out == 10
    shifted = replay.shifted_ratings(r, 0)
    assert {row[2] for row in shifted} == {"0.5"} and len(shifted) == 10
    broken = replay.unreadable(r, 1, every=5)
    assert [row[3] for row in broken].count("not-a-time") == 2
