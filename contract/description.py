"""Dataset descriptions: one YAML or JSON file says what an interaction log is.

A description names the interaction files and their columns (user, item, time, and a
rating and / or a behavior), how an example row is formed, the labels and tasks derived
from them, typed feature columns of item and user side tables (categorical,
multi-valued, numeric, time, text), and the split, history and negative-sampling
settings. Every layer reads the dataset through the `Description` this module loads:
ExampleGen parses by it, the schema is generated from it, Transform builds features by
their declared type, the models read features by type, the Evaluator's tasks and the
serving signatures' behavior vocabulary come from it. No module outside this loader
names a dataset: the shipped ones are files under `datasets/` at the repository root.

The structure is checked against `datasets/description.schema.json` (JSON Schema); the
meaning (a column a label refers to, a behavior a task asks about) by `Description`.
Errors name the file, the key path, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import pathlib
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

SHIPPED_DIR = pathlib.Path(__file__).resolve().parents[1] / "datasets"
SCHEMA_FILE = SHIPPED_DIR / "description.schema.json"
DEFAULT_DATASET = "movielens"  # the shipped description a run reads when none is named (embedded data)
SUFFIXES = (".yaml", ".yml", ".json")

# Input file formats.
CSV, TSV, JSONL, PARQUET = "csv", "tsv", "jsonl", "parquet"
FORMATS = (CSV, TSV, JSONL, PARQUET)
_FORMAT_OF_SUFFIX = {".csv": CSV, ".tsv": TSV, ".txt": CSV, ".jsonl": JSONL, ".json": JSONL,
                     ".ndjson": JSONL, ".parquet": PARQUET, ".pq": PARQUET}

# Time units of the interactions' time column.
SECONDS, MILLISECONDS, ISO8601 = "seconds", "milliseconds", "iso8601"
TIME_UNITS = (SECONDS, MILLISECONDS, ISO8601)

# Feature types of side-table and interaction columns.
CATEGORICAL = "categorical"  # one value from a vocabulary
MULTI_CATEGORICAL = "multi_categorical"  # values from a vocabulary, split by a separator
NUMERIC = "numeric"  # a number (optionally extracted from the text by a pattern)
TIME = "time"  # a timestamp (the time unit of the column), read as a number of days
TEXT = "text"  # free text, tokenized by Transform into ids of a training-split vocabulary
FEATURE_TYPES = (CATEGORICAL, MULTI_CATEGORICAL, NUMERIC, TIME, TEXT)

# How a categorical feature reaches a model.
EMBEDDING, ONE_HOT = "embedding", "one_hot"
ENCODINGS = (EMBEDDING, ONE_HOT)
# How a numeric (or time) feature is normalized by Transform (statistics of the training split).
Z_SCORE, MIN_MAX, LOG, BUCKETS = "z_score", "min_max", "log", "buckets"
NORMALIZERS = (Z_SCORE, MIN_MAX, LOG, BUCKETS)
# Transformed-feature suffix of each normalizer.
NORMALIZER_SUFFIX = {Z_SCORE: "z", MIN_MAX: "mm", LOG: "log", BUCKETS: "bucket"}

# Sides a feature column belongs to.
ITEM, USER, INTERACTION = "item", "user", "interaction"

# Label kinds and sources.
BINARY, REGRESSION = "binary", "regression"
IMPLICIT, RATING, EXPR, BEHAVIOR = "implicit", "rating", "expr", "behavior"

# Task kinds of a description (contract.tasks kinds plus the user view's next behavior).
TASK_KINDS = ("regression", "binary", "retrieval", "next_behavior")

# Split methods.
HASH_SPLIT, LEAVE_LAST_TWO_OUT_SPLIT, BY_DAY_SPLIT = "hash", "leave_last_two_out", "by_day"
SPLIT_METHODS = (HASH_SPLIT, LEAVE_LAST_TWO_OUT_SPLIT, BY_DAY_SPLIT)

# Raw feature names ExampleGen writes for every dataset; no declared name may take them.
RESERVED_NAMES = frozenset({
    "user_id", "item_id", "timestamp", "split", "history_item_ids", "history_behaviors",
    "target_item_ids", "target_behaviors", "user_activity_level",
})

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# A condition: `<field> <op> <number>` (a rating or numeric column) or `behavior == <name>`.
_CONDITION = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=|==|!=|>|<)\s*(.+?)\s*$")
OPERATORS = (">=", "<=", "==", "!=", ">", "<")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_DURATION_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class DescriptionError(ValueError):
    """A description that cannot be used: names the file, the key path and what is allowed."""


def closest(name: str, candidates: Sequence[str]) -> str:
    """` (did you mean 'x'?)` for the candidate closest to `name`, or ''."""
    match = difflib.get_close_matches(str(name), [str(c) for c in candidates], n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""


# ----------------------------------------------------------------------------------------
# Records
# ----------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Source:
    """Where a table's rows are and how to read them.

    Attributes:
      files: paths or glob patterns, relative to the data directory.
      format: csv, tsv, jsonl or parquet.
      delimiter: the field separator (csv: ",", tsv: a tab).
      header: the first line of each csv / tsv file names the columns.
      columns: the column names of a file without a header, in order.
      encoding: the text encoding of csv / tsv / jsonl files.
      quotechar: the csv quote character (a quoted field may hold separators, quotes
        doubled, and line breaks).
    """

    files: Tuple[str, ...]
    format: str
    delimiter: str = ","
    header: bool = True
    columns: Tuple[str, ...] = ()
    encoding: str = "utf-8"
    quotechar: str = '"'


@dataclasses.dataclass(frozen=True)
class Feature:
    """A typed column: an item or user side-table feature, or an interaction column.

    Attributes:
      name: the feature's name in the description; the raw feature ExampleGen writes is
        `raw_name` (item_<name>, user_<name>, or <name> for an interaction column).
      side: item, user or interaction.
      column: the source column.
      type: categorical, multi_categorical, numeric, time or text.
      separator: multi_categorical: the separator between values.
      max_values: multi_categorical: the values kept per row (the first ones).
      pattern: a regular expression with one group: the value is the group's match in
        the column's text (e.g. a year at the end of a title); no match: missing.
      dtype: numeric: int or float (what ExampleGen writes).
      normalize: numeric and time: z_score, min_max, log or buckets (training-split
        statistics); empty: numeric's default z_score.
      boundaries: buckets: the bucket boundaries.
      encoding: categorical: embedding (the default) or one_hot.
      multi_hot: multi_categorical: also a multi-hot vector of the vocabulary.
      vocabulary_size: categorical / text: the most frequent N training values kept
        (0: all); the rest share the out-of-vocabulary id.
      max_tokens: text: tokens kept per row (the first ones).
      required: a row without a value is a bad row (otherwise: missing).
      documents: interaction text only: each example also carries the user's and the
        item's earlier training-split texts of this column (`max_documents` most recent).
      max_documents: see `documents`.
      unit: time: the column's unit (seconds, milliseconds, iso8601).
      minimum / maximum: numeric: the declared range (the schema's domain; a value
        outside is a bad row).
    """

    name: str
    side: str
    column: str
    type: str
    separator: str = ""
    max_values: int = 10
    pattern: str = ""
    dtype: str = "float"
    normalize: str = ""
    boundaries: Tuple[float, ...] = ()
    encoding: str = EMBEDDING
    multi_hot: bool = False
    vocabulary_size: int = 0
    max_tokens: int = 64
    required: bool = False
    documents: bool = False
    max_documents: int = 8
    unit: str = SECONDS
    minimum: Optional[float] = None
    maximum: Optional[float] = None

    @property
    def raw_name(self) -> str:
        """The raw feature ExampleGen writes (item_<name>, user_<name>, <name>)."""
        return self.name if self.side == INTERACTION else f"{self.side}_{self.name}"

    @property
    def normalizer(self) -> str:
        """The normalizer of a numeric or time feature (z_score unless declared)."""
        return self.normalize or Z_SCORE

    def transformed_name(self) -> str:
        """The main feature Transform writes from it (see `transformed_names`)."""
        return self.transformed_names()[0]

    def transformed_names(self) -> Tuple[str, ...]:
        """Every feature Transform writes from it.

        categorical: <raw>_idx [B] (0 padding / missing, 1..V vocabulary, V+1 OOV);
        multi_categorical: <raw>_idx [B, max_values] (0-padded) and, with multi_hot,
        <raw>_multi_hot [B, V + OOV]; numeric / time: <raw>_<z|mm|log|bucket> [B];
        text: <raw>_tokens [B, max_tokens] (0-padded).
        """
        raw = self.raw_name
        if self.type in (CATEGORICAL, MULTI_CATEGORICAL):
            out = (f"{raw}_idx",)
            return out + ((f"{raw}_multi_hot",) if self.multi_hot else ())
        if self.type in (NUMERIC, TIME):
            return (f"{raw}_{NORMALIZER_SUFFIX[self.normalizer]}",)
        return (f"{raw}_tokens",)

    @property
    def vocabulary_name(self) -> str:
        """The Transform vocabulary file of a categorical, multi-valued or text feature."""
        return f"{self.raw_name}_vocab"

    def document_names(self) -> Tuple[str, ...]:
        """Raw features of an interaction text's documents: user_<name>_docs, item_<name>_docs."""
        return (f"user_{self.name}_docs", f"item_{self.name}_docs") if self.documents else ()

    def document_transformed_names(self) -> Tuple[str, ...]:
        """Transformed features of its documents (Transform): <doc>_tokens [B, max_documents,
        max_tokens], aligned with `document_names`."""
        return tuple(f"{doc}_tokens" for doc in self.document_names())


