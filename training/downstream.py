"""Downstream tasks for fine-tuning a pretrained sequence encoder (PeterRec), on protocol S.

Every task is built from what ExampleGen writes with the `leave_last_two_out` split
(protocol S): the user view (per user and split, the history before the split's item,
mapped to rows with `training.views`) and the interaction view (each interaction's
split, rating and item features). A user's time-ordered interactions are
`train ... train, eval, test`; the user view's train history is everything before the
eval item, its test history everything before the test item (the eval item included).

Tasks of a dataset (`tasks(spec)`), from its description:

- each next-behavior task (binary, AUC; e.g. `next_like`: is the user's next interaction
  of the task's behavior?). Input: the sequence before it. Built from the user view
  alone (training labels from the histories' behaviors, eval / test labels from the
  split's `target_behaviors`), so the pipeline's fine-tuning Trainer, which reads only
  the user view, builds it too (`next_behavior`).
- with behaviors from the rating and a categorical or multi-valued item feature, for
  each next-behavior task's behavior B and the first such feature f:
  `next_<B>_<f>` (multi-class over f's values, user-level, accuracy): the values of f of
  the user's next item of behavior B. An item may have several values: the target is
  the set, the loss a softmax against the even distribution over it, and a prediction
  is right when its top value is one of them (`evaluation.definitions.set_accuracy`).

Split rules (the same for every task):

- pretraining reads the train histories only (`training.views.sequence_windows` of the
  train split), so it never sees an eval or test item;
- train: positions inside each user's train history. The label of position t is
  defined by the items after t within that history (the next item; the next B
  item), and the input is the items up to t. Long histories are cut into windows of
  `length` positions from the most recent end (optionally only the `per_user` most
  recent windows are kept); the labels are computed on the whole history first, so a
  window's last position may be labelled by the next window's first item (still inside
  the train history);
- eval: one example per user, the most recent `length` items of the train history as
  input, the eval item as the label (next_<B>_<f>: only users whose eval item is of
  behavior B). Used for early stopping and every choice of setting;
- test: one example per user, the most recent `length` items of the test history
  (train history + eval item) as input, the test item as the label (next_<B>_<f>:
  only users whose test item is of behavior B). Only reported.

So no pretraining sequence and no fine-tuning training label contains an eval or test
item, and the classes of f come from the training split's items only (a value seen only
in eval/test is dropped from a target; a target left empty drops the example).

An example is a sequence with a label per position: `labels[b, t]` is the label of the
prediction made from `items[b, :t + 1]`, and `mask[b, t]` is 1 where it is defined. An
eval or test example has one labelled position, its last item.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from contract import datasets as D
from contract import description as desc
from contract import features as F
from models.families.sequential import CLOZE
from training.views import UserView, sequence_windows

BINARY = "binary"
MULTICLASS = "multiclass"

TRAIN, EVAL, TEST = "train", "eval", "test"
SPLITS = (TRAIN, EVAL, TEST)
MISSING_RATING = -1.0  # an interaction without a rating (a sampled negative)


def class_feature(spec: D.DatasetSpec) -> Optional[desc.Feature]:
    """The item feature whose values a next-item-feature task predicts: the first
    categorical or multi-valued item feature, when the behaviors come from the rating
    (the interaction view then tells each interaction's behavior); None otherwise."""
    d = spec.description
    if not d.behavior_bins or not d.rating_label:
        return None
    return next((f for f in d.item_features if f.type in (desc.CATEGORICAL, desc.MULTI_CATEGORICAL)), None)


def feature_task(behavior: str, feature: desc.Feature) -> str:
    """The name of the task: the values of `feature` of the next item of `behavior`."""
    return f"next_{behavior}_{feature.name}"


def tasks(spec: D.DatasetSpec) -> Tuple[str, ...]:
    """The downstream tasks of a dataset: its next-behavior tasks, then one next-item-feature
    task per next-behavior task's behavior (when `class_feature` gives a feature)."""
    feature = class_feature(spec)
    names = tuple(name for name, _ in spec.next_behavior_tasks)
    if feature is not None:
        names += tuple(feature_task(behavior, feature) for _, behavior in spec.next_behavior_tasks)
    return names


def interaction_spec(spec: D.DatasetSpec) -> Dict[str, tf.io.FixedLenFeature]:
    """The raw interaction-view features the labels come from (ids, split, rating, the class feature)."""
    out = {
        F.USER_ID: tf.io.FixedLenFeature([], tf.string),
        F.ITEM_ID: tf.io.FixedLenFeature([], tf.string),
        F.SPLIT: tf.io.FixedLenFeature([], tf.string),
    }
    rating = spec.description.rating_label
    if rating:
        out[rating] = tf.io.FixedLenFeature([], tf.float32, default_value=MISSING_RATING)
    feature = class_feature(spec)
    if feature is not None:
        out[feature.raw_name] = tf.io.VarLenFeature(tf.string)
    return out


@dataclasses.dataclass(frozen=True)
class Interaction:
    """One interaction of the interaction view: what the labels read.

    Attributes:
      user / item / split: as written by ExampleGen.
      rating: the rating (MISSING_RATING without one).
      values: the item's values of the class feature (`class_feature`).
    """

    user: str
    item: str
    split: str
    rating: float
    values: Tuple[str, ...]


@dataclasses.dataclass
class LabeledSequences:
    """Sequences with a label per position (see the module docstring).

    Attributes:
      items / behaviors: [n, length] rows, left-aligned, 0-padded.
      labels: [n, length] 0/1 (binary) or [n, length, classes] target weights summing to 1
        (multi-class); 0 where `mask` is 0.
      mask: [n, length] 1.0 where a label is defined.
      users: the user of each example.
    """

    items: np.ndarray
    behaviors: np.ndarray
    labels: np.ndarray
    mask: np.ndarray
    users: List[str]

    def __len__(self) -> int:
        return len(self.users)

    @property
    def labelled(self) -> int:
        return int(self.mask.sum())

    def labelled_targets(self) -> np.ndarray:
        """The labels of the labelled positions, in row-major order: [m] or [m, classes]."""
        return self.labels[self.mask > 0]


@dataclasses.dataclass
class DownstreamData:
    """One task's examples per split, with its kind and classes."""

    task: str
    kind: str
    classes: Tuple[str, ...]
    splits: Dict[str, LabeledSequences]

    @property
    def num_outputs(self) -> int:
        return 1 if self.kind == BINARY else len(self.classes)

    def counts(self) -> Dict[str, Dict[str, int]]:
        return {s: {"examples": len(v), "labelled_positions": v.labelled} for s, v in self.splits.items()}


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def interactions_from_records(records: Sequence[Mapping[str, list]], spec: D.DatasetSpec) -> List[Interaction]:
    """Interactions from raw interaction-view feature dicts (in-memory ingest records' `features`)."""
    rating_name = spec.description.rating_label
    feature = class_feature(spec)
    out = []
    for r in records:
        rating = (r.get(rating_name) if rating_name else None) or [MISSING_RATING]
        values = r.get(feature.raw_name, []) if feature is not None else []
        out.append(Interaction(_text(r[F.USER_ID][0]), _text(r[F.ITEM_ID][0]), _text(r[F.SPLIT][0]),
                               float(rating[0]), tuple(_text(g) for g in values)))
    return out


def load_interactions(files: Sequence[str], spec: D.DatasetSpec) -> List[Interaction]:
    """Interactions from the interaction view's raw examples (GZIP TFRecords)."""
    if not files:
        raise FileNotFoundError("no interaction-view files given")
    rating_name = spec.description.rating_label
    feature = class_feature(spec)
    ds = tf.data.TFRecordDataset(list(files), compression_type="GZIP").batch(4096)
    ds = ds.map(lambda records: tf.io.parse_example(records, interaction_spec(spec)))
    out: List[Interaction] = []
    for batch in ds:
        n = int(batch[F.USER_ID].shape[0])
        ratings = batch[rating_name].numpy() if rating_name else [MISSING_RATING] * n
        values = (tf.RaggedTensor.from_sparse(batch[feature.raw_name]).to_list() if feature is not None
                  else [[]] * n)
        for user, item, split, rating, v in zip(batch[F.USER_ID].numpy(), batch[F.ITEM_ID].numpy(),
                                                batch[F.SPLIT].numpy(), ratings, values):
            out.append(Interaction(user.decode(), item.decode(), split.decode(), float(rating),
                                   tuple(x.decode() for x in v)))
    return out


def _check_views(views: Mapping[str, UserView]) -> None:
    """Train and eval are needed; test is optional (a Trainer is not given it)."""
    missing = [s for s in (TRAIN, EVAL) if s not in views]
    if missing:
        raise ValueError(f"user views of splits {missing} are missing; got {sorted(views)}")


def _one_per_user(interactions: Sequence[Interaction], split: str) -> Dict[str, Interaction]:
    """The split's interaction of each user; ValueError when a user has several (not protocol S)."""
    out: Dict[str, Interaction] = {}
    for i in interactions:
        if i.split != split:
            continue
        if i.user in out:
            raise ValueError(
                f"user {i.user} has several {split} interactions ({out[i.user].item}, {i.item}): "
                "the downstream tasks need the leave_last_two_out split (protocol S)")
        out[i.user] = i
    return out


def _stack(parts: Sequence[Tuple[np.ndarray, ...]], length: int, label_shape: Tuple[int, ...], users: List[str]
           ) -> LabeledSequences:
    n = len(parts)
    items = np.zeros((n, length), np.int64)
    behaviors = np.zeros((n, length), np.int64)
    labels = np.zeros((n, length) + label_shape, np.float32)
    mask = np.zeros((n, length), np.float32)
    for k, (it, be, la, ma) in enumerate(parts):
        m = len(it)
        items[k, :m], behaviors[k, :m], labels[k, :m], mask[k, :m] = it, be, la, ma
    return LabeledSequences(items, behaviors, labels, mask, users)


def _labelled_windows(view: UserView, labels: Sequence[np.ndarray], mask: Sequence[np.ndarray], length: int,
                      label_shape: Tuple[int, ...], per_user: int = 0) -> LabeledSequences:
    parts, users = [], []
    taken: Dict[int, int] = {}
    # Windows of up to `length` positions stepping back from the end (the cloze objective's
    # windows: every position once, no overlap), most recent first per user.
    for s, a, b, _ in sequence_windows(view, length, CLOZE):
        if per_user and taken.get(s, 0) >= per_user:
            continue
        if mask[s][a:b].any():
            taken[s] = taken.get(s, 0) + 1
            parts.append((view.items[s][a:b], view.behaviors[s][a:b], labels[s][a:b], mask[s][a:b]))
            users.append(_text(view.users[s]))
    return _stack(parts, length, label_shape, users)


def _last_position(view: UserView, wanted: Mapping[str, np.ndarray], length: int,
                   label_shape: Tuple[int, ...]) -> LabeledSequences:
    """One example per user of `wanted` (user -> label) that the view has with a history."""
    parts, users = [], []
    for user, items, behaviors in zip(view.users, view.items, view.behaviors):
        user = _text(user)
        if user not in wanted or not len(items):
            continue
        items, behaviors = items[-length:], behaviors[-length:]
        labels = np.zeros((len(items),) + label_shape, np.float32)
        mask = np.zeros(len(items), np.float32)
        labels[-1], mask[-1] = wanted[user], 1.0
        parts.append((items, behaviors, labels, mask))
        users.append(user)
    return _stack(parts, length, label_shape, users)


def next_behavior(views: Mapping[str, UserView], length: int, task: str, spec: D.DatasetSpec,
                  per_user: int = 0) -> DownstreamData:
    """Binary: is the next interaction of the task's behavior (`spec.next_behavior(task)`)?
    Training labels come from the train histories' behaviors; an eval / test label from the
    split's one target behavior in the user view."""
    _check_views(views)
    row = spec.behaviors.index(spec.next_behavior(task)) + 1
    labels, mask = [], []
    for behaviors in views[TRAIN].behaviors:
        lab = np.zeros(len(behaviors), np.float32)
        lab[:-1] = behaviors[1:] == row
        m = np.zeros(len(behaviors), np.float32)
        m[:-1] = 1.0
        labels.append(lab)
        mask.append(m)
    out = {TRAIN: _labelled_windows(views[TRAIN], labels, mask, length, (), per_user)}
    for split in (EVAL, TEST):
        if split not in views:
            continue
        view = views[split]
        if len(view.target_behaviors) != len(view):
            raise ValueError(f"the {split} user view carries no target_behaviors (ExampleGen writes them; "
                             "re-run the ingest that made these files)")
        wanted = {}
        for user, behaviors in zip(view.users, view.target_behaviors):
            if len(behaviors) != 1:
                raise ValueError(f"user {_text(user)} has {len(behaviors)} {split} targets: the downstream tasks "
                                 "need the leave_last_two_out split (protocol S), one target per user")
            wanted[_text(user)] = np.float32(behaviors[0] == row)
        out[split] = _last_position(view, wanted, length, ())
    return DownstreamData(task, BINARY, (), out)


def class_vocabulary(interactions: Sequence[Interaction]) -> Tuple[str, ...]:
    """The class feature's values of the training split's items, sorted."""
    return tuple(sorted({g for i in interactions if i.split == TRAIN for g in i.values}))


def next_feature(views: Mapping[str, UserView], interactions: Sequence[Interaction], item_ids: Sequence[bytes],
                 length: int, spec: D.DatasetSpec, behavior: str, per_user: int = 0) -> DownstreamData:
    """Multi-class: the class feature's values of the user's next item of `behavior` (see the
    module docstring).

    Args:
      views: user views by split (rows from `ItemRows`).
      interactions: the interaction view (ratings and the class feature's values).
      item_ids: the item vocabulary of the rows (row r is item_ids[r - 1]).
      length: sequence length.
      spec: the dataset (its behaviors from the rating, `class_feature`).
      behavior: the behavior of the next item asked about.
      per_user: training windows kept per user, the most recent first (0: all).
    """
    _check_views(views)
    feature = class_feature(spec)
    if feature is None:
        raise ValueError(f"dataset {spec.name!r} has no next-item-feature task: it needs behaviors from the rating "
                         "and a categorical or multi-valued item feature")
    classes = class_vocabulary(interactions)
    index = {g: k for k, g in enumerate(classes)}
    values_of: Dict[str, Tuple[str, ...]] = {}
    for i in interactions:
        if i.split == TRAIN:
            values_of.setdefault(i.item, i.values)

    def target(values: Sequence[str]) -> np.ndarray:
        t = np.zeros(len(classes), np.float32)
        known = [index[g] for g in values if g in index]
        if known:
            t[known] = 1.0 / len(known)
        return t

    behavior_row = spec.behaviors.index(behavior) + 1
    row_targets: Dict[int, np.ndarray] = {}
    labels, mask = [], []
    for items, behaviors in zip(views[TRAIN].items, views[TRAIN].behaviors):
        lab = np.zeros((len(items), len(classes)), np.float32)
        m = np.zeros(len(items), np.float32)
        following = None  # the target of the next item of `behavior` after position t
        for t in range(len(items) - 1, -1, -1):
            if following is not None:
                lab[t], m[t] = following, 1.0
            if behaviors[t] == behavior_row and 0 < items[t] <= len(item_ids):
                row = int(items[t])
                if row not in row_targets:
                    row_targets[row] = target(values_of.get(_text(item_ids[row - 1]), ()))
                if row_targets[row].any():
                    following = row_targets[row]
        labels.append(lab)
        mask.append(m)
    out = {TRAIN: _labelled_windows(views[TRAIN], labels, mask, length, (len(classes),), per_user)}
    for split in (EVAL, TEST):
        if split not in views:
            continue
        wanted = {}
        for u, i in _one_per_user(interactions, split).items():
            t = target(i.values)
            rated = i.rating != MISSING_RATING
            if rated and spec.description.rating_behavior(i.rating) == behavior and t.any():
                wanted[u] = t
        out[split] = _last_position(views[split], wanted, length, (len(classes),))
    return DownstreamData(feature_task(behavior, feature), MULTICLASS, classes, out)


def build(task: str, views: Mapping[str, UserView], interactions: Sequence[Interaction], item_ids: Sequence[bytes],
          length: int, spec: D.DatasetSpec, per_user: int = 0) -> DownstreamData:
    """The examples of downstream task `task` (one of `tasks(spec)`); `per_user` > 0 keeps that
    many training windows per user, the most recent (a smaller downstream training set)."""
    if task in dict(spec.next_behavior_tasks):
        return next_behavior(views, length, task, spec, per_user)
    feature = class_feature(spec)
    for _, behavior in spec.next_behavior_tasks:
        if feature is not None and task == feature_task(behavior, feature):
            return next_feature(views, interactions, item_ids, length, spec, behavior, per_user)
    raise ValueError(f"unknown downstream task {task!r} of dataset {spec.name!r}; expected one of {tasks(spec)}")
