"""Ingest configuration of the interaction-log ExampleGen: the dataset description plus run settings.

The description (the mapping `contract.datasets.DatasetSpec.to_dict()` gives, so a
compiled pipeline spec holds its whole content) says what the files are and what an
example is; the split, its days, the history length and the negatives default to the
description's values and can be overridden per run.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from typing import Any, Dict, Mapping, Optional

from contract import datasets
from contract import description as desc
from contract import run

SPLIT_HASH = datasets.HASH_SPLIT
SPLIT_LEAVE_LAST_TWO_OUT = datasets.LEAVE_LAST_TWO_OUT_SPLIT
SPLIT_BY_DAY = datasets.BY_DAY_SPLIT
SPLIT_METHODS = datasets.SPLIT_METHODS

# Output split names, in the order they are written and published.
TRAIN = "train"
EVAL = "eval"
TEST = "test"
SPLIT_NAMES = (TRAIN, EVAL, TEST)

# The settings a description gives a default for (Description attribute of the same name).
_FROM_DESCRIPTION = ("split", "eval_day", "test_day", "max_history", "negatives_per_positive")


@dataclasses.dataclass(frozen=True)
class IngestConfig:
    """What to read and how to split, label and sample it.

    Attributes:
      description: the dataset description as a mapping (`DatasetSpec.to_dict()`); a
        shipped name, a description file, a Description or a DatasetSpec is turned into it.
      split: `hash`, `leave_last_two_out` or `by_day` (None: the description's).
      eval_day: first UTC day (YYYY-MM-DD) of the eval split (by_day; None: the description's).
      test_day: the UTC day of the test split (by_day; later rows are dropped; None: the
        description's).
      max_history: the most recent N earlier interactions kept per example (None: the
        description's history.max_length).
      negatives_per_positive: sampled negatives written per example row (None: the
        description's negatives.per_positive).
      seed: seed of the negative sampler.
      max_bad_rows: more bad rows than this fails the run; fewer are dropped and reported.
    """

    description: Mapping[str, Any]
    split: Optional[str] = None
    eval_day: Optional[str] = None
    test_day: Optional[str] = None
    max_history: Optional[int] = None
    negatives_per_positive: Optional[int] = None
    seed: int = run.SEED
    max_bad_rows: int = 0

    def __post_init__(self):
        ref = self.description
        if isinstance(ref, (str, desc.Description, datasets.DatasetSpec)) or not isinstance(ref, Mapping):
            if not isinstance(ref, (str, desc.Description, datasets.DatasetSpec)):
                raise ValueError(f"description must be a description mapping, a shipped name, a file, a "
                                 f"Description or a DatasetSpec; got {type(ref).__name__}")
            ref = datasets.description_dict(ref)
        object.__setattr__(self, "description", json.loads(json.dumps(dict(ref))))
        d = self.spec.description
        for name in _FROM_DESCRIPTION:
            if getattr(self, name) is None:
                object.__setattr__(self, name, getattr(d, name))
        self.validate()

    def __getstate__(self) -> Dict[str, Any]:
        return self.to_dict()  # the fields only: caches (the spec, histories' plan) are rebuilt on use

    @property
    def spec(self) -> datasets.DatasetSpec:
        """The dataset's spec (behaviors, labels, tasks; its `description` is the Description)."""
        cached = self.__dict__.get("_spec")
        if cached is None:
            cached = datasets.dataset_spec(self.description)
            object.__setattr__(self, "_spec", cached)
        return cached

    @property
    def data_dir(self) -> str:
        """The description's data directory ('' when it names none)."""
        return self.spec.description.data_dir

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "IngestConfig":
        """Builds a config from a dict, rejecting unknown keys.

        Args:
          values: field name -> value; `description` is required, the rest take defaults.
        """
        if not isinstance(values, Mapping):
            raise ValueError(f"ingest config must be a JSON object, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown ingest config keys {unknown}; expected some of {sorted(known)}")
        if "description" not in values:
            raise ValueError("ingest config needs its `description` (a dataset description mapping or name)")
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> "IngestConfig":
        """Parses a JSON object into a config.

        Args:
          text: the JSON text.
        """
        try:
            values = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"ingest config is not valid JSON: {e}") from None
        return cls.from_dict(values)

    def to_dict(self) -> Dict[str, Any]:
        """Every field (the description as a mapping)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def to_json(self) -> str:
        """The config as a JSON object with every field, keys sorted."""
        return json.dumps(self.to_dict(), sort_keys=True)

    def validate(self) -> None:
        """Raises ValueError naming the first field that is out of its domain."""
        if self.split not in SPLIT_METHODS:
            raise ValueError(f"unknown split {self.split!r}; expected one of {list(SPLIT_METHODS)}")
        if self.split == SPLIT_BY_DAY:
            if not self.eval_day or not self.test_day:
                raise ValueError(f"the by_day split needs eval_day and test_day (the description "
                                 f"{self.spec.name!r} gives none): set them, e.g. eval_day='2017-12-02'")
            eval_date = _parse_day("eval_day", self.eval_day)
            test_date = _parse_day("test_day", self.test_day)
            if not eval_date < test_date:
                raise ValueError(f"eval_day {self.eval_day} must be before test_day {self.test_day}")
        else:
            for name in ("eval_day", "test_day"):
                value = getattr(self, name)
                if value:
                    _parse_day(name, value)
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