@dataclasses.dataclass(frozen=True)
class Condition:
    """`field op value`: a rating or numeric interaction column against a number, or
    `behavior == name`."""

    field: str
    op: str
    value: Any

    def holds(self, value: Any) -> bool:
        """Whether the condition holds for `value` of the field (None: it does not)."""
        if value is None:
            return False
        v = self.value
        return {">=": value >= v, "<=": value <= v, "==": value == v, "!=": value != v,
                ">": value > v, "<": value < v}[self.op]

    def __str__(self) -> str:
        return f"{self.field} {self.op} {self.value}"


@dataclasses.dataclass(frozen=True)
class BehaviorBin:
    """A behavior derived from the rating: `when` holds (None: every rating no other bin takes)."""

    name: str
    when: Optional[Condition] = None


@dataclasses.dataclass(frozen=True)
class Label:
    """A label an example carries.

    Attributes:
      name: the label feature.
      kind: binary or regression.
      source: implicit (1 on logged rows, 0 on sampled negatives), rating (the rating
        itself), expr (a condition on the rating or a numeric interaction column,
        computed by Transform), behavior (1 when the user did `behavior` to the item: the
        row's own behavior, or, for anchored examples, any such event at or after the
        anchor within `horizon_seconds`).
      condition: the expr label's condition.
      behavior: the behavior label's behavior.
      horizon_seconds: anchored behavior labels: how long after the anchor an event
        counts (None: any later time).
    """

    name: str
    kind: str
    source: str
    condition: Optional[Condition] = None
    behavior: str = ""
    horizon_seconds: Optional[float] = None

    @property
    def raw(self) -> bool:
        """Written by ExampleGen (implicit, rating, behavior); expr labels are Transform's."""
        return self.source != EXPR


