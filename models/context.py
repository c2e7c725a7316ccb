"""What a model is built with: sizes, tasks, the typed side-table features and training-split statistics."""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from contract import datasets as D
from contract import description as desc
from contract import features as F
from contract import tasks as T
from contract import run

# Item statistics Transform writes for every dataset (the average rating only with a rating).
ITEM_STATISTICS = (F.ITEM_AVG_RATING_MM, F.ITEM_POPULARITY_MM)
DOCUMENTS = "documents"  # the kind of a documents input (an interaction text column's user / item texts)


@dataclasses.dataclass(frozen=True)
class FeatureInput:
    """One transformed side-table feature as a model reads it.

    Attributes:
      name: the transformed feature (`Feature.transformed_name()`, or for documents one of
        `Feature.document_transformed_names()`).
      side: item or user: the side of the model that reads it.
      kind: the feature's type (categorical, multi_categorical, numeric, time, text), or
        `DOCUMENTS` for an interaction text column's user / item documents.
      feature: the description's feature (for documents: the interaction text column).
      rows: embedding rows of an id-valued input: padding 0, the training vocabulary,
        the unknown id (categorical, multi_categorical, text, documents: the Transform
        vocabulary's size + 2; a bucketized numeric: its boundaries + 2); 0 for a
        normalized number.
    """

    name: str
    side: str
    kind: str
    feature: desc.Feature
    rows: int = 0

    @property
    def embedded(self) -> bool:
        """Read through an embedding of ids (a categorical or bucketized value)."""
        if self.kind == desc.CATEGORICAL:
            return self.feature.encoding == desc.EMBEDDING
        if self.kind in (desc.NUMERIC, desc.TIME):
            return self.feature.normalizer == desc.BUCKETS
        return self.kind == desc.MULTI_CATEGORICAL

    @property
    def one_hot(self) -> bool:
        return self.kind == desc.CATEGORICAL and self.feature.encoding == desc.ONE_HOT

    @property
    def number(self) -> bool:
        """A normalized number (stacked with the item statistics)."""
        return self.kind in (desc.NUMERIC, desc.TIME) and not self.embedded

    @property
    def text(self) -> bool:
        """Token ids ([B, T] text, or [B, D, T] documents)."""
        return self.kind in (desc.TEXT, DOCUMENTS)

    @property
    def category_set(self) -> bool:
        """A categorical or multi-valued feature: a set of vocabulary ids per item."""
        return self.kind in (desc.CATEGORICAL, desc.MULTI_CATEGORICAL)


def feature_inputs(d: desc.Description, vocabulary_rows: Callable[[str], int]) -> Tuple[FeatureInput, ...]:
    """Every side-table feature of a description as models read it, items then users, in
    declared order, then each documents feature of the interaction text columns.

    Args:
      d: the description.
      vocabulary_rows: a Transform vocabulary's name -> its embedding rows (size + 2).
    """
    out = []
    for f in d.features:
        if f.type in (desc.CATEGORICAL, desc.MULTI_CATEGORICAL, desc.TEXT):
            rows = vocabulary_rows(f.vocabulary_name)
        elif f.normalizer == desc.BUCKETS:
            rows = len(f.boundaries) + 2
        else:
            rows = 0
        out.append(FeatureInput(f.transformed_name(), f.side, f.type, f, rows))
    for c in desc.text_docs(d.columns):
        rows = vocabulary_rows(c.vocabulary_name)
        for side, name in zip((desc.USER, desc.ITEM), c.document_transformed_names()):
            out.append(FeatureInput(name, side, DOCUMENTS, c, rows))
    return tuple(out)


def item_table_names(d: desc.Description) -> Tuple[str, ...]:
    """Every item-side transformed feature (the item table's columns): the item statistics,
    each item feature's transformed features and the item documents."""
    names = list(ITEM_STATISTICS)
    for f in d.item_features:
        names += f.transformed_names()
    for c in desc.text_docs(d.columns):
        names.append(c.document_transformed_names()[1])  # (user, item)
    return tuple(names)


