"""What each interaction-log dataset provides: behaviors, labels and item metadata.

The static facts of a dataset, read by every layer (ingest, Transform, models,
evaluation). How a dataset's files are parsed lives with the ingest adapters
(`components/example_gen/adapters.py`).
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

from contract import tasks as T

from contract.features import (
    BUY,
    CART,
    DISLIKED_MAX_RATING,
    FAV,
    LIKED,
    LIKED_MIN_RATING,
    LOVED,
    NEXT_LIKE,
    RATING,
    VIEWED,
    WATCHED,
)


# ExampleGen's split methods (how interactions are assigned to train / eval / test).
HASH_SPLIT = "hash"  # by a hash of the interaction (the default)
LEAVE_LAST_TWO_OUT_SPLIT = "leave_last_two_out"  # each user's last two interactions: eval, test (protocol S)
BY_DAY_SPLIT = "by_day"  # by calendar day
SPLIT_METHODS = (HASH_SPLIT, LEAVE_LAST_TWO_OUT_SPLIT, BY_DAY_SPLIT)


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What one interaction-log format provides.

    Attributes:
      name: dataset key used in configs (`movielens`, `taobao`).
      behaviors: the history behavior vocabulary, in a fixed order (ids 1..n).
      raw_labels: label features written by ExampleGen.
      labels: all labels after Transform (raw plus derived).
      implicit_label: the 1/0 label that sampled negatives set to 0.
      has_rating: the log has an explicit rating.
      has_year: the item metadata has a release year.
      default_behavior: the behavior assumed for a history item sent without one.
      genre_multi_hot: also emit a multi-hot of the genre vocabulary (small vocabularies
        only; Taobao's thousands of categories stay ids).
      tasks: every task a model can be trained on for this dataset (by name).
      retrieval_min_rating: in the hash split's user view, an eval/test interaction is a
        retrieval target when its rating is at least this (MovieLens: liked); None: every
        interaction is one.
      retrieval_target_behaviors: the history behaviors `retrieval_min_rating` keeps
        (MovieLens: liked); empty: all. A retrieval family trained on the hash split takes
        them as its training targets by default (`retrieval_targets`).
      default_split: the split method the dataset is evaluated with by default.
      task_pair: the two binary tasks (A, B) a task-pair model (TAKD) is trained on by
        default, A first in the order ++ > +- > -+ > -- of their label pairs.
      next_behavior_tasks: (task, behavior) pairs: binary tasks on the user view, "is the
        user's next interaction (the split's target) of this behavior", read from the
        input sequence alone (PeterRec's downstream tasks). The label is the task's name,
        computed from `target_behaviors` by the model's `transform_features`.
    """

    name: str
    behaviors: Tuple[str, ...]
    raw_labels: Tuple[str, ...]
    labels: Tuple[str, ...]
    implicit_label: str
    has_rating: bool
    has_year: bool
    default_behavior: str
    genre_multi_hot: bool
    tasks: Tuple[T.TaskSpec, ...] = ()
    retrieval_min_rating: Optional[float] = None
    retrieval_target_behaviors: Tuple[str, ...] = ()
    default_split: str = HASH_SPLIT
    task_pair: Tuple[str, ...] = ()
    next_behavior_tasks: Tuple[Tuple[str, str], ...] = ()

    def task(self, name: str) -> T.TaskSpec:
        """The task called `name`; ValueError listing the dataset's tasks otherwise."""
        every = self.tasks + self.sequence_tasks()
        for task in every:
            if task.name == name:
                return task
        raise ValueError(
            f"dataset {self.name!r} has no task {name!r}; its tasks: {', '.join(t.name for t in every)}"
        )

    def sequence_tasks(self) -> Tuple[T.TaskSpec, ...]:
        """The binary tasks of `next_behavior_tasks` (label = task name), gated on their AUC's
        lift over the history peer (`tasks.history_peer_gate`)."""
        return tuple(dataclasses.replace(_task(name, T.BINARY, name), gate=T.history_peer_gate())
                     for name, _ in self.next_behavior_tasks)

    def next_behavior(self, task: str) -> str:
        """The behavior a next-behavior task asks about; ValueError for another task."""
        for name, behavior in self.next_behavior_tasks:
            if name == task:
                return behavior
        raise ValueError(f"dataset {self.name!r} has no next-behavior task {task!r}; its next-behavior tasks: "
                         f"{[n for n, _ in self.next_behavior_tasks]}")

    def retrieval_targets(self, split: str) -> Tuple[str, ...]:
        """The behaviors whose interactions are the retrieval targets of `split` (empty: all).

        Only the hash split filters its targets (by `retrieval_min_rating`); the time splits
        hold out every interaction.
        """
        return self.retrieval_target_behaviors if split == HASH_SPLIT else ()

    def binary_tasks(self) -> Tuple[str, ...]:
        """Names of the 0/1 tasks defined on observed interactions (not on sampled negatives)."""
        return tuple(t.name for t in self.tasks if t.kind == T.BINARY and t.label != self.implicit_label)