@dataclasses.dataclass(frozen=True)
class TaskDef:
    """A task as the description declares it (contract.datasets turns it into a TaskSpec).

    Attributes:
      name / kind / label / condition / parent: as contract.tasks.TaskSpec.
      threshold / max_worsening / metric: the gate's, when not the kind's default.
      gated: false leaves the task ungated (reported only).
      target_behaviors: retrieval: in the hash split, only eval / test interactions of
        these behaviors are targets (empty: all).
      behavior: next_behavior: the behavior the user's next interaction is asked about.
    """

    name: str
    kind: str
    label: str = ""
    condition: str = ""
    parent: str = ""
    threshold: Optional[float] = None
    max_worsening: Optional[float] = None
    metric: str = ""
    gated: bool = True
    target_behaviors: Tuple[str, ...] = ()
    behavior: str = ""


@dataclasses.dataclass(frozen=True)
class Description:
    """A whole dataset description (see the module docstring and datasets/README.md).

    Attributes:
      name: the dataset's name (reports, model cards, served model metadata).
      path: the file it was read from ('' when built from a dict).
      data_dir: where the files are: the description's `data_dir` (relative to the
        description file), or '' when it names none (the run must pass one).
      interactions: the interaction files.
      user / item / time: the interaction columns of the user, the item and the time.
      time_unit: seconds, milliseconds or iso8601.
      rating: the rating column ('' when none); rating_min / rating_max its scale.
      behavior_column: the column holding the behavior ('' when behaviors come from the
        rating, or there is one behavior).
      behaviors: the behavior vocabulary, weakest first (history behavior ids 1..n).
      behavior_bins: behaviors from the rating (when no behavior column).
      default_behavior: the behavior of a history item sent without one.
      anchor: '' (every interaction is an example) or a behavior: one example per
        (user, item) at its first event of that behavior; later events give labels.
      columns: typed interaction columns (outcomes of the interaction: label sources
        and texts; never a model input for their own row).
      items / users: the side tables (None when absent); `items_from_interactions`:
        the item features are read from the interaction rows (an item's earliest row).
      item_key / user_key: the side tables' key columns.
      item_features / user_features: the side tables' typed features.
      labels: every label, raw (ExampleGen) and derived (Transform).
      tasks: the tasks a model can be trained on.
      task_pair: the two binary tasks a task-pair model (TAKD) trains on by default.
      split / eval_day / test_day: the default split method and its days (by_day).
      max_history: most recent history items kept per example.
      negatives_per_positive: sampled negatives per example row.
      hparams: per-family hyperparameters chosen for this dataset, {family: {name: value
        as a string}}; the run's own overrides win (PipelineConfig.resolved).
    """

    name: str
    path: str
    data_dir: str
    interactions: Source
    user: str
    item: str
    time: str
    time_unit: str
    rating: str
    rating_min: Optional[float]
    rating_max: Optional[float]
    behavior_column: str
    behaviors: Tuple[str, ...]
    behavior_bins: Tuple[BehaviorBin, ...]
    default_behavior: str
    anchor: str
    columns: Tuple[Feature, ...]
    items: Optional[Source]
    items_from_interactions: bool
    item_key: str
    item_features: Tuple[Feature, ...]
    users: Optional[Source]
    user_key: str
    user_features: Tuple[Feature, ...]
    labels: Tuple[Label, ...]
    tasks: Tuple[TaskDef, ...]
    task_pair: Tuple[str, ...]
    split: str
    eval_day: str
    test_day: str
    max_history: int
    negatives_per_positive: int
    hparams: Mapping[str, Mapping[str, str]] = dataclasses.field(default_factory=dict)
    raw: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    # -- lookups ----------------------------------------------------------------------
    def label(self, name: str) -> Label:
        for label in self.labels:
            if label.name == name:
                return label
        raise KeyError(f"{self.name}: no label {name!r}; labels: {[l.name for l in self.labels]}")

    @property
    def implicit_label(self) -> str:
        return next(l.name for l in self.labels if l.source == IMPLICIT)

    @property
    def rating_label(self) -> str:
        """The label holding the rating itself ('' when none is declared)."""
        return next((l.name for l in self.labels if l.source == RATING), "")

    @property
    def raw_labels(self) -> Tuple[str, ...]:
        """Labels ExampleGen writes, in declared order."""
        return tuple(l.name for l in self.labels if l.raw)

    @property
    def features(self) -> Tuple[Feature, ...]:
        """Every side-table feature (items, then users): the model inputs of the description."""
        return self.item_features + self.user_features

    def column(self, name: str) -> Feature:
        for feature in self.columns:
            if feature.name == name:
                return feature
        raise KeyError(f"{self.name}: no interaction column {name!r}")

    @property
    def text_columns(self) -> Tuple[Feature, ...]:
        return tuple(c for c in self.columns if c.type == TEXT)

    def rating_behavior(self, rating: Optional[float]) -> str:
        """The behavior of a rating by `behavior_bins` (the first bin whose condition holds,
        else the bin without one)."""
        fallback = ""
        for b in self.behavior_bins:
            if b.when is None:
                fallback = b.name
            elif b.when.holds(rating):
                return b.name
        return fallback

    # -- serialization -----------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        """The description as its file held it, with `data_dir` made absolute: what a
        component receives (custom config, a compiled pipeline spec)."""
        out = json.loads(json.dumps(self.raw))
        if self.data_dir:
            out["data_dir"] = self.data_dir
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


# ----------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------
def shipped() -> List[str]:
    """Names of the descriptions shipped under datasets/ (file stems)."""
    return sorted(p.stem for p in SHIPPED_DIR.iterdir()
                  if p.suffix in SUFFIXES and p.name != SCHEMA_FILE.name)


def resolve(ref: str) -> pathlib.Path:
    """The file of `ref`: a path to a description, or the name of a shipped one."""
    path = pathlib.Path(ref)
    if path.suffix in SUFFIXES or os.sep in ref or "/" in ref:
        if not path.is_file():
            raise DescriptionError(f"dataset description not found: {ref}")
        return path.resolve()
    for suffix in SUFFIXES:
        candidate = SHIPPED_DIR / f"{ref}{suffix}"
        if candidate.is_file():
            return candidate
    names = shipped()
    raise DescriptionError(f"unknown dataset {ref!r}{closest(ref, names)}; shipped descriptions: "
                           f"{', '.join(names)}; or pass a description file (--dataset_file FILE)")


_CACHE: Dict[str, Description] = {}


def load(ref: str) -> Description:
    """Loads a description: a shipped name (`movielens`) or a file (.yaml, .yml, .json)."""
    path = resolve(ref)
    key = f"{path}:{path.stat().st_mtime_ns}"
    if key not in _CACHE:
        _CACHE[key] = from_dict(read_file(path), str(path))
    return _CACHE[key]


def read_file(path: os.PathLike) -> Dict[str, Any]:
    """The mapping a description file holds (YAML or JSON); DescriptionError naming the line
    of a syntax error."""
    text = pathlib.Path(path).read_text(encoding="utf-8")
    if str(path).endswith(".json"):
        try:
            values = json.loads(text)
        except json.JSONDecodeError as e:
            raise DescriptionError(f"{path}:{e.lineno}: not valid JSON: {e.msg}") from None
    else:
        import yaml

        try:
            values = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f":{mark.line + 1}" if mark is not None else ""
            raise DescriptionError(f"{path}{where}: not valid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(values, dict):
        raise DescriptionError(f"{path}: a description is a mapping of keys (name, interactions, ...), "
                               f"got {type(values).__name__}")
    return values


def _hparam_text(value: Any) -> str:
    """A description's hyperparameter value as the command line writes it (`true`, `0.5`, `64`)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def from_dict(values: Mapping[str, Any], path: str = "") -> Description:
    """Checks `values` against the schema and the rules below and builds the Description.

    Relative `data_dir` is taken relative to the description file.
    """
    where = path or "description"
    check_schema(values, where)
    return _Builder(values, where, path).build()


