"""Row parsers for the interaction logs and item tables, with line numbers and bad-row reasons.

Everything here is plain Python so it can be tested without Beam. Files are read as
bytes, one line at a time, and each line is one record, decoded and split with the
`csv` module: CRLF line ends and quoted fields with commas are handled, blank lines are
skipped, and a line that cannot be read (not UTF-8, a NUL byte, a field beyond the csv
module's limit, a quote not closed on its line, longer than MAX_RECORD_BYTES) is one
bad row with its file and line, never the end of the file. So every line is either a
parsed row or a reported one. A header whose columns are the expected ones in another
order is read by name.
"""

from __future__ import annotations

import csv
import math
import os
import re
from typing import BinaryIO, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

from contract import datasets, features

# Bad-row reasons.
WRONG_FIELD_COUNT = "wrong_field_count"
UNPARSABLE_NUMBER = "unparsable_number"
RATING_OUT_OF_RANGE = "rating_out_of_range"
UNKNOWN_BEHAVIOR = "unknown_behavior"
EMPTY_ID = "empty_id"
MISSING_ITEM_METADATA = "missing_item_metadata"
BAD_METADATA_ROW = "bad_metadata_row"
BAD_ENCODING = "bad_encoding"
UNREADABLE_ROW = "unreadable_row"

MAX_RECORD_BYTES = 64 * 1024  # a longer line is a bad row (real rows are < 1 KiB)

MOVIELENS_RATINGS_HEADER = ("userId", "movieId", "rating", "timestamp")
MOVIELENS_MOVIES_HEADER = ("movieId", "title", "genres")
TAOBAO_FIELDS = ("user_id", "item_id", "category_id", "behavior", "timestamp")
TAOBAO_PV = datasets.TAOBAO.behaviors[0]  # "pv": the event that makes an example row

GENRE_SEPARATOR = "|"
# "(1995)", "(2007-)", "(1975-1979)" at the end of a title; the first year counts.
_TITLE_YEAR = re.compile(r"\((\d{4})(?:-(?:\d{4})?)?\)\s*$")


class Interaction(NamedTuple):
    """One parsed interaction-log row.

    Attributes:
      user_id: the user id, as written in the file.
      item_id: the item id, as written in the file.
      timestamp: unix seconds.
      behavior: the history behavior of the row (MovieLens: `rating_behavior`
        of the rating; Taobao: pv/cart/fav/buy).
      rating: MovieLens explicit rating, None for Taobao.
      category: Taobao category id of the item, None for MovieLens.
      file: the file the row came from.
      line: 1-based line number of the row in that file.
    """

    user_id: str
    item_id: str
    timestamp: int
    behavior: str
    rating: Optional[float]
    category: Optional[str]
    file: str
    line: int


class ItemMeta(NamedTuple):
    """Item metadata written on every example of the item.

    Attributes:
      genres: MovieLens genres or the Taobao category, at least one.
      year: MovieLens release year from the title, None when the title has none.
    """

    genres: Tuple[str, ...]
    year: Optional[int]


class BadRow(NamedTuple):
    """A row that was dropped, with where it is and why."""

    reason: str
    file: str
    line: int
    message: str

    def describe(self) -> str:
        """`file:line: message`, the form used in reports and errors."""
        return f"{self.file}:{self.line}: {self.message}"


