"""Parsing and config of the interaction-log ExampleGen by description: CRLF, quoting, typed values,
bad-row reasons, missing columns."""
import json

import pytest

from components.example_gen import parsing, readers
from components.example_gen.config import IngestConfig
from components.example_gen.parsing import BadRow, Interaction
from contract import description as desc

ML = desc.load("movielens")
TB = desc.load("taobao")


def _write(path, lines, end="\r\n"):
    path.write_bytes(end.join(lines).encode() + end.encode())
    return str(path)


def _items(path, d=ML):
    return list(parsing.read_table([path], d, parsing.ITEMS))


def _good(parsed):
    return [p for p in parsed if not isinstance(p, BadRow)]


def _bad(rows):
    return {(b.reason, b.line): b for b in rows if isinstance(b, BadRow)}


def _with(base, **changes):
    """A description mapping: `base` (a shipped name) with top-level keys replaced."""
    values = json.loads(json.dumps(dict(desc.load(base).raw)))
    values.update(changes)
    return values


@pytest.mark.parametrize("title,year", [
    ("Toy Story (1995)", 1995),
    ("Big Bang Theory, The (2007-)", 2007),
    ("Fawlty Towers (1975-1979)", 1975),
    ("Rocky VI (1986) ", 1986),
    ("Hyena Road", None),
    ("1984 (Nineteen Eighty-Four)", None),
    ("Hour of the Wolf (Vargtimmen) (1968)", 1968),
])
def test_the_shipped_year_pattern_reads_the_title_forms(title, year):
    (feature,) = [f for f in ML.item_features if f.name == "year"]
    assert parsing.FeatureParser(feature, "items.features.year").parse(title) == year


def test_movies_crlf_quoted_commas_and_genres(tmp_path):
    path = _write(tmp_path / "movies.csv", [
        "movieId,title,genres",
        '1,"Big Bang Theory, The (2007-)",Comedy',
        '2,"American President, The (1995)",Comedy|Drama|Romance',
        "3,Hyena Road,(no genres listed)",
    ])
    items = dict(_items(path))
    assert items["1"] == (("Comedy",), 2007)
    assert items["2"] == (("Comedy", "Drama", "Romance"), 1995)
    assert items["3"] == (("(no genres listed)",), None)
    assert parsing.feature_dict(ML.item_features, items["3"]) == {"item_genres": ["(no genres listed)"]}
    # No carriage return leaks into the last field.
    assert all(not g.endswith("\r") for genres, _ in items.values() for g in genres)


def test_shipped_movies_file_parses_cleanly(movielens_dir):
    parsed = _items(str(movielens_dir / "movies.csv"))
    assert not [p for p in parsed if isinstance(p, BadRow)]
    items = dict(parsed)
    assert len(items) == 9125
    assert items["1"] == (("Adventure", "Animation", "Children", "Comedy", "Fantasy"), 1995)
    assert sum(year is None for _, year in items.values()) == 4


def test_ratings_rows_and_line_numbers(tmp_path):
    path = _write(tmp_path / "ratings.csv", [
        "userId,movieId,rating,timestamp",
        "1,31,2.5,1260759144",
        "",  # blank line: skipped, but still counts for the numbering
        "1,1029,4.0,1260759179",
    ])
    rows = list(parsing.read_interactions(path, ML))
    assert rows == [
        Interaction("1", "31", 1260759144, "disliked", 2.5, (), (), path, 2),
        Interaction("1", "1029", 1260759179, "liked", 4.0, (), (), path, 4),
    ]


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
    bad = _bad(parsing.read_interactions(path, ML))
    assert set(bad) == {
        (parsing.UNPARSABLE_NUMBER, 3), (parsing.WRONG_FIELD_COUNT, 4),
        (parsing.RATING_OUT_OF_RANGE, 5), (parsing.RATING_OUT_OF_RANGE, 6),
        (parsing.UNPARSABLE_TIME, 7), (parsing.EMPTY_ID, 8), (parsing.RATING_OUT_OF_RANGE, 9),
    }
    for (reason, line), row in bad.items():
        assert row.describe().startswith(f"{path}:{line}: ")
    assert "'abc'" in bad[(parsing.UNPARSABLE_NUMBER, 3)].message
    assert "0.5..5.0" in bad[(parsing.RATING_OUT_OF_RANGE, 5)].message
    assert "expected 4 fields (userId,movieId,rating,timestamp), got 3" in bad[(parsing.WRONG_FIELD_COUNT, 4)].message
    assert bad[(parsing.EMPTY_ID, 8)].message == "userId is empty"