def check_schema(values: Mapping[str, Any], where: str) -> None:
    """Raises DescriptionError for the first place `values` breaks the JSON Schema."""
    import jsonschema

    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(values), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        raise DescriptionError(f"{where}: {_schema_message(errors[0], schema)}")


def _schema_message(error, schema) -> str:
    key = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        bad = extra[0] if extra else "?"
        at = f"{key}." if error.absolute_path else ""
        return (f"unknown key {at}{bad}{closest(bad, allowed)}; allowed keys here: {', '.join(allowed)}")
    if error.validator == "enum":
        return (f"{key}: {error.instance!r} is not allowed{closest(error.instance, error.validator_value)}; "
                f"expected one of {', '.join(map(str, error.validator_value))}")
    if error.validator == "required":
        return f"{key}: missing required key: {error.message.split(' ')[0]}"
    if error.validator == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        return f"{key}: {error.instance!r} is a {type(error.instance).__name__}, expected {expected}"
    return f"{key}: {error.message}"


def parse_condition(text: Any, where: str) -> Condition:
    """`rating >= 4`, `helpful_yes >= 1`, `behavior == buy` -> Condition."""
    match = _CONDITION.match(str(text))
    if not match:
        raise DescriptionError(f"{where}: {text!r} is not a condition; expected `FIELD OP VALUE` with OP one of "
                               f"{' '.join(OPERATORS)}, e.g. `rating >= 4` or `behavior == buy`")
    field, op, value = match.groups()
    value = value.strip().strip("'\"")
    if field == BEHAVIOR:
        if op not in ("==", "!="):
            raise DescriptionError(f"{where}: a behavior condition compares with == or !=, got {op!r}")
        return Condition(field, op, value)
    try:
        number = float(value)
    except ValueError:
        raise DescriptionError(f"{where}: {value!r} in {text!r} is not a number") from None
    return Condition(field, op, number)


