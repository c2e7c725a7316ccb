"""Typed hyperparameter records: each family has one, shown in `--help`, overridable by name.

A family's record is a frozen dataclass deriving from `HParams`. The training knobs every
family shares are one `TrainingParams` record held in its `training` field; a family's
record states only the knobs whose values it changes (`training = TrainingParams(...)`, or
`dataclasses.replace` of its parent's). Names are flat outside the record: `--hparam
mf.learning_rate=0.01`, `to_dict()` and `--help` list the training knobs beside the
family's own. Overrides may arrive as strings (`dim=64`, from the command line) and are
converted to the field's type; an unknown name or a bad value is an error that lists what
is accepted.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Dict, List, Mapping, Tuple, Type, TypeVar

H = TypeVar("H", bound="HParams")

OPTIMIZERS = ("adam", "rmsprop")
TRAINING = "training"  # the field of HParams holding its TrainingParams


def _check_not_negative(record) -> None:
    for field in dataclasses.fields(record):
        value = getattr(record, field.name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            raise ValueError(f"hyperparameter {field.name} must be >= 0, got {value}")


@dataclasses.dataclass(frozen=True)
class TrainingParams:
    """The training knobs every family shares, one default each.

    Attributes:
      learning_rate: the optimizer's step size.
      optimizer: `adam` or `rmsprop`. RMSprop has no momentum, so an embedding row that is
        not in a batch is not moved by it (Adam keeps moving rows on their old momentum);
        mf's eval RMSE: bench/results/tuning/mf_optimizer.md.
      batch_size: examples per step.
      max_epochs: passes over the training data at most (early stopping may end sooner).
      patience: epochs without improvement of the monitored eval metric before stopping;
        the weights of the best epoch are kept.
      members: k > 1 trains the family as an ensemble of k models (training/recipes/
        ensemble.py: member m with seed + m, served as the sum of their scores); 1: one model.
      warm_learning_rate_scale: a warm-started fit that carried every weight of the
        family's last blessed model (training/warm_start.py) runs at `learning_rate` times
        this. The model starts near a fit of the previous window, and a larger step adapts
        it to the new spans in fewer epochs (mf: bench/results/tuning/mf_warm_start.md);
        1: the same rate.
      warm_start: whether a run that warm-starts (spanned logs, `--warm_start on`) starts
        this family from its last blessed model; False: it trains from scratch every run.
        False for two_tower and the sequence families, whose warm start is not measured
        (one replayed two_tower day: warm eval NDCG@10 0.0449 against cold 0.0557).
      weight_average: > 0 keeps an exponential moving average of the trainable weights with
        this momentum per step (training/recipes/common.py's WeightAverage): each epoch is
        evaluated, early stopped and kept with the averaged weights; 0: the weights as trained.
    """

    learning_rate: float = 0.005
    batch_size: int = 256
    max_epochs: int = 20
    patience: int = 2
    optimizer: str = "adam"
    members: int = 1
    warm_learning_rate_scale: float = 1.0
    warm_start: bool = True
    weight_average: float = 0.0

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        _check_not_negative(self)
        if self.batch_size < 1 or self.max_epochs < 1:
            raise ValueError(f"batch_size and max_epochs must be >= 1, got {self.batch_size}, {self.max_epochs}")
        if not 0.0 <= self.weight_average < 1.0:
            raise ValueError(f"weight_average must be in [0, 1) (0: off), got {self.weight_average}")
        if self.members < 1:
            raise ValueError(f"members must be >= 1, got {self.members}")
        if self.warm_learning_rate_scale <= 0:
            raise ValueError(f"warm_learning_rate_scale must be > 0, got {self.warm_learning_rate_scale}")


TRAINING_NAMES = tuple(f.name for f in dataclasses.fields(TrainingParams))


@dataclasses.dataclass(frozen=True)
class HParams:
    """What every family's record has: the shared training knobs (`training`).

    Attributes:
      training: the family's TrainingParams (the shared defaults, or the values it changes).
    """

    training: TrainingParams = TrainingParams()

    def __post_init__(self):
        _check_not_negative(self)

    def override(self: H, values: Mapping[str, Any]) -> H:
        """A copy with some fields replaced, by flat name (a training knob's name reaches
        `training`); string values are converted to the field's type."""
        fields = {f.name: f for f in dataclasses.fields(self) if f.name != TRAINING}
        hints = typing.get_type_hints(type(self))
        training_hints = typing.get_type_hints(TrainingParams)
        changes, training = {}, {}
        for name, value in values.items():
            if name in TRAINING_NAMES:
                training[name] = _convert(name, value, training_hints[name])
            elif name in fields:
                changes[name] = _convert(name, value, hints[name])
            else:
                known = sorted(set(fields) | set(TRAINING_NAMES))
                raise ValueError(f"{type(self).__name__} has no hyperparameter {name!r}; known: {', '.join(known)}")
        if training:
            changes[TRAINING] = dataclasses.replace(self.training, **training)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> Dict[str, Any]:
        """Every hyperparameter by flat name (the training knobs first), tuples as lists."""
        values = {**dataclasses.asdict(self.training),
                  **{f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != TRAINING}}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}

    @classmethod
    def from_dict(cls: Type[H], values: Mapping[str, Any]) -> H:
        return cls().override(values)

    @classmethod
    def describe(cls) -> List[str]:
        """One `name=default  (type)` line per hyperparameter (training knobs first), for `--help`."""
        defaults = cls()
        hints = {**typing.get_type_hints(TrainingParams), **typing.get_type_hints(cls)}
        out = []
        for name, value in defaults.to_dict().items():
            shown = ",".join(map(str, value)) if isinstance(value, list) else value
            out.append(f"{name}={shown}  ({_type_name(hints[name])})")
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