class RowError(ValueError):
    """Raised by a row parser; carries the bad-row reason."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def id_sort_key(value: str) -> Tuple[int, int, str]:
    """Orders ids numerically when they are all digits, other ids after them as strings."""
    if value.isascii() and value.isdigit():
        return (0, int(value), value)
    return (1, 0, value)


def parse_title_year(title: str) -> Optional[int]:
    """The year in the trailing parentheses of a MovieLens title, or None.

    Args:
      title: e.g. "Toy Story (1995)", "Big Bang Theory, The (2007-)", "Fawlty Towers (1975-1979)".
    """
    match = _TITLE_YEAR.search(title)
    return int(match.group(1)) if match else None


def _id(value: str, name: str) -> str:
    value = value.strip()
    if not value:
        raise RowError(EMPTY_ID, f"{name} is empty")
    return value


def _int(value: str, name: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise RowError(UNPARSABLE_NUMBER, f"{name} {value!r} is not an integer") from None


def _check_count(fields: Sequence[str], names: Sequence[str]) -> None:
    if len(fields) != len(names):
        raise RowError(
            WRONG_FIELD_COUNT,
            f"expected {len(names)} fields ({','.join(names)}), got {len(fields)}: {','.join(fields)!r}")


def parse_movielens_rating(fields: Sequence[str], file: str, line: int) -> Interaction:
    """Parses a `userId,movieId,rating,timestamp` row; raises RowError when it is bad.

    Args:
      fields: the csv fields of the row.
      file: the file name, kept on the result.
      line: the row's line number, kept on the result.
    """
    _check_count(fields, MOVIELENS_RATINGS_HEADER)
    user_id = _id(fields[0], "userId")
    item_id = _id(fields[1], "movieId")
    try:
        rating = float(fields[2].strip())
    except ValueError:
        raise RowError(UNPARSABLE_NUMBER, f"rating {fields[2]!r} is not a number") from None
    timestamp = _int(fields[3], "timestamp")
    if math.isnan(rating) or not features.MIN_RATING <= rating <= features.MAX_RATING:
        raise RowError(
            RATING_OUT_OF_RANGE,
            f"rating {fields[2]!r} outside {features.MIN_RATING}..{features.MAX_RATING}")
    return Interaction(user_id, item_id, timestamp, datasets.rating_behavior(rating), rating, None, file, line)


def parse_taobao_event(fields: Sequence[str], file: str, line: int) -> Interaction:
    """Parses a `user_id,item_id,category_id,behavior,timestamp` row; raises RowError when it is bad.

    Args:
      fields: the csv fields of the row.
      file: the file name, kept on the result.
      line: the row's line number, kept on the result.
    """
    _check_count(fields, TAOBAO_FIELDS)
    user_id = _id(fields[0], "user_id")
    item_id = _id(fields[1], "item_id")
    category = _id(fields[2], "category_id")
    behavior = fields[3].strip()
    timestamp = _int(fields[4], "timestamp")
    if behavior not in datasets.TAOBAO.behaviors:
        raise RowError(
            UNKNOWN_BEHAVIOR, f"behavior {fields[3]!r} is not one of {list(datasets.TAOBAO.behaviors)}")
    return Interaction(user_id, item_id, timestamp, behavior, None, category, file, line)


def parse_movielens_movie(fields: Sequence[str]) -> Tuple[str, ItemMeta]:
    """Parses a `movieId,title,genres` row into (movie id, metadata); raises RowError when it is bad.

    Args:
      fields: the csv fields of the row.
    """
    if len(fields) != len(MOVIELENS_MOVIES_HEADER):
        raise RowError(
            BAD_METADATA_ROW,
            f"expected {len(MOVIELENS_MOVIES_HEADER)} fields ({','.join(MOVIELENS_MOVIES_HEADER)}), "
            f"got {len(fields)}: {','.join(fields)!r}")
    item_id = fields[0].strip()
    if not item_id:
        raise RowError(BAD_METADATA_ROW, "movieId is empty")
    genres = tuple(g.strip() for g in fields[2].split(GENRE_SEPARATOR) if g.strip())
    if not genres:
        raise RowError(BAD_METADATA_ROW, f"movie {item_id} has no genres")
    return item_id, ItemMeta(genres, parse_title_year(fields[1]))


_INTERACTION_PARSERS = {
    datasets.MOVIELENS.name: (MOVIELENS_RATINGS_HEADER, parse_movielens_rating),
    datasets.TAOBAO.name: (None, parse_taobao_event),
}


def _check_file(path: str) -> None:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"input file not found: {path}")


def _physical_lines(f: BinaryIO) -> Iterator[Tuple[bytes, bool]]:
    """(line, too_long) per line; a line longer than MAX_RECORD_BYTES is skipped to its end, not read."""
    while True:
        line = f.readline(MAX_RECORD_BYTES + 1)
        if not line:
            return
        if len(line) > MAX_RECORD_BYTES and not line.endswith(b"\n"):
            while True:  # drain the rest of the line without holding it
                rest = f.readline(MAX_RECORD_BYTES)
                if not rest or rest.endswith(b"\n"):
                    break
            yield b"", True
        else:
            yield line, False


def _decode(line: bytes) -> str:
    """UTF-8 text of one line; RowError(BAD_ENCODING) naming the first bad byte."""
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RowError(
            BAD_ENCODING,
            f"not UTF-8: byte 0x{line[e.start]:02x} at column {e.start + 1}; the file must be saved as UTF-8",
        ) from None


def _split(text: str) -> List[str]:
    """The csv fields of one record's text; RowError(UNREADABLE_ROW) when the csv module cannot read it."""
    if "\x00" in text:
        raise RowError(UNREADABLE_ROW, "the row holds a NUL byte (binary data in a text file?)")
    try:
        rows = list(csv.reader([text], strict=True))
    except csv.Error as e:
        if "unexpected end of data" in str(e):
            raise RowError(UNREADABLE_ROW, "a quoted field is not closed on its line") from None
        raise RowError(UNREADABLE_ROW, f"unreadable csv: {e}") from None
    if len(rows) != 1:
        raise RowError(UNREADABLE_ROW, f"one line read as {len(rows)} csv rows")
    return rows[0]


