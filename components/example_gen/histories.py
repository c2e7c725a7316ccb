"""Per-user example building: ordering, splits, labels, histories, documents and sampled negatives.

`build_user_examples` is the whole per-user step of the ingest; the Beam pipeline calls
it once per user after grouping, and `build_examples` runs it over an in-memory log for
tests and counts. What an example row is and what it carries comes from the dataset
description:

- example rows: every interaction, or (`examples.anchor`) one row per (user, item) at its
  first event of the anchor behavior;
- raw labels: implicit (1 on logged rows, 0 on sampled negatives), the rating, and
  behavior labels (the row's own behavior; anchored: 1 when an event of that behavior
  for the pair is at or after the anchor, within the label's horizon when it has one,
  and in the row's split: a label never reads past its split's end, see `_event_splits`);
  `expr` labels are Transform's;
- item and user features from the side tables (or, `items.from_interactions`, the
  values on the item's earliest row), written under `Feature.raw_name`;
- interaction columns as outcomes of the row (absent on sampled negatives);
- documents of interaction texts (`documents: true`): `user_<c>_docs` / `item_<c>_docs`,
  the `max_documents` most recent training-split texts of the user / item strictly
  before the row in the (timestamp, item id) order, oldest first.
"""

from __future__ import annotations

import bisect
import collections
import operator
import random
from typing import Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Set, Tuple

from components.example_gen import parsing, splits
from components.example_gen.config import (
    EVAL,
    SPLIT_HASH,
    SPLIT_LEAVE_LAST_TWO_OUT,
    TEST,
    TRAIN,
    IngestConfig,
)
from components.example_gen.parsing import BadRow, Interaction, id_sort_key
from contract import description as desc
from contract import features

# Keys of the per-user statistics (summed over users into the report).
STAT_USERS = "users"
STAT_POSITIVES = "positives_written"
STAT_NEGATIVES = "negatives_written"
STAT_LABEL_POSITIVES = "label_positives"
STAT_DROPPED = "dropped_after_test_day"

FeatureDict = Dict[str, list]

_OPERATORS = {">=": operator.ge, "<=": operator.le, "==": operator.eq, "!=": operator.ne, ">": operator.gt,
              "<": operator.lt}


class Catalogue:
    """The items negatives are drawn from, with the raw item features an example of each takes.

    Args:
      items: item id -> raw feature name -> values (see `parsing.feature_dict`).
    """

    def __init__(self, items: Mapping[str, FeatureDict]):
        self.features: Dict[str, FeatureDict] = dict(items)
        self.ids: List[str] = sorted(self.features, key=id_sort_key)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self.features


def first_row_key(row: Interaction) -> Tuple:
    """What decides an item's earliest row (items.from_interactions): time, then file position."""
    return (row.timestamp, row.file, row.line, row.item_values)


def catalogue_from_interactions(interactions: Iterable[Interaction], d: desc.Description) -> Catalogue:
    """Every item of the log; with `items.from_interactions`, its features are the values on its
    earliest row (by time, then file and line); otherwise it has none.

    Args:
      interactions: parsed rows.
      d: the description.
    """
    first: Dict[str, Tuple] = {}
    for row in interactions:
        key = first_row_key(row)
        if row.item_id not in first or key < first[row.item_id]:
            first[row.item_id] = key
    return Catalogue({item: parsing.feature_dict(d.item_features, key[3]) for item, key in first.items()})


class ExampleRecord(NamedTuple):
    """One output example before serialization.

    Attributes:
      split: train / eval / test.
      features: raw feature name -> list of values (str, int or float).
      negative: True for a sampled negative.
    """

    split: str
    features: Dict[str, list]
    negative: bool


class UserResult(NamedTuple):
    """What one user contributes: examples of both views, dropped rows and counts.

    Attributes:
      examples: the interaction view (one example per example row, plus negatives).
      bad_rows: rows dropped for this user.
      stats: counts summed into the ingest report.
      user_examples: the user view: at most one example per split (see `_user_view`).
    """

    examples: List[ExampleRecord]
    bad_rows: List[BadRow]
    stats: Dict[str, object]
    user_examples: List[ExampleRecord] = []


class _Row(NamedTuple):
    """An example row: the interaction it is anchored at and its labels."""

    event: Interaction
    labels: Dict[str, list]


