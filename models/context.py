"""What a model is built with: sizes, tasks and training-split statistics."""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Tuple

import numpy as np

from contract import datasets as D
from contract import features as F
from contract import tasks as T

# Per-item features a model can read for any catalogue row (from Transform's output).
ITEM_TABLE_FEATURES = (F.ITEM_GENRE_IDX, F.ITEM_YEAR_Z, F.ITEM_AVG_RATING_MM, F.ITEM_POPULARITY_MM)


@dataclasses.dataclass(frozen=True)
class ModelContext:
    """Sizes, tasks and statistics a model is built with (all from the training split).

    Attributes:
      dataset: the dataset's spec.
      tasks: the tasks the model is trained on, in output order.
      num_users / num_items / num_genres: embedding rows (padding 0, vocabulary, OOV).
      num_behaviors: history behavior ids (padding 0, the dataset's behaviors, unknown).
      max_history: most recent history items a query reads.
      mean_rating: training mean rating (initial global bias of a rating output).
      item_counts: [num_items] training interactions per item row (popularity).
      item_table: per-item Transform features by item row (`ITEM_TABLE_FEATURES`);
        rows without a training example hold zeros.
      seed: initialisation seed.
    """

    dataset: D.DatasetSpec
    tasks: Tuple[T.TaskSpec, ...]
    num_users: int
    num_items: int
    num_genres: int
    num_behaviors: int
    max_history: int = F.MAX_HISTORY
    mean_rating: float = 0.0
    item_counts: Optional[np.ndarray] = None
    item_table: Optional[Dict[str, np.ndarray]] = None
    seed: int = 42

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


def synthetic_context(
    tasks=(F.RATING,), dataset: D.DatasetSpec = D.MOVIELENS, num_users: int = 20,
    num_items: int = 30, num_genres: int = 6, seed: int = 0, max_history: int = 8,
) -> ModelContext:
    """A small context with random item statistics, for unit tests of blocks and families."""
    rng = np.random.default_rng(seed)
    table = {
        F.ITEM_GENRE_IDX: rng.integers(0, num_genres, size=(num_items, F.MAX_GENRES)).astype(np.int64),
        F.ITEM_YEAR_Z: rng.normal(size=num_items).astype(np.float32),
        F.ITEM_AVG_RATING_MM: rng.random(num_items).astype(np.float32),
        F.ITEM_POPULARITY_MM: rng.random(num_items).astype(np.float32),
    }
    return ModelContext(
        dataset=dataset,
        tasks=tuple(dataset.task(name) for name in tasks),
        num_users=num_users,
        num_items=num_items,
        num_genres=num_genres,
        num_behaviors=len(dataset.behaviors) + 2,
        max_history=max_history,
        mean_rating=3.5,
        item_counts=rng.integers(1, 50, size=num_items).astype(np.float32),
        item_table=table,
        seed=seed,
    )