def parse_duration(value: Any, where: str) -> Optional[float]:
    """`3d`, `12h`, `90m`, `30s`, `1w`, a number of seconds, or null -> seconds or None."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise DescriptionError(f"{where}: {value!r} is not a duration; expected e.g. 30s, 90m, 12h, 3d, 1w "
                               "or a number of seconds")
    return float(match.group(1)) * _DURATION_SECONDS[match.group(2)]


def format_of(files: Sequence[str], declared: Optional[str], where: str) -> str:
    """The declared format, or the one the first file's extension implies."""
    if declared:
        return declared
    suffix = pathlib.Path(files[0]).suffix.lower()
    if suffix not in _FORMAT_OF_SUFFIX:
        raise DescriptionError(f"{where}: cannot tell the format of {files[0]!r} from its extension; "
                               f"set format to one of {', '.join(FORMATS)}")
    return _FORMAT_OF_SUFFIX[suffix]


class _Builder:
    """Turns a schema-checked mapping into a Description, checking what refers to what."""

    def __init__(self, values: Mapping[str, Any], where: str, path: str):
        self.v = values
        self.where = where
        self.path = path

    def fail(self, key: str, message: str) -> DescriptionError:
        return DescriptionError(f"{self.where}: {key}: {message}")

    def source(self, values: Mapping[str, Any], key: str) -> Source:
        files = values["files"]
        files = (files,) if isinstance(files, str) else tuple(files)
        if not files:
            raise self.fail(f"{key}.files", "names no file")
        fmt = format_of(files, values.get("format"), f"{self.where}: {key}")
        csv_opts = dict(values.get("csv") or {})
        if csv_opts and fmt not in (CSV, TSV):
            raise self.fail(f"{key}.csv", f"csv options apply to csv / tsv files, not {fmt}")
        delimiter = csv_opts.get("delimiter", "\t" if fmt == TSV else ",")
        header = bool(csv_opts.get("header", True))
        columns = tuple(csv_opts.get("columns", ()))
        if fmt in (CSV, TSV) and not header and not columns:
            raise self.fail(f"{key}.csv.columns", "a file without a header needs its column names "
                                                  "(csv.columns: [user_id, item_id, ...])")
        if len(delimiter) != 1:
            raise self.fail(f"{key}.csv.delimiter", f"{delimiter!r} must be one character")
        return Source(files=files, format=fmt, delimiter=delimiter, header=header, columns=columns,
                      encoding=csv_opts.get("encoding", "utf-8"), quotechar=csv_opts.get("quotechar", '"'))

    def feature(self, name: str, values: Mapping[str, Any], side: str, key: str) -> Feature:
        if not _NAME.match(name):
            raise self.fail(key, f"feature name {name!r} must be lower case letters, digits and _")
        ftype = values["type"]
        kwargs = dict(name=name, side=side, column=values.get("column", name), type=ftype)
        allowed = {"column", "type", "required", "pattern"}
        per_type = {
            CATEGORICAL: {"encoding", "vocabulary_size"},
            MULTI_CATEGORICAL: {"separator", "max_values", "multi_hot", "vocabulary_size"},
            NUMERIC: {"dtype", "normalize", "boundaries", "minimum", "maximum"},
            TIME: {"unit", "normalize", "boundaries"},
            TEXT: {"vocabulary_size", "max_tokens", "documents", "max_documents"},
        }
        allowed |= per_type[ftype]
        for option in values:
            if option not in allowed:
                raise self.fail(f"{key}.{option}", f"does not apply to a {ftype} feature; its options: "
                                                   f"{', '.join(sorted(allowed))}")
        for option in ("separator", "max_values", "pattern", "dtype", "normalize", "encoding", "multi_hot",
                       "vocabulary_size", "max_tokens", "required", "documents", "max_documents", "unit",
                       "minimum", "maximum"):
            if option in values:
                kwargs[option] = values[option]
        if "boundaries" in values:
            kwargs["boundaries"] = tuple(float(b) for b in values["boundaries"])
        if ftype == MULTI_CATEGORICAL and not kwargs.get("separator"):
            raise self.fail(f"{key}.separator", "a multi_categorical feature needs its separator (e.g. '|')")
        if kwargs.get("normalize") == BUCKETS and not kwargs.get("boundaries"):
            raise self.fail(f"{key}.boundaries", "normalize: buckets needs its boundaries")
        if kwargs.get("documents") and side != INTERACTION:
            raise self.fail(f"{key}.documents", "documents are built from interaction texts only")
        if kwargs.get("pattern"):
            try:
                compiled = re.compile(kwargs["pattern"])
            except re.error as e:
                raise self.fail(f"{key}.pattern", f"not a regular expression: {e}") from None
            if compiled.groups != 1:
                raise self.fail(f"{key}.pattern", f"needs exactly one (group), has {compiled.groups}")
        feature = Feature(**kwargs)
        if feature.raw_name in RESERVED_NAMES:
            raise self.fail(key, f"the raw feature {feature.raw_name!r} is one ExampleGen writes for every "
                                 f"dataset; choose another name")
        return feature

    def features(self, values: Mapping[str, Any], side: str, key: str) -> Tuple[Feature, ...]:
        return tuple(self.feature(name, spec, side, f"{key}.{name}") for name, spec in (values or {}).items())

    def build(self) -> Description:
        v = self.v
        inter = v["interactions"]
        source = self.source(inter, "interactions")
        time = inter["time"]
        time = {"column": time} if isinstance(time, str) else dict(time)
        rating = inter.get("rating")
        rating = {"column": rating} if isinstance(rating, str) else dict(rating or {})
        behavior = dict(inter.get("behavior") or {})

        behaviors: Tuple[str, ...]
        bins: Tuple[BehaviorBin, ...] = ()
        behavior_column = behavior.get("column", "")
        if behavior_column and "from_rating" in behavior:
            raise self.fail("interactions.behavior", "takes either a column (with its vocabulary) or from_rating, "
                                                     "not both")
        if behavior_column:
            behaviors = tuple(behavior.get("vocabulary") or ())
            if not behaviors:
                raise self.fail("interactions.behavior.vocabulary",
                                "a behavior column needs its vocabulary, weakest first (e.g. [pv, cart, fav, buy])")
        elif "from_rating" in behavior:
            if not rating:
                raise self.fail("interactions.behavior.from_rating", "behaviors from the rating need a rating column")
            bins = tuple(BehaviorBin(b["name"], parse_condition(b["when"], f"{self.where}: interactions.behavior."
                                                                            f"from_rating.{b['name']}.when")
                                     if b.get("when") is not None else None)
                         for b in behavior["from_rating"])
            behaviors = tuple(b.name for b in bins)
            if sum(1 for b in bins if b.when is None) > 1:
                raise self.fail("interactions.behavior.from_rating", "at most one behavior may have no `when` "
                                                                     "(the one every other rating gets)")
        else:
            behaviors = (behavior.get("name", "interacted"),)
        if len(set(behaviors)) != len(behaviors):
            raise self.fail("interactions.behavior", f"behaviors repeat: {list(behaviors)}")
        default_behavior = behavior.get("default", behaviors[-1] if bins else behaviors[0])
        if default_behavior not in behaviors:
            raise self.fail("interactions.behavior.default",
                            f"{default_behavior!r} is not a behavior{closest(default_behavior, behaviors)}; "
                            f"behaviors: {', '.join(behaviors)}")
        anchor = str(inter.get("examples", {}).get("anchor", "")) if isinstance(inter.get("examples"), dict) else ""
        if anchor and anchor not in behaviors:
            raise self.fail("interactions.examples.anchor", f"{anchor!r} is not a behavior{closest(anchor, behaviors)}; "
                                                            f"behaviors: {', '.join(behaviors)}")
        columns = self.features(inter.get("columns"), INTERACTION, "interactions.columns")

        items = v.get("items") or {}
        from_inter = bool(items.get("from_interactions"))
        item_source = None
        if items and not from_inter:
            item_source = self.source(items, "items")
            if "key" not in items:
                raise self.fail("items.key", "an items table needs its key column (the item id)")
        elif from_inter and "files" in items:
            raise self.fail("items", "takes either files (a side table) or from_interactions: true, not both")
        item_features = self.features(items.get("features"), ITEM, "items.features")
        users = v.get("users") or {}
        user_source = self.source(users, "users") if users else None
        if users and "key" not in users:
            raise self.fail("users.key", "a users table needs its key column (the user id)")
        user_features = self.features(users.get("features"), USER, "users.features")

        numeric_fields = {c.name for c in columns if c.type == NUMERIC}
        if rating:
            numeric_fields.add(RATING)
        labels = self.labels(v["labels"], behaviors, numeric_fields, bool(rating), anchor)
        tasks = self.tasks(v["tasks"], labels, behaviors)
        split = dict(v.get("split") or {})
        task_pair = tuple(v.get("task_pair") or ())
        binary = {t.name for t in tasks if t.kind == BINARY}
        for name in task_pair:
            if name not in binary:
                raise self.fail("task_pair", f"{name!r} is not a binary task{closest(name, sorted(binary))}")
        data_dir = v.get("data_dir", "")
        if data_dir and self.path and not os.path.isabs(data_dir):
            data_dir = os.path.normpath(os.path.join(os.path.dirname(self.path), data_dir))
        names = [f.raw_name for f in columns + item_features + user_features] + [l.name for l in labels]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise self.fail("(features and labels)", f"names used twice: {dupes}")
        for t in text_docs(columns):
            for doc in t.document_names():
                if doc in names:
                    raise self.fail(f"interactions.columns.{t.name}", f"its document feature {doc!r} is also declared")
        return Description(
            name=v["name"], path=self.path, data_dir=data_dir, interactions=source,
            user=inter["user"], item=inter["item"], time=time["column"], time_unit=time.get("unit", SECONDS),
            rating=rating.get("column", ""), rating_min=rating.get("min"), rating_max=rating.get("max"),
            behavior_column=behavior_column, behaviors=behaviors, behavior_bins=bins,
            default_behavior=default_behavior, anchor=anchor, columns=columns,
            items=item_source, items_from_interactions=from_inter, item_key=items.get("key", ""),
            item_features=item_features, users=user_source, user_key=users.get("key", ""),
            user_features=user_features, labels=labels, tasks=tasks, task_pair=task_pair,
            split=split.get("method", HASH_SPLIT), eval_day=str(split.get("eval_day", "")),
            test_day=str(split.get("test_day", "")),
            max_history=int((v.get("history") or {}).get("max_length", 64)),
            negatives_per_positive=int((v.get("negatives") or {}).get("per_positive", 0)),
            hparams={family: {name: _hparam_text(value) for name, value in values.items()}
                     for family, values in (v.get("hparams") or {}).items()},
            raw=dict(v),
        )

    def labels(self, values: Mapping[str, Any], behaviors: Sequence[str], numeric: set, has_rating: bool,
               anchor: str) -> Tuple[Label, ...]:
        out = []
        for name, spec in values.items():
            key = f"labels.{name}"
            if not _NAME.match(name):
                raise self.fail(key, f"label name {name!r} must be lower case letters, digits and _")
            sources = [s for s in (IMPLICIT, RATING, EXPR, BEHAVIOR) if s in spec]
            if len(sources) != 1:
                raise self.fail(key, f"needs exactly one of implicit, rating, expr, behavior; got {sources or 'none'}")
            source = sources[0]
            if source == IMPLICIT:
                out.append(Label(name, BINARY, IMPLICIT))
            elif source == RATING:
                if not has_rating:
                    raise self.fail(key, "a rating label needs interactions.rating (the data has no rating column)")
                out.append(Label(name, REGRESSION, RATING))
            elif source == EXPR:
                cond = parse_condition(spec[EXPR], f"{self.where}: {key}.expr")
                if cond.field == BEHAVIOR:
                    raise self.fail(f"{key}.expr", "a behavior label is written `behavior: NAME`, not as an expr")
                if cond.field not in numeric:
                    raise self.fail(f"{key}.expr", f"{cond.field!r} is not the rating or a numeric interaction "
                                                   f"column{closest(cond.field, sorted(numeric))}; available: "
                                                   f"{', '.join(sorted(numeric)) or 'none'}")
                out.append(Label(name, BINARY, EXPR, condition=cond))
            else:
                b = spec[BEHAVIOR]
                if b not in behaviors:
                    raise self.fail(f"{key}.behavior", f"{b!r} is not a behavior{closest(b, behaviors)}; behaviors: "
                                                       f"{', '.join(behaviors)}")
                horizon = parse_duration(spec.get("horizon"), f"{self.where}: {key}.horizon")
                if horizon is not None and not anchor:
                    raise self.fail(f"{key}.horizon", "a horizon applies to anchored examples "
                                                      "(interactions.examples.anchor)")
                out.append(Label(name, BINARY, BEHAVIOR, behavior=b, horizon_seconds=horizon))
        implicit = [l.name for l in out if l.source == IMPLICIT]
        if len(implicit) != 1:
            raise self.fail("labels", f"exactly one label is `implicit: true` (1 on logged rows, 0 on sampled "
                                      f"negatives); got {implicit or 'none'}")
        return tuple(out)

    def tasks(self, values: Sequence[Mapping[str, Any]], labels: Sequence[Label],
              behaviors: Sequence[str]) -> Tuple[TaskDef, ...]:
        by_name = {l.name: l for l in labels}
        out: List[TaskDef] = []
        for i, spec in enumerate(values):
            name = spec["name"]
            key = f"tasks[{i}] ({name})"
            kind = spec["kind"]
            label = spec.get("label", name if kind in (BINARY, REGRESSION) else "")
            if kind in (BINARY, REGRESSION):
                if label not in by_name:
                    raise self.fail(f"{key}.label", f"{label!r} is not a label{closest(label, list(by_name))}; "
                                                    f"labels: {', '.join(by_name)}")
                if by_name[label].kind != kind:
                    raise self.fail(f"{key}.kind", f"a {kind} task needs a {kind} label; {label!r} is "
                                                   f"{by_name[label].kind}")
            condition = spec.get("condition", "")
            if condition and (condition not in by_name or by_name[condition].kind != BINARY):
                raise self.fail(f"{key}.condition", f"{condition!r} is not a binary label"
                                                    f"{closest(condition, list(by_name))}")
            targets = tuple(spec.get("target_behaviors", ()))
            for b in targets + ((spec["behavior"],) if spec.get("behavior") else ()):
                if b not in behaviors:
                    raise self.fail(key, f"{b!r} is not a behavior{closest(b, behaviors)}; behaviors: "
                                         f"{', '.join(behaviors)}")
            if kind == "next_behavior" and not spec.get("behavior"):
                raise self.fail(f"{key}.behavior", "a next_behavior task names the behavior it asks about")
            gate = spec.get("gate")
            out.append(TaskDef(
                name=name, kind=kind, label=label, condition=condition, parent=spec.get("parent", ""),
                threshold=(gate or {}).get("threshold"), max_worsening=(gate or {}).get("max_worsening"),
                metric=(gate or {}).get("metric", ""), gated=gate is not False,
                target_behaviors=targets, behavior=spec.get("behavior", "")))
        names = [t.name for t in out]
        for t in out:
            if t.parent and t.parent not in names:
                raise self.fail(f"tasks ({t.name}).parent", f"{t.parent!r} is not a task{closest(t.parent, names)}")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise self.fail("tasks", f"task names repeat: {dupes}")
        return tuple(out)


