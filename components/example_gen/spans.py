"""Interaction logs that keep arriving: span patterns, the carried per-user state, and the ingest of one span.

A description's interaction `files` may name partitions with TFX's span and version specs
(tfx.components.example_gen.utils, reused here): `logs/{SPAN}/part-*.csv` (span = the
number), `date={YYYY}-{MM}-{DD}/*.csv` (span = days since 1970-01-01, as TFX counts) and,
optionally, `{VERSION}` (a span delivered again gets a higher version; the latest is read).
Side tables (items, users) have no specs: their size is the catalogue's, and every run
reads them whole.

One span is ingested on its own, with the state carried from the span before it instead of
the earlier spans themselves, so that its cost grows with the span, not with the history:

- the carried state (`state.jsonl.gz`): per user, the last `max_history` interactions (what
  the next span's histories read) and how many interactions came before;
- a span's rows are example rows whose histories are the carried interactions plus the
  span's earlier rows (`histories.build_user_examples(prior=...)`); anchored rows (Taobao)
  take their labels from the events of their own span, and an item anchored among the
  carried interactions is not anchored again; a span's rows and histories equal those of a
  from-scratch ingest over all the days (tests/test_spans.py); sampled negatives are drawn
  per span, from items the user touched neither in the carried history nor in the span;
- the interaction view is written once per role the window may give the span
  (Split-train / Split-eval / Split-test: the same rows, their `split` feature set to the
  role), so that the window (components/window.py) links files and never re-reads them;
- the user view: in the eval and test roles, one example per user of the span whose history
  is the carried interactions and whose targets are the span's rows; in the train role, the
  span's own interactions as both (leave-one-out queries within the span, so that no
  interaction is a training target twice across the window's spans).

Not supported with span patterns (a clear error says so): interaction text columns with
`documents: true` (their texts would have to be carried per item as well). `max_bad_rows`
applies per span. Whether a task has training positives, and whether every behavior a task
needs occurs, is checked on the window, not on one span (a day may have no purchase).
"""

from __future__ import annotations

import collections
import dataclasses
import gzip
import json
import os
import re
from typing import Any, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from components.example_gen import histories, inmemory, parsing, readers
from components.example_gen.config import SPLIT_BY_DAY, SPLIT_NAMES, TRAIN, IngestConfig
from components.example_gen.histories import Catalogue
from components.example_gen.parsing import BadRow, Interaction
from contract import datasets
from contract import description as desc
from contract import features as F

SPAN_PROPERTY = "span"
VERSION_PROPERTY = "version"
STATE_FILE = "state.jsonl.gz"
SPAN_REPORT = "span_report.json"
# Every row of a span is built as a training row (all earlier interactions visible, none
# dropped): a by_day split whose eval day never comes. The role is set per written copy.
ALL_TRAIN_DAYS = {"eval_day": "9999-12-30", "test_day": "9999-12-31"}


class SpanError(ValueError):
    """A span pattern, a span's files or the carried state cannot be used: says which and why."""


# ----------------------------------------------------------------------------------------
# Patterns
# ----------------------------------------------------------------------------------------
def has_span_spec(pattern: str) -> bool:
    """True when a file pattern holds a {SPAN} (or {SPAN:n}) or the date specs {YYYY}{MM}{DD}."""
    from tfx.components.example_gen import utils

    return bool(re.search(utils.SPAN_FULL_REGEX, pattern)) or any(s in pattern for s in utils.DATE_SPECS)


def is_spanned(description: datasets.DatasetRef) -> bool:
    """True when the description's interaction files are span partitions (see module docstring).

    Raises SpanError when only some of its interaction patterns have span specs, or a side
    table has them.
    """
    d = datasets.dataset_spec(description).description
    flags = [has_span_spec(p) for p in d.interactions.files]
    if any(flags) and not all(flags):
        raise SpanError(f"dataset {d.name!r}: interactions.files {list(d.interactions.files)} mix patterns with and "
                        "without span specs ({SPAN} or {YYYY}{MM}{DD}); give every pattern the same spec")
    for kind, source in (("items", d.items), ("users", d.users)):
        files = getattr(source, "files", ()) or ()
        spanned = [f for f in files if has_span_spec(f)]
        if spanned:
            raise SpanError(f"dataset {d.name!r}: {kind}.files {spanned} hold span specs; side tables are read whole "
                            "every run (their size is the catalogue's): name their files without {SPAN} / {YYYY}")
    if any(flags) and any(c.type == desc.TEXT and c.documents for c in d.columns):
        names = [c.name for c in d.columns if c.type == desc.TEXT and c.documents]
        raise SpanError(f"dataset {d.name!r}: interaction text columns {names} have documents: true, which span "
                        "patterns do not support yet (the texts of earlier spans are not carried); set documents: "
                        "false or give interactions.files without span specs")
    return all(flags) and bool(flags)


