"""Parsing and config of the interaction-log ExampleGen: CRLF, quoting, title years, bad-row reasons."""
import json

import pytest

from components.example_gen import parsing
from components.example_gen.config import IngestConfig
from components.example_gen.parsing import BadRow, Interaction
from contract import datasets, features


def _write(path, lines, end="\r\n"):
    path.write_bytes(end.join(lines).encode() + end.encode())
    return str(path)


@pytest.mark.parametrize("title,year", [
    ("Toy Story (1995)", 1995),
    ("Big Bang Theory, The (2007-)", 2007),
    ("Fawlty Towers (1975-1979)", 1975),
    ("Rocky VI (1986) ", 1986),
    ("Hyena Road", None),
    ("1984 (Nineteen Eighty-Four)", None),
    ("Hour of the Wolf (Vargtimmen) (1968)", 1968),
])
def test_title_year_forms(title, year):
    assert parsing.parse_title_year(title) == year


def test_movies_crlf_quoted_commas_and_genres(tmp_path):
    path = _write(tmp_path / "movies.csv", [
        "movieId,title,genres",
        '1,"Big Bang Theory, The (2007-)",Comedy',
        '2,"American President, The (1995)",Comedy|Drama|Romance',
        "3,Hyena Road,(no genres listed)",
    ])
    items = dict(parsing.read_items(path, "movielens"))
    assert items["1"] == parsing.ItemMeta(("Comedy",), 2007)
    assert items["2"] == parsing.ItemMeta(("Comedy", "Drama", "Romance"), 1995)
    assert items["3"] == parsing.ItemMeta(("(no genres listed)",), None)
    # No carriage return leaks into the last field.
    assert all(not g.endswith("\r") for meta in items.values() for g in meta.genres)


def test_shipped_movies_file_parses_cleanly(movielens_dir):
    parsed = list(parsing.read_items(str(movielens_dir / "movies.csv"), "movielens"))
    assert not [p for p in parsed if isinstance(p, BadRow)]
    items = dict(parsed)
    assert len(items) == 9125
    assert items["1"].genres == ("Adventure", "Animation", "Children", "Comedy", "Fantasy")
    assert items["1"].year == 1995
    assert sum(meta.year is None for meta in items.values()) == 4


def test_ratings_rows_and_line_numbers(tmp_path):
    path = _write(tmp_path / "ratings.csv", [
        "userId,movieId,rating,timestamp",
        "1,31,2.5,1260759144",
        "",  # blank line: skipped, but still counts for the numbering
        "1,1029,4.0,1260759179",
    ])
    rows = list(parsing.read_interactions(path, "movielens"))
    assert rows == [
        Interaction("1", "31", 1260759144, "disliked", 2.5, None, path, 2),
        Interaction("1", "1029", 1260759179, "liked", 4.0, None, path, 4),
    ]


def _bad(rows):
    return {(b.reason, b.line): b for b in rows if isinstance(b, BadRow)}


def test_every_rating_bad_row_reason_names_file_and_line(tmp_path):
    path = _write(tmp_path / "ratings.csv", [
        "userId,movieId,rating,timestamp",
        "1,31,2.5,1260759144",
        "1,32,abc,1260759144",
        "1,33,4.0",
        "1,34,5.5,1260759144",
        "1,35,0.0,1260759144",
        "1,36,3.0,12:30",
        ",37,3.0,1260759144",
        "1,38,nan,1260759144",
    ])
    bad = _bad(parsing.read_interactions(path, "movielens"))
    assert set(bad) == {
        (parsing.UNPARSABLE_NUMBER, 3), (parsing.WRONG_FIELD_COUNT, 4),
        (parsing.RATING_OUT_OF_RANGE, 5), (parsing.RATING_OUT_OF_RANGE, 6),
        (parsing.UNPARSABLE_NUMBER, 7), (parsing.EMPTY_ID, 8), (parsing.RATING_OUT_OF_RANGE, 9),
    }
    for (reason, line), row in bad.items():
        assert row.describe().startswith(f"{path}:{line}: ")
    assert "'abc'" in bad[(parsing.UNPARSABLE_NUMBER, 3)].message
    assert "0.5..5.0" in bad[(parsing.RATING_OUT_OF_RANGE, 5)].message