def order_key(row: Interaction) -> Tuple:
    """Order of a user's interactions: (timestamp, item id), then file position for exact ties."""
    return (row.timestamp, id_sort_key(row.item_id), row.file, row.line)


def _tie_key(row: Interaction) -> Tuple:
    return (row.timestamp, id_sort_key(row.item_id))


class Plan:
    """What the description asks of every user's examples, worked out once per config.

    Args:
      config: the ingest config.
    """

    def __init__(self, config: IngestConfig):
        spec = config.spec
        d = spec.description
        self.d = d
        self.anchor = d.anchor
        self.implicit = d.implicit_label
        self.rating_labels = tuple(l.name for l in d.labels if l.source == desc.RATING)
        self.behavior_labels = tuple((l.name, l.behavior, l.horizon_seconds) for l in d.labels
                                     if l.source == desc.BEHAVIOR)
        self.negative_labels = {name: [0] for name in [self.implicit] + [n for n, _, _ in self.behavior_labels]}
        column_index = {c.name: i for i, c in enumerate(d.columns)}
        # expr labels are Transform's; counted here so a task without training positives stops the run.
        self.expr_labels = tuple(
            (l.name, _OPERATORS[l.condition.op], l.condition.value,
             None if l.condition.field == desc.RATING else column_index[l.condition.field])
            for l in d.labels if l.source == desc.EXPR)
        self.outcomes = tuple((i, c.raw_name, c.type == desc.MULTI_CATEGORICAL) for i, c in enumerate(d.columns))
        self.documents = tuple((i, c) for i, c in enumerate(d.columns) if c.type == desc.TEXT and c.documents)
        self.items_table = d.items is not None
        self.users_table = d.users is not None
        self.user_required = any(f.required for f in d.user_features)
        self.targets = frozenset(spec.retrieval_targets(config.split))

    def row_labels(self, event: Interaction) -> Dict[str, list]:
        """The raw labels of an example row at `event` before anchored behavior labels are set."""
        labels: Dict[str, list] = {self.implicit: [1]}
        if event.rating is not None:
            for name in self.rating_labels:
                labels[name] = [event.rating]
        if not self.behavior_labels:
            return labels
        if self.anchor:
            for name, _, _ in self.behavior_labels:
                labels[name] = [0]
        else:
            for name, behavior, _ in self.behavior_labels:
                labels[name] = [1 if event.behavior == behavior else 0]
        return labels

    def count_positives(self, row: _Row, counts: Dict[str, int]) -> None:
        """Adds 1 to `counts` for each binary label (raw and expr) that is 1 on an example row."""
        counts[self.implicit] += 1
        labels = row.labels
        for name, _, _ in self.behavior_labels:
            if labels[name][0] == 1:
                counts[name] += 1
        for name, op, threshold, index in self.expr_labels:
            value = row.event.rating if index is None else row.event.columns[index]
            if value is not None and op(value, threshold):
                counts[name] += 1


def plan_of(config: IngestConfig) -> Plan:
    """The Plan of a config, worked out on first use and kept on the config."""
    plan = config.__dict__.get("_plan")
    if plan is None:
        plan = Plan(config)
        object.__setattr__(config, "_plan", plan)  # a cache beside the frozen fields, not a field
    return plan


def _example_rows(events: Sequence[Interaction], plan: Plan) -> Dict[int, _Row]:
    """Index in `events` of each example row's anchor -> the row."""
    rows: Dict[int, _Row] = {}
    if not plan.anchor:
        for i, event in enumerate(events):
            rows[i] = _Row(event, plan.row_labels(event))
        return rows
    first: Dict[str, int] = {}
    for i, event in enumerate(events):
        if event.behavior == plan.anchor and event.item_id not in first:
            first[event.item_id] = i
    for i in first.values():
        rows[i] = _Row(events[i], plan.row_labels(events[i]))
    return rows


