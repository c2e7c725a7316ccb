"""Typed hyperparameter records: each family has one, shown in `--help`, overridable by name.

A family's record is a frozen dataclass deriving from `HParams`. Overrides arrive as
strings (`dim=64`, from the command line or the Trainer's custom config) and are
converted to the field's type; an unknown name or a bad value is an error that lists
what is accepted.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Dict, List, Mapping, Tuple, Type, TypeVar

H = TypeVar("H", bound="HParams")

OPTIMIZERS = ("adam", "rmsprop")


@dataclasses.dataclass(frozen=True)
class HParams:
    """What every family's training shares.

    Attributes:
      learning_rate: the optimizer's step size.
      optimizer: `adam` or `rmsprop`. RMSprop has no momentum, so an embedding row that is
        not in a batch is not moved by it (Adam keeps moving rows on their old momentum);
        mf's eval RMSE: bench/results/tuning/mf_optimizer.md.
      batch_size: examples per step.
      max_epochs: passes over the training data at most (early stopping may end sooner).
      patience: epochs without improvement of the monitored eval metric before stopping;
        the weights of the best epoch are kept.
    """

    learning_rate: float = 0.005
    batch_size: int = 256
    max_epochs: int = 20
    patience: int = 2
    optimizer: str = "adam"

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
                raise ValueError(f"hyperparameter {field.name} must be >= 0, got {value}")
        if self.batch_size < 1 or self.max_epochs < 1:
            raise ValueError(f"batch_size and max_epochs must be >= 1, got {self.batch_size}, {self.max_epochs}")

    def override(self: H, values: Mapping[str, Any]) -> H:
        """A copy with some fields replaced; string values are converted to the field's type."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        hints = typing.get_type_hints(type(self))
        changes = {}
        for name, value in values.items():
            if name not in fields:
                raise ValueError(
                    f"{type(self).__name__} has no hyperparameter {name!r}; known: {', '.join(sorted(fields))}"
                )
            changes[name] = _convert(name, value, hints[name])
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> Dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls: Type[H], values: Mapping[str, Any]) -> H:
        return cls().override(values)

    @classmethod
    def describe(cls) -> List[str]:
        """One `name=default  (type)` line per field, for `--help`."""
        hints = typing.get_type_hints(cls)
        out = []
        for field in dataclasses.fields(cls):
            default = field.default
            shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
            out.append(f"{field.name}={shown}  ({_type_name(hints[field.name])})")
        return out


@dataclasses.dataclass(frozen=True)
class SimilarParams(HParams):
    """What a family that serves `similar` adds.

    Attributes:
      similar_category_weight: `similar_items` scores (cos(item vectors) + w * cos(category
        sets)) / (1 + w), an item's category set being the values of its categorical and
        multi-valued features (`models.base.category_sets`); with w = 0 (or no such
        feature) the learned vectors alone. Chosen per family on the eval split
        (bench/results/similar.md).
    """

    similar_category_weight: float = 0.0


@dataclasses.dataclass(frozen=True)
class ScannParams(HParams):
    """How a family that serves `recommend` finds its top K: by scoring every item (the
    default), or through a ScaNN index of the candidate vectors built at export time
    (export/scann_index.py). Recall against the exact top 10, latency and the setting
    chosen per catalogue size: bench/results/catalogue.md; the defaults are its choice at
    a million items (a catalogue of 10^4 - 10^5 items wants fewer leaves: its rows).

    Attributes:
      scann: `recommend` and `rank_queries` search the ScaNN index instead of scoring
        every item (approximate; the served model then needs ScaNN's TensorFlow ops).
      scann_num_leaves: partitions of the catalogue (at most one per item).
      scann_num_leaves_to_search: partitions a query searches: more finds more of the
        exact top K, and costs more.
      scann_num_reordering_candidates: the best this many of the quantized scores are
        scored again exactly (at least K + the model's max_history, so that a history's
        items can be excluded); 0: no reordering, the served scores are the quantized ones.
      scann_dimensions_per_block: dimensions per asymmetric-hashing block: more is a
        smaller, faster and less accurate index.
    """

    scann: bool = False
    scann_num_leaves: int = 1000
    scann_num_leaves_to_search: int = 10
    scann_num_reordering_candidates: int = 200
    scann_dimensions_per_block: int = 2

    def __post_init__(self):
        super().__post_init__()
        if self.scann_num_leaves < 1 or self.scann_dimensions_per_block < 1:
            raise ValueError(f"scann_num_leaves and scann_dimensions_per_block must be >= 1, got "
                             f"{self.scann_num_leaves}, {self.scann_dimensions_per_block}")
        if not 1 <= self.scann_num_leaves_to_search <= self.scann_num_leaves:
            raise ValueError(f"scann_num_leaves_to_search must be in [1, scann_num_leaves={self.scann_num_leaves}], "
                             f"got {self.scann_num_leaves_to_search}")


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin in (tuple, Tuple):
        return f"comma-separated {typing.get_args(tp)[0].__name__}s"
    return getattr(tp, "__name__", str(tp))


def _convert(name: str, value: Any, tp) -> Any:
    origin = typing.get_origin(tp)
    try:
        if origin in (tuple, Tuple):
            item = typing.get_args(tp)[0]
            if isinstance(value, str):
                parts = [p for p in value.split(",") if p.strip()]
            else:
                parts = list(value)
            return tuple(_convert(name, p, item) for p in parts)
        if tp is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes"):
                return True
            if text in ("0", "false", "no"):
                return False
            raise ValueError(value)
        if tp is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(str(value).strip()) if isinstance(value, str) else int(value)
        if tp is float:
            return float(value)
        if tp is str:
            return str(value)
    except (TypeError, ValueError):
        raise ValueError(f"hyperparameter {name}: {value!r} is not a valid {_type_name(tp)}") from None
    raise TypeError(f"hyperparameter {name}: unsupported type {tp}")


def parse_assignments(items) -> Dict[str, Dict[str, str]]:
    """`["mf.dim=64", "two_tower.loss=sampled"]` -> {"mf": {"dim": "64"}, "two_tower": {...}}."""
    out: Dict[str, Dict[str, str]] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        family, dot, name = key.strip().partition(".")
        if not sep or not dot or not family or not name:
            raise ValueError(f"hyperparameter override {item!r}: expected FAMILY.NAME=VALUE, e.g. mf.dim=64")
        out.setdefault(family, {})[name] = value.strip()
    return out
