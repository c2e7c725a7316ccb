"""Draft a dataset description from a sample of its files, for the user to check and edit.

    python -m components.example_gen.describe FILE [FILE...] [--items FILE] [--users FILE]
        [--rows N] [--out PATH] [--name NAME] [--force]

Reads the first `--rows` records of each file (CSV / TSV with the delimiter and the header
sniffed, JSON lines, Parquet), guesses each column's type (id-like, a time with its unit
from the values' magnitude or ISO 8601 text, a rating-like small numeric scale, a
behavior-like column of few distinct strings, categorical, multi-valued with a guessed
separator, numeric, free text by length) and the interaction columns' roles (user, item,
time, rating, behavior), and writes a description YAML that `contract.description` loads
as it is, with a `# CHECK` comment on every guess. The output is written atomically and
an existing file is kept unless --force.
"""

from __future__ import annotations

import argparse
import collections
import csv
import dataclasses
import datetime
import io
import json
import math
import os
import re
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from components.example_gen import readers
from contract import description as desc

DEFAULT_ROWS = 2000
SNIFF_BYTES = 64 * 1024
DELIMITERS = (",", "\t", ";", "|")
SEPARATORS = ("|", ";", ",", "/")

# Column-name hints of the roles (lower-cased substrings).
USER_HINTS = ("user", "customer", "reviewer", "member", "visitor", "client", "account", "buyer", "uid")
ITEM_HINTS = ("item", "product", "movie", "asin", "sku", "article", "song", "track", "book", "video", "iid", "offer")
TIME_HINTS = ("time", "date", "ts", "created", "when", "epoch")
RATING_HINTS = ("rating", "overall", "stars", "score", "grade")
BEHAVIOR_HINTS = ("behavior", "behaviour", "event", "action", "type", "interaction", "activity")

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"}
_YEAR_IN_PARENS = re.compile(r"\((\d{4})\)\s*$")
SECONDS_RANGE = (1e8, 5e9)  # 1973 .. 2128 in unix seconds
MILLISECONDS_RANGE = (1e11, 5e12)


# ----------------------------------------------------------------------------------------
# Reading a sample
# ----------------------------------------------------------------------------------------
class Sample:
    """The first rows of one file: how it is read and its columns' values.

    Attributes:
      path: the file.
      source: how to read it (a contract.description.Source with the sniffed settings).
      columns: the column names (from the header, or column_1.. without one).
      values: column -> the sampled values (text for CSV / TSV, as stored otherwise).
      rows: the number of records sampled.
      notes: what the sniffing decided, for the comments.
    """

    def __init__(self, path: str, source: desc.Source, columns: List[str], values: Dict[str, list], rows: int,
                 notes: List[str]):
        self.path, self.source, self.columns, self.values, self.rows, self.notes = (
            path, source, columns, values, rows, notes)


def _format_of(path: str) -> str:
    try:
        return desc.format_of([path], None, path)
    except desc.DescriptionError:
        return desc.CSV


def _sniff_text(path: str) -> Tuple[str, str]:
    """(encoding, the first SNIFF_BYTES as text) of a text file: utf-8 when it decodes, else latin-1."""
    with open(path, "rb") as f:
        raw = f.read(SNIFF_BYTES)
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    cut = raw.rfind(b"\n")
    if cut > 0 and len(raw) == SNIFF_BYTES:
        raw = raw[:cut + 1]  # whole lines only
    try:
        return "utf-8", raw.decode("utf-8")
    except UnicodeDecodeError:
        return "latin-1", raw.decode("latin-1")


