"""Row parsers of the interaction log and the side tables, as a dataset description declares them.

`readers` gives each record's values (field texts, JSON or Parquet values); this module
turns them into an `Interaction` or a side-table row, or a `BadRow` with the file, the
line and why. Values are read per the description: ids (empty: bad row), the time
(seconds or milliseconds to unix seconds, ISO 8601 to unix seconds UTC), the rating
(a number within its declared scale), the behavior (a behavior column's value must be
in the declared vocabulary; or the rating's bin; or the one behavior), and typed columns
(categorical, multi_categorical split by its separator keeping the first `max_values`,
numeric through an optional pattern with an int or float dtype and a declared range,
time, text). A `required` feature without a value is a bad row; a repeated side-table
key is a bad row and the first definition is kept.

Everything here is plain Python so it can be tested without Beam.
"""

from __future__ import annotations

import datetime
import math
import re
from typing import Any, Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

from components.example_gen import readers
from components.example_gen.readers import BAD_ENCODING, UNREADABLE_ROW, WRONG_FIELD_COUNT, RowError
from contract import description as desc

# Bad-row reasons (readers adds bad_encoding, unreadable_row, wrong_field_count).
UNPARSABLE_NUMBER = "unparsable_number"
UNPARSABLE_TIME = "unparsable_time"
RATING_OUT_OF_RANGE = "rating_out_of_range"
OUT_OF_RANGE = "out_of_range"
UNKNOWN_BEHAVIOR = "unknown_behavior"
EMPTY_ID = "empty_id"
MISSING_VALUE = "missing_value"
MISSING_ITEM_METADATA = "missing_item_metadata"
MISSING_USER_METADATA = "missing_user_metadata"
BAD_METADATA_ROW = "bad_metadata_row"

__all__ = [
    "BAD_ENCODING", "UNREADABLE_ROW", "WRONG_FIELD_COUNT", "RowError", "BadRow", "Interaction",
    "InteractionParser", "TableParser", "read_interactions", "read_table", "feature_dict", "id_sort_key",
]

# Side tables.
ITEMS, USERS = "items", "users"


class Interaction(NamedTuple):
    """One parsed interaction-log row.

    Attributes:
      user_id: the user id, as written in the file.
      item_id: the item id, as written in the file.
      timestamp: unix seconds.
      behavior: the row's behavior (its behavior column, its rating's bin, or the one
        behavior of the description).
      rating: the rating, None when the description has none.
      columns: the values of the description's interaction columns, in declared order
        (None: missing; multi_categorical: a tuple).
      item_values: `items.from_interactions`: the values of the item features on this row,
        in declared order; otherwise ().
      file: the file the row came from.
      line: 1-based line (Parquet: row) number of the row in that file.
    """

    user_id: str
    item_id: str
    timestamp: int
    behavior: str
    rating: Optional[float]
    columns: tuple
    item_values: tuple
    file: str
    line: int


class BadRow(NamedTuple):
    """A row that was dropped, with where it is and why."""

    reason: str
    file: str
    line: int
    message: str

    def describe(self) -> str:
        """`file:line: message`, the form used in reports and errors."""
        return f"{self.file}:{self.line}: {self.message}"


def id_sort_key(value: str) -> Tuple[int, int, str]:
    """Orders ids numerically when they are all digits, other ids after them as strings."""
    if value.isascii() and value.isdigit():
        return (0, int(value), value)
    return (1, 0, value)


# ----------------------------------------------------------------------------------------
# Values
# ----------------------------------------------------------------------------------------
def as_text(value: Any) -> str:
    """A value as text, stripped ('' for None); whole floats without their '.0' (JSON ids)."""
    if value.__class__ is str:
        return value.strip()
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace").strip()
    return str(value).strip()


def as_number(value: Any) -> Optional[float]:
    """A number from text or a stored number; None for an empty value; ValueError otherwise."""
    if value.__class__ is str:
        value = value.strip()
        return float(value) if value else None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(value)
    return value