@dataclasses.dataclass(frozen=True)
class ModelContext:
    """Sizes, tasks, typed features and statistics a model is built with (all from the training split).

    Attributes:
      dataset: the dataset's spec (its description included).
      tasks: the tasks the model is trained on, in output order.
      num_users / num_items: embedding rows (padding 0, vocabulary, OOV).
      num_behaviors: history behavior ids (padding 0, the dataset's behaviors, unknown).
      features: the side-table features by type (`feature_inputs`), items then users.
      max_history: most recent history items a query reads.
      mean_rating: training mean rating (initial global bias of a rating output).
      item_counts: [num_items] training interactions per item row (popularity).
      user_row_counts / item_row_counts: [num_users] / [num_items] training examples per
        user and item row, every row a pointwise family trains on (sampled negatives
        included); what a per-entity penalty divides by (`models.base.BiasPenalty`).
      item_table: per-item Transform features by item row (`item_table_names`); rows
        without a training example hold zeros.
      text_rows: embedding rows of each interaction text column's vocabulary (size + 2), by
        column name: what a model generating that column's text needs.
      seed: initialisation seed.
    """

    dataset: D.DatasetSpec
    tasks: Tuple[T.TaskSpec, ...]
    num_users: int
    num_items: int
    num_behaviors: int
    features: Tuple[FeatureInput, ...] = ()
    max_history: int = F.MAX_HISTORY
    mean_rating: float = 0.0
    item_counts: Optional[np.ndarray] = None
    user_row_counts: Optional[np.ndarray] = None
    item_row_counts: Optional[np.ndarray] = None
    item_table: Optional[Dict[str, np.ndarray]] = None
    text_rows: Dict[str, int] = dataclasses.field(default_factory=dict)
    seed: int = run.SEED

    def task(self, name: str) -> T.TaskSpec:
        for task in self.tasks:
            if task.name == name:
                return task
        raise ValueError(f"model has no task {name!r}; its tasks: {[t.name for t in self.tasks]}")

    @property
    def pointwise_tasks(self) -> Tuple[T.TaskSpec, ...]:
        return tuple(t for t in self.tasks if t.kind != T.RETRIEVAL)

    @property
    def retrieval_tasks(self) -> Tuple[T.TaskSpec, ...]:
        return tuple(t for t in self.tasks if t.kind == T.RETRIEVAL)

    @property
    def item_features(self) -> Tuple[FeatureInput, ...]:
        return tuple(f for f in self.features if f.side == desc.ITEM)

    @property
    def user_features(self) -> Tuple[FeatureInput, ...]:
        return tuple(f for f in self.features if f.side == desc.USER)

    @property
    def item_statistics(self) -> Tuple[str, ...]:
        """The item statistics an item encoder stacks before the declared numerics: the
        average rating (when the dataset has a rating), then the popularity."""
        rated = bool(self.dataset.has_rating)
        return tuple(n for n in ITEM_STATISTICS if rated or n != F.ITEM_AVG_RATING_MM)


def _synthetic_value(f: FeatureInput, n: int, rng: np.random.Generator) -> np.ndarray:
    if f.kind == DOCUMENTS:
        return rng.integers(0, f.rows, size=(n, f.feature.max_documents, f.feature.max_tokens)).astype(np.int64)
    if f.kind == desc.TEXT:
        return rng.integers(0, f.rows, size=(n, f.feature.max_tokens)).astype(np.int64)
    if f.kind == desc.MULTI_CATEGORICAL:
        return rng.integers(0, f.rows, size=(n, f.feature.max_values)).astype(np.int64)
    if f.rows:
        return rng.integers(0, f.rows, size=n).astype(np.int64)
    return rng.normal(size=n).astype(np.float32)


def synthetic_context(
    dataset: D.DatasetRef, tasks: Sequence[str] = (), num_users: int = 20, num_items: int = 30,
    vocabulary_rows: int = 6, seed: int = 0, max_history: int = 8,
) -> ModelContext:
    """A small context with random item features and statistics, for unit tests of blocks
    and families.

    Args:
      dataset: the dataset (a shipped name, a description file or mapping, a spec).
      tasks: task names (empty: the dataset's first pointwise task).
      vocabulary_rows: embedding rows of every vocabulary-valued feature.
    """
    spec = D.dataset_spec(dataset)
    rng = np.random.default_rng(seed)
    features = feature_inputs(spec.description, lambda name: vocabulary_rows)
    table = {}
    for f in features:
        if f.side == desc.ITEM:
            table[f.name] = _synthetic_value(f, num_items, rng)
    for name in ITEM_STATISTICS:
        table[name] = rng.random(num_items).astype(np.float32)
    tasks = tuple(tasks) or spec.pointwise_tasks()[:1]
    return ModelContext(
        dataset=spec,
        tasks=tuple(spec.task(name) for name in tasks),
        num_users=num_users,
        num_items=num_items,
        num_behaviors=len(spec.behaviors) + 2,
        features=features,
        max_history=max_history,
        mean_rating=3.5,
        item_counts=rng.integers(1, 50, size=num_items).astype(np.float32),
        user_row_counts=rng.integers(1, 50, size=num_users).astype(np.float32),
        item_row_counts=rng.integers(1, 50, size=num_items).astype(np.float32),
        item_table=table,
        text_rows={c.name: vocabulary_rows for c in spec.description.text_columns},
        seed=seed,
    )
