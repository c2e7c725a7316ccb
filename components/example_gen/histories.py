"""Per-user example building: ordering, splits, labels, histories and sampled negatives.

`build_user_examples` is the whole per-user step of the ingest; the Beam
pipeline calls it once per user after grouping, and `build_examples` runs it
over an in-memory log for tests and counts.
"""

from __future__ import annotations

import collections
import random
from typing import Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Set, Tuple

from components.example_gen import parsing, splits
from components.example_gen.config import (
    EVAL,
    SPLIT_BY_DAY,
    SPLIT_HASH,
    SPLIT_LEAVE_LAST_TWO_OUT,
    TEST,
    TRAIN,
    IngestConfig,
)
from components.example_gen.parsing import BadRow, Interaction, ItemMeta, id_sort_key
from contract import datasets, features

# Taobao behavior -> raw label (pv -> viewed, cart -> cart, ...): both tuples
# of datasets.TAOBAO list the same events in the same order.
TAOBAO_LABEL_OF_BEHAVIOR = dict(zip(datasets.TAOBAO.behaviors, datasets.TAOBAO.raw_labels))
assert TAOBAO_LABEL_OF_BEHAVIOR[parsing.TAOBAO_PV] == features.VIEWED

# Keys of the per-user statistics (summed over users into the report).
STAT_USERS = "users"
STAT_POSITIVES = "positives_written"
STAT_NEGATIVES = "negatives_written"
STAT_LABEL_POSITIVES = "label_positives"
STAT_DROPPED = "dropped_after_test_day"


class Catalogue:
    """The items negatives are drawn from, with the metadata a negative example takes.

    Args:
      items: item id -> ItemMeta.
    """

    def __init__(self, items: Mapping[str, ItemMeta]):
        self.meta: Dict[str, ItemMeta] = dict(items)
        self.ids: List[str] = sorted(self.meta, key=id_sort_key)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self.meta


def taobao_catalogue(interactions: Iterable[Interaction]) -> Catalogue:
    """All items of a Taobao log; an item's category is the one on its earliest row.

    Args:
      interactions: parsed Taobao rows.
    """
    first: Dict[str, Tuple[int, str, int, str]] = {}
    for row in interactions:
        key = (row.timestamp, row.file, row.line, row.category)
        if row.item_id not in first or key < first[row.item_id]:
            first[row.item_id] = key
    return Catalogue({item: parsing.taobao_item_meta(key[3]) for item, key in first.items()})


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
      examples: the interaction view (one example per interaction, plus negatives).
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


def _example_rows(events: Sequence[Interaction], dataset: str) -> Dict[int, _Row]:
    """Index in `events` of each example row's anchor -> the row."""
    rows: Dict[int, _Row] = {}
    if dataset == datasets.MOVIELENS.name:
        for i, event in enumerate(events):
            rows[i] = _Row(event, {features.RATING: [event.rating], features.WATCHED: [1]})
        return rows
    # Taobao: one row per item with a pv, at its first pv; later cart/fav/buy are labels.
    first_pv: Dict[str, int] = {}
    for i, event in enumerate(events):
        if event.behavior == parsing.TAOBAO_PV and event.item_id not in first_pv:
            first_pv[event.item_id] = i
    for i in first_pv.values():
        labels = {label: [0] for label in datasets.TAOBAO.raw_labels}
        labels[features.VIEWED] = [1]
        rows[i] = _Row(events[i], labels)
    for event in events:
        i = first_pv.get(event.item_id)
        if i is not None and event.behavior != parsing.TAOBAO_PV and event.timestamp >= events[i].timestamp:
            rows[i].labels[TAOBAO_LABEL_OF_BEHAVIOR[event.behavior]] = [1]
    return rows


def _assign_splits(user_id: str, anchors: Sequence[int], rows: Mapping[int, _Row],
                   config: IngestConfig) -> Dict[int, Optional[str]]:
    if config.split == SPLIT_HASH:
        return {i: splits.hash_split(user_id, rows[i].event.item_id) for i in anchors}
    if config.split == SPLIT_LEAVE_LAST_TWO_OUT:
        return dict(zip(anchors, splits.leave_last_two_out(len(anchors))))
    assert config.split == SPLIT_BY_DAY, config.split
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