def _as_int(value: float) -> int:
    if isinstance(value, int):
        return value
    if not value.is_integer():
        raise ValueError(value)
    return int(value)


def to_seconds(value: Any, unit: str) -> Optional[int]:
    """Unix seconds of a time value: a number of seconds or milliseconds (floored), ISO 8601
    text (UTC unless it names its offset), or a stored datetime; None for an empty value;
    ValueError when it is none of these."""
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return math.floor(value.timestamp())
    if isinstance(value, datetime.date):
        return to_seconds(datetime.datetime(value.year, value.month, value.day), unit)
    if unit == desc.ISO8601:
        text = as_text(value)
        if not text:
            return None
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        return to_seconds(datetime.datetime.fromisoformat(text), unit)
    if value.__class__ is str:
        try:
            number: Union[int, float] = int(value)
        except ValueError:
            if not value.strip():
                return None
            number = float(value)
    elif value is None:
        return None
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(value)
    else:
        number = value
    if isinstance(number, float) and not math.isfinite(number):
        raise ValueError(value)
    if unit == desc.MILLISECONDS:
        return number // 1000 if isinstance(number, int) else math.floor(number / 1000)
    return number if isinstance(number, int) else math.floor(number)


class FeatureParser:
    """Reads the value of one typed column (a side-table feature or an interaction column).

    Args:
      feature: the feature as the description declares it.
      where: its description key (named in errors), e.g. items.features.genres.
    """

    def __init__(self, feature: desc.Feature, where: str):
        self.feature = feature
        self.where = where
        self.pattern = re.compile(feature.pattern) if feature.pattern else None

    def parse(self, value: Any) -> Any:
        """The value (str, tuple of str, int or float), None when missing; RowError when it
        is unreadable, out of its range, or missing and required."""
        f = self.feature
        try:
            out = getattr(self, "_" + f.type)(value)
        except RowError:
            raise
        except (ValueError, TypeError, OverflowError):
            kind = {desc.NUMERIC: f"an {f.dtype}" if f.dtype == "int" else "a number",
                    desc.TIME: f"a time ({f.unit})"}.get(f.type, "readable")
            reason = UNPARSABLE_TIME if f.type == desc.TIME else UNPARSABLE_NUMBER
            raise RowError(reason, f"{f.column} {value!r} is not {kind} ({self.where})") from None
        if out is None and f.required:
            raise RowError(MISSING_VALUE, f"{f.column} is empty ({self.where} is required)")
        return out

    def _categorical(self, value):
        return as_text(value) or None

    def _multi_categorical(self, value):
        if isinstance(value, (list, tuple)):
            parts = [as_text(v) for v in value]
        else:
            text = value if value.__class__ is str else as_text(value)
            parts = [p.strip() for p in text.split(self.feature.separator)]
        parts = [p for p in parts if p][: self.feature.max_values]
        return tuple(parts) or None

    def _numeric(self, value):
        f = self.feature
        raw = value
        if self.pattern is not None:
            match = self.pattern.search(value if value.__class__ is str else as_text(value))
            if match is None or match.group(1) is None:
                return None
            value = match.group(1)
        number = as_number(value)
        if number is None:
            return None
        if isinstance(number, float) and not math.isfinite(number):
            raise ValueError(value)
        number = _as_int(number) if f.dtype == "int" else float(number)
        if (f.minimum is not None and number < f.minimum) or (f.maximum is not None and number > f.maximum):
            low = "" if f.minimum is None else f.minimum
            high = "" if f.maximum is None else f.maximum
            what = f"{raw!r}: {number}" if self.pattern is not None else repr(raw)
            raise RowError(OUT_OF_RANGE, f"{f.column} {what} is outside {low}..{high} ({self.where})")
        return number

    def _time(self, value):
        return to_seconds(value, self.feature.unit)

    def _text(self, value):
        text = value.strip() if value.__class__ is str else as_text(value)
        return text or None


