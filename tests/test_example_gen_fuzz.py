"""Fuzzed input files for the ExampleGen: every line is parsed or reported with file and line.

A seeded generator damages copies of real MovieLens lines (truncated lines, Latin-1
bytes, huge fields, NUL bytes, binary garbage, unclosed quotes, extra fields, shuffled
columns, empty files). Checked for every case: nothing but a ValueError naming the file
and line 1 (an empty or unreadable header) ever escapes the parser; every other non-blank
line comes back exactly once, as the row it was before the damage or as a bad row
`file:line: why`; and the max_bad_rows limit is exact. One fuzzed case also goes through
the Beam ingest. The files are read through the shipped MovieLens description.
"""
import random
import re

import pytest

from components.example_gen import parsing, report
from components.example_gen.beam_pipeline import run_ingest
from components.example_gen.config import IngestConfig
from components.example_gen.parsing import BadRow
from contract import description as desc

ML = desc.load("movielens")

SEED = 12
CASES = 150
LINES = 60

GARBAGE = [b for b in range(256) if b not in (10, 13)]
LINE_MUTATIONS = ("truncate", "latin1", "huge_field", "nul", "garbage", "unclosed_quote", "extra_field", "blank")
FILE_MUTATIONS = ("shuffle_columns", "empty", "garbage_file", "header_only")


def _lines(path, n):
    with open(path, "rb") as f:
        header = f.readline()
        return header, [f.readline() for _ in range(n)]


@pytest.fixture(scope="module")
def sources(movielens_dir):
    return {
        "ratings": _lines(movielens_dir / "ratings.csv", LINES),
        "movies": _lines(movielens_dir / "movies.csv", LINES),
    }


def _damage(rng, line: bytes, kind: str) -> bytes:
    body, end = (line[:-2], b"\r\n") if line.endswith(b"\r\n") else (line.rstrip(b"\n"), b"\n")
    if kind == "truncate":
        return body[: rng.randrange(0, max(1, len(body) - 1))] + end
    if kind == "latin1":
        cut = rng.randrange(len(body) + 1)
        return body[:cut] + "é".encode("latin-1") + body[cut:] + end
    if kind == "huge_field":
        return body + b"," + b"x" * rng.choice([70_000, 200_000, 2_000_000]) + end
    if kind == "nul":
        cut = rng.randrange(len(body) + 1)
        return body[:cut] + b"\x00" + body[cut:] + end
    if kind == "garbage":  # any bytes but line breaks, which would make it several lines
        return bytes(rng.choice(GARBAGE) for _ in range(rng.randrange(1, 80))) + b"\n"
    if kind == "unclosed_quote":
        return body + b',"open' + end
    if kind == "extra_field":
        return body + b",1" + end
    if kind == "blank":
        return b"   " + end
    raise ValueError(kind)


def _fuzz(rng, header: bytes, lines):
    """(file bytes, set of damaged data-line indexes, file-level mutation or None)."""
    whole = rng.random() < 0.25
    if whole:
        kind = rng.choice(FILE_MUTATIONS)
        if kind == "empty":
            return b"", set(range(len(lines))), kind
        if kind == "garbage_file":
            return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4000))), set(range(len(lines))), kind
        if kind == "header_only":
            return header, set(range(len(lines))), kind
        # Shuffled columns: the same permutation on the header and on every row.
        rows = [header] + list(lines)
        split = [r.rstrip(b"\r\n").split(b",") for r in rows]
        if any(len(s) != len(split[0]) for s in split):  # titles with commas: keep the order
            return b"".join(rows), set(), None
        order = list(range(len(split[0])))
        rng.shuffle(order)
        return b"".join(b",".join(s[i] for i in order) + b"\r\n" for s in split), set(), kind
    damaged = set(rng.sample(range(len(lines)), rng.randrange(0, 8)))
    out = [header] + [_damage(rng, line, rng.choice(LINE_MUTATIONS)) if i in damaged else line
                      for i, line in enumerate(lines)]
    return b"".join(out), damaged, None


def _read(kind, path):
    if kind == "ratings":
        return list(parsing.read_interactions(path, ML))
    return list(parsing.read_table([path], ML, parsing.ITEMS))


def _expected_lines(data: bytes):
    """Line numbers after the header that the parser must account for: all but blank ones."""
    out = []
    for number, raw in enumerate(data.split(b"\n")[1:], start=2):
        try:
            blank = not raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            blank = False
        if not blank:
            out.append(number)
    return out