def test_taobao_rows_and_bad_rows(tmp_path):
    path = _write(tmp_path / "log.csv", [
        "1,2268318,2520377,pv,1511544070",
        "1,2333346,2520771,click,1511561733",
        "1,2576651,149192,buy",
        "1,2576651,149192,fav,15115x",
    ], end="\n")
    rows = list(parsing.read_interactions(path, "taobao"))
    assert rows[0] == Interaction("1", "2268318", 1511544070, "pv", None, "2520377", path, 1)
    bad = _bad(rows)
    assert set(bad) == {(parsing.UNKNOWN_BEHAVIOR, 2), (parsing.WRONG_FIELD_COUNT, 3),
                        (parsing.UNPARSABLE_NUMBER, 4)}
    assert bad[(parsing.UNKNOWN_BEHAVIOR, 2)].describe().startswith(f"{path}:2: behavior 'click'")


def test_bad_metadata_rows(tmp_path):
    path = _write(tmp_path / "movies.csv", [
        "movieId,title,genres",
        "1,Toy Story (1995),Comedy",
        "2,Broken",
        "1,Toy Story again (1995),Comedy",
        "3,No Genres (2000),",
    ])
    parsed = list(parsing.read_items(path, "movielens"))
    bad = _bad(parsed)
    assert set(bad) == {(parsing.BAD_METADATA_ROW, 3), (parsing.BAD_METADATA_ROW, 4), (parsing.BAD_METADATA_ROW, 5)}
    assert "already defined on line 2" in bad[(parsing.BAD_METADATA_ROW, 4)].message
    assert dict(p for p in parsed if not isinstance(p, BadRow)) == {"1": parsing.ItemMeta(("Comedy",), 1995)}


def test_wrong_header_and_missing_file(tmp_path):
    path = _write(tmp_path / "ratings.csv", ["user,movie,rating,timestamp", "1,2,3.0,4"])
    with pytest.raises(ValueError, match=r"ratings\.csv:1: expected header"):
        list(parsing.read_interactions(path, "movielens"))
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        list(parsing.read_interactions(str(tmp_path / "nope.csv"), "movielens"))


def test_id_order_is_numeric_for_digit_ids():
    assert sorted(["10", "9", "100", "a", "2"], key=parsing.id_sort_key) == ["2", "9", "10", "100", "a"]


def test_config_presets_round_trip_and_validation():
    ml = IngestConfig.movielens(negatives_per_positive=3)
    assert IngestConfig.from_json(ml.to_json()) == ml
    assert ml.spec is datasets.MOVIELENS and ml.max_history == features.MAX_HISTORY
    tb = IngestConfig.taobao()
    assert (tb.items, tb.split, tb.interactions) == (None, "by_day", "UserBehavior_sample.csv")
    assert IngestConfig.from_json(json.dumps({"dataset": "taobao", "items": None, "split": "hash"})).split == "hash"
    for bad, message in [
        ({"dataset": "netflix"}, "unknown dataset"),
        ({"split": "random"}, "unknown split"),
        ({"max_history": -1}, "max_history"),
        ({"negatives_per_positive": True}, "negatives_per_positive must be int"),
        ({"eval_day": "2017-12-3"}, "eval_day must be a date"),
        ({"dataset": "taobao", "items": None, "split": "by_day", "eval_day": "2017-12-03"}, "before test_day"),
        ({"dataset": "taobao"}, "items must be null"),
        ({"items": None}, "needs an items file"),
        ({"interactions": "../x.csv"}, "file name under input_base"),
        ({"colour": 1}, "unknown ingest config keys"),
    ]:
        with pytest.raises(ValueError, match=message):
            IngestConfig.from_json(json.dumps(bad))
    with pytest.raises(ValueError, match="not valid JSON"):
        IngestConfig.from_json("{dataset: movielens}")
