"""Small synthetic daily logs laid out as spans (a test fixture, not shipped).

A MovieLens-shaped log (the shipped movielens description with its interaction files
replaced by a span pattern): `days` days of ratings, each in its own partition, and a
movies table read whole every run.
"""

import copy
import os
import random

from contract import description as desc

DAY = 86400
FIRST_DAY = 1700000000 - 1700000000 % DAY  # 2023-11-14 00:00 UTC: span 19675 in date specs
HEADER = "userId,movieId,rating,timestamp\n"
GENRES = ("Drama", "Comedy", "Action", "Crime", "Horror", "IMAX", "Fantasy", "Animation")  # in MovieLens's schema
SPAN_PATTERN = "logs/{SPAN}/part-*.csv"
DATE_PATTERN = "date={YYYY}-{MM}-{DD}/ratings.csv"


def description(data_dir, pattern=SPAN_PATTERN, name="daily"):
    """The movielens description with `pattern` as its interaction files and data_dir set."""
    d = copy.deepcopy(desc.load("movielens").to_dict())
    d.update(name=name, data_dir=str(data_dir))
    d["interactions"]["files"] = pattern
    return d


def day_rows(day, users=12, items=40, rows=60, seed=3):
    """(user, item, rating, time) rows of one day: each user rates distinct items."""
    rng = random.Random(seed * 1000 + day)
    out, seen = [], set()
    while len(out) < rows:
        user, item = rng.randint(1, users), rng.randint(1, items)
        if (user, item) in seen:
            continue
        seen.add((user, item))
        out.append((user, item, rng.choice([1.0, 2.5, 3.0, 4.0, 4.5, 5.0]),
                    FIRST_DAY + day * DAY + rng.randint(0, DAY - 1)))
    return out


def write_movies(data_dir, items=40):
    os.makedirs(data_dir, exist_ok=True)
    with open(os.path.join(data_dir, "movies.csv"), "w") as f:
        f.write("movieId,title,genres\n")
        for i in range(1, items + 1):
            f.write(f"{i},Film {i} ({1980 + i % 30}),{GENRES[i % 3]}|{GENRES[3 + i % 5]}\n")


def day_path(data_dir, day, pattern=SPAN_PATTERN, span_base=0):
    """The file of day `day` (0-based) under `pattern`: {SPAN} = span_base + day, dates from FIRST_DAY."""
    import datetime

    date = datetime.datetime.fromtimestamp(FIRST_DAY + day * DAY, tz=datetime.timezone.utc).date()
    rel = (pattern.replace("{SPAN}", str(span_base + day)).replace("part-*", "part-0")
           .replace("{YYYY}", f"{date.year:04d}").replace("{MM}", f"{date.month:02d}")
           .replace("{DD}", f"{date.day:02d}"))
    return os.path.join(data_dir, rel)


def write_day(data_dir, day, rows=None, pattern=SPAN_PATTERN, **kwargs):
    """Writes day `day`'s rows (day_rows by default); returns the path."""
    path = day_path(data_dir, day, pattern)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rows = day_rows(day, **kwargs) if rows is None else rows
    with open(path, "w") as f:
        f.write(HEADER)
        f.writelines(f"{u},{i},{r},{t}\n" for u, i, r, t in rows)
    return path


def write_log(data_dir, days, pattern=SPAN_PATTERN, **kwargs):
    """The movies table and days 0..days-1; returns the description mapping."""
    write_movies(data_dir, kwargs.get("items", 40))
    for day in range(days):
        write_day(data_dir, day, pattern=pattern, **kwargs)
    return description(data_dir, pattern)