def test_taobao_headerless_rows_and_an_unknown_behavior_is_a_bad_row(tmp_path):
    path = _write(tmp_path / "log.csv", [
        "1,2268318,2520377,pv,1511544070",
        "1,2333346,2520771,click,1511561733",
        "1,2576651,149192,buy",
        "1,2576651,149192,fav,15115x",
        "1,2576651,,fav,1511544070",
    ], end="\n")
    rows = list(parsing.read_interactions(path, TB))
    assert rows[0] == Interaction("1", "2268318", 1511544070, "pv", None, (), ("2520377",), path, 1)
    bad = _bad(rows)
    assert set(bad) == {(parsing.UNKNOWN_BEHAVIOR, 2), (parsing.WRONG_FIELD_COUNT, 3),
                        (parsing.UNPARSABLE_TIME, 4), (parsing.MISSING_VALUE, 5)}
    assert bad[(parsing.UNKNOWN_BEHAVIOR, 2)].describe() == (
        f"{path}:2: behavior 'click' is not one of the declared behaviors ['pv', 'cart', 'fav', 'buy']")
    assert "items.features.category is required" in bad[(parsing.MISSING_VALUE, 5)].message


def test_bad_metadata_rows_and_duplicate_keys_keep_the_first(tmp_path):
    path = _write(tmp_path / "movies.csv", [
        "movieId,title,genres",
        "1,Toy Story (1995),Comedy",
        "2,Broken",
        "1,Toy Story again (1995),Comedy",
        "3,No Genres (2000),",
        "4,Far Future (2999),Drama",
        ",Nobody (2001),Drama",
    ])
    parsed = _items(path)
    bad = _bad(parsed)
    assert set(bad) == {(parsing.WRONG_FIELD_COUNT, 3), (parsing.BAD_METADATA_ROW, 4), (parsing.BAD_METADATA_ROW, 5),
                        (parsing.BAD_METADATA_ROW, 6), (parsing.BAD_METADATA_ROW, 7)}
    assert bad[(parsing.BAD_METADATA_ROW, 4)].message == "item 1 already defined on line 2"
    assert "item 3: genres is empty (items.features.genres is required)" == bad[(parsing.BAD_METADATA_ROW, 5)].message
    assert bad[(parsing.BAD_METADATA_ROW, 6)].message == (
        "item 4: title 'Far Future (2999)': 2999 is outside 1870..2030 (items.features.year)")
    assert bad[(parsing.BAD_METADATA_ROW, 7)].message == "movieId is empty"
    assert dict(_good(parsed)) == {"1": (("Comedy",), 1995)}


def test_a_key_repeated_in_a_later_file_names_the_first_file(tmp_path):
    a = _write(tmp_path / "a.csv", ["movieId,title,genres", "1,A (1999),Drama"])
    b = _write(tmp_path / "b.csv", ["movieId,title,genres", "2,B (1999),Drama", "1,A again (1999),Drama"])
    parsed = list(parsing.read_table([a, b], ML, parsing.ITEMS))
    assert [p[0] for p in _good(parsed)] == ["1", "2"]
    (dup,) = [p for p in parsed if isinstance(p, BadRow)]
    assert dup.describe() == f"{b}:3: item 1 already defined on {a}:2"


def test_a_missing_column_names_the_file_its_columns_and_the_closest_name(tmp_path):
    path = _write(tmp_path / "ratings.csv", ["userid,movieId,rating,timestamp", "1,2,3.0,4"])
    with pytest.raises(ValueError) as err:
        list(parsing.read_interactions(path, ML))
    assert str(err.value) == (f"{path}:1: no column 'userId' (interactions.user) (did you mean 'userid'?); "
                              f"the file's columns: userid, movieId, rating, timestamp")
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        list(parsing.read_interactions(str(tmp_path / "nope.csv"), ML))
    empty = _write(tmp_path / "empty.csv", [""], end="")
    with pytest.raises(ValueError, match=r"empty\.csv:1: the file is empty"):
        list(parsing.read_interactions(empty, ML))