def _event_splits(events: Sequence[Interaction], anchors: Sequence[int], split_of: Mapping[int, Optional[str]],
                  config: IngestConfig) -> Optional[List[Optional[str]]]:
    """The split whose time each event falls in (None: after the test day), or None under the
    hash split, whose splits are of (user, item) pairs: every event of a pair is in its split.

    By day, the split of the event's day; leave-last-two-out, the split of the user's last
    example row at or before the event (the eval split starts at the eval row's anchor).
    """
    if config.split == SPLIT_HASH:
        return None
    if config.split == SPLIT_LEAVE_LAST_TWO_OUT:
        out: List[Optional[str]] = []
        current, k = TRAIN, 0
        for j in range(len(events)):
            while k < len(anchors) and anchors[k] <= j:
                current = split_of[anchors[k]] or current
                k += 1
            out.append(current)
        return out
    return [splits.day_split(e.timestamp, config.eval_day, config.test_day) for e in events]


def _set_anchored_labels(events: Sequence[Interaction], rows: Mapping[int, _Row], split_of: Mapping[int, Optional[str]],
                         event_splits: Optional[Sequence[Optional[str]]], plan: Plan) -> None:
    """Sets each anchored row's behavior labels: 1 when an event of the label's behavior on the
    row's item is at or after the anchor, within the label's horizon, and in the row's split
    (`_event_splits`): a label never reads an event past its row's split boundary.
    """
    first = {rows[i].event.item_id: i for i in rows}
    for j, event in enumerate(events):
        i = first.get(event.item_id)
        if i is None:
            continue
        delay = event.timestamp - events[i].timestamp
        if delay < 0 or (event_splits is not None and event_splits[j] != split_of[i]):
            continue
        for name, behavior, horizon in plan.behavior_labels:
            if event.behavior == behavior and (horizon is None or delay <= horizon):
                rows[i].labels[name] = [1]


def _pair_splits(user_id: str, events: Sequence[Interaction]) -> Dict[str, str]:
    """Hash split: item id -> the split of the (user, item) pair, for every item of the user."""
    out: Dict[str, str] = {}
    for e in events:
        if e.item_id not in out:
            out[e.item_id] = splits.hash_split(user_id, e.item_id)
    return out


def _assign_splits(user_id: str, anchors: Sequence[int], rows: Mapping[int, _Row], config: IngestConfig,
                   pair_splits: Optional[Mapping[str, str]] = None) -> Dict[int, Optional[str]]:
    if config.split == SPLIT_HASH:
        return {i: pair_splits[rows[i].event.item_id] for i in anchors}
    if config.split == SPLIT_LEAVE_LAST_TWO_OUT:
        return dict(zip(anchors, splits.leave_last_two_out(len(anchors))))
    return {i: splits.day_split(rows[i].event.timestamp, config.eval_day, config.test_day) for i in anchors}


class NegativeSampler:
    """Draws a user's negatives: distinct catalogue items the user never touched.

    Args:
      rng: the user's random generator (see `user_rng`); draws advance it.
      catalogue: the items to draw from, in id order.
      touched: items the user interacted with.
    """

    def __init__(self, rng: random.Random, catalogue: Catalogue, touched: Set[str]):
        self._rng = rng
        self._ids = catalogue.ids
        self._touched = touched
        self.available = len(self._ids) - sum(1 for item in touched if item in catalogue)
        self._complement: Optional[List[str]] = None
        if self.available * 2 < len(self._ids):
            # Mostly touched: draw from the explicit complement instead of rejecting.
            self._complement = [item for item in self._ids if item not in touched]

    def draw(self, count: int) -> List[str]:
        """`count` distinct untouched items (all of them when fewer are left)."""
        count = min(count, self.available)
        if count <= 0:
            return []
        if self._complement is not None:
            return self._rng.sample(self._complement, count)
        chosen: List[str] = []
        taken: Set[str] = set()
        while len(chosen) < count:
            item = self._ids[self._rng.randrange(len(self._ids))]
            if item in self._touched or item in taken:
                continue
            taken.add(item)
            chosen.append(item)
        return chosen


def user_rng(seed: int, user_id: str) -> random.Random:
    """The negative sampler of one user, seeded from (seed, user id) so worker order does not matter."""
    return random.Random(f"{seed}:{user_id}")


def _new_stats() -> Dict[str, object]:
    return {
        STAT_USERS: 1,
        STAT_POSITIVES: collections.Counter(),
        STAT_NEGATIVES: collections.Counter(),
        STAT_LABEL_POSITIVES: collections.defaultdict(collections.Counter),
        STAT_DROPPED: 0,
    }


