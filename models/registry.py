"""Model families by name: one entry each. Everything else is derived from these entries:
the Trainer's model, the exported signatures (capabilities), the Evaluator config and
gates (tasks), the pipeline's per-family stages, and the served model names.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, FrozenSet, Tuple, Type, Union

from contract import datasets as D
from contract import features as F
from contract import tasks as T
from models.base import RecModel
from models.context import ModelContext
from models import multitask
from models.families import (bert4rec, dtrn, mf, mf_dnn, mf_history, mmoe, nextitnet, nmtr, nor_reviews, peterrec,
                              ple, review_mt, sasrec, semax, shared_bottom, single_task, takd, two_tower)
from models.hparams import HParams

# Recipes (training/recipes/<name>.py) the entries name.
POINTWISE = "pointwise"
RETRIEVAL = "retrieval"
SEQUENCE = "sequence"
DISTIL = "distil"
FINE_TUNE = "fine_tune"
GENERATE = "generate"

TaskNames = Union[Tuple[str, ...], Callable[[D.DatasetSpec], Tuple[str, ...]]]


def regression_task(dataset: D.DatasetSpec) -> Tuple[str, ...]:
    """The dataset's first regression task (a rating family's one output)."""
    names = dataset.regression_tasks()
    if not names:
        raise ValueError(f"dataset {dataset.name!r} has no regression task (its tasks: "
                         f"{', '.join(t.name for t in dataset.tasks)}); a rating family needs one")
    return names[:1]


def binary_task(dataset: D.DatasetSpec) -> Tuple[str, ...]:
    """The dataset's first binary task defined on observed interactions (not the implicit label)."""
    names = dataset.binary_tasks()
    if not names:
        raise ValueError(f"dataset {dataset.name!r} has no binary task besides its implicit label "
                         f"{dataset.implicit_label!r} (its tasks: {', '.join(t.name for t in dataset.tasks)})")
    return names[:1]


@dataclasses.dataclass(frozen=True)
class Family:
    """A trainable family.

    Attributes:
      name: the family (and served model) name.
      model: its RecModel class; its `capabilities` decide the exported signatures.
      hparams: its typed hyperparameter record (defaults).
      tasks: the task names it is trained on, or a function of the dataset giving them.
      view: the examples it trains on (features.INTERACTION_VIEW or USER_VIEW).
      summary: one line for `--help` and the README.
      recipe: how it is trained: a module of training/recipes (pointwise, retrieval,
        sequence, distil, fine_tune); `members` k > 1 in its record trains an ensemble of
        k with this recipe (training/recipes/ensemble.py).
      teacher: the family whose trained model (the Trainer's `base_model`) gives this
        family's training rows soft labels; empty: none.
      base: the family whose trained model (the Trainer's `base_model`) this family
        fine-tunes (PeterRec: a pretrained NextItNet); empty: none.
    """

    name: str
    model: Type[RecModel]
    hparams: Type[HParams]
    tasks: TaskNames
    view: str
    summary: str
    recipe: str
    teacher: str = ""
    base: str = ""

    @property
    def capabilities(self) -> FrozenSet[str]:
        return self.model.capabilities

    @property
    def sequential(self) -> bool:
        """Trained on item sequences (itself or the family it fine-tunes), so on the
        leave_last_two_out split (protocol S)."""
        return self.recipe == SEQUENCE or bool(self.base and get_family(self.base).sequential)

    @property
    def upstream(self) -> str:
        """The family whose trained model this family's Trainer takes as `base_model` (or "")."""
        return self.teacher or self.base

    def task_specs(self, dataset: D.DatasetSpec) -> Tuple[T.TaskSpec, ...]:
        """The family's tasks on `dataset`; a clear error when the dataset lacks one."""
        try:
            names = self.tasks(dataset) if callable(self.tasks) else self.tasks
            return tuple(dataset.task(name) for name in names)
        except ValueError as e:
            raise ValueError(f"model family {self.name!r} cannot train on dataset {dataset.name!r}: {e}") from None

    def build(self, context: ModelContext, hparams: HParams) -> RecModel:
        return self.model(context, hparams)