def test_id_order_is_numeric_for_digit_ids():
    assert sorted(["10", "9", "100", "a", "2"], key=parsing.id_sort_key) == ["2", "9", "10", "100", "a"]


def test_multi_line_quoted_fields_keep_the_line_a_record_starts_on(tmp_path):
    data = ('\ufeffuser,item,when,note\r\n'
            'u1,i1,100,"one line, with a comma"\r\n'
            'u1,i2,200,"two\r\nlines and ""quotes"""\r\n'
            'u2,i3,300,plain\r\n'
            '\r\n'
            'u2,i4,400,"three\nphysical\nlines"\r\n'
            'u2,i5,500,"never closed\r\n'
            'u3,i6,600,after\r\n')
    (tmp_path / "log.csv").write_bytes(data.encode("utf-8"))
    d = desc.from_dict({
        "name": "notes", "interactions": {
            "files": "log.csv", "user": "user", "item": "item", "time": "when",
            "columns": {"note": {"type": "text"}}},
        "labels": {"seen": {"implicit": True}}, "tasks": [{"name": "seen", "kind": "binary"}]})
    path = str(tmp_path / "log.csv")
    rows = list(parsing.read_interactions(path, d))
    good = {r.item_id: (r.line, r.columns[0]) for r in rows if isinstance(r, Interaction)}
    assert good == {"i1": (2, "one line, with a comma"), "i2": (3, 'two\r\nlines and "quotes"'),
                    "i3": (5, "plain"), "i4": (7, "three\nphysical\nlines"), "i6": (11, "after")}
    (bad,) = [r for r in rows if isinstance(r, BadRow)]
    assert (bad.reason, bad.line) == (parsing.UNREADABLE_ROW, 10)
    assert "quoted field is not closed" in bad.message


def test_other_encodings_are_read_and_named(tmp_path):
    (tmp_path / "log.csv").write_bytes("user;item;when\nJosé;café;1\n".encode("latin-1"))
    d = desc.from_dict({
        "name": "latin", "interactions": {"files": "log.csv", "csv": {"delimiter": ";", "encoding": "latin-1"},
                                          "user": "user", "item": "item", "time": "when"},
        "labels": {"seen": {"implicit": True}}, "tasks": [{"name": "seen", "kind": "binary"}]})
    (row,) = parsing.read_interactions(str(tmp_path / "log.csv"), d)
    assert (row.user_id, row.item_id, row.timestamp) == ("José", "café", 1)
    with pytest.raises(ValueError, match="does not write a line break as one byte"):
        readers.check_encoding(desc.Source(files=("x",), format="csv", encoding="utf-16"), "interactions")


@pytest.mark.parametrize("unit,value,seconds", [
    ("seconds", "1512000000", 1512000000),
    ("seconds", "1512000000.9", 1512000000),
    ("seconds", 1512000000, 1512000000),
    ("milliseconds", "1512000000999", 1512000000),
    ("milliseconds", 1512000000999.0, 1512000000),
    ("iso8601", "2017-11-30T00:00:00Z", 1512000000),
    ("iso8601", "2017-11-30T01:00:00+01:00", 1512000000),
    ("iso8601", "2017-11-30 00:00:00", 1512000000),  # no offset: UTC
    ("iso8601", "2017-11-30", 1512000000),
])
def test_time_units(unit, value, seconds):
    assert parsing.to_seconds(value, unit) == seconds


