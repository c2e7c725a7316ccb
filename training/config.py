"""What the pipeline tells a family's Trainer besides the files (its custom_config)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Dict, Tuple

from contract import datasets as D
from contract import features as F
from contract import run
from models.hparams import HParams
from models.registry import Family, get_family
from training import distribute, recipes


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """What the pipeline tells the Trainer besides the files (its custom_config).

    Attributes:
      family: registry name.
      description: the dataset description mapping (contract.datasets.DatasetSpec.to_dict()).
      hparams: overrides of the family's hyperparameters (name -> value), parsed once into
        the family's record (`params`).
      max_history: the pipeline's max_history (ExampleGen, Transform, queries).
      seed: initialisation and shuffling seed (the pipeline config's).
      top_k: K of `recommend`, `similar_items` and the top-K metrics (the pipeline config's).
      tasks: the task names to train (empty: the family's tasks on the dataset); the
        pipeline passes the list its Evaluator measures.
      strategy: the `tf.distribute` strategy (training.distribute.STRATEGIES); a recipe
        may train in one process only (fine_tune: `default` only).
      split: ExampleGen's split method of the files (which behaviors the eval split's
        retrieval targets have: `DatasetSpec.retrieval_targets`).
      warm_start: the Trainer's `base_model` is the family's last blessed model, and
        training starts from it (training/warm_start.py); no base model: from scratch.
    """

    family: str
    description: Dict[str, Any] = dataclasses.field(default_factory=dict)
    hparams: Dict[str, Any] = dataclasses.field(default_factory=dict)
    max_history: int = F.MAX_HISTORY
    seed: int = run.SEED
    top_k: int = run.TOP_K
    tasks: Tuple[str, ...] = ()
    strategy: str = distribute.DEFAULT
    split: str = D.HASH_SPLIT
    warm_start: bool = False

    def __post_init__(self):
        if not self.description:
            raise ValueError(f"TrainConfig of {self.family!r} needs the dataset description mapping "
                             "(description=contract.datasets.dataset_spec(...).to_dict())")
        if self.strategy not in distribute.STRATEGIES:
            raise ValueError(f"unknown training strategy {self.strategy!r}; expected one of "
                             f"{list(distribute.STRATEGIES)}")
        recipes.check_strategy(self.family_entry, self.params, self.strategy)

    @classmethod
    def from_custom_config(cls, config: Dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"unknown Trainer custom_config keys {unknown}; expected some of {sorted(known)}")
        config = dict(config)
        config["tasks"] = tuple(config.get("tasks", ()))
        return cls(**config)

    @property
    def family_entry(self) -> Family:
        """The family's registry entry."""
        return get_family(self.family)

    @functools.cached_property
    def params(self) -> HParams:
        """The family's hyperparameter record with `hparams` applied (parsed once)."""
        return self.family_entry.hparams().override(self.hparams)

    @property
    def spec(self) -> D.DatasetSpec:
        """The dataset's spec (from `description`)."""
        return D.dataset_spec(self.description)

    def to_custom_config(self) -> Dict[str, Any]:
        out = dataclasses.asdict(self)
        out["tasks"] = list(self.tasks)
        return out