FAMILIES: Dict[str, Family] = {f.name: f for f in (
    Family("mf", mf.MatrixFactorization, mf.MFParams, regression_task, F.INTERACTION_VIEW,
            "biased matrix factorization on the dataset's (first) regression task, e.g. the rating", recipe=POINTWISE),
    Family("mf_history", mf_history.HistoryMatrixFactorization, mf_history.MFHistoryParams, regression_task,
            F.INTERACTION_VIEW, "MF with the pooled history (+ user) as the query", recipe=POINTWISE),
    Family("mf_dnn", mf_dnn.ItemDnnMatrixFactorization, mf_dnn.MFDnnParams, regression_task, F.INTERACTION_VIEW,
            "MF with a DNN over the item features the description declares", recipe=POINTWISE),
    Family("mf_dnn_liked", mf_dnn.ItemDnnMatrixFactorization, mf_dnn.MFDnnLikedParams, binary_task,
            F.INTERACTION_VIEW, "mf_dnn trained on the dataset's first binary task besides the implicit label", recipe=POINTWISE),
    Family("two_tower", two_tower.TwoTower, two_tower.TwoTowerParams, (D.RETRIEVAL_TASK,), F.USER_VIEW,
            "two-tower retrieval over the whole catalogue (serves recommend)", recipe=RETRIEVAL),
    Family("sasrec", sasrec.SASRec, sasrec.SASRecParams, (D.RETRIEVAL_TASK,), F.USER_VIEW,
           "causal self-attention over the item sequence, next item at every position (protocol S)", recipe=SEQUENCE),
    Family("bert4rec", bert4rec.BERT4Rec, bert4rec.BERT4RecParams, (D.RETRIEVAL_TASK,), F.USER_VIEW,
           "bidirectional self-attention, cloze objective, predicts an appended mask (protocol S)", recipe=SEQUENCE),
    Family("nextitnet", nextitnet.NextItNet, nextitnet.NextItNetParams, (D.RETRIEVAL_TASK,), F.USER_VIEW,
           "dilated causal convolution residual blocks, next item at every position (protocol S)", recipe=SEQUENCE),
    Family("peterrec", peterrec.PeterRec, peterrec.PeterRecParams, peterrec.next_behavior_tasks, F.USER_VIEW,
           "nextitnet's pretrained network and a new head fine-tuned on the next behavior (next_like): "
           "all of it (default) or PeterRec's model patches (mode)", recipe=FINE_TUNE, base="nextitnet"),
    Family("single_task", single_task.SingleTask, multitask.MultiTaskParams, multitask.task_names,
           F.INTERACTION_VIEW, "one independent network per task (the multi-task baseline)", recipe=POINTWISE),
    Family("shared_bottom", shared_bottom.SharedBottomModel, multitask.MultiTaskParams, multitask.task_names,
           F.INTERACTION_VIEW, "one shared bottom MLP, one tower per task", recipe=POINTWISE),
    Family("mmoe", mmoe.MMoEModel, mmoe.MMoEParams, multitask.task_names, F.INTERACTION_VIEW,
           "multi-gate mixture of experts", recipe=POINTWISE),
    Family("ple", ple.PLEModel, ple.PLEParams, multitask.task_names, F.INTERACTION_VIEW,
           "progressive layered extraction (shared and task experts)", recipe=POINTWISE),
    Family("nmtr", nmtr.NMTRModel, multitask.MultiTaskParams, multitask.task_names, F.INTERACTION_VIEW,
           "behavior cascade over shared embeddings", recipe=POINTWISE),
    Family("dtrn", dtrn.DTRNModel, dtrn.DTRNParams, multitask.task_names, F.INTERACTION_VIEW,
           "task-specific bottoms: typed-sequence interest (hypernetwork layer norms) + refinement; "
           "sharing none / mmoe / ple above", recipe=POINTWISE),
    Family("takd_teacher", takd.TAKDTeacher, takd.TAKDTeacherParams, takd.pair_tasks, F.INTERACTION_VIEW,
           "PLE on a task pair with augmented BPR ranking losses and Platt heads (TAKD teacher)", recipe=POINTWISE),
    Family("takd_teacher_dtrn", takd.TAKDDTRNTeacher, takd.TAKDDTRNTeacherParams, takd.pair_tasks,
           F.INTERACTION_VIEW, "DTRN on a task pair with takd_teacher's ranking losses and Platt heads", recipe=POINTWISE),
    Family("takd_student", takd.TAKDStudent, takd.TAKDStudentParams, takd.pair_tasks, F.INTERACTION_VIEW,
           "small task-pair model distilled from takd_teacher_dtrn's soft labels (alone without them)", recipe=DISTIL,
           teacher="takd_teacher_dtrn"),
    Family("semax", semax.SEMAX, semax.SEMAXParams, regression_task, F.INTERACTION_VIEW,
           "SEMAX: rating from LSTM-encoded, time-ordered user and item review documents and latent factors, "
           "with the related task of rating the row's own review (training only)", recipe=POINTWISE),
    Family("review_mt", review_mt.ReviewMT, review_mt.ReviewMTParams, regression_task, F.INTERACTION_VIEW,
           "'Why I like it': MF with vectors regularized by review-document features + a review generator "
           "(explain); adversarial stage optional", recipe=GENERATE),
    Family("nor_reviews", nor_reviews.NORReviews, nor_reviews.NORParams, regression_task, F.INTERACTION_VIEW,
           "NOR adapted to user-item matching: CNN + mutual attention on both sides' review documents, rating "
           "+ comment generation by a GRU with cross-modality attention (explain)", recipe=GENERATE),
)}


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}; expected one of {sorted(FAMILIES)}") from None


def help_text() -> str:
    """Every family with its tasks, capabilities and hyperparameters (for `--help`)."""
    lines = ["model families (override a hyperparameter with --hparam FAMILY.NAME=VALUE):"]
    for family in FAMILIES.values():
        tasks = family.tasks if not callable(family.tasks) else ("(per dataset)",)
        lines.append(f"  {family.name}: {family.summary}; tasks {','.join(tasks)}; "
                     f"serves {','.join(sorted(family.capabilities))}")
        lines += [f"      {line}" for line in family.hparams.describe()]
    return "\n".join(lines)
