"""Training recipes: how a family is trained, one module each, named by its registry entry.

A recipe module has one small interface:

- `STRATEGIES`: the `tf.distribute` strategies it can train under (a recipe limited to
  fewer says why in `ONE_PROCESS`, e.g. "is fine-tuned from {family.base} in one process");
- `setup(job) -> Setup`: the model, its candidate rows and `fit`, which trains the model
  and returns the training summary.

`pointwise` (interaction-view examples, one loss per task), `retrieval` (leave-one-out
batches of the user view), `sequence` (windows of each user's sequence), `distil` (a
student on its teacher's soft labels), `fine_tune` (a base family's pretrained network
with a new head), `generate` (pointwise, then the text generator alone until its eval
perplexity stops falling) are named by registry entries (`Family.recipe`); `ensemble` trains k
members of any family with the family's own recipe when its record asks for
`members` k > 1. The Trainer (`training/trainer.py`) resolves, sets up, fits and exports.
"""

from __future__ import annotations

import dataclasses
import importlib
import pathlib
from types import ModuleType
from typing import Any, Callable, Dict, Optional, TYPE_CHECKING

import numpy as np

from models.base import RecModel
from models.hparams import HParams
from models.registry import Family

if TYPE_CHECKING:  # the config imports this package
    from training.config import TrainConfig

ENSEMBLE = "ensemble"
SoftLabels = Callable[[Dict[str, np.ndarray]], Dict[str, np.ndarray]]
Rows = Callable[[Dict[str, np.ndarray]], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Job:
    """One family's training: the Trainer's configuration, the family's record and the files.

    Attributes:
      config: the Trainer's configuration.
      family: the family's registry entry.
      hparams: its hyperparameter record, parsed once (`TrainConfig.params`).
      train_files / eval_files: the Trainer's example files (patterns or lists).
      transform_output: Transform's output directory.
      train_steps: the Trainer's cap on total steps (None or 0: none).
      base_model: the upstream family's exported model (a teacher to distil, a base to
        fine-tune); None: none given.
      soft_labels: for a distilled student, a function of the training rows giving extra
        columns (a teacher's soft labels); None: from `base_model`.
      rows: a function of a split's rows giving the bool [n] rows to train and early-stop
        on (item statistics still come from every training row, a per-entity bias penalty's
        examples per user and item from the kept ones); None: every row.
      alone: without `base_model` or `soft_labels`, a distilled family trains alone on
        its hard labels (the in-process `train`); the Trainer asks for its teacher.
      warm_from: a model of the same family (its last blessed one) whose weights training
        starts from (training/warm_start.py, in `common.keras_setup`); None: from scratch.
    """

    config: "TrainConfig"
    family: Family
    hparams: HParams
    train_files: Any
    eval_files: Any
    transform_output: str
    train_steps: Optional[int] = None
    base_model: Optional[str] = None
    soft_labels: Optional[SoftLabels] = None
    rows: Optional[Rows] = None
    alone: bool = False
    warm_from: Optional[str] = None

    @property
    def seed(self) -> int:
        return self.config.seed

    def member(self, m: int) -> "Job":
        """Member m of an ensemble: seed + m, one model of the same record; members start
        from scratch (a blessed ensemble is not one member's model)."""
        one = dataclasses.replace(self.hparams, training=dataclasses.replace(self.hparams.training, members=1))
        return dataclasses.replace(self, config=dataclasses.replace(self.config, seed=self.config.seed + m),
                                   hparams=one, warm_from=None)


@dataclasses.dataclass
class Setup:
    """A set-up training: the model, its candidate rows (bool [N]: items `recommend` may
    return) and `fit()`, which trains the model and returns the training summary."""

    model: RecModel
    valid: np.ndarray
    fit: Callable[[], Dict[str, Any]]


def names() -> list:
    """Every recipe: the modules of this package (but `common`)."""
    here = pathlib.Path(__file__).parent
    return sorted(p.stem for p in here.glob("*.py") if p.stem not in ("__init__", "common"))


def get(name: str) -> ModuleType:
    """The recipe module `name`; a clear error for an unknown one."""
    if name not in names():
        raise ValueError(f"unknown training recipe {name!r}; expected one of {names()} (training/recipes/)")
    return importlib.import_module(f"training.recipes.{name}")


def resolve(family: Family, hparams: HParams) -> ModuleType:
    """The recipe that trains `family` with `hparams`: the ensemble for members k > 1, else
    the family's own."""
    return get(ENSEMBLE if hparams.training.members > 1 else family.recipe)


def check_strategy(family: Family, hparams: HParams, strategy: str) -> None:
    """Raises when the recipe that trains the family cannot train under `strategy`."""
    for recipe in {resolve(family, hparams), get(family.recipe)}:
        if strategy not in recipe.STRATEGIES:
            raise ValueError(f"{family.name} {recipe.ONE_PROCESS.format(family=family)}; training strategy "
                             f"{strategy!r} is not supported for it (use {recipe.STRATEGIES[0]!r})")