def feature_dict(features: Sequence[desc.Feature], values: Sequence[Any]) -> Dict[str, list]:
    """Raw feature name -> list of values of the present ones (a multi_categorical value
    is its list of values; anything else one value)."""
    out: Dict[str, list] = {}
    for f, v in zip(features, values):
        if v is not None:
            out[f.raw_name] = list(v) if f.type == desc.MULTI_CATEGORICAL else [v]
    return out


class _Columns:
    """The columns a parser reads from a file, each once, with the description key of each."""

    def __init__(self):
        self.names: List[str] = []
        self.where: List[str] = []

    def add(self, column: str, where: str) -> int:
        if column not in self.names:
            self.names.append(column)
            self.where.append(where)
        return self.names.index(column)


# ----------------------------------------------------------------------------------------
# Interactions
# ----------------------------------------------------------------------------------------
class InteractionParser:
    """Turns the values of one interaction record into an `Interaction` (RowError when bad).

    Args:
      d: the description.
    """

    def __init__(self, d: desc.Description):
        self.d = d
        cols = _Columns()
        self._user = cols.add(d.user, "interactions.user")
        self._item = cols.add(d.item, "interactions.item")
        self._time = cols.add(d.time, "interactions.time")
        self._rating = cols.add(d.rating, "interactions.rating") if d.rating else None
        self._behavior = cols.add(d.behavior_column, "interactions.behavior.column") if d.behavior_column else None
        self._columns = [(cols.add(c.column, f"interactions.columns.{c.name}"),
                          FeatureParser(c, f"interactions.columns.{c.name}")) for c in d.columns]
        self._item_features = []
        if d.items_from_interactions:
            self._item_features = [(cols.add(f.column, f"items.features.{f.name}"),
                                    FeatureParser(f, f"items.features.{f.name}")) for f in d.item_features]
        self.columns = cols.names
        self.where = cols.where
        self._vocabulary = frozenset(d.behaviors)
        self._single = d.behaviors[0] if not d.behavior_column and not d.behavior_bins else ""
        self._bins: Dict[float, str] = {}
        self._seconds = d.time_unit == desc.SECONDS
        low, high = d.rating_min, d.rating_max
        self._scale = f"{'' if low is None else low}..{'' if high is None else high}"
        self._low = -math.inf if low is None else low
        self._high = math.inf if high is None else high

    def parse(self, values: Sequence[Any], file: str, line: int) -> Interaction:
        """The interaction of one record's values (in the order of `columns`); RowError when bad."""
        d = self.d
        user_id = values[self._user]
        user_id = user_id.strip() if user_id.__class__ is str else as_text(user_id)
        if not user_id:
            raise RowError(EMPTY_ID, f"{d.user} is empty")
        item_id = values[self._item]
        item_id = item_id.strip() if item_id.__class__ is str else as_text(item_id)
        if not item_id:
            raise RowError(EMPTY_ID, f"{d.item} is empty")
        raw_time = values[self._time]
        timestamp = None
        if self._seconds and raw_time.__class__ is str:
            try:
                timestamp = int(raw_time)
            except ValueError:
                pass
        if timestamp is None:
            try:
                timestamp = to_seconds(raw_time, d.time_unit)
            except (ValueError, TypeError, OverflowError):
                pass
            if timestamp is None:
                raise RowError(UNPARSABLE_TIME, f"{d.time} {raw_time!r} is not a time ({d.time_unit})")
        rating = None
        if self._rating is not None:
            raw = values[self._rating]
            try:
                rating = float(raw) if raw.__class__ is str else as_number(raw)
            except (ValueError, TypeError):
                rating = None
            if rating is None:
                raise RowError(UNPARSABLE_NUMBER, f"{d.rating} {raw!r} is not a number")
            rating = float(rating)
            if not self._low <= rating <= self._high:  # NaN fails both comparisons
                raise RowError(RATING_OUT_OF_RANGE, f"{d.rating} {raw!r} outside {self._scale}")
        if self._behavior is not None:
            raw = values[self._behavior]
            behavior = as_text(raw)
            if behavior not in self._vocabulary:
                raise RowError(UNKNOWN_BEHAVIOR, f"{d.behavior_column} {raw!r} is not one of the declared "
                                                 f"behaviors {list(d.behaviors)}")
        elif self._single:
            behavior = self._single
        else:
            behavior = self._bins.get(rating)
            if behavior is None:
                behavior = self._bins[rating] = d.rating_behavior(rating)
        columns = tuple(parser.parse(values[i]) for i, parser in self._columns) if self._columns else ()
        item_values = tuple(parser.parse(values[i]) for i, parser in self._item_features) \
            if self._item_features else ()
        return Interaction(user_id, item_id, timestamp, behavior, rating, columns, item_values, file, line)