# ----------------------------------------------------------------------------------------
# Documents
# ----------------------------------------------------------------------------------------
class TextEntry(NamedTuple):
    """A training-split text of an interaction column: whose, of what, when, and the text."""

    column: int
    item_id: str
    user_id: str
    key: Tuple  # (timestamp, id_sort_key(item id)): what "strictly before a row" compares
    tie: Tuple  # orders equal keys of different users: (id_sort_key(user id), file, line)
    text: str


class ItemTexts:
    """Every item's training-split texts per document column, in (timestamp, item id) order.

    Args:
      entries: the TextEntry of every training example row with a text (all users).
    """

    def __init__(self, entries: Iterable[TextEntry]):
        grouped: Dict[Tuple[int, str], List[TextEntry]] = collections.defaultdict(list)
        for e in entries:
            grouped[(e.column, e.item_id)].append(TextEntry(*e))
        self._keys: Dict[Tuple[int, str], List[Tuple]] = {}
        self._texts: Dict[Tuple[int, str], List[str]] = {}
        for k, group in grouped.items():
            group.sort(key=lambda e: (e.key, e.tie))
            self._keys[k] = [e.key for e in group]
            self._texts[k] = [e.text for e in group]

    def before(self, column: int, item_id: str, key: Tuple, count: int) -> List[str]:
        """The last `count` texts of the item strictly before `key`, oldest first."""
        keys = self._keys.get((column, item_id))
        if not keys:
            return []
        end = bisect.bisect_left(keys, key)
        return self._texts[(column, item_id)][max(0, end - count):end]


class _Prepared(NamedTuple):
    events: List[Interaction]
    bad_rows: List[BadRow]
    rows: Dict[int, _Row]
    anchors: List[int]
    split_of: Dict[int, Optional[str]]
    pair_splits: Optional[Dict[str, str]]  # hash split: item id -> the pair's split


def _prepare(user_id: str, interactions: Iterable[Interaction], config: IngestConfig, plan: Plan,
             catalogue: Catalogue, users: Optional[Mapping[str, FeatureDict]],
             prior: Sequence[Interaction] = ()) -> _Prepared:
    """A user's good rows in order, their bad rows, example rows and splits (`prior`: see
    `build_user_examples`)."""
    bad_rows: List[BadRow] = []
    events: List[Interaction] = []
    missing_user = plan.users_table and plan.user_required and user_id not in (users or {})
    for event in interactions:
        if plan.items_table and event.item_id not in catalogue:
            bad_rows.append(BadRow(parsing.MISSING_ITEM_METADATA, event.file, event.line,
                                   f"item {event.item_id} (user {user_id}) is not in the items table "
                                   f"({', '.join(plan.d.items.files)})"))
        elif missing_user:
            bad_rows.append(BadRow(parsing.MISSING_USER_METADATA, event.file, event.line,
                                   f"user {user_id} is not in the users table ({', '.join(plan.d.users.files)}), "
                                   f"whose features are required"))
        else:
            events.append(event)
    events.extend(_known(prior, plan, catalogue))
    events.sort(key=order_key)
    rows = _example_rows(events, plan)
    if prior:
        rows = _without_prior(rows, prior)
    anchors = sorted(rows)
    pair_splits = _pair_splits(user_id, events) if config.split == SPLIT_HASH else None
    split_of = _assign_splits(user_id, anchors, rows, config, pair_splits)
    if plan.anchor and plan.behavior_labels:
        _set_anchored_labels(events, rows, split_of, _event_splits(events, anchors, split_of, config), plan)
    return _Prepared(events, bad_rows, rows, anchors, split_of, pair_splits)


def _known(prior: Sequence[Interaction], plan: Plan, catalogue: Catalogue) -> List[Interaction]:
    """The carried interactions whose item is still in the items table (all without one)."""
    return [e for e in prior if not plan.items_table or e.item_id in catalogue]


def _without_prior(rows: Dict[int, _Row], prior: Sequence[Interaction]) -> Dict[int, _Row]:
    """The example rows that are not carried interactions (those were rows of their own span)."""
    carried = {id(e) for e in prior}
    return {i: row for i, row in rows.items() if id(row.event) not in carried}


