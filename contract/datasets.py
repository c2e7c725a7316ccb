"""What a dataset provides to every layer, derived from its description.

`DatasetSpec` is the view of a `contract.description.Description` that ingest,
Transform, models, evaluation and serving read: behaviors, labels, tasks (as
`contract.tasks.TaskSpec`s with their gates), side-table features and defaults. The
description file is the one place that says these things; nothing here names a
dataset.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from contract import description as desc
from contract import tasks as T

# ExampleGen's split methods (how interactions are assigned to train / eval / test).
HASH_SPLIT = desc.HASH_SPLIT  # by a hash of the interaction (the default)
LEAVE_LAST_TWO_OUT_SPLIT = desc.LEAVE_LAST_TWO_OUT_SPLIT  # each user's last two: eval, test (protocol S)
BY_DAY_SPLIT = desc.BY_DAY_SPLIT  # by calendar day
SPLIT_METHODS = desc.SPLIT_METHODS

RETRIEVAL_TASK = "items"  # the conventional name of a description's retrieval task

DatasetRef = Union[str, Mapping[str, Any], desc.Description, "DatasetSpec"]


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What one dataset provides (built from its description by `spec_of`).

    Attributes:
      name: the description's name.
      description: the description itself (files, columns, features).
      behaviors: the history behavior vocabulary, weakest first (ids 1..n).
      raw_labels: label features written by ExampleGen.
      labels: all labels after Transform (raw plus derived).
      implicit_label: the 1/0 label that sampled negatives set to 0.
      has_rating: the log has an explicit rating.
      default_behavior: the behavior assumed for a history item sent without one.
      tasks: every task a model can be trained on (pointwise and retrieval).
      retrieval_target_behaviors: in the hash split's user view, only eval / test
        interactions of these behaviors are retrieval targets (empty: all); a retrieval
        family trained on the hash split takes them as its training targets by default.
      default_split: the split method the dataset is evaluated with by default.
      task_pair: the two binary tasks (A, B) a task-pair model (TAKD) is trained on by
        default, A first in the order ++ > +- > -+ > -- of their label pairs.
      next_behavior_tasks: (task, behavior) pairs: binary tasks on the user view, "is the
        user's next interaction (the split's target) of this behavior", read from the
        input sequence alone (PeterRec's downstream tasks).
    """

    name: str
    description: desc.Description
    behaviors: Tuple[str, ...]
    raw_labels: Tuple[str, ...]
    labels: Tuple[str, ...]
    implicit_label: str
    has_rating: bool
    default_behavior: str
    tasks: Tuple[T.TaskSpec, ...] = ()
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
        return tuple(T.TaskSpec(name=name, kind=T.BINARY, label=name, gate=T.history_peer_gate())
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

        Only the hash split filters its targets; the time splits hold out every interaction.
        """
        return self.retrieval_target_behaviors if split == HASH_SPLIT else ()

    def binary_tasks(self) -> Tuple[str, ...]:
        """Names of the 0/1 tasks defined on observed interactions (not on sampled negatives)."""
        return tuple(t.name for t in self.tasks if t.kind == T.BINARY and t.label != self.implicit_label)

    def regression_tasks(self) -> Tuple[str, ...]:
        """Names of the real-valued tasks (e.g. the rating)."""
        return tuple(t.name for t in self.tasks if t.kind == T.REGRESSION)

    def pointwise_tasks(self) -> Tuple[str, ...]:
        """Every pointwise (binary or regression) task, in declared order."""
        return tuple(t.name for t in self.tasks if t.kind != T.RETRIEVAL)

    @property
    def item_features(self) -> Tuple[desc.Feature, ...]:
        return self.description.item_features

    @property
    def user_features(self) -> Tuple[desc.Feature, ...]:
        return self.description.user_features

    def to_dict(self) -> Dict[str, Any]:
        """The description as a JSON-able mapping: what a component's config carries."""
        return self.description.to_dict()


def _task(t: desc.TaskDef) -> T.TaskSpec:
    kind = t.kind
    gate = T.default_gate(kind) if t.gated else None
    if gate is not None:
        changes = {}
        if t.threshold is not None:
            changes["threshold"] = float(t.threshold)
        if t.max_worsening is not None:
            changes["max_worsening"] = float(t.max_worsening)
        if t.metric:
            changes["metric"] = t.metric
        gate = dataclasses.replace(gate, **changes)
    return T.TaskSpec(name=t.name, kind=kind, label=t.label, condition=t.condition, gate=gate, parent=t.parent)


_BY_DESCRIPTION: Dict[int, Tuple[desc.Description, "DatasetSpec"]] = {}


def spec_of(d: desc.Description) -> DatasetSpec:
    """The DatasetSpec of a description (the same object for the same description)."""
    cached = _BY_DESCRIPTION.get(id(d))
    if cached is not None and cached[0] is d:
        return cached[1]
    spec = _build_spec(d)
    _BY_DESCRIPTION[id(d)] = (d, spec)
    return spec


def _build_spec(d: desc.Description) -> DatasetSpec:
    pointwise = tuple(_task(t) for t in d.tasks if t.kind in (T.REGRESSION, T.BINARY, T.RETRIEVAL))
    targets: Tuple[str, ...] = ()
    for t in d.tasks:
        if t.kind == T.RETRIEVAL:
            targets = t.target_behaviors
    return DatasetSpec(
        name=d.name,
        description=d,
        behaviors=d.behaviors,
        raw_labels=d.raw_labels,
        labels=tuple(l.name for l in d.labels),
        implicit_label=d.implicit_label,
        has_rating=bool(d.rating),
        default_behavior=d.default_behavior,
        tasks=pointwise,
        retrieval_target_behaviors=targets,
        default_split=d.split,
        task_pair=d.task_pair,
        next_behavior_tasks=tuple((t.name, t.behavior) for t in d.tasks if t.kind == "next_behavior"),
    )


_BY_JSON: Dict[str, DatasetSpec] = {}


def dataset_spec(ref: DatasetRef) -> DatasetSpec:
    """The spec of a dataset reference: a shipped name (`movielens`), a description file, a
    description mapping (as `DatasetSpec.to_dict` / a component's config carries it), a
    Description or a DatasetSpec."""
    if isinstance(ref, DatasetSpec):
        return ref
    if isinstance(ref, desc.Description):
        return spec_of(ref)
    if isinstance(ref, Mapping):
        key = json.dumps(ref, sort_keys=True)
        if key not in _BY_JSON:
            _BY_JSON[key] = spec_of(desc.from_dict(ref, f"description {ref.get('name', '?')!r}"))
        return _BY_JSON[key]
    if isinstance(ref, str) and ref.lstrip().startswith("{"):
        return dataset_spec(json.loads(ref))
    return spec_of(desc.load(ref))


def description_dict(ref: Optional[DatasetRef]) -> Dict[str, Any]:
    """The description mapping of a reference (what configs carry between components)."""
    return dataset_spec(ref).to_dict()

