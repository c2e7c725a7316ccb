"""Record readers for the files a dataset description names: CSV / TSV, JSON lines, Parquet.

A reader turns one file into (line, values) records, where values are those of the
columns asked for, in the order asked for, or a `RowError` saying why the record could
not be read. Every record is one or the other, never the end of the file:

- CSV / TSV: read as bytes, one physical line at a time, in the declared encoding. A
  line without the quote character is split on the delimiter directly; one with it goes
  through the `csv` module, and a quoted field may hold delimiters, doubled quotes and
  line breaks (the record then spans lines; its line number is the line it starts on).
  CRLF line ends and a UTF-8 byte-order mark are read as usual; blank lines are skipped
  (they still count in the numbering). A line that cannot be read (bad encoding, a NUL
  byte, longer than MAX_RECORD_BYTES, a quote that is never closed) is one bad record,
  and reading goes on at the next line: a quoted field that runs over several lines is
  only taken when it closes into a record with the header's number of fields; otherwise
  its first line is the bad record and the following lines are read again on their own.
  With a header the columns are found by name (any order, extra columns ignored);
  without one, by the description's `csv.columns`.
- JSON lines: one object per line; its values by key (an absent key: a missing value).
- Parquet: one record per row, numbered from 1 (the row's index in the file).

A column the description declares but a file does not have is a ValueError naming the
file, its columns and the closest column name.
"""

from __future__ import annotations

import codecs
import csv
import glob
import json
import os
from typing import BinaryIO, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from contract import description as desc

# Reasons of records that cannot be read (parsing adds the reasons of bad values).
BAD_ENCODING = "bad_encoding"
UNREADABLE_ROW = "unreadable_row"
WRONG_FIELD_COUNT = "wrong_field_count"

MAX_RECORD_BYTES = 64 * 1024  # a longer record is a bad row (real rows are < 1 KiB; reviews < 40 KiB)
JSON_HEADER_RECORDS = 1000  # the columns of a JSON lines file: the keys of its first records

_UTF8_BOM = b"\xef\xbb\xbf"
_GLOB_CHARS = frozenset("*?[")

Record = Tuple[int, Union[tuple, "RowError"]]