def _sniff_delimiter(text: str, fmt: str) -> str:
    """The delimiter that splits the first lines into the same number (> 1) of fields."""
    if fmt == desc.TSV:
        return "\t"
    lines = [line for line in text.splitlines()[:50] if line.strip()]
    best, best_score = ",", (-1.0, 0)
    for delimiter in DELIMITERS:
        try:
            counts = [len(r) for r in csv.reader(io.StringIO("\n".join(lines)), delimiter=delimiter)]
        except csv.Error:
            continue
        if not counts:
            continue
        mode, seen = collections.Counter(counts).most_common(1)[0]
        if mode < 2:
            continue
        score = (seen / len(counts), mode)
        if score > best_score:
            best, best_score = delimiter, score
    return best


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _sniff_header(text: str, delimiter: str) -> bool:
    """Whether the first line names the columns: no number in it, while the next lines hold
    numbers in some column or never repeat its values."""
    rows = [r for r in csv.reader(io.StringIO(text), delimiter=delimiter) if r][:50]
    if len(rows) < 2:
        return bool(rows) and not any(_is_number(v) for v in rows[0])
    first, rest = rows[0], rows[1:]
    if any(_is_number(v.strip()) for v in first) or any(not v.strip() for v in first):
        return False
    if len(set(first)) != len(first):
        return False
    for i in range(len(first)):
        column = [r[i].strip() for r in rest if len(r) > i]
        if column and sum(_is_number(v) for v in column) >= 0.8 * len(column):
            return True
        if first[i] in column:
            return False
    return True


