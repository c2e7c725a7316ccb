"""Downstream tasks for fine-tuning a pretrained sequence encoder (PeterRec), on protocol S.

Every task is built from what ExampleGen writes with the `leave_last_two_out` split
(protocol S): the user view (per user and split, the history before the split's item,
mapped to rows with `training.views`) and the interaction view (each interaction's
split, rating and genres). A user's time-ordered interactions are
`train ... train, eval, test`; the user view's train history is everything before the
eval item, its test history everything before the test item (the eval item included).

Tasks (MovieLens):

- `next_like` (binary, AUC): is the user's next interaction a like (rating >= 4)?
  Input: the sequence before it. Built from the user view alone (training labels from
  the histories' behaviors, eval / test labels from the split's `target_behaviors`), so
  the pipeline's fine-tuning Trainer, which reads only the user view, builds it too
  (`next_behavior`, any of the dataset's `next_behavior_tasks`).
- `next_liked_genre` (multi-class over the genres, user-level, accuracy): the genre of
  the user's next liked movie. A movie may have several genres: the target is the set,
  the loss a softmax against the even distribution over it, and a prediction is right
  when its top genre is one of them (`evaluation.definitions.set_accuracy`).

Split rules (the same for both tasks):

- pretraining reads the train histories only (`training.views.sequence_windows` of the
  train split), so it never sees an eval or test item;
- train: positions inside each user's train history. The label of position t is
  defined by the items after t within that history (the next item; the next liked
  item), and the input is the items up to t. Long histories are cut into windows of
  `length` positions from the most recent end (optionally only the `per_user` most
  recent windows are kept); the labels are computed on the whole history first, so a
  window's last position may be labelled by the next window's first item (still inside
  the train history);
- eval: one example per user, the most recent `length` items of the train history as
  input, the eval item as the label (next_liked_genre: only users whose eval item is
  liked). Used for early stopping and every choice of setting;
- test: one example per user, the most recent `length` items of the test history
  (train history + eval item) as input, the test item as the label (next_liked_genre:
  only users whose test item is liked). Only reported.

So no pretraining sequence and no fine-tuning training label contains an eval or test
item, and the genre vocabulary comes from the training split's movies only (a genre
seen only in eval/test is dropped from a target; a target left empty drops the example).

An example is a sequence with a label per position: `labels[b, t]` is the label of the
prediction made from `items[b, :t + 1]`, and `mask[b, t]` is 1 where it is defined. An
eval or test example has one labelled position, its last item.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np
import tensorflow as tf

from contract import datasets as D
from contract import features as F
from models.families.sequential import CLOZE
from training.views import UserView, sequence_windows

BINARY = "binary"
MULTICLASS = "multiclass"

NEXT_LIKE = F.NEXT_LIKE
NEXT_LIKED_GENRE = "next_liked_genre"
TASKS = (NEXT_LIKE, NEXT_LIKED_GENRE)

TRAIN, EVAL, TEST = "train", "eval", "test"
SPLITS = (TRAIN, EVAL, TEST)

# The raw interaction-view features the labels come from.
INTERACTION_SPEC = {
    F.USER_ID: tf.io.FixedLenFeature([], tf.string),
    F.ITEM_ID: tf.io.FixedLenFeature([], tf.string),
    F.SPLIT: tf.io.FixedLenFeature([], tf.string),
    F.RATING: tf.io.FixedLenFeature([], tf.float32, default_value=-1.0),
    F.ITEM_GENRES: tf.io.VarLenFeature(tf.string),
}


@dataclasses.dataclass(frozen=True)
class Interaction:
    """One interaction of the interaction view: what the labels read."""

    user: str
    item: str
    split: str
    rating: float
    genres: Tuple[str, ...]


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


def interactions_from_records(records: Sequence[Mapping[str, list]]) -> List[Interaction]:
    """Interactions from raw interaction-view feature dicts (in-memory ingest records' `features`)."""
    out = []
    for r in records:
        rating = r.get(F.RATING) or [-1.0]
        out.append(Interaction(_text(r[F.USER_ID][0]), _text(r[F.ITEM_ID][0]), _text(r[F.SPLIT][0]),
                               float(rating[0]), tuple(_text(g) for g in r.get(F.ITEM_GENRES, []))))
    return out


def load_interactions(files: Sequence[str]) -> List[Interaction]:
    """Interactions from the interaction view's raw examples (GZIP TFRecords)."""
    if not files:
        raise FileNotFoundError("no interaction-view files given")
    ds = tf.data.TFRecordDataset(list(files), compression_type="GZIP").batch(4096)
    ds = ds.map(lambda records: tf.io.parse_example(records, INTERACTION_SPEC))
    out: List[Interaction] = []
    for batch in ds:
        genres = tf.RaggedTensor.from_sparse(batch[F.ITEM_GENRES]).to_list()
        for user, item, split, rating, g in zip(batch[F.USER_ID].numpy(), batch[F.ITEM_ID].numpy(),
                                                batch[F.SPLIT].numpy(), batch[F.RATING].numpy(), genres):
            out.append(Interaction(user.decode(), item.decode(), split.decode(), float(rating),
                                   tuple(x.decode() for x in g)))
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


def next_behavior(views: Mapping[str, UserView], length: int, task: str = NEXT_LIKE,
                  spec: D.DatasetSpec = D.MOVIELENS, per_user: int = 0) -> DownstreamData:
    """Binary: is the next interaction of the task's behavior (`spec.next_behavior(task)`;
    `next_like`: liked, rating >= 4)? Training labels come from the train histories'
    behaviors; an eval / test label from the split's one target behavior in the user view."""
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


def next_like(views: Mapping[str, UserView], length: int, spec: D.DatasetSpec = D.MOVIELENS,
              per_user: int = 0) -> DownstreamData:
    """Binary: is the next interaction a like (rating >= 4; the `liked` history behavior)."""
    return next_behavior(views, length, NEXT_LIKE, spec, per_user)


def genre_vocabulary(interactions: Sequence[Interaction]) -> Tuple[str, ...]:
    """The genres of the training split's movies, sorted."""
    return tuple(sorted({g for i in interactions if i.split == TRAIN for g in i.genres}))


def next_liked_genre(views: Mapping[str, UserView], interactions: Sequence[Interaction], item_ids: Sequence[bytes],
                     length: int, spec: D.DatasetSpec = D.MOVIELENS, per_user: int = 0) -> DownstreamData:
    """Multi-class: the genres of the user's next liked movie (see the module docstring).

    Args:
      views: user views by split (rows from `ItemRows`).
      interactions: the interaction view (labels and genres).
      item_ids: the item vocabulary of the rows (row r is item_ids[r - 1]).
      length: sequence length.
      per_user: training windows kept per user, the most recent first (0: all).
    """
    _check_views(views)
    classes = genre_vocabulary(interactions)
    index = {g: k for k, g in enumerate(classes)}
    genres_of: Dict[str, Tuple[str, ...]] = {}
    for i in interactions:
        if i.split == TRAIN:
            genres_of.setdefault(i.item, i.genres)

    def target(genres: Sequence[str]) -> np.ndarray:
        t = np.zeros(len(classes), np.float32)
        known = [index[g] for g in genres if g in index]
        if known:
            t[known] = 1.0 / len(known)
        return t

    liked_row = spec.behaviors.index("liked") + 1
    row_targets: Dict[int, np.ndarray] = {}
    labels, mask = [], []
    for items, behaviors in zip(views[TRAIN].items, views[TRAIN].behaviors):
        lab = np.zeros((len(items), len(classes)), np.float32)
        m = np.zeros(len(items), np.float32)
        following = None  # the target of the next liked item after position t
        for t in range(len(items) - 1, -1, -1):
            if following is not None:
                lab[t], m[t] = following, 1.0
            if behaviors[t] == liked_row and 0 < items[t] <= len(item_ids):
                row = int(items[t])
                if row not in row_targets:
                    row_targets[row] = target(genres_of.get(_text(item_ids[row - 1]), ()))
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
            t = target(i.genres)
            if i.rating >= F.LIKED_MIN_RATING and t.any():
                wanted[u] = t
        out[split] = _last_position(views[split], wanted, length, (len(classes),))
    return DownstreamData(NEXT_LIKED_GENRE, MULTICLASS, classes, out)


def build(task: str, views: Mapping[str, UserView], interactions: Sequence[Interaction], item_ids: Sequence[bytes],
          length: int, spec: D.DatasetSpec = D.MOVIELENS, per_user: int = 0) -> DownstreamData:
    """The examples of downstream task `task` (one of TASKS); `per_user` > 0 keeps that many
    training windows per user, the most recent (a smaller downstream training set)."""
    if spec.name != D.MOVIELENS.name:
        raise ValueError(f"downstream tasks {TASKS} are defined on movielens, not {spec.name!r}")
    if task == NEXT_LIKE:
        return next_like(views, length, spec, per_user)
    if task == NEXT_LIKED_GENRE:
        return next_liked_genre(views, interactions, item_ids, length, spec, per_user)
    raise ValueError(f"unknown downstream task {task!r}; expected one of {TASKS}")