def read_interactions(path: str, d: desc.Description,
                      parser: Optional[InteractionParser] = None) -> Iterator[Union[Interaction, BadRow]]:
    """Parses one interaction file, yielding an Interaction or a BadRow per record.

    Args:
      path: the file.
      d: the description (its `interactions` source and columns).
      parser: a parser of `d` to reuse.
    """
    parser = parser or InteractionParser(d)
    parse = parser.parse
    for line, values in readers.read_records(path, d.interactions, parser.columns, parser.where):
        if values.__class__ is RowError:
            yield BadRow(values.reason, path, line, str(values))
            continue
        try:
            yield parse(values, path, line)
        except RowError as e:
            yield BadRow(e.reason, path, line, str(e))


# ----------------------------------------------------------------------------------------
# Side tables
# ----------------------------------------------------------------------------------------
class TableParser:
    """Turns the values of one side-table record into (key, feature values); RowError when bad.

    Args:
      d: the description.
      side: `items` or `users`.
    """

    def __init__(self, d: desc.Description, side: str):
        self.side = side
        self.source = d.items if side == ITEMS else d.users
        if self.source is None:
            raise ValueError(f"{d.name}: the description declares no {side} table")
        self.key = d.item_key if side == ITEMS else d.user_key
        self.features = d.item_features if side == ITEMS else d.user_features
        cols = _Columns()
        self._key = cols.add(self.key, f"{side}.key")
        self._features = [(cols.add(f.column, f"{side}.features.{f.name}"),
                           FeatureParser(f, f"{side}.features.{f.name}")) for f in self.features]
        self.columns = cols.names
        self.where = cols.where

    def parse(self, values: Sequence[Any]) -> Tuple[str, tuple]:
        key = as_text(values[self._key])
        if not key:
            raise RowError(BAD_METADATA_ROW, f"{self.key} is empty")
        try:
            return key, tuple(parser.parse(values[i]) for i, parser in self._features)
        except RowError as e:
            raise RowError(BAD_METADATA_ROW, f"{self.side[:-1]} {key}: {e}") from None


def read_table(paths: Sequence[str], d: desc.Description, side: str) -> Iterator[Union[Tuple[str, tuple], BadRow]]:
    """Parses a side table's files in order, yielding (key, feature values) or a BadRow per record.

    A key defined again (in the same or a later file) is a bad row; the first definition
    is kept.

    Args:
      paths: the table's files.
      d: the description.
      side: `items` or `users`.
    """
    parser = TableParser(d, side)
    seen: Dict[str, Tuple[str, int]] = {}
    for path in paths:
        for line, values in readers.read_records(path, parser.source, parser.columns, parser.where):
            try:
                if values.__class__ is RowError:
                    raise values
                key, parsed = parser.parse(values)
            except RowError as e:
                yield BadRow(e.reason, path, line, str(e))
                continue
            if key in seen:
                first_file, first_line = seen[key]
                at = f"line {first_line}" if first_file == path else f"{first_file}:{first_line}"
                yield BadRow(BAD_METADATA_ROW, path, line, f"{side[:-1]} {key} already defined on {at}")
                continue
            seen[key] = (path, line)
            yield key, parsed


def table_dict(rows: Iterable[Tuple[str, tuple]], features: Sequence[desc.Feature]) -> Dict[str, Dict[str, list]]:
    """key -> raw feature dict (see `feature_dict`) of parsed side-table rows."""
    return {key: feature_dict(features, values) for key, values in rows}