class SpanFiles(NamedTuple):
    """One span as found on disk.

    Attributes:
      span: the span number ({SPAN}, or days since 1970-01-01 for {YYYY}{MM}{DD}).
      version: its latest version ({VERSION}), None when the patterns have none.
      patterns: the description's interaction patterns with span and version filled in
        (relative to the data directory; globs kept).
      fingerprint: TFX's fingerprint of the matched files (names, sizes, times).
    """

    span: int
    version: Optional[int]
    patterns: Tuple[str, ...]
    fingerprint: str


def _split(name: str, pattern: str):
    from tfx.proto import example_gen_pb2

    return example_gen_pb2.Input.Split(name=name, pattern=pattern)


def available_spans(data_dir: str, patterns: Sequence[str]) -> List[SpanFiles]:
    """Every span the patterns find under `data_dir`, each at its latest version, by span.

    A pattern is matched as TFX's ExampleGen matches it (its glob and capture regex), over
    all spans instead of the latest only. Raises SpanError when a pattern matches nothing or
    a matched path has no readable span or version.

    Args:
      data_dir: the directory the patterns are relative to.
      patterns: the description's interaction file patterns (all with span specs).
    """
    from tfx.components.example_gen import utils
    from tfx.dsl.io import fileio

    found: Dict[int, Dict[str, Any]] = {}
    for index, pattern in enumerate(patterns):
        split = _split(f"interactions{index}", pattern)
        is_span, is_date, is_version = utils.verify_split_pattern_specs(split)
        # TFX's own matching (the same glob and capture groups its driver uses for the latest span).
        glob_pattern, regex = utils._create_matching_glob_and_regex(  # noqa: SLF001 - reused, see module doc
            data_dir, split, is_span, is_date, is_version, None)
        matches = sorted(fileio.glob(glob_pattern))
        if not matches:
            raise SpanError(f"interaction files: nothing matches {pattern!r} in {data_dir} (glob {glob_pattern})")
        for path in matches:
            try:
                _, span, _, version = utils._find_matched_span_version_from_path(  # noqa: SLF001
                    path, regex, is_span, is_date, is_version)
            except ValueError as e:
                raise SpanError(f"{path}: {e} (pattern {pattern!r})") from None
            entry = found.setdefault(span, {"versions": {}})
            entry["versions"].setdefault(index, set()).add(version)
    out = []
    for span in sorted(found):
        versions = found[span]["versions"]
        latest = [max(v for v in vs if v is not None) if any(v is not None for v in vs) else None
                  for vs in versions.values()]
        version = None if all(v is None for v in latest) else max(v for v in latest if v is not None)
        filled = []
        for index in sorted(versions):
            pattern = patterns[index]
            split = _split(f"interactions{index}", pattern)
            is_span, is_date, is_version = utils.verify_split_pattern_specs(split)
            if is_version and version not in versions[index]:
                continue  # this pattern has an older version only: the span's latest version is elsewhere
            filled.append(utils.get_pattern_for_span_version(pattern, is_span, is_date, is_version, span, version))
        fingerprint, _, _ = utils.calculate_splits_fingerprint_span_and_version(
            data_dir, [_split(f"interactions{i}", p) for i, p in enumerate(filled)])
        out.append(SpanFiles(span, version, tuple(filled), fingerprint))
    return out


def span_date(span: int) -> str:
    """The calendar day (YYYY-MM-DD) of a date-spec span number (days since 1970-01-01)."""
    from tfx.components.example_gen import utils

    year, month, day = utils.span_number_to_date(span)
    return f"{year:04d}-{month:02d}-{day:02d}"


def spans_to_ingest(available: Sequence[SpanFiles], last_span: Optional[int]) -> List[SpanFiles]:
    """The spans after `last_span` (all when None), oldest first: what a run ingests."""
    return [s for s in available if last_span is None or s.span > last_span]