def text_docs(columns: Sequence[Feature]) -> Tuple[Feature, ...]:
    """The interaction text columns that build user and item documents."""
    return tuple(c for c in columns if c.type == TEXT and c.documents)


# ----------------------------------------------------------------------------------------
# Raw features: what ExampleGen writes for a description (its encoding, and the schema
# generated from it, read this; nothing else lists them).
# ----------------------------------------------------------------------------------------
BYTES, INT, FLOAT = "bytes", "int", "float"


@dataclasses.dataclass(frozen=True)
class RawFeature:
    """One raw feature of the interaction view.

    Attributes:
      name: the tf.Example feature.
      dtype: bytes, int or float.
      min_count / max_count: values per example (max_count None: unbounded).
      required: present on every example.
      serving: a client sends it with a `serving_default` request (labels, the split, the
        timestamp and interaction outcomes are not sent).
      domain: the allowed string values (behaviors, the split), empty: any.
      minimum / maximum: numeric range, when declared.
      role: id, time, split, history, feature, outcome, document or label.
    """

    name: str
    dtype: str
    min_count: int
    max_count: Optional[int]
    required: bool
    serving: bool
    domain: Tuple[str, ...] = ()
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    role: str = "feature"


SPLIT_VALUES = ("train", "eval", "test")