class RowError(ValueError):
    """A record or value that cannot be used; carries the bad-row reason."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


# ----------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------
def expand_files(source: desc.Source, data_dir: str, kind: str) -> List[str]:
    """The files of a table: each path or glob of `source.files` under `data_dir`, in order
    (a glob's matches sorted); FileNotFoundError naming a path or pattern that finds nothing.

    Args:
      source: the table's source in the description.
      data_dir: the directory the paths are relative to.
      kind: interactions, items or users (named in the error).
    """
    out: List[str] = []
    for pattern in source.files:
        path = os.path.join(data_dir, pattern)
        if _GLOB_CHARS & set(pattern):
            matches = sorted(p for p in glob.glob(path, recursive=True) if os.path.isfile(p))
            if not matches:
                raise FileNotFoundError(f"{kind} files: nothing matches {pattern!r} in {data_dir}")
            out.extend(matches)
        elif not os.path.isfile(path):
            raise FileNotFoundError(f"{kind} file not found: {path}")
        else:
            out.append(path)
    return list(dict.fromkeys(out))


def check_encoding(source: desc.Source, where: str) -> None:
    """ValueError unless the text encoding is known and writes a line break as the byte
    0x0a (utf-8, latin-1, cp1252, gbk, ...: the files are read one line at a time)."""
    if source.format == desc.PARQUET:
        return
    try:
        codecs.lookup(source.encoding)
    except LookupError:
        raise ValueError(f"{where}: unknown encoding {source.encoding!r} (e.g. utf-8, latin-1, cp1252)") from None
    sample = f"\n\r{source.delimiter}{source.quotechar}{{}}:"
    if sample.encode(source.encoding, errors="replace") != sample.encode("ascii", errors="replace"):
        raise ValueError(f"{where}: encoding {source.encoding!r} does not write a line break as one byte 0x0a; "
                         f"convert the file (e.g. iconv -f {source.encoding} -t UTF-8) and declare utf-8")


def _is_utf8(encoding: str) -> bool:
    return codecs.lookup(encoding).name in ("utf-8", "utf-8-sig")


def missing_column(path: str, column: str, where: str, header: Sequence[str], line: Optional[int] = None) -> ValueError:
    """The error of a declared column that a file does not have: the file, the column, what
    declared it, the closest column name and the file's columns."""
    at = f"{path}:{line}" if line is not None else path
    return ValueError(f"{at}: no column {column!r} ({where}){desc.closest(column, header)}; "
                      f"the file's columns: {', '.join(map(str, header)) or '(none)'}")


# ----------------------------------------------------------------------------------------
# Physical lines
# ----------------------------------------------------------------------------------------
class _Lines:
    """The numbered physical lines of a binary file; lines read ahead can be pushed back."""

    def __init__(self, f: BinaryIO):
        self._f = f
        self._back: List[Tuple[int, bytes, bool]] = []
        self._number = 0

    def next(self) -> Optional[Tuple[int, bytes, bool]]:
        """(line number, bytes, too long) of the next line, None at the end; a line longer
        than MAX_RECORD_BYTES is skipped to its end, not held."""
        if self._back:
            return self._back.pop()
        line = self._f.readline(MAX_RECORD_BYTES + 1)
        if not line:
            return None
        self._number += 1
        if len(line) > MAX_RECORD_BYTES and not line.endswith(b"\n"):
            while True:  # drain the rest of the line
                rest = self._f.readline(MAX_RECORD_BYTES)
                if not rest or rest.endswith(b"\n"):
                    break
            return self._number, b"", True
        return self._number, line, False

    def push_back(self, lines: Sequence[Tuple[int, bytes, bool]]) -> None:
        self._back.extend(reversed(lines))


def _decode(line: bytes, encoding: str) -> str:
    try:
        return line.decode(encoding)
    except UnicodeDecodeError as e:
        name = "UTF-8" if _is_utf8(encoding) else encoding
        raise RowError(
            BAD_ENCODING,
            f"not {name}: byte 0x{line[e.start]:02x} at column {e.start + 1}; the file must be saved as {name} "
            f"(or its csv.encoding declared)",
        ) from None


def _too_long() -> RowError:
    return RowError(UNREADABLE_ROW, f"the line is longer than {MAX_RECORD_BYTES} bytes")


def _body(text: str) -> str:
    if text.endswith("\n"):
        text = text[:-1]
    return text[:-1] if text.endswith("\r") else text


# ----------------------------------------------------------------------------------------
# CSV / TSV
# ----------------------------------------------------------------------------------------
def _line_text(number: int, raw: bytes, too_long: bool, encoding: str, strip_bom: bool) -> Union[str, RowError]:
    """A physical line's text (the first line without a UTF-8 byte order mark), or the RowError
    of a line too long or not in `encoding`."""
    if number == 1 and strip_bom and raw.startswith(_UTF8_BOM):
        raw = raw[3:]
    if too_long:
        return _too_long()
    try:
        return _decode(raw, encoding)
    except RowError as e:
        return e


def _csv_records(f: BinaryIO, source: desc.Source,
                 width: Optional[int]) -> Iterator[Tuple[int, Union[List[str], RowError]]]:
    """(first line, fields or RowError) per non-blank record; `width` (when known) is the
    number of fields a record must have for a multi-line quoted field to be taken."""
    encoding, delimiter, quotechar = source.encoding, source.delimiter, source.quotechar
    strip_bom = _is_utf8(encoding)
    lines = _Lines(f)
    while True:
        item = lines.next()
        if item is None:
            return
        number, raw, too_long = item
        text = _line_text(number, raw, too_long, encoding, strip_bom)
        if isinstance(text, RowError):
            yield number, text
            continue
        body = _body(text)
        if not body.strip():
            continue
        if "\x00" in body:
            yield number, RowError(UNREADABLE_ROW, "the row holds a NUL byte (binary data in a text file?)")
            continue
        if quotechar not in body and "\r" not in body:
            yield number, body.split(delimiter)
            continue
        yield number, _quoted_record(lines, number, raw, text, source, width)


def _quoted_record(lines: _Lines, number: int, raw: bytes, text: str, source: desc.Source,
                   width: Optional[int]) -> Union[List[str], RowError]:
    """The fields of a record whose first line holds the quote character (it may go on over
    the next lines); a RowError when it cannot be read, the lines after its first pushed back."""
    consumed: List[Tuple[int, bytes, bool]] = []
    size = [len(raw)]

    def feed():
        yield text
        while True:
            nxt = lines.next()
            if nxt is None:
                return
            consumed.append(nxt)
            _, more, too_long = nxt
            size[0] += len(more)
            if too_long or size[0] > MAX_RECORD_BYTES:
                return
            try:
                decoded = more.decode(source.encoding)
            except UnicodeDecodeError:
                return
            if "\x00" in decoded:
                return
            yield decoded

    reader = csv.reader(feed(), delimiter=source.delimiter, quotechar=source.quotechar, strict=True)
    error: Optional[str] = None
    fields: List[str] = []
    try:
        fields = next(reader)
    except csv.Error as e:
        error = str(e)
    except StopIteration:  # pragma: no cover - the first line is not blank
        error = "no fields"
    if not consumed:
        if error is None:
            return fields
        if "unexpected end of data" in error:
            return RowError(UNREADABLE_ROW, "a quoted field is not closed on its line")
        return RowError(UNREADABLE_ROW, f"unreadable csv: {error}")
    if error is None and (width is None or len(fields) == width):
        return fields
    lines.push_back(consumed)
    if error is None:
        why = f"it would make a record of {len(fields)} fields, not {width}"
    elif size[0] > MAX_RECORD_BYTES:
        why = f"no closing quote within {MAX_RECORD_BYTES} bytes"
    elif "unexpected end of data" in error:
        why = "no closing quote follows"
    else:
        why = f"the csv after it is unreadable ({error})"
    return RowError(UNREADABLE_ROW, f"a quoted field is not closed on its line ({why}); "
                                    f"the next lines are read on their own")


def _csv_header(path: str, source: desc.Source) -> Tuple[List[str], int]:
    """(the column names, the header's line) of a CSV / TSV file; (declared columns, 0)
    without a header. ValueError naming the file for an empty file or unreadable header."""
    if not source.header:
        return list(source.columns), 0
    with open(path, "rb") as f:
        first = next(_csv_records(f, source, None), None)
    if first is None:
        raise ValueError(f"{path}:1: the file is empty; expected a header line naming its columns")
    line, fields = first
    if isinstance(fields, RowError):
        raise ValueError(f"{path}:{line}: the header line is unreadable: {fields}")
    return [v.strip() for v in fields], line


def _read_csv(path: str, source: desc.Source, columns: Sequence[str],
              where: Sequence[str]) -> Iterator[Record]:
    header, header_line = _csv_header(path, source)
    index = _indexes(path, header, columns, where, header_line or None)
    width = len(header)
    names = ",".join(header)
    pick = _picker(index)
    with open(path, "rb") as f:
        records = _csv_records(f, source, width)
        if source.header:
            next(records, None)
        for line, fields in records:
            if fields.__class__ is RowError:
                yield line, fields
            elif len(fields) != width:
                yield line, RowError(WRONG_FIELD_COUNT, f"expected {width} fields ({names}), got {len(fields)}: "
                                                        f"{source.delimiter.join(fields)!r}")
            else:
                yield line, pick(fields)


def _picker(index: Sequence[int]):
    """A function from a record's fields to the tuple of the fields at `index`."""
    if len(index) == 1:
        i = index[0]
        return lambda fields: (fields[i],)
    if list(index) == list(range(len(index))):
        return tuple
    import operator

    return operator.itemgetter(*index)


def _indexes(path: str, header: Sequence[str], columns: Sequence[str], where: Sequence[str],
             line: Optional[int]) -> List[int]:
    position = {}
    for i, name in enumerate(header):
        position.setdefault(name, i)
    out = []
    for column, key in zip(columns, where):
        if column not in position:
            raise missing_column(path, column, key, header, line)
        out.append(position[column])
    return out


# ----------------------------------------------------------------------------------------
# JSON lines
# ----------------------------------------------------------------------------------------
def _json_records(path: str, source: desc.Source) -> Iterator[Tuple[int, Union[dict, RowError]]]:
    strip_bom = _is_utf8(source.encoding)
    with open(path, "rb") as f:
        lines = _Lines(f)
        while True:
            item = lines.next()
            if item is None:
                return
            number, raw, too_long = item
            text = _line_text(number, raw, too_long, source.encoding, strip_bom)
            if isinstance(text, RowError):
                yield number, text
                continue
            if not text.strip():
                continue
            try:
                value = json.loads(text)
            except ValueError as e:
                yield number, RowError(UNREADABLE_ROW, f"not valid JSON: {e}")
                continue
            if not isinstance(value, dict):
                yield number, RowError(UNREADABLE_ROW, f"a JSON lines record is an object {{...}}, got "
                                                       f"{type(value).__name__}")
                continue
            yield number, value


def _json_header(path: str, source: desc.Source) -> List[str]:
    keys: Dict[str, None] = {}
    for n, (_, value) in enumerate(_json_records(path, source)):
        if n >= JSON_HEADER_RECORDS:
            break
        if isinstance(value, dict):
            keys.update(dict.fromkeys(value))
    return list(keys)


def _read_json(path: str, source: desc.Source, columns: Sequence[str]) -> Iterator[Record]:
    for line, value in _json_records(path, source):
        if value.__class__ is RowError:
            yield line, value
        else:
            yield line, tuple(value.get(c) for c in columns)


# ----------------------------------------------------------------------------------------
# Parquet
# ----------------------------------------------------------------------------------------
def _parquet_file(path: str):
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises its own error types for a file it cannot read
        raise ValueError(f"{path}: not a readable Parquet file: {e}") from None


def _read_parquet(path: str, columns: Sequence[str], where: Sequence[str]) -> Iterator[Record]:
    pf = _parquet_file(path)
    header = list(pf.schema_arrow.names)
    _indexes(path, header, columns, where, None)
    wanted = list(dict.fromkeys(columns))
    number = 0
    for batch in pf.iter_batches(batch_size=65536, columns=wanted):
        values = {name: batch.column(i).to_pylist() for i, name in enumerate(batch.schema.names)}
        for row in zip(*(values[c] for c in columns)):
            number += 1
            yield number, row


# ----------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------
def file_columns(path: str, source: desc.Source) -> List[str]:
    """The columns of one file: its CSV header (or the declared `csv.columns`), the keys of
    its first JSON objects, or its Parquet schema."""
    if source.format in (desc.CSV, desc.TSV):
        return _csv_header(path, source)[0]
    if source.format == desc.JSONL:
        return _json_header(path, source)
    return list(_parquet_file(path).schema_arrow.names)


def check_columns(path: str, source: desc.Source, columns: Sequence[str], where: Sequence[str]) -> None:
    """ValueError (see `missing_column`) when the file lacks one of `columns`."""
    line = None
    if source.format in (desc.CSV, desc.TSV):
        header, line = _csv_header(path, source)
    else:
        header = file_columns(path, source)
    _indexes(path, header, columns, where, line or None)


def read_records(path: str, source: desc.Source, columns: Sequence[str],
                 where: Optional[Sequence[str]] = None) -> Iterator[Record]:
    """(line or row number, values of `columns` in that order, or the RowError of the
    record) per record of one file.

    CSV / TSV values are the field texts; JSON and Parquet values are as stored (None for
    an absent key or a null).

    Args:
      path: the file.
      source: how to read it (format, delimiter, header, encoding, quote character).
      columns: the columns wanted.
      where: per column, the description key that declares it (named in errors).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"input file not found: {path}")
    where = list(where) if where is not None else ["declared"] * len(columns)
    if source.format in (desc.CSV, desc.TSV):
        return _read_csv(path, source, columns, where)
    if source.format == desc.JSONL:
        return _read_json(path, source, columns)
    return _read_parquet(path, columns, where)


def has_records(path: str, source: desc.Source) -> bool:
    """Whether the file holds at least one data record (readable or not) after its header."""
    if source.format == desc.PARQUET:
        return _parquet_file(path).metadata.num_rows > 0
    if source.format == desc.JSONL:
        return next(_json_records(path, source), None) is not None
    with open(path, "rb") as f:
        records = _csv_records(f, source, None)
        if source.header:
            next(records, None)
        return next(records, None) is not None