RETRIEVAL_TASK = "items"  # every dataset's retrieval task: the user's held-out items


def _task(name: str, kind: str, label: str = "", condition: str = "", threshold: Optional[float] = None,
          parent: str = "") -> T.TaskSpec:
    gate = T.default_gate(kind)
    if threshold is not None:
        gate = dataclasses.replace(gate, threshold=threshold)
    return T.TaskSpec(name=name, kind=kind, label=label, condition=condition, gate=gate, parent=parent)


MOVIELENS = DatasetSpec(
    name="movielens",
    behaviors=("disliked", "neutral", "liked"),
    raw_labels=(RATING, WATCHED),
    labels=(RATING, WATCHED, LIKED, LOVED),
    implicit_label=WATCHED,
    has_rating=True,
    has_year=True,
    default_behavior="liked",
    genre_multi_hot=True,
    tasks=(
        _task(RATING, T.REGRESSION, RATING, condition=WATCHED),
        _task(LIKED, T.BINARY, LIKED, condition=WATCHED, threshold=0.7, parent=WATCHED),
        _task(LOVED, T.BINARY, LOVED, condition=WATCHED, parent=LIKED),
        _task(WATCHED, T.BINARY, WATCHED),
        _task(RETRIEVAL_TASK, T.RETRIEVAL),
    ),
    retrieval_min_rating=LIKED_MIN_RATING,
    retrieval_target_behaviors=("liked",),
    default_split=HASH_SPLIT,
    task_pair=(LOVED, LIKED),
    next_behavior_tasks=((NEXT_LIKE, "liked"),),
)

TAOBAO = DatasetSpec(
    name="taobao",
    behaviors=("pv", "cart", "fav", "buy"),
    raw_labels=(VIEWED, CART, FAV, BUY),
    labels=(VIEWED, CART, FAV, BUY),
    implicit_label=VIEWED,
    has_rating=False,
    has_year=False,
    default_behavior="pv",
    genre_multi_hot=False,
    tasks=(
        _task(VIEWED, T.BINARY, VIEWED),
        _task(CART, T.BINARY, CART, condition=VIEWED, parent=VIEWED),
        _task(FAV, T.BINARY, FAV, condition=VIEWED, parent=VIEWED),
        _task(BUY, T.BINARY, BUY, condition=VIEWED, parent=CART),
        _task(RETRIEVAL_TASK, T.RETRIEVAL),
    ),
    retrieval_min_rating=None,
    default_split=BY_DAY_SPLIT,
    task_pair=(BUY, CART),
)

DATASETS = {spec.name: spec for spec in (MOVIELENS, TAOBAO)}


def dataset_spec(name: str) -> DatasetSpec:
    """The spec of dataset `name`; ValueError listing the known datasets otherwise."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(
            f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}"
        ) from None


def rating_behavior(rating: float) -> str:
    """MovieLens history behavior of a rating: disliked / neutral / liked."""
    if rating <= DISLIKED_MAX_RATING:
        return "disliked"
    if rating >= LIKED_MIN_RATING:
        return "liked"
    return "neutral"