def _records(f: BinaryIO) -> Iterator[Tuple[int, Union[List[str], RowError]]]:
    """(line number, fields or the RowError of the line) per non-blank line: one record per line."""
    for line_no, (raw, too_long) in enumerate(_physical_lines(f), start=1):
        if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]  # a UTF-8 byte-order mark
        try:
            if too_long:
                raise RowError(UNREADABLE_ROW, f"the line is longer than {MAX_RECORD_BYTES} bytes")
            text = _decode(raw)
            if not text.strip():
                continue
            yield line_no, _split(text)
        except RowError as e:
            yield line_no, e


def _iter_csv(path: str, header: Optional[Sequence[str]]) -> Iterator[Tuple[int, Union[List[str], RowError]]]:
    """Yields (first line number, fields or RowError) per non-blank record after the header.

    With a header, its columns may come in any order; fields are returned in the order
    of `header`. A missing or different header is a ValueError naming the file and line.
    """
    _check_file(path)
    with open(path, "rb") as f:
        records = _records(f)
        order: Optional[List[int]] = None
        if header is not None:
            first = next(records, None)
            expected = ",".join(header)
            if first is None:
                raise ValueError(f"{path}:1: the file is empty; expected a header {expected!r} and rows")
            line, fields = first
            if isinstance(fields, RowError):
                raise ValueError(f"{path}:{line}: expected header {expected!r}; the line is unreadable: {fields}")
            names = [v.strip() for v in fields]
            if names != list(header):
                if sorted(names) != sorted(header):
                    raise ValueError(f"{path}:{line}: expected header {expected!r}, got {','.join(fields)!r}")
                order = [names.index(name) for name in header]  # the same columns, shuffled
        for line, fields in records:
            if order is not None and not isinstance(fields, RowError) and len(fields) == len(order):
                fields = [fields[i] for i in order]
            yield line, fields


def read_interactions(path: str, dataset: str) -> Iterator[Union[Interaction, BadRow]]:
    """Parses an interaction log, yielding an Interaction or a BadRow per record.

    Args:
      path: the log file (MovieLens ratings.csv with header, Taobao rows without).
      dataset: `movielens` or `taobao`.
    """
    header, parse = _INTERACTION_PARSERS[datasets.dataset_spec(dataset).name]
    for line, fields in _iter_csv(path, header):
        try:
            if isinstance(fields, RowError):
                raise fields
            yield parse(fields, path, line)
        except RowError as e:
            yield BadRow(e.reason, path, line, str(e))


def read_items(path: str, dataset: str) -> Iterator[Union[Tuple[str, ItemMeta], BadRow]]:
    """Parses an item table, yielding (item id, ItemMeta) or a BadRow per record.

    A repeated item id is a bad row (the first definition is kept).

    Args:
      path: the item table (MovieLens movies.csv with header).
      dataset: the dataset; only `movielens` has an item table.
    """
    if datasets.dataset_spec(dataset).name != datasets.MOVIELENS.name:
        raise ValueError(f"dataset {dataset!r} has no item table")
    seen: Dict[str, int] = {}
    for line, fields in _iter_csv(path, MOVIELENS_MOVIES_HEADER):
        try:
            if isinstance(fields, RowError):
                raise fields
            item_id, meta = parse_movielens_movie(fields)
        except RowError as e:
            yield BadRow(e.reason, path, line, str(e))
            continue
        if item_id in seen:
            yield BadRow(BAD_METADATA_ROW, path, line,
                         f"movie {item_id} already defined on line {seen[item_id]}")
            continue
        seen[item_id] = line
        yield item_id, meta


def taobao_item_meta(category: str) -> ItemMeta:
    """Item metadata of a Taobao item: its category as the only genre."""
    return ItemMeta((category,), None)