def _training_texts(user_id: str, prepared: _Prepared, plan: Plan) -> List[TextEntry]:
    """The user's training example rows' texts of the document columns, in row order."""
    out: List[TextEntry] = []
    for i in prepared.anchors:
        if prepared.split_of[i] != TRAIN:
            continue
        event = prepared.rows[i].event
        for column, _ in plan.documents:
            text = event.columns[column]
            if text is not None:
                out.append(TextEntry(column, event.item_id, user_id, _tie_key(event),
                                     (id_sort_key(user_id), event.file, event.line), text))
    return out


def training_texts(user_id: str, interactions: Iterable[Interaction], config: IngestConfig,
                   catalogue: Catalogue, users: Optional[Mapping[str, FeatureDict]] = None) -> List[TextEntry]:
    """One user's training-split texts of the description's document columns (the input of
    `ItemTexts`, which needs every user's).

    Args: as `build_user_examples`.
    """
    plan = plan_of(config)
    if not plan.documents:
        return []
    return _training_texts(user_id, _prepare(user_id, interactions, config, plan, catalogue, users), plan)


def _user_documents(texts: Sequence[TextEntry], plan: Plan, key: Tuple) -> FeatureDict:
    out: FeatureDict = {}
    for column, feature in plan.documents:
        mine = [e for e in texts if e.column == column and e.key < key]
        out[f"user_{feature.name}_docs"] = [e.text for e in mine[-feature.max_documents:]]
    return out


def _item_documents(item_texts: Optional[ItemTexts], plan: Plan, item_id: str, key: Tuple) -> FeatureDict:
    out: FeatureDict = {}
    for column, feature in plan.documents:
        texts = item_texts.before(column, item_id, key, feature.max_documents) if item_texts is not None else []
        out[f"item_{feature.name}_docs"] = texts
    return out


# ----------------------------------------------------------------------------------------
# Examples
# ----------------------------------------------------------------------------------------
def build_user_examples(user_id: str, interactions: Iterable[Interaction], config: IngestConfig,
                        catalogue: Catalogue, users: Optional[Mapping[str, FeatureDict]] = None,
                        item_texts: Optional[ItemTexts] = None, prior: Sequence[Interaction] = ()) -> UserResult:
    """Turns one user's parsed rows into examples with splits, labels, histories and negatives.

    Rows are ordered by (timestamp, item id). An example's history holds the
    behaviors of the interactions strictly before it in that order that the
    split lets a model see (hash: training-split pairs only; otherwise all),
    oldest first, the last `max_history` kept. With a declared items table, rows
    whose item is not in it are `missing_item_metadata` bad rows; with a declared
    users table, a user missing from it has no user features, or, when a user feature
    is required, all its rows are `missing_user_metadata` bad rows.

    Args:
      user_id: the user.
      interactions: every good row of the user, in any order.
      config: the ingest config.
      catalogue: every item with its raw features.
      users: user id -> raw user features (None: no users table).
      item_texts: every item's training texts (needed when the description has documents).
      prior: the user's interactions carried from earlier spans (components/example_gen/spans.py):
        in the histories of this call's rows (and touched, for the negatives), never rows
        themselves; an anchored row is not repeated for an item anchored among them.
    """
    plan = plan_of(config)
    prepared = _prepare(user_id, interactions, config, plan, catalogue, users, prior)
    events, rows, split_of = prepared.events, prepared.rows, prepared.split_of
    if prepared.pair_splits is not None:
        pair_splits = prepared.pair_splits
        visible = [pair_splits[e.item_id] == TRAIN for e in events]
    else:
        visible = [True] * len(events)
    ties = [_tie_key(e) for e in events]
    user_features = (users or {}).get(user_id, {})
    my_texts = _training_texts(user_id, prepared, plan) if plan.documents else []

    stats = _new_stats()
    label_counts = stats[STAT_LABEL_POSITIVES]
    examples: List[ExampleRecord] = []
    positives: List[ExampleRecord] = []
    positive_behaviors: List[str] = []  # aligned with positives: the behavior of each one's interaction
    history_ids: List[str] = []
    history_behaviors: List[str] = []
    seen_ids: List[str] = []  # every visible interaction so far, untruncated (the user view)
    seen_behaviors: List[str] = []
    seen_before: Dict[str, int] = {}  # split -> visible interactions before its first example
    keep = config.max_history
    item_features = catalogue.features
    outcomes, documents = plan.outcomes, plan.documents
    start = 0
    while start < len(events):
        # Events with the same (timestamp, item) are one position: none sees another.
        end = start + 1
        while end < len(events) and ties[end] == ties[start]:
            end += 1
        for i in range(start, end):
            if i not in rows:
                continue
            split = split_of[i]
            if split is None:
                stats[STAT_DROPPED] += 1
                continue
            row = rows[i]
            event = row.event
            seen_before.setdefault(split, len(seen_ids))
            feats = dict(item_features[event.item_id])
            if user_features:
                feats.update(user_features)
            feats[features.ITEM_ID] = [event.item_id]
            feats[features.USER_ID] = [user_id]
            feats[features.SPLIT] = [split]
            feats[features.TIMESTAMP] = [event.timestamp]
            feats[features.HISTORY_ITEM_IDS] = history_ids[-keep:] if keep else []
            feats[features.HISTORY_BEHAVIORS] = history_behaviors[-keep:] if keep else []
            for index, name, multi in outcomes:
                value = event.columns[index]
                if value is not None:
                    feats[name] = list(value) if multi else [value]
            if documents:
                key = ties[i]
                feats.update(_user_documents(my_texts, plan, key))
                feats.update(_item_documents(item_texts, plan, event.item_id, key))
            feats.update(row.labels)
            record = ExampleRecord(split, feats, False)
            examples.append(record)
            positives.append(record)
            positive_behaviors.append(event.behavior)
            stats[STAT_POSITIVES][split] += 1
            plan.count_positives(row, label_counts[split])
        for i in range(start, end):
            if visible[i]:
                history_ids.append(events[i].item_id)
                history_behaviors.append(events[i].behavior)
                seen_ids.append(events[i].item_id)
                seen_behaviors.append(events[i].behavior)
        if len(history_ids) > 2 * keep:  # only the last `keep` are ever read
            del history_ids[:-keep or None], history_behaviors[:-keep or None]
        start = end

    if config.negatives_per_positive > 0 and positives:
        sampler = NegativeSampler(user_rng(config.seed, user_id), catalogue, {e.item_id for e in events})
        for record in positives:
            for item in sampler.draw(config.negatives_per_positive):
                examples.append(_negative(record, item, plan, catalogue, user_features, item_texts))
                stats[STAT_NEGATIVES][record.split] += 1
    user_examples = _user_view(user_id, positives, positive_behaviors, seen_ids, seen_behaviors, seen_before,
                               config, plan)
    return UserResult(examples, prepared.bad_rows, stats, user_examples)