def _feature_raw(f: Feature, serving: bool, role: str) -> RawFeature:
    if f.type == MULTI_CATEGORICAL:
        return RawFeature(f.raw_name, BYTES, 1 if f.required else 0, f.max_values, f.required, serving, role=role)
    if f.type == CATEGORICAL:
        return RawFeature(f.raw_name, BYTES, 1 if f.required else 0, 1, f.required, serving, role=role)
    if f.type == NUMERIC:
        return RawFeature(f.raw_name, INT if f.dtype == "int" else FLOAT, 1 if f.required else 0, 1, f.required,
                          serving, minimum=f.minimum, maximum=f.maximum, role=role)
    if f.type == TIME:
        return RawFeature(f.raw_name, INT, 1 if f.required else 0, 1, f.required, serving, role=role)
    return RawFeature(f.raw_name, BYTES, 1 if f.required else 0, 1, f.required, serving, role=role)


def raw_features(d: Description) -> Tuple[RawFeature, ...]:
    """Every raw feature of the interaction view, in a fixed order: ids, time, history,
    item and user features, interaction outcomes and their documents, labels, split."""
    out = [
        RawFeature("user_id", BYTES, 1, 1, True, True, role="id"),
        RawFeature("item_id", BYTES, 1, 1, True, True, role="id"),
        RawFeature("timestamp", INT, 1, 1, True, False, minimum=0, role="time"),
        RawFeature("history_item_ids", BYTES, 0, d.max_history, False, True, role="history"),
        RawFeature("history_behaviors", BYTES, 0, d.max_history, False, True, domain=d.behaviors, role="history"),
    ]
    out += [_feature_raw(f, True, "feature") for f in d.item_features + d.user_features]
    for c in d.columns:
        # Outcomes of the interaction: absent on sampled negatives, never sent for serving.
        out.append(dataclasses.replace(_feature_raw(c, False, "outcome"), min_count=0, required=False))
        for doc in c.document_names():
            out.append(RawFeature(doc, BYTES, 0, c.max_documents, False, True, role="document"))
    for label in d.labels:
        if label.source == RATING:
            out.append(RawFeature(label.name, FLOAT, 0, 1, False, False, minimum=d.rating_min,
                                  maximum=d.rating_max, role="label"))
        elif label.raw:
            out.append(RawFeature(label.name, INT, 1, 1, True, False, minimum=0, maximum=1, role="label"))
    out.append(RawFeature("split", BYTES, 1, 1, True, False, domain=SPLIT_VALUES, role="split"))
    return tuple(out)


def raw_feature(d: Description, name: str) -> RawFeature:
    for f in raw_features(d):
        if f.name == name:
            return f
    raise KeyError(f"{d.name}: no raw feature {name!r}")
