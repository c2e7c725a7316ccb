"""Simulated days: a dataset's interaction log written out as daily span partitions.

Two ways to cut a log into days:
- `days` (Taobao): by the UTC day of each row's time; rows outside the chosen days are left
  out (the Taobao sample has some outside 2017-11-25..2017-12-03), and counted.
- `slices` (MovieLens): MovieLens's timestamps span 1995-2016, with most days empty and a
  few users rating hundreds of films in one sitting, so its calendar days are no traffic to
  replay. Instead the last `rows` ratings in time order (timestamp, then file order) are
  cut into `spans` consecutive slices of equal size, and slice k is written as the day
  `start_date + k`. The rows keep their own timestamps (histories, features and the order
  of a user's interactions are the log's); only the partition is simulated. Ratings before
  the replayed part are not replayed: the first span starts from no history.

Each day is `<out>/<log>/date=YYYY-MM-DD/part-0.<ext>` in the log's own format (CSV or TSV
with its header, delimiter and encoding), side tables are copied, and `<out>/<name>.json` is
the description with the interaction files `<log>/date={YYYY}-{MM}-{DD}/part-*.<ext>` (TFX's
date span spec: span = days since 1970-01-01) and `data_dir` = `<out>`. A run of the pipeline
on that description ingests the days present and, on each later run, the days that arrived.

`python -m pipeline.replay --dataset movielens --out DIR --spans 20 --rows 30000 [--through K]`
writes the description and the days (all of them, or the first K: a test or benchmark then
writes the others one by one with `write_day`).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import io
import json
import os
import shutil
import sys
from typing import Dict, List, Optional, Sequence

from common.io_utils import atomic_write
from contract import datasets as D
from contract import description as desc

DAYS = "days"
SLICES = "slices"
LOG_DIR = "log"
DATE_PATTERN = "date={YYYY}-{MM}-{DD}"


@dataclasses.dataclass
class Replay:
    """A log cut into days.

    Attributes:
      description: the spanned copy of the description (a mapping, data_dir not set yet).
      header: the column names (None: the log has no header line).
      days: (YYYY-MM-DD, rows) per simulated day, in order; rows are lists of field strings.
      source: the dataset's data directory (its side tables are copied from it).
      left_out: rows of the log not replayed (before the replayed part, or outside the days).
    """

    description: Dict
    header: Optional[List[str]]
    days: List[tuple]
    source: str
    left_out: int = 0

    @property
    def name(self) -> str:
        return self.description["name"]

    def dates(self) -> List[str]:
        return [day for day, _ in self.days]


def _read_rows(d: desc.Description, data_dir: str):
    from components.example_gen import readers

    source = d.interactions
    if source.format not in (desc.CSV, desc.TSV):
        raise ValueError(f"replay writes CSV / TSV logs; dataset {d.name!r} is {source.format}")
    header: Optional[List[str]] = None
    rows = []
    for path in readers.expand_files(source, data_dir, "interactions"):
        with open(path, encoding=source.encoding, newline="") as f:
            reader = csv.reader(f, delimiter=source.delimiter, quotechar=source.quotechar)
            if source.header:
                first = next(reader, None)
                header = header or first
            rows.extend(r for r in reader if r)
    columns = header if source.header else list(source.columns)
    if d.time not in columns:
        raise ValueError(f"the interaction log of {d.name!r} has no time column {d.time!r}; columns {columns}")
    return header, columns.index(d.time), rows


def _seconds(value: str, unit: str) -> int:
    if unit == desc.SECONDS:
        return int(float(value))
    if unit == desc.MILLISECONDS:
        return int(float(value)) // 1000
    raise ValueError(f"replay reads unix times (seconds or milliseconds), not {unit}")


def _spanned(d: desc.Description, ext: str) -> Dict:
    out = d.to_dict()
    out.pop("data_dir", None)
    out["interactions"]["files"] = f"{LOG_DIR}/{DATE_PATTERN}/part-*{ext}"
    out["description"] = out.get("description", "") + " Replayed as daily spans (pipeline/replay.py)."
    return out


def prepare(dataset: D.DatasetRef, data_dir: Optional[str] = None, mode: str = SLICES, spans: int = 20,
            rows: int = 0, start_date: Optional[str] = None, first_day: Optional[str] = None,
            last_day: Optional[str] = None) -> Replay:
    """Reads a dataset's log and cuts it into days (see module docstring).

    Args:
      dataset: a shipped name, a description file or mapping.
      data_dir: where its files are (None: the description's data_dir).
      mode: SLICES or DAYS.
      spans: SLICES: the number of days.
      rows: SLICES: the rows replayed, the last ones in time order (0: all).
      start_date: SLICES: the first day (default: the UTC day of the first replayed row).
      first_day / last_day: DAYS: the days kept (default: every day of the log).
    """
    d = D.dataset_spec(dataset).description
    data_dir = data_dir or d.data_dir
    header, time_index, log = _read_rows(d, data_dir)
    keyed = sorted(enumerate(log), key=lambda pair: (_seconds(pair[1][time_index], d.time_unit), pair[0]))
    ordered = [row for _, row in keyed]
    ext = os.path.splitext(d.interactions.files[0])[1] or ".csv"
    days: List[tuple] = []
    if mode == SLICES:
        if spans < 1:
            raise ValueError(f"spans must be >= 1, got {spans}")
        chosen = ordered[-rows:] if rows else ordered
        left_out = len(ordered) - len(chosen)
        start = datetime.date.fromisoformat(start_date) if start_date else datetime.datetime.fromtimestamp(
            _seconds(chosen[0][time_index], d.time_unit), tz=datetime.timezone.utc).date()
        size = len(chosen) / spans
        for k in range(spans):
            part = chosen[round(k * size): round((k + 1) * size)]
            days.append(((start + datetime.timedelta(days=k)).isoformat(), part))
    elif mode == DAYS:
        by_day: Dict[str, list] = {}
        for row in ordered:
            day = datetime.datetime.fromtimestamp(_seconds(row[time_index], d.time_unit),
                                                  tz=datetime.timezone.utc).date().isoformat()
            by_day.setdefault(day, []).append(row)
        kept = [day for day in sorted(by_day) if (not first_day or day >= first_day) and (not last_day or day <= last_day)]
        days = [(day, by_day[day]) for day in kept]
        left_out = len(ordered) - sum(len(r) for _, r in days)
    else:
        raise ValueError(f"unknown replay mode {mode!r}; expected {SLICES!r} or {DAYS!r}")
    return Replay(_spanned(d, ext), header, days, data_dir, left_out)


def write_description(replay: Replay, out_dir: str) -> str:
    """Writes `<out_dir>/<name>.json` (the spanned description, data_dir = out_dir) and copies
    the side tables; returns the description's path."""
    os.makedirs(out_dir, exist_ok=True)
    d = D.dataset_spec({**replay.description, "data_dir": replay.source}).description
    for source in (d.items, d.users):
        for pattern in getattr(source, "files", ()) or ():
            src = os.path.join(replay.source, pattern)
            if os.path.isfile(src):
                target = os.path.join(out_dir, pattern)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.copyfile(src, target)
    value = dict(replay.description, data_dir=os.path.abspath(out_dir))
    return atomic_write(os.path.join(out_dir, f"{replay.name}.json"), json.dumps(value, indent=2) + "\n")


def day_dir(out_dir: str, date: str) -> str:
    """The directory of one simulated day."""
    return os.path.join(out_dir, LOG_DIR, f"date={date}")


def write_day(replay: Replay, out_dir: str, index: int, rows: Optional[Sequence[Sequence[str]]] = None) -> str:
    """Writes day `index` (its rows, or `rows` instead: a corrupted or drifted copy), replacing
    what the day held; returns the file's path."""
    date, original = replay.days[index]
    d = D.dataset_spec({**replay.description, "data_dir": replay.source}).description
    source = d.interactions
    text = io.StringIO()
    writer = csv.writer(text, delimiter=source.delimiter, quotechar=source.quotechar, lineterminator="\n")
    if replay.header:
        writer.writerow(replay.header)
    writer.writerows(original if rows is None else rows)
    ext = os.path.splitext(d.interactions.files[0])[1] or ".csv"
    path = os.path.join(day_dir(out_dir, date), f"part-0{ext}")
    return atomic_write(path, text.getvalue().encode(source.encoding))


def column(replay: Replay, name: str) -> int:
    """The index of a log column (by the header, or the description's csv.columns)."""
    columns = replay.header or list(replay.description["interactions"].get("csv", {}).get("columns", []))
    return columns.index(name)


def shifted_ratings(replay: Replay, index: int, value: str = "0.5") -> List[List[str]]:
    """Day `index` with every rating set to `value`: valid rows whose rating distribution
    drifted (a broken client writing its default, say)."""
    rating = column(replay, replay.description["interactions"]["rating"]["column"])
    return [row[:rating] + [value] + row[rating + 1:] for row in replay.days[index][1]]


def unreadable(replay: Replay, index: int, every: int = 10) -> List[List[str]]:
    """Day `index` with every `every`-th row's time replaced by text: rows the ingest cannot read."""
    time_col = column(replay, replay.description["interactions"]["time"]["column"])
    return [row[:time_col] + ["not-a-time"] + row[time_col + 1:] if i % every == 0 else row
            for i, row in enumerate(replay.days[index][1])]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--dataset", default=desc.DEFAULT_DATASET, choices=desc.shipped())
    which.add_argument("--dataset_file", default=None)
    parser.add_argument("--data_dir", default=None, help="the log's folder (default: the description's data_dir)")
    parser.add_argument("--out", required=True, help="where the days and the spanned description go")
    parser.add_argument("--mode", default=None, choices=[SLICES, DAYS],
                        help="default: days for a description with a by_day split, slices otherwise")
    parser.add_argument("--spans", type=int, default=20, help="slices: the number of days")
    parser.add_argument("--rows", type=int, default=0, help="slices: the last N rows in time order (0: all)")
    parser.add_argument("--start_date", default=None, help="slices: the first day (default: the first row's)")
    parser.add_argument("--first_day", default=None, help="days: the first day kept")
    parser.add_argument("--last_day", default=None, help="days: the last day kept")
    parser.add_argument("--through", type=int, default=0, help="write only the first K days (0: all)")
    args = parser.parse_args(argv)
    ref = args.dataset_file or args.dataset
    d = D.dataset_spec(ref).description
    mode = args.mode or (DAYS if d.split == D.BY_DAY_SPLIT else SLICES)
    replay = prepare(ref, args.data_dir, mode, args.spans, args.rows, args.start_date, args.first_day,
                     args.last_day)
    path = write_description(replay, args.out)
    count = args.through or len(replay.days)
    for index in range(count):
        write_day(replay, args.out, index)
    print(f"{path}: {len(replay.days)} days ({replay.dates()[0]} .. {replay.dates()[-1]}), {count} written, "
          f"rows per day {[len(r) for _, r in replay.days]}, {replay.left_out} rows not replayed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