def _user_view(user_id: str, positives: Sequence[ExampleRecord], positive_behaviors: Sequence[str],
               seen_ids: Sequence[str], seen_behaviors: Sequence[str], seen_before: Mapping[str, int],
               config: IngestConfig, plan: Plan) -> List[ExampleRecord]:
    """The user view: per split, what the user had done before it and the items it holds out.

    - history: every interaction the split lets a model see before it, oldest first and
      untruncated (a model reads the most recent `max_history`; serving excludes all of
      them). Hash split: all of the user's training interactions. Time splits: every
      interaction before the split's first example.
    - targets (eval / test): the split's items; in the hash split only those whose
      behavior is one of the retrieval task's `target_behaviors`
      (`DatasetSpec.retrieval_targets`; all when it names none).
    - the train example has the training history and the training items as targets.
    Users without history or without targets in a split get no example for it.
    """
    train_count = sum(1 for r in positives if r.split == TRAIN)
    level = features.activity_level(train_count)
    out: List[ExampleRecord] = []
    for split in (TRAIN, EVAL, TEST):
        rows = [(r, b) for r, b in zip(positives, positive_behaviors) if r.split == split]
        if config.split == SPLIT_HASH:
            seen = len(seen_ids)
            if plan.targets and split != TRAIN:
                rows = [(r, b) for r, b in rows if b in plan.targets]
        elif split == TRAIN:
            later = [seen_before[s] for s in (EVAL, TEST) if s in seen_before]
            seen = min(later) if later else len(seen_ids)
        else:
            seen = seen_before.get(split, 0)
        if not rows or not seen:
            continue
        out.append(ExampleRecord(split, {
            features.USER_ID: [user_id],
            features.SPLIT: [split],
            features.USER_ACTIVITY_LEVEL: [level],
            features.HISTORY_ITEM_IDS: list(seen_ids[:seen]),
            features.HISTORY_BEHAVIORS: list(seen_behaviors[:seen]),
            features.TARGET_ITEM_IDS: [r.features[features.ITEM_ID][0] for r, _ in rows],
            features.TARGET_BEHAVIORS: [b for _, b in rows],
        }, False))
    return out