# ----------------------------------------------------------------------------------------
# The carried state
# ----------------------------------------------------------------------------------------
class UserState(NamedTuple):
    """What the next span needs of one user: interactions before it, and the last of them.

    Attributes:
      count: every interaction of the user before the next span (all earlier spans).
      events: the last `max_history` of them in history order (Interaction tuples).
    """

    count: int
    events: Tuple[Interaction, ...]


def state_record(user_id: str, state: UserState) -> str:
    """One JSON line of the state file."""
    events = [[e.item_id, e.timestamp, e.behavior, e.rating, [list(c) if isinstance(c, tuple) else c
                                                              for c in e.columns],
               list(e.item_values), e.file, e.line] for e in state.events]
    return json.dumps({"user": user_id, "count": state.count, "events": events}, sort_keys=True)


def parse_state_record(line: str) -> Tuple[str, UserState]:
    """(user id, UserState) of one JSON line of the state file."""
    value = json.loads(line)
    user = value["user"]
    events = tuple(Interaction(user, str(item), int(ts), str(behavior), rating,
                               tuple(tuple(c) if isinstance(c, list) else c for c in columns),
                               tuple(item_values), str(file), int(line_no))
                   for item, ts, behavior, rating, columns, item_values, file, line_no in value["events"])
    return user, UserState(int(value["count"]), events)


def read_state(path: str) -> Dict[str, UserState]:
    """The state file at `path` (gzip JSON lines) as user id -> UserState; {} when path is ''."""
    if not path:
        return {}
    import tensorflow as tf

    out: Dict[str, UserState] = {}
    with tf.io.gfile.GFile(path, "rb") as f, gzip.GzipFile(fileobj=f) as lines:
        for number, line in enumerate(lines, 1):
            try:
                user, state = parse_state_record(line.decode("utf-8"))
            except (ValueError, KeyError, TypeError) as e:
                raise SpanError(f"{path}:{number}: not a carried-state record ({e})") from None
            out[user] = state
    return out


def advance(state: Optional[UserState], span_events: Iterable[Interaction], keep: int) -> UserState:
    """A user's state after a span: its good events appended in history order, the last `keep` kept."""
    before = state.events if state else ()
    events = sorted(list(before) + list(span_events), key=histories.order_key)
    added = len(events) - len(before)
    return UserState((state.count if state else 0) + added, tuple(events[-keep:] if keep else ()))


# ----------------------------------------------------------------------------------------
# One user of one span
# ----------------------------------------------------------------------------------------
class SpanUser(NamedTuple):
    """What one user contributes to a span: serialized examples per role, the next state, bad rows, counts.

    Attributes:
      examples: (role, serialized interaction-view example) per row and role.
      user_examples: (role, serialized user-view example).
      state: the user's state after the span.
      bad_rows: rows dropped.
      stats: counts (histories' keys), summed into the span's report.
    """

    examples: List[Tuple[str, bytes]]
    user_examples: List[Tuple[str, bytes]]
    state: UserState
    bad_rows: List[BadRow]
    stats: Dict[str, object]


def span_config(config: IngestConfig) -> IngestConfig:
    """The ingest config every span is built with: every row a training row (see module doc)."""
    values = config.to_dict()
    values.update(split=SPLIT_BY_DAY, **ALL_TRAIN_DAYS)
    return IngestConfig.from_dict(values)


def _user_view(user_id: str, prior: UserState, good: Sequence[Interaction], positives: Sequence[histories.ExampleRecord],
               anchor: str) -> List[Tuple[str, Dict[str, list]]]:
    """(role, features) of the user-view examples of one user of a span (see module docstring)."""
    if not positives:
        return []
    targets = [r.features[F.ITEM_ID][0] for r in positives]
    behaviors = [anchor] * len(targets) if anchor else [e.behavior for e in good]
    if len(behaviors) != len(targets):  # every good event is a row when there is no anchor
        raise AssertionError(f"user {user_id}: {len(targets)} rows but {len(behaviors)} behaviors")
    out = []
    if good:
        out.append((TRAIN, {
            F.USER_ID: [user_id], F.SPLIT: [TRAIN],
            F.USER_ACTIVITY_LEVEL: [F.activity_level(prior.count + len(good))],
            F.HISTORY_ITEM_IDS: [e.item_id for e in good], F.HISTORY_BEHAVIORS: [e.behavior for e in good],
            F.TARGET_ITEM_IDS: [e.item_id for e in good], F.TARGET_BEHAVIORS: [e.behavior for e in good]}))
    if prior.events:
        for role in SPLIT_NAMES[1:]:
            out.append((role, {
                F.USER_ID: [user_id], F.SPLIT: [role],
                F.USER_ACTIVITY_LEVEL: [F.activity_level(prior.count)],
                F.HISTORY_ITEM_IDS: [e.item_id for e in prior.events],
                F.HISTORY_BEHAVIORS: [e.behavior for e in prior.events],
                F.TARGET_ITEM_IDS: targets, F.TARGET_BEHAVIORS: behaviors}))
    return out


