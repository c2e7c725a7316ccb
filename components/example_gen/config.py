"""Ingest configuration of the interaction-log ExampleGen: defaults, presets and validation."""

from __future__ import annotations

import dataclasses
import datetime
import json
from typing import Any, Dict, Optional

from contract import datasets, features

SPLIT_HASH = datasets.HASH_SPLIT
SPLIT_LEAVE_LAST_TWO_OUT = datasets.LEAVE_LAST_TWO_OUT_SPLIT
SPLIT_BY_DAY = datasets.BY_DAY_SPLIT
SPLIT_METHODS = datasets.SPLIT_METHODS

# Output split names, in the order they are written and published.
TRAIN = "train"
EVAL = "eval"
TEST = "test"
SPLIT_NAMES = (TRAIN, EVAL, TEST)


@dataclasses.dataclass(frozen=True)
class IngestConfig:
    """What to read and how to split, label and sample it.

    Attributes:
      dataset: `movielens` or `taobao` (a key of `contract.features.DATASETS`).
      interactions: file name of the interaction log under `input_base`.
      items: file name of the item metadata table under `input_base`, or None
        when the log rows carry the item metadata (Taobao).
      split: `hash`, `leave_last_two_out` or `by_day`.
      eval_day: first UTC day (YYYY-MM-DD) of the eval split (by_day only).
      test_day: the UTC day of the test split (by_day only); later rows are dropped.
      max_history: the most recent N earlier interactions kept per example.
      negatives_per_positive: sampled negatives written per positive example.
      seed: seed of the negative sampler.
      max_bad_rows: more bad rows than this fails the run; fewer are dropped and reported.
    """

    dataset: str = "movielens"
    interactions: str = "ratings.csv"
    items: Optional[str] = "movies.csv"
    split: str = SPLIT_HASH
    eval_day: str = "2017-12-02"
    test_day: str = "2017-12-03"
    max_history: int = features.MAX_HISTORY
    negatives_per_positive: int = 0
    seed: int = 42
    max_bad_rows: int = 0

    def __post_init__(self):
        self.validate()

    @property
    def spec(self) -> datasets.DatasetSpec:
        """The data contract of the configured dataset."""
        return datasets.dataset_spec(self.dataset)

    @classmethod
    def movielens(cls, **overrides: Any) -> "IngestConfig":
        """MovieLens preset: ratings.csv + movies.csv, hash split."""
        values = dict(dataset=datasets.MOVIELENS.name, interactions="ratings.csv",
                      items="movies.csv", split=SPLIT_HASH)
        values.update(overrides)
        return cls(**values)

    @classmethod
    def taobao(cls, **overrides: Any) -> "IngestConfig":
        """Taobao preset: UserBehavior_sample.csv (metadata in the rows), by_day split."""
        values = dict(dataset=datasets.TAOBAO.name, interactions="UserBehavior_sample.csv",
                      items=None, split=SPLIT_BY_DAY)
        values.update(overrides)
        return cls(**values)

    @classmethod
    def for_dataset(cls, dataset: str, **overrides: Any) -> "IngestConfig":
        """The preset of `dataset` (its file names and default split) with overrides."""
        presets = {datasets.MOVIELENS.name: cls.movielens, datasets.TAOBAO.name: cls.taobao}
        if dataset not in presets:
            raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(presets)}")
        return presets[dataset](**overrides)

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "IngestConfig":
        """Builds a config from a dict, rejecting unknown keys.

        Args:
          values: field name -> value; missing fields take the defaults.
        """
        if not isinstance(values, dict):
            raise ValueError(f"ingest config must be a JSON object, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown ingest config keys {unknown}; expected some of {sorted(known)}")
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> "IngestConfig":
        """Parses a JSON object into a config.

        Args:
          text: the JSON text; missing keys take the defaults.
        """
        try:
            values = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"ingest config is not valid JSON: {e}") from None
        return cls.from_dict(values)

    def to_json(self) -> str:
        """The config as a JSON object with every field, keys sorted."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    def validate(self) -> None:
        """Raises ValueError naming the first field that is out of its domain."""
        datasets.dataset_spec(self.dataset)
        _check_type("interactions", self.interactions, str)
        if not self.interactions or "/" in self.interactions or "\\" in self.interactions:
            raise ValueError(f"interactions must be a file name under input_base, got {self.interactions!r}")
        if self.items is not None:
            _check_type("items", self.items, str)
            if not self.items or "/" in self.items or "\\" in self.items:
                raise ValueError(f"items must be a file name under input_base or null, got {self.items!r}")
        if self.dataset == datasets.MOVIELENS.name and self.items is None:
            raise ValueError("dataset 'movielens' needs an items file (movies.csv); got items=null")
        if self.dataset == datasets.TAOBAO.name and self.items is not None:
            raise ValueError(
                f"dataset 'taobao' takes item metadata from the log rows; items must be null, got {self.items!r}")
        if self.split not in SPLIT_METHODS:
            raise ValueError(f"unknown split {self.split!r}; expected one of {list(SPLIT_METHODS)}")
        eval_date = _parse_day("eval_day", self.eval_day)
        test_date = _parse_day("test_day", self.test_day)
        if self.split == SPLIT_BY_DAY and not eval_date < test_date:
            raise ValueError(f"eval_day {self.eval_day} must be before test_day {self.test_day}")
        for name in ("max_history", "negatives_per_positive", "seed", "max_bad_rows"):
            _check_type(name, getattr(self, name), int)
        if self.max_history < 0:
            raise ValueError(f"max_history must be >= 0, got {self.max_history}")
        if self.negatives_per_positive < 0:
            raise ValueError(f"negatives_per_positive must be >= 0, got {self.negatives_per_positive}")
        if self.max_bad_rows < 0:
            raise ValueError(f"max_bad_rows must be >= 0, got {self.max_bad_rows}")


def _check_type(name: str, value: Any, expected: type) -> None:
    # bool is an int subclass; a JSON `true` is not a count.
    if not isinstance(value, expected) or isinstance(value, bool):
        raise ValueError(f"{name} must be {expected.__name__}, got {value!r}")


def _parse_day(name: str, value: Any) -> datetime.date:
    _check_type(name, value, str)
    try:
        return datetime.date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name} must be a date YYYY-MM-DD, got {value!r}") from None