def _negative(positive: ExampleRecord, item_id: str, plan: Plan, catalogue: Catalogue,
              user_features: FeatureDict, item_texts: Optional[ItemTexts]) -> ExampleRecord:
    """A sampled negative: the positive's user, time, history, user documents and split with
    another item (its features and documents), binary labels 0, no outcomes."""
    feats = dict(catalogue.features[item_id])
    feats.update(user_features)
    feats[features.ITEM_ID] = [item_id]
    for name in (features.USER_ID, features.TIMESTAMP, features.SPLIT, features.HISTORY_ITEM_IDS,
                 features.HISTORY_BEHAVIORS):
        feats[name] = positive.features[name]
    if plan.documents:
        for _, feature in plan.documents:
            name = f"user_{feature.name}_docs"
            feats[name] = positive.features[name]
        key = (positive.features[features.TIMESTAMP][0], id_sort_key(item_id))
        feats.update(_item_documents(item_texts, plan, item_id, key))
    feats.update(plan.negative_labels)
    return ExampleRecord(positive.split, feats, True)


def merge_stats(total: Dict[str, object], part: Mapping[str, object]) -> Dict[str, object]:
    """Adds the counts of `part` into `total` (nested dicts of numbers) and returns `total`.

    Args:
      total: the running sums, changed in place.
      part: counts to add; nested mappings are merged key by key.
    """
    for key, value in part.items():
        if isinstance(value, Mapping):
            merge_stats(total.setdefault(key, {}), value)
        else:
            total[key] = total.get(key, 0) + value
    return total


def group_by_user(interactions: Iterable[Interaction]) -> Dict[str, List[Interaction]]:
    """Rows grouped by user id."""
    by_user: Dict[str, List[Interaction]] = collections.defaultdict(list)
    for row in interactions:
        by_user[row.user_id].append(row)
    return by_user


def item_texts_of(by_user: Mapping[str, List[Interaction]], config: IngestConfig, catalogue: Catalogue,
                  users: Optional[Mapping[str, FeatureDict]] = None) -> Optional[ItemTexts]:
    """Every item's training texts of an in-memory log (None when the description has no documents)."""
    if not plan_of(config).documents:
        return None
    return ItemTexts(e for user_id, rows in by_user.items()
                     for e in training_texts(user_id, rows, config, catalogue, users))


def build_user_view(interactions: Iterable[Interaction], config: IngestConfig, catalogue: Catalogue,
                    users: Optional[Mapping[str, FeatureDict]] = None) -> List[ExampleRecord]:
    """The user view of a whole in-memory log (users in id order); see `_user_view`."""
    by_user = group_by_user(interactions)
    texts = item_texts_of(by_user, config, catalogue, users)
    out: List[ExampleRecord] = []
    for user_id in sorted(by_user, key=id_sort_key):
        out.extend(build_user_examples(user_id, by_user[user_id], config, catalogue, users, texts).user_examples)
    return out


def build_examples(interactions: Iterable[Interaction], config: IngestConfig, catalogue: Catalogue,
                   users: Optional[Mapping[str, FeatureDict]] = None
                   ) -> Tuple[List[ExampleRecord], List[BadRow], Dict[str, object]]:
    """Runs `build_user_examples` over a whole in-memory log.

    Returns (examples, bad rows, summed stats), users in id order.

    Args:
      interactions: all good rows.
      config: the ingest config.
      catalogue: every item with its raw features.
      users: user id -> raw user features (None: no users table).
    """
    examples: List[ExampleRecord] = []
    bad_rows: List[BadRow] = []
    stats: Dict[str, object] = {}
    by_user = group_by_user(interactions)
    texts = item_texts_of(by_user, config, catalogue, users)
    for user_id in sorted(by_user, key=id_sort_key):
        result = build_user_examples(user_id, by_user[user_id], config, catalogue, users, texts)
        examples.extend(result.examples)
        bad_rows.extend(result.bad_rows)
        merge_stats(stats, result.stats)
    return examples, bad_rows, stats