def build_user_examples(user_id: str, interactions: Iterable[Interaction], config: IngestConfig,
                        catalogue: Catalogue) -> UserResult:
    """Turns one user's parsed rows into examples with splits, labels, histories and negatives.

    Rows are ordered by (timestamp, item id). An example's history holds the
    behaviors of the interactions strictly before it in that order that the
    split lets a model see (hash: training-split pairs only; otherwise all),
    oldest first, the last `max_history` kept. MovieLens rows whose movie is
    not in the catalogue are returned as `missing_item_metadata` bad rows.

    Args:
      user_id: the user.
      interactions: every good row of the user, in any order.
      config: the ingest config.
      catalogue: item metadata (MovieLens: movies.csv; Taobao: all items of the log).
    """
    spec = config.spec
    bad_rows: List[BadRow] = []
    events: List[Interaction] = []
    for event in interactions:
        if spec.name == datasets.MOVIELENS.name and event.item_id not in catalogue:
            bad_rows.append(BadRow(parsing.MISSING_ITEM_METADATA, event.file, event.line,
                                   f"movie {event.item_id} (user {user_id}) is not in {config.items}"))
        else:
            events.append(event)
    events.sort(key=order_key)

    rows = _example_rows(events, spec.name)
    anchors = sorted(rows)
    split_of = _assign_splits(user_id, anchors, rows, config)
    if config.split == SPLIT_HASH:
        split_of_pair: Dict[str, str] = {}
        visible = []
        for e in events:
            if e.item_id not in split_of_pair:
                split_of_pair[e.item_id] = splits.hash_split(user_id, e.item_id)
            visible.append(split_of_pair[e.item_id] == TRAIN)
    else:
        visible = [True] * len(events)

    stats = _new_stats()
    examples: List[ExampleRecord] = []
    positives: List[ExampleRecord] = []
    positive_behaviors: List[str] = []  # aligned with positives: the behavior of each one's interaction
    history_ids: List[str] = []
    history_behaviors: List[str] = []
    seen_ids: List[str] = []  # every visible interaction so far, untruncated (the user view)
    seen_behaviors: List[str] = []
    seen_before: Dict[str, int] = {}  # split -> visible interactions before its first example
    keep = config.max_history
    start = 0
    while start < len(events):
        # Events with the same (timestamp, item) are one position: none sees another.
        end = start + 1
        while end < len(events) and _tie_key(events[end]) == _tie_key(events[start]):
            end += 1
        for i in range(start, end):
            if i not in rows:
                continue
            split = split_of[i]
            if split is None:
                stats[STAT_DROPPED] += 1
                continue
            row = rows[i]
            seen_before.setdefault(split, len(seen_ids))
            feats = _item_features(row.event, spec, catalogue)
            feats[features.USER_ID] = [user_id]
            feats[features.SPLIT] = [split]
            feats[features.TIMESTAMP] = [row.event.timestamp]
            feats[features.HISTORY_ITEM_IDS] = history_ids[-keep:] if keep else []
            feats[features.HISTORY_BEHAVIORS] = history_behaviors[-keep:] if keep else []
            feats.update(row.labels)
            record = ExampleRecord(split, feats, False)
            examples.append(record)
            positives.append(record)
            positive_behaviors.append(row.event.behavior)
            stats[STAT_POSITIVES][split] += 1
            for label, values in row.labels.items():
                if label != features.RATING and values == [1]:
                    stats[STAT_LABEL_POSITIVES][split][label] += 1
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
                examples.append(_negative(record, item, spec, catalogue))
                stats[STAT_NEGATIVES][record.split] += 1
    user_examples = _user_view(user_id, positives, positive_behaviors, seen_ids, seen_behaviors, seen_before,
                               config)
    return UserResult(examples, bad_rows, stats, user_examples)