@pytest.mark.parametrize("kind", ["ratings", "movies"])
def test_fuzzed_files_are_parsed_or_reported_line_by_line(kind, sources, tmp_path):
    rng = random.Random(f"{SEED}-{kind}")
    header, lines = sources[kind]
    clean_path = tmp_path / f"clean-{kind}.csv"
    clean_path.write_bytes(header + b"".join(lines))
    clean = _read(kind, str(clean_path))
    assert not [r for r in clean if isinstance(r, BadRow)]
    counts = {"cases": 0, "bad_rows": 0, "file_errors": 0}
    for case in range(CASES):
        data, damaged, whole = _fuzz(rng, header, lines)
        path = tmp_path / f"{kind}-{case}.csv"
        path.write_bytes(data)
        try:
            results = _read(kind, str(path))
        except ValueError as e:  # only a missing or unreadable header stops a file
            assert whole in ("empty", "garbage_file"), (case, whole, e)
            assert re.match(rf"^{re.escape(str(path))}:1: ", str(e)), e
            counts["file_errors"] += 1
            continue
        counts["cases"] += 1
        bad = [r for r in results if isinstance(r, BadRow)]
        good = [r for r in results if not isinstance(r, BadRow)]
        counts["bad_rows"] += len(bad)
        # Every non-blank line exactly once, as a row or as a bad row naming file and line.
        lines_seen = [r.line for r in bad] + ([r.line for r in good] if kind == "ratings" else [])
        if kind == "ratings":
            assert sorted(lines_seen) == _expected_lines(data), case
        for row in bad:
            assert row.file == str(path) and row.describe().startswith(f"{path}:{row.line}: ")
        # Undamaged lines parse to what they were.
        if kind == "ratings":
            before = {r.line: r._replace(file="") for r in clean}
            after = {r.line: r._replace(file="") for r in good}
            for i in set(range(len(lines))) - damaged:
                assert after.get(i + 2) == before[i + 2], (case, i)
        else:
            before, after = dict(clean), dict(good)
            undamaged_ids = {lines[i].split(b",", 1)[0].decode() for i in set(range(len(lines))) - damaged}
            for item in undamaged_ids:
                assert after.get(item) == before[item], (case, item)
        # The bad-row limit is exact: n bad rows pass max_bad_rows=n and fail n-1, naming rows.
        summary = report.summarize_bad_rows(bad)
        assert summary["total"] == len(bad)
        report.check_bad_rows(summary, len(bad))
        if bad:
            with pytest.raises(ValueError, match=rf"{len(bad)} bad input rows, more than max_bad_rows={len(bad) - 1}"):
                report.check_bad_rows(summary, len(bad) - 1)
    assert counts["cases"] > CASES // 2 and counts["bad_rows"] > CASES and counts["file_errors"] > 0


def test_shuffled_columns_are_read_by_name(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_bytes(b"timestamp,rating,userId,movieId\r\n1260759144,2.5,1,31\r\n")
    [row] = parsing.read_interactions(str(path), ML)
    assert (row.user_id, row.item_id, row.rating, row.timestamp) == ("1", "31", 2.5, 1260759144)


@pytest.mark.parametrize(
    "line, reason, words",
    [
        (b"1,31,2.5,12607591\xe94\r\n", parsing.BAD_ENCODING, ["not UTF-8", "0xe9", "column 18"]),
        (b"1,31,2.5,1260759144" + b"0" * 70_000 + b"\r\n", parsing.UNREADABLE_ROW, ["longer than 65536 bytes"]),
        (b"1,3\x001,2.5,1260759144\r\n", parsing.UNREADABLE_ROW, ["NUL"]),
        (b'1,"31,2.5,1260759144\r\n', parsing.UNREADABLE_ROW, ["quoted field is not closed",
                                                               "the next lines are read on their own"]),
    ],
    ids=["latin1", "huge", "nul", "open-quote"],
)
def test_unreadable_lines_are_bad_rows_naming_why(tmp_path, line, reason, words):
    path = tmp_path / "ratings.csv"
    path.write_bytes(b"userId,movieId,rating,timestamp\r\n" + line + b"1,32,3.0,1260759144\r\n")
    bad, good = _read("ratings", str(path))
    assert isinstance(bad, BadRow) and bad.reason == reason and bad.line == 2
    for word in words:
        assert word in bad.message
    assert good.item_id == "32" and good.line == 3  # the next line is read as usual


def test_fuzzed_input_through_the_beam_ingest_holds_the_limit(movielens_slice, tmp_path):
    """The Beam ingest applies the same per-line parsing and the bad-row limit."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "movies.csv").write_bytes((movielens_slice / "movies.csv").read_bytes())
    rows = (movielens_slice / "ratings.csv").read_bytes().split(b"\r\n")
    rng = random.Random(SEED)
    damaged = sorted(rng.sample(range(1, len(rows) - 1), 6))
    kinds = ["latin1", "nul", "huge_field", "unclosed_quote", "extra_field"]
    for i, kind in zip(damaged, kinds):
        rows[i] = _damage(rng, rows[i] + b"\r\n", kind).rstrip(b"\r\n")
    rows[damaged[-1]] = rows[damaged[-1]].rsplit(b",", 1)[0]  # a truncated line: three fields
    (data / "ratings.csv").write_bytes(b"\r\n".join(rows))
    with pytest.raises(ValueError) as info:
        run_ingest(str(data), IngestConfig("movielens", max_bad_rows=len(damaged) - 1), str(tmp_path / "fail"))
    assert f"{len(damaged)} bad input rows, more than max_bad_rows={len(damaged) - 1}" in str(info.value)
    assert f"ratings.csv:{damaged[0] + 1}: " in str(info.value)
    result = run_ingest(str(data), IngestConfig("movielens", max_bad_rows=len(damaged)), str(tmp_path / "ok"))
    assert result["bad_rows"]["total"] == len(damaged)
    assert sum(result["rows_written"].values()) == result["rows_read"]["interactions"] - len(damaged)