def build_span_user(user_id: str, rows: Iterable[Interaction], prior: Optional[UserState], config: IngestConfig,
                    catalogue: Catalogue, users: Optional[Mapping[str, histories.FeatureDict]],
                    types: Mapping[str, str]) -> SpanUser:
    """One user's examples of a span given the state carried from before it.

    Args:
      user_id: the user.
      rows: the user's good rows of the span, in any order.
      prior: the user's carried state (None: a new user).
      config: the ingest config (`span_config` of the run's).
      catalogue: the items (side table, or the span's rows' items).
      users: the users table (None: none).
      types: the raw feature types (`encoding.feature_types`).
    """
    from components.example_gen import encoding  # TensorFlow: loaded by the ingest only

    prior = prior or UserState(0, ())
    rows = list(rows)
    result = histories.build_user_examples(user_id, rows, config, catalogue, users, None, prior=prior.events)
    dropped = {(b.file, b.line) for b in result.bad_rows}
    good = sorted((r for r in rows if (r.file, r.line) not in dropped), key=histories.order_key)
    examples = []
    for record in result.examples:
        for role in SPLIT_NAMES:
            features = dict(record.features)
            features[F.SPLIT] = [role]
            examples.append((role, encoding.serialize(features, types)))
    positives = [r for r in result.examples if not r.negative]
    anchor = histories.plan_of(config).anchor
    user_examples = [(role, encoding.serialize(features, types))
                     for role, features in _user_view(user_id, prior, good, positives, anchor)]
    return SpanUser(examples, user_examples, advance(prior, good, config.max_history), result.bad_rows,
                    result.stats)


def span_inputs(config: IngestConfig, data_dir: str, span: SpanFiles) -> Dict[str, List[str]]:
    """The files of one span (its interaction patterns) and the side tables, by kind, after the
    checks preflight makes of files and columns (the behaviors the tasks need are checked on
    the window: a day may lack one).

    Raises FileNotFoundError or ValueError naming the file, the column or the empty table.
    """
    d = config.spec.description
    if not data_dir or not os.path.isdir(data_dir):
        raise FileNotFoundError(f"data directory of dataset {d.name!r} not found: {data_dir!r}")
    files: Dict[str, List[str]] = {}
    interactions = dataclasses.replace(d.interactions, files=tuple(span.patterns))
    tables = [(inmemory.INTERACTIONS, interactions, parsing.InteractionParser(d))]
    for kind in (inmemory.ITEMS, inmemory.USERS):
        if (d.items if kind == inmemory.ITEMS else d.users) is not None:
            table = parsing.TableParser(d, kind)
            tables.append((kind, table.source, table))
    for kind, source, parser in tables:
        readers.check_encoding(source, f"{kind}.csv.encoding")
        paths = readers.expand_files(source, data_dir, kind)
        for path in paths:
            readers.check_columns(path, source, parser.columns, parser.where)
        if not any(readers.has_records(path, source) for path in paths):
            where = f"span {span.span}'s" if kind == inmemory.INTERACTIONS else "the"
            raise ValueError(f"{where} {kind} table of dataset {d.name!r} is empty: {', '.join(paths)} "
                             f"{'holds' if len(paths) == 1 else 'hold'} no data rows")
        files[kind] = paths
    return files


def read_span_report(examples_uri: str) -> Dict[str, Any]:
    """The span report an ingest wrote beside a span's splits ({} when none)."""
    import tensorflow as tf

    path = os.path.join(examples_uri, SPAN_REPORT)
    if not tf.io.gfile.exists(path):
        return {}
    with tf.io.gfile.GFile(path) as f:
        return json.loads(f.read())


def window_positives(reports: Sequence[Mapping[str, Any]]) -> Dict[str, int]:
    """Positives per binary label summed over span reports (their train-role counts)."""
    total: Dict[str, int] = collections.Counter()
    for r in reports:
        total.update({k: int(v) for k, v in r.get("label_positives", {}).get(TRAIN, {}).items()})
    return dict(total)