PER_EXAMPLE = "per_example"
PER_ENTITY = "per_entity"
BIAS_PENALTIES = (PER_EXAMPLE, PER_ENTITY)


@dataclasses.dataclass(frozen=True)
class BiasParams(HParams):
    """How a family with a bias per user and per item penalises them.

    Attributes:
      bias_penalty: `per_example`: the biases each example looks up are penalised like its
        vectors (the family's `l2`), so a bias's shrinkage grows with its user's or item's
        training rows (multiplicative). `per_entity`: each bias once per training epoch,
        as surprise's BaselineOnly: an example adds bias_reg_user * b_u^2 / n_u +
        bias_reg_item * b_i^2 / n_i (n: the user's and the item's training rows), which
        sums over an epoch to bias_reg_user * sum b_u^2 + bias_reg_item * sum b_i^2;
        with the batch-mean loss the objective is (SSE + that) / rows, and the shrinkage
        of a bias is additive (b_i = sum of residuals / (reg + n_i)): strong for rare
        items (`models.base.BiasPenalty`).
      bias_reg_user / bias_reg_item: the `per_entity` weights (BaselineOnly's reg_u and
        reg_i; their defaults are surprise's).
    """

    bias_penalty: str = PER_EXAMPLE
    bias_reg_user: float = 15.0
    bias_reg_item: float = 10.0

    def __post_init__(self):
        super().__post_init__()
        if self.bias_penalty not in BIAS_PENALTIES:
            raise ValueError(f"bias_penalty must be one of {', '.join(BIAS_PENALTIES)}, got {self.bias_penalty!r}")


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


@dataclasses.dataclass(frozen=True)
class RetrievalParams(HParams):
    """What a family trained by the retrieval recipe adds (training/recipes/retrieval.py:
    leave-one-out batches of the user view).

    Attributes:
      exclude_own: the user's own other items are not negatives.
      target_behaviors: behaviors whose interactions are training targets (empty: the ones
        the split evaluates, `DatasetSpec.retrieval_targets`: the description's retrieval
        task's target_behaviors on the hash split, every behavior otherwise; eval split:
        bench/results/tuning/two_tower_targets.md).
      user_balance: training targets are drawn with probability proportional to (their
        user's target count) ** -user_balance (training.views.retrieval_dataset): 0 every
        target once per epoch, 1 every user equally often (protocol K averages over users).
    """

    exclude_own: bool = True
    target_behaviors: Tuple[str, ...] = ()
    user_balance: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.user_balance <= 1.0:
            raise ValueError(f"user_balance must be in [0, 1], got {self.user_balance}")


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