def _user_view(user_id: str, positives: Sequence[ExampleRecord], positive_behaviors: Sequence[str],
               seen_ids: Sequence[str],
               seen_behaviors: Sequence[str], seen_before: Mapping[str, int],
               config: IngestConfig) -> List[ExampleRecord]:
    """The user view: per split, what the user had done before it and the items it holds out.

    - history: every interaction the split lets a model see before it, oldest first and
      untruncated (a model reads the most recent `max_history`; serving excludes all of
      them). Hash split: all of the user's training interactions. Time splits: every
      interaction before the split's first example.
    - targets (eval / test): the split's items; in the hash split only those the dataset
      counts as retrieval targets (MovieLens: rated >= 4, the liked items of protocol K).
    - the train example has the training history and the training items as targets.
    Users without history or without targets in a split get no example for it.
    """
    spec = config.spec
    train_count = sum(1 for r in positives if r.split == TRAIN)
    level = features.activity_level(train_count)
    out: List[ExampleRecord] = []
    for split in (TRAIN, EVAL, TEST):
        rows = [(r, b) for r, b in zip(positives, positive_behaviors) if r.split == split]
        if config.split == SPLIT_HASH:
            seen = len(seen_ids)
            if spec.retrieval_min_rating is not None and split != TRAIN:
                rows = [(r, b) for r, b in rows if r.features[features.RATING][0] >= spec.retrieval_min_rating]
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


def _meta_features(meta: ItemMeta, spec: datasets.DatasetSpec) -> Dict[str, list]:
    feats: Dict[str, list] = {features.ITEM_GENRES: list(meta.genres)}
    if spec.has_year and meta.year is not None:
        feats[features.ITEM_YEAR] = [meta.year]
    return feats


def _item_features(event: Interaction, spec: datasets.DatasetSpec, catalogue: Catalogue) -> Dict[str, list]:
    """Item id and metadata of a positive: MovieLens from the catalogue, Taobao from the row."""
    if event.category is not None:
        meta = parsing.taobao_item_meta(event.category)
    else:
        meta = catalogue.meta[event.item_id]
    feats = _meta_features(meta, spec)
    feats[features.ITEM_ID] = [event.item_id]
    return feats


def _negative(positive: ExampleRecord, item_id: str, spec: datasets.DatasetSpec,
              catalogue: Catalogue) -> ExampleRecord:
    """A sampled negative: the positive's user, time, history and split with another item, labels 0."""
    feats = _meta_features(catalogue.meta[item_id], spec)
    feats[features.ITEM_ID] = [item_id]
    for name in (features.USER_ID, features.TIMESTAMP, features.SPLIT, features.HISTORY_ITEM_IDS,
                 features.HISTORY_BEHAVIORS):
        feats[name] = positive.features[name]
    for label in spec.raw_labels:
        if label != features.RATING:
            feats[label] = [0]
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


def build_user_view(interactions: Iterable[Interaction], config: IngestConfig,
                    catalogue: Catalogue) -> List[ExampleRecord]:
    """The user view of a whole in-memory log (users in id order); see `_user_view`."""
    by_user = group_by_user(interactions)
    out: List[ExampleRecord] = []
    for user_id in sorted(by_user, key=id_sort_key):
        out.extend(build_user_examples(user_id, by_user[user_id], config, catalogue).user_examples)
    return out


def build_examples(interactions: Iterable[Interaction], config: IngestConfig,
                   catalogue: Catalogue) -> Tuple[List[ExampleRecord], List[BadRow], Dict[str, object]]:
    """Runs `build_user_examples` over a whole in-memory log.

    Returns (examples, bad rows, summed stats), users in id order.

    Args:
      interactions: all good rows.
      config: the ingest config.
      catalogue: item metadata.
    """
    examples: List[ExampleRecord] = []
    bad_rows: List[BadRow] = []
    stats: Dict[str, object] = {}
    by_user = group_by_user(interactions)
    for user_id in sorted(by_user, key=id_sort_key):
        result = build_user_examples(user_id, by_user[user_id], config, catalogue)
        examples.extend(result.examples)
        bad_rows.extend(result.bad_rows)
        merge_stats(stats, result.stats)
    return examples, bad_rows, stats