@pytest.mark.parametrize("spec,value,expected", [
    ({"type": "categorical"}, " red ", "red"),
    ({"type": "categorical"}, "", None),
    ({"type": "categorical"}, 7.0, "7"),
    ({"type": "multi_categorical", "separator": ";", "max_values": 2}, "a; b;;c", ("a", "b")),
    ({"type": "multi_categorical", "separator": ";"}, ["x", 2], ("x", "2")),
    ({"type": "numeric"}, "2.5", 2.5),
    ({"type": "numeric", "dtype": "int"}, "12.0", 12),
    ({"type": "numeric", "dtype": "int", "pattern": r"(\d+) votes"}, "12 votes", 12),
    ({"type": "numeric", "pattern": r"(\d+) votes"}, "no votes", None),
    ({"type": "numeric"}, "", None),
    ({"type": "time", "unit": "milliseconds"}, "1512000000500", 1512000000),
    ({"type": "text"}, "  Great  strings ", "Great  strings"),
    ({"type": "text"}, "   ", None),
])
def test_typed_values(spec, value, expected):
    feature = desc._Builder({}, "t", "").feature("f", spec, desc.ITEM, "items.features.f")
    assert parsing.FeatureParser(feature, "items.features.f").parse(value) == expected


@pytest.mark.parametrize("spec,value,reason,words", [
    ({"type": "numeric", "dtype": "int"}, "2.5", parsing.UNPARSABLE_NUMBER, "'2.5' is not an int"),
    ({"type": "numeric"}, "abc", parsing.UNPARSABLE_NUMBER, "'abc' is not a number"),
    ({"type": "numeric", "minimum": 0, "maximum": 10}, "11", parsing.OUT_OF_RANGE, "'11' is outside 0..10"),
    ({"type": "numeric", "minimum": 0}, "-1", parsing.OUT_OF_RANGE, "'-1' is outside 0.."),
    ({"type": "categorical", "required": True}, " ", parsing.MISSING_VALUE,
     "f is empty (items.features.f is required)"),
    ({"type": "time", "unit": "iso8601"}, "yesterday", parsing.UNPARSABLE_TIME, "'yesterday' is not a time (iso8601)"),
])
def test_bad_typed_values_name_the_column_and_the_rule(spec, value, reason, words):
    feature = desc._Builder({}, "t", "").feature("f", spec, desc.ITEM, "items.features.f")
    with pytest.raises(readers.RowError) as err:
        parsing.FeatureParser(feature, "items.features.f").parse(value)
    assert err.value.reason == reason and words in str(err.value)


def test_config_takes_the_description_defaults_and_round_trips():
    ml = IngestConfig("movielens", negatives_per_positive=3)
    assert IngestConfig.from_json(ml.to_json()) == ml
    assert ml.spec.name == "movielens" and ml.max_history == ML.max_history == 64
    assert (ml.split, ml.eval_day, ml.test_day, ml.seed, ml.max_bad_rows) == ("hash", "", "", 42, 0)
    assert ml.data_dir.endswith("data/movielens-small")
    assert IngestConfig(ml.spec) == IngestConfig(ML) == IngestConfig(dict(ML.to_dict())) == IngestConfig("movielens")
    tb = IngestConfig("taobao")
    assert (tb.split, tb.eval_day, tb.test_day) == ("by_day", "2017-12-02", "2017-12-03")
    assert IngestConfig("taobao", split="hash").split == "hash"
    assert json.loads(tb.to_json())["description"]["name"] == "taobao"
    no_days = _with("taobao", split={"method": "hash"})
    for bad, message in [
        ({"description": "movielens", "split": "random"}, "unknown split"),
        ({"description": "movielens", "max_history": -1}, "max_history"),
        ({"description": "movielens", "negatives_per_positive": True}, "negatives_per_positive must be int"),
        ({"description": "taobao", "eval_day": "2017-12-3"}, "eval_day must be a date"),
        ({"description": "taobao", "eval_day": "2017-12-03"}, "before test_day"),
        ({"description": no_days, "split": "by_day"}, "the by_day split needs eval_day and test_day"),
        ({"description": "netflix"}, "unknown dataset 'netflix'"),
        ({"description": "movielens", "colour": 1}, "unknown ingest config keys"),
        ({"split": "hash"}, "needs its `description`"),
    ]:
        with pytest.raises(ValueError, match=message):
            IngestConfig.from_json(json.dumps(bad))
    with pytest.raises(ValueError, match="not valid JSON"):
        IngestConfig.from_json("{description: movielens}")