def read_sample(path: str, rows: int) -> Sample:
    """The first `rows` records of a file with the settings sniffed from it.

    Args:
      path: a CSV / TSV / JSON lines / Parquet file.
      rows: how many records to sample.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"file not found: {path}")
    fmt = _format_of(path)
    notes: List[str] = []
    if fmt in (desc.CSV, desc.TSV):
        encoding, text = _sniff_text(path)
        delimiter = _sniff_delimiter(text, fmt)
        if delimiter == "\t" and fmt == desc.CSV:
            fmt = desc.TSV
        header = _sniff_header(text, delimiter)
        first = next((r for r in csv.reader(io.StringIO(text), delimiter=delimiter) if r), [])
        columns = [v.strip() for v in first] if header else [f"column_{i + 1}" for i in range(len(first))]
        source = desc.Source(files=(path,), format=fmt, delimiter=delimiter, header=header,
                             columns=() if header else tuple(columns), encoding=encoding)
        notes.append(f"read as {fmt} with delimiter {delimiter!r}, " +
                     ("a header line" if header else "no header (columns named column_1..: rename them)") +
                     (f", encoding {encoding}" if encoding != "utf-8" else ""))
    elif fmt == desc.JSONL:
        with open(path, "rb") as f:
            start = f.read(1024).lstrip()
        if start.startswith(b"["):
            raise ValueError(f"{path}: a JSON array, not JSON lines (one object per line); convert it, e.g. "
                             f"jq -c '.[]' {path} > {os.path.splitext(path)[0]}.jsonl")
        source = desc.Source(files=(path,), format=fmt)
        columns = readers.file_columns(path, source)
    else:
        source = desc.Source(files=(path,), format=fmt)
        columns = readers.file_columns(path, source)
    values: Dict[str, list] = {c: [] for c in columns}
    count = 0
    for _, record in readers.read_records(path, source, columns):
        if isinstance(record, readers.RowError):
            continue
        for column, value in zip(columns, record):
            values[column].append(value)
        count += 1
        if count >= rows:
            break
    return Sample(path, source, columns, values, count, notes)


# ----------------------------------------------------------------------------------------
# Column profiles and guesses
# ----------------------------------------------------------------------------------------
class Profile:
    """What the sampled values of one column look like.

    Attributes:
      name: the column.
      present: non-empty values.
      distinct: distinct non-empty values.
      numbers: the values read as numbers (None for the others).
      numeric: the share of present values that are numbers.
      integer: every number is whole.
      minimum / maximum: of the numbers.
      mean_length: mean length of the present values as text.
      spaces: mean number of spaces per value.
      iso: the share of present values that read as ISO 8601 dates or times.
      separator: a separator that splits most values into several short parts ('' none).
      year_in_parens: the share of values ending with a year in parentheses.
    """

    def __init__(self, name: str, values: Sequence[Any]):
        self.name = name
        texts = [_as_text(v) for v in values]
        present = [t for t in texts if t]
        self.present = len(present)
        self.distinct = len(set(present))
        numbers = [_as_number(v) for v in values if _as_text(v)]
        numbers = [n for n in numbers if n is not None]
        self.numeric = len(numbers) / self.present if self.present else 0.0
        self.integer = bool(numbers) and all(float(n).is_integer() for n in numbers)
        self.minimum = min(numbers) if numbers else None
        self.maximum = max(numbers) if numbers else None
        self.mean_length = sum(map(len, present)) / self.present if self.present else 0.0
        self.spaces = sum(t.count(" ") for t in present) / self.present if self.present else 0.0
        self.iso = sum(1 for t in present if _is_iso(t)) / self.present if self.present else 0.0
        self.year_in_parens = (sum(1 for t in present if _YEAR_IN_PARENS.search(t)) / self.present
                               if self.present else 0.0)
        self.list_values = any(isinstance(v, (list, tuple)) for v in values)
        self.separator = "" if self.list_values else _separator(present)
        self.distinct_values = collections.Counter(present)

    @property
    def is_numeric(self) -> bool:
        return self.present > 0 and self.numeric >= 0.98

    def hinted(self, hints: Sequence[str]) -> bool:
        name = self.name.lower()
        return any(h in name for h in hints)

    @property
    def key_like(self) -> bool:
        """Short values without spaces, whole numbers when numbers: could be an id."""
        if not self.present or self.spaces > 0 or self.mean_length > 40 or self.list_values or self.separator:
            return False
        return not (self.is_numeric and not self.integer) and not self.iso

    @property
    def id_like(self) -> bool:
        """An id with many distinct values (an id-like column whose name says nothing)."""
        return self.key_like and (self.distinct >= min(20, self.present) or self.distinct / self.present > 0.05)

    @property
    def numeric_id(self) -> bool:
        """Whole numbers that name things rather than count them (a name ending in id, or
        many distinct large values)."""
        name = self.name.lower()
        return self.is_numeric and self.integer and (
            name.endswith("id") or name.endswith("_key") or (self.distinct > 50 and (self.maximum or 0) >= 1e4))

    def time_unit(self) -> str:
        """seconds / milliseconds / iso8601 when the values look like times, else ''."""
        if self.iso >= 0.9:
            return desc.ISO8601
        if self.is_numeric and self.minimum is not None:
            if SECONDS_RANGE[0] <= self.minimum and self.maximum <= SECONDS_RANGE[1]:
                return desc.SECONDS
            if MILLISECONDS_RANGE[0] <= self.minimum and self.maximum <= MILLISECONDS_RANGE[1]:
                return desc.MILLISECONDS
        return ""

    @property
    def rating_like(self) -> bool:
        """A small numeric scale: at most 11 distinct numbers within 0..10, and more than 0/1."""
        return (self.is_numeric and self.distinct <= 11 and self.minimum is not None and self.minimum >= 0
                and self.maximum <= 10 and self.maximum > 1)

    @property
    def behavior_like(self) -> bool:
        """Few distinct words (2..20) that are not numbers."""
        return (self.present > 0 and not self.is_numeric and 2 <= self.distinct <= 20 and self.spaces < 1
                and self.distinct / self.present < 0.5 and not self.separator and not self.list_values)

    def feature_type(self) -> str:
        """The guessed type of a feature column."""
        if self.list_values or self.separator:
            return desc.MULTI_CATEGORICAL
        if self.time_unit() and self.hinted(TIME_HINTS):
            return desc.TIME
        if self.is_numeric:
            return desc.CATEGORICAL if self.numeric_id else desc.NUMERIC
        if self.mean_length >= 30 or self.spaces >= 3:
            return desc.TEXT
        return desc.CATEGORICAL


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return "|".join(_as_text(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _as_number(value: Any) -> Optional[float]:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _is_iso(text: str) -> bool:
    if len(text) < 8 or not text[:4].isdigit() or text[4] != "-":
        return False
    try:
        datetime.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
        return True
    except ValueError:
        return False


def _separator(present: Sequence[str]) -> str:
    """A separator found in at least a fifth of the values whose parts are short and repeat."""
    if not present:
        return ""
    for sep in SEPARATORS:
        having = [t for t in present if sep in t]
        if len(having) < 0.2 * len(present):
            continue
        parts = [p.strip() for t in present for p in t.split(sep)]
        if not parts or sum(map(len, parts)) / len(parts) > 25 or sum(p.count(" ") for p in parts) > len(parts):
            continue
        if sum(1 for p in parts if any(c.isalpha() for c in p)) < 0.5 * len(parts):
            continue  # numbers and dates ("[0, 0]", "02 28, 2014"), not lists of values
        if len(set(parts)) < 0.5 * len(parts):
            return sep
    return ""


def _pick(profiles: Sequence[Profile], test, hints: Sequence[str], taken: set) -> Optional[Profile]:
    """The first column passing `test` whose name has a hint, else the first passing it."""
    candidates = [p for p in profiles if p.name not in taken and test(p)]
    hinted = [p for p in candidates if p.hinted(hints)]
    return (hinted or candidates or [None])[0]


class Roles:
    """The guessed roles of the interaction columns (None: not found)."""

    def __init__(self, profiles: Sequence[Profile]):
        taken: set = set()

        def take(p: Optional[Profile]) -> Optional[Profile]:
            if p is not None:
                taken.add(p.name)
            return p

        self.time = take(_pick([p for p in profiles if p.hinted(TIME_HINTS)] or profiles,
                               lambda p: bool(p.time_unit()), TIME_HINTS, taken))
        self.rating = take(_pick(profiles, lambda p: p.rating_like, RATING_HINTS, taken))
        self.behavior = take(_pick(profiles, lambda p: p.behavior_like and p.hinted(BEHAVIOR_HINTS), BEHAVIOR_HINTS,
                                   taken) or _pick(profiles, lambda p: p.behavior_like and p.distinct <= 8,
                                                   BEHAVIOR_HINTS, taken))
        # By name first; otherwise the first id-like columns in file order (logs put the user first).
        users = [p for p in profiles if p.hinted(USER_HINTS)]
        self.user = take(_pick(users, lambda p: p.key_like, USER_HINTS, taken))
        items = [p for p in profiles if p.hinted(ITEM_HINTS)]
        self.item = take(_pick(items, lambda p: p.key_like, ITEM_HINTS, taken))
        if self.user is None:
            self.user = take(_pick(profiles, lambda p: p.key_like, (), taken))
        if self.item is None:
            self.item = take(_pick(profiles, lambda p: p.id_like, (), taken))
        self.taken = taken

    def names(self) -> Dict[str, str]:
        """Role -> column name for the roles found (what a file without a header calls them)."""
        found = {"user_id": self.user, "item_id": self.item, "timestamp": self.time, "rating": self.rating,
                 "behavior": self.behavior}
        return {p.name: role for role, p in found.items() if p is not None}


# ----------------------------------------------------------------------------------------
# Writing the YAML
# ----------------------------------------------------------------------------------------
def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    if _PLAIN.match(text) and text.lower() not in _YAML_WORDS and not _is_number(text):
        return text
    return json.dumps(text)


def _flow(mapping: Dict[str, Any]) -> str:
    parts = []
    for key, value in mapping.items():
        if isinstance(value, (list, tuple)):
            parts.append(f"{key}: [{', '.join(_scalar(v) for v in value)}]")
        else:
            parts.append(f"{key}: {_scalar(value)}")
    return "{" + ", ".join(parts) + "}"


class _Names:
    """Unique description names (lower case letters, digits and _) for column names."""

    def __init__(self, taken: Sequence[str] = ()):
        self.used = set(taken) | set(desc.RESERVED_NAMES)

    def __call__(self, column: str, prefix: str = "") -> str:
        name = re.sub(r"[^a-z0-9_]+", "_", column.strip().lower()).strip("_") or "column"
        if not name[0].isalpha():
            name = f"f_{name}"
        base, n = name, 2
        while name in self.used or f"{prefix}{name}" in self.used:
            name, n = f"{base}_{n}", n + 1
        self.used.add(name)
        self.used.add(f"{prefix}{name}")
        return name


def _source_lines(sample: Sample, files: Sequence[str], indent: str) -> List[str]:
    lines = [f"{indent}files: " + (_scalar(files[0]) if len(files) == 1 else
                                   "[" + ", ".join(_scalar(f) for f in files) + "]"),
             f"{indent}format: {sample.source.format}"]
    s = sample.source
    opts: Dict[str, Any] = {}
    default_delimiter = "\t" if s.format == desc.TSV else ","
    if s.format in (desc.CSV, desc.TSV):
        if s.delimiter != default_delimiter:
            opts["delimiter"] = s.delimiter
        if not s.header:
            opts["header"] = False
            opts["columns"] = list(s.columns)
        if s.encoding != "utf-8":
            opts["encoding"] = s.encoding
    if opts:
        lines.append(f"{indent}csv: {_flow(opts)}")
    for note in sample.notes:
        lines.append(f"{indent}# CHECK: {note}")
    return lines


def _feature_lines(profile: Profile, name: str, indent: str, interaction: bool) -> List[str]:
    ftype = profile.feature_type()
    spec: Dict[str, Any] = {"column": profile.name, "type": ftype}
    why = ""
    if ftype == desc.MULTI_CATEGORICAL:
        spec["separator"] = profile.separator or "|"
        why = (f"values split by {spec['separator']!r}" if profile.separator else "list values (JSON / Parquet)")
    elif ftype == desc.NUMERIC:
        spec["dtype"] = "int" if profile.integer else "float"
        why = f"numbers {profile.minimum:g}..{profile.maximum:g}"
        if profile.minimum is not None and profile.minimum >= 0 and profile.maximum > 100 * max(1.0, profile.minimum):
            spec["normalize"] = desc.LOG
            why += " (a long range: log normalization)"
    elif ftype == desc.TIME:
        spec["unit"] = profile.time_unit()
        why = f"a time in {spec['unit']}"
    elif ftype == desc.TEXT:
        why = f"free text (mean length {profile.mean_length:.0f})"
        if interaction:
            spec["documents"] = False
            why += "; documents: true gives each example the user's and the item's earlier texts"
    else:
        why = f"{profile.distinct} distinct values in the sample"
    lines = [f"{indent}{name}: {_flow(spec)}  # CHECK: {why}"]
    return lines


def _table_lines(kind: str, sample: Sample, files: Sequence[str], key_column: str, names: _Names,
                 interaction_ids: Sequence[str]) -> List[str]:
    profiles = [Profile(c, sample.values[c]) for c in sample.columns]
    by_name = {p.name: p for p in profiles}
    key = key_column if key_column in by_name else ""
    how = f"the interactions' {kind[:-1]} column" if key else ""
    if not key:
        ids = set(interaction_ids)
        overlap = sorted(((sum(1 for v in p.distinct_values if v in ids), p.name) for p in profiles), reverse=True)
        key = overlap[0][1] if overlap and overlap[0][0] else profiles[0].name
        how = "its values match the interactions' ids" if overlap and overlap[0][0] else "the first column"
    lines = [f"{kind}:"] + _source_lines(sample, files, "  ")
    lines.append(f"  key: {_scalar(key)}  # CHECK: the {kind[:-1]} id ({how})")
    features = []
    prefix = f"{kind[:-1]}_"
    for p in profiles:
        if p.name == key or not p.present:
            continue
        features += _feature_lines(p, names(p.name, prefix), "    ", False)
        if p.feature_type() in (desc.TEXT, desc.CATEGORICAL) and p.year_in_parens >= 0.5:
            spec = {"column": p.name, "type": desc.NUMERIC, "dtype": "int", "pattern": r"\((\d{4})\)\s*$"}
            features.append(f"    {names(p.name + '_year', prefix)}: {_flow(spec)}  # CHECK: a year in "
                            f"parentheses at the end of {p.name!r}")
    if features:
        lines += ["  features:"] + features
    return lines


def draft(interactions: Sequence[str], items: Optional[str] = None, users: Optional[str] = None,
          rows: int = DEFAULT_ROWS, name: Optional[str] = None, out_dir: str = ".") -> str:
    """The text of a draft description of the files (see the module docstring).

    Args:
      interactions: the interaction files (sampled from the first; the others are listed).
      items: an item side table, if any.
      users: a user side table, if any.
      rows: records sampled per file.
      name: the dataset's name (default: the first file's folder or stem).
      out_dir: the folder the description is written to (`data_dir` is relative to it).
    """
    sample = read_sample(interactions[0], rows)
    if not sample.rows:
        raise ValueError(f"{interactions[0]}: no readable record in the sample")
    every = [os.path.abspath(p) for p in list(interactions) + [p for p in (items, users) if p]]
    data_dir = os.path.commonpath([os.path.dirname(p) for p in every])
    rel = lambda p: os.path.relpath(os.path.abspath(p), data_dir)  # noqa: E731
    profiles = [Profile(c, sample.values[c]) for c in sample.columns]
    roles = Roles(profiles)
    if not sample.source.header:  # name the columns of a file without a header by their roles
        renamed = roles.names()
        for p in profiles:
            p.name = renamed.get(p.name, p.name)
        sample.source = dataclasses.replace(sample.source, columns=tuple(p.name for p in profiles))
        sample.notes = [n.replace("(columns named column_1..: rename them)",
                                  "(columns named by their guessed roles, column_N otherwise: rename them)")
                        for n in sample.notes]
    names = _Names()
    dataset = name or re.sub(r"[^A-Za-z0-9_.-]+", "_", os.path.basename(data_dir) or
                             os.path.splitext(os.path.basename(interactions[0]))[0]) or "dataset"
    if not dataset[0].isalnum():
        dataset = "d" + dataset
    out: List[str] = [
        f"# Draft description of {', '.join(rel(p) for p in interactions)}, written by",
        "# `python -m components.example_gen.describe` from the first "
        f"{sample.rows} records. Every `# CHECK` line is a guess:",
        "# read it, fix what is wrong, delete what you do not need (datasets/description.schema.json",
        "# lists every key), then run the pipeline with --dataset_file on this file.",
        f"name: {_scalar(dataset)}",
        f"data_dir: {_scalar(os.path.relpath(data_dir, os.path.abspath(out_dir)))}",
        "",
        "interactions:",
    ]
    out += _source_lines(sample, [rel(p) for p in interactions], "  ")

    def role(key: str, profile: Optional[Profile], why: str, missing: str) -> None:
        if profile is None:
            out.append(f"  {key}: {missing}  # CHECK: no {key}-like column found: name one")
        else:
            out.append(f"  {key}: {_scalar(profile.name)}  # CHECK: {why}")

    role("user", roles.user, f"{roles.user.distinct if roles.user else 0} distinct ids in the sample", "CHANGE_ME")
    role("item", roles.item, f"{roles.item.distinct if roles.item else 0} distinct ids in the sample", "CHANGE_ME")
    if roles.time is None:
        out.append("  time: CHANGE_ME  # CHECK: no time-like column found (unix seconds or milliseconds, "
                   "ISO 8601): name one")
    else:
        unit = roles.time.time_unit()
        span = (f"values {roles.time.minimum:.4g}..{roles.time.maximum:.4g}" if unit != desc.ISO8601
                else "ISO 8601 text")
        out.append(f"  time: {_flow({'column': roles.time.name, 'unit': unit})}  # CHECK: {span} read as {unit}")
    if roles.rating is not None:
        r = roles.rating
        low, high = r.minimum, r.maximum
        scale = {"column": r.name, "min": low, "max": high}
        out.append(f"  rating: {_flow(scale)}  # CHECK: the scale seen in the sample; set the true one")
    behaviors: List[str] = []
    if roles.behavior is not None:
        counts = roles.behavior.distinct_values.most_common()
        behaviors = [v for v, _ in counts]
        out.append(f"  behavior: {_flow({'column': roles.behavior.name, 'vocabulary': behaviors})}")
        out.append("  # CHECK: the behaviors weakest first (here: most frequent first, "
                   + ", ".join(f"{v}: {n}" for v, n in counts) + ")")
        out.append(f"  # examples: {{anchor: {_scalar(behaviors[0])}}}  # one example per (user, item) at its "
                   "first such event, later behaviors as labels")
    elif roles.rating is not None:
        out.append("  # behavior: {from_rating: [{name: disliked, when: \"rating <= 2\"}, {name: neutral}, "
                   "{name: liked, when: \"rating >= 4\"}]}  # history behaviors from the rating")
    found = [roles.user, roles.item, roles.time, roles.rating, roles.behavior]
    rest = [p for p in profiles if all(p is not r for r in found) and p.present]
    if rest:
        out.append("  # Outcomes of the interaction (label sources, texts): never a model input for their own row.")
        out.append("  columns:")
        for p in rest:
            out += _feature_lines(p, names(p.name), "    ", True)
    out.append("")

    item_ids = roles.item.distinct_values if roles.item else {}
    user_ids = roles.user.distinct_values if roles.user else {}
    if items:
        out += _table_lines("items", read_sample(items, rows), [rel(items)],
                            roles.item.name if roles.item else "", names, list(item_ids))
        out.append("")
    else:
        out.append("# items: {files: items.csv, key: item_id, features: {...}}  # an item side table, or "
                   "{from_interactions: true, features: {...}} for item columns of the log")
    if users:
        out += _table_lines("users", read_sample(users, rows), [rel(users)],
                            roles.user.name if roles.user else "", names, list(user_ids))
        out.append("")

    labels = _Names(names.used)
    implicit = labels("interacted")
    out += ["labels:", f"  {implicit}: {{implicit: true}}  # 1 on every logged example, 0 on sampled negatives"]
    tasks = [f"  - {{name: {implicit}, kind: binary}}"]
    if roles.rating is not None:
        rating = labels("rating")
        out.append(f"  {rating}: {{rating: true}}")
        out.append(f"  # liked: {{expr: \"rating >= {max(1, math.ceil(0.8 * roles.rating.maximum)):g}\"}}  "
                   "# a binary label from the rating")
        tasks.insert(0, f"  - {{name: {rating}, kind: regression, condition: {implicit}}}")
    for behavior in behaviors[1:]:
        label = labels(behavior)
        out.append(f"  {label}: {{behavior: {_scalar(behavior)}}}")
        tasks.append(f"  - {{name: {label}, kind: binary, condition: {implicit}}}")
    out += ["", "tasks:"] + tasks + [
        "  - {name: items, kind: retrieval}  # top-K retrieval of each user's held-out items", "",
        "split: {method: hash}  # or leave_last_two_out, or by_day with eval_day / test_day (YYYY-MM-DD)",
    ]
    if roles.time is not None and roles.time.time_unit() != desc.ISO8601 and roles.time.maximum:
        seconds = roles.time.maximum / (1000 if roles.time.time_unit() == desc.MILLISECONDS else 1)
        last = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).date()
        out.append(f"# split: {{method: by_day, eval_day: \"{last - datetime.timedelta(days=1)}\", "
                   f"test_day: \"{last}\"}}  # the sample's last days")
    out += ["history: {max_length: 64}", "negatives: {per_positive: 0}", ""]
    return "\n".join(out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", help="the interaction files (CSV, TSV, JSON lines or Parquet)")
    parser.add_argument("--items", help="an item side table")
    parser.add_argument("--users", help="a user side table")
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="records sampled per file")
    parser.add_argument("--out", help="the description file to write (default: print it)")
    parser.add_argument("--name", help="the dataset's name (default: the files' folder)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error("--rows must be at least 1")
    if args.out and os.path.exists(args.out) and not args.force:
        parser.error(f"{args.out} exists; pass --force to overwrite it")
    out_dir = os.path.dirname(os.path.abspath(args.out)) if args.out else os.getcwd()
    try:
        text = draft(args.files, args.items, args.users, args.rows, args.name, out_dir)
    except (OSError, ValueError) as e:
        print(f"describe: {e}", file=sys.stderr)
        return 2
    _validate(text, args.out or "<stdout>")
    if args.out:
        from common.io_utils import atomic_write

        atomic_write(args.out, text)
        print(f"wrote {args.out}: check every `# CHECK` line", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _validate(text: str, where: str) -> None:
    """The draft must load as a description; a failure here is a bug of this command."""
    import yaml

    desc.from_dict(yaml.safe_load(text), where)


if __name__ == "__main__":
    sys.exit(main())
