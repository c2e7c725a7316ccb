"""PeterRec in the pipeline (Yuan et al., SIGIR'20): a pretrained NextItNet and a new head,
fine-tuned (all of it, or only model patches: `mode`) on one of the dataset's
next-behavior tasks (MovieLens `next_like`: is the user's next interaction a like).

The family's Trainer receives the pretraining Trainer's model as its `base_model`
(registry: `base="nextitnet"`); `training.peterrec.pretrained_network` rebuilds that
network from the export's model record and loads its weights, this model is built on the
network's layers (`models.peterrec.PatchedClassifier`) and `training.peterrec.fine_tune`
trains what the mode trains, on every labelled position of the users' training windows,
stopping on the eval split's AUC. The model holds the sequence embedding, the residual
blocks (with their patches in a patch mode), the final norm and the head, not the network's next-item
output (its item bias): the served model carries only what it serves.

It scores user-view examples (`score_view`): `serving_default` reads a history (ids and
behaviors, as `recommend` does) and returns the task's probability after its last item.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional

import tensorflow as tf

from contract import datasets as D
from contract import features as F
from contract import tasks as T
from models.base import SCORE, RecModel
from models.blocks import patches as P
from models.families.nextitnet import NextItNet, NextItNetParams
from models.families.sequential import last_window
from models.hparams import HParams, TrainingParams
from models.peterrec import BINARY, MEAN, POOLINGS, PatchedClassifier


@dataclasses.dataclass(frozen=True)
class PeterRecParams(HParams):
    """Attributes (and HParams'; the training settings are bench/results/peterrec.md's):
      mode: what fine-tuning trains (models.blocks.patches: scratch, fine_all, fine_cls,
        fine_last, patch_serial, patch_parallel). With mean pooling, fine_all and scratch
        share the best eval AUC measured (bench/results/peterrec_mean_pooling.md: 0.7423 and
        0.7428 over seeds 42-44, seed std 0.003; patch_serial 0.7061; every mode with last
        pooling at most 0.7014, peterrec.md); fine_all keeps the pretrained network.
      bottleneck: the patches' hidden width.
      pooling: `last` (position t's own output) or `mean` (of positions 0..t).
      windows_per_user: the most recent training windows kept per user (0: all).
    """

    mode: str = P.FINE_ALL
    bottleneck: int = 8
    pooling: str = MEAN
    windows_per_user: int = 1
    training: TrainingParams = TrainingParams(batch_size=32)

    def __post_init__(self):
        super().__post_init__()
        P.check_mode(self.mode)
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.bottleneck < 1:
            raise ValueError(f"bottleneck must be >= 1, got {self.bottleneck}")


def next_behavior_tasks(dataset: D.DatasetSpec):
    """The dataset's next-behavior tasks (the family trains on the first)."""
    if not dataset.next_behavior_tasks:
        raise ValueError(f"dataset {dataset.name!r} defines no next-behavior task for a fine-tuned sequence model")
    return (dataset.next_behavior_tasks[0][0],)


class PeterRec(RecModel):
    """A patched pretrained sequence encoder scoring one binary task at a history's end.

    Args:
      context: sizes and the one binary task.
      hparams: PeterRecParams.
      network: the pretrained NextItNet (its layers are taken over); None builds an
        untrained one with NextItNet's default hyperparameters (training from scratch).
    """

    capabilities = frozenset({SCORE})
    score_view = F.USER_VIEW

    def __init__(self, context, hparams: PeterRecParams, network: Optional[NextItNet] = None, **kwargs):
        super().__init__(context, hparams, **kwargs)
        tasks = context.pointwise_tasks
        if len(tasks) != 1 or tasks[0].kind != T.BINARY or context.retrieval_tasks:
            raise ValueError(f"PeterRec scores one binary task; got {[t.name for t in context.tasks]}")
        self.task_name = tasks[0].name
        self.behavior = context.dataset.next_behavior(self.task_name)
        if network is None:
            retrieval = (context.dataset.task(D.RETRIEVAL_TASK),)
            network = NextItNet(dataclasses.replace(context, tasks=retrieval), NextItNetParams())
        self.max_len = network.max_len
        self.classifier = PatchedClassifier.from_network(network, hparams.mode, BINARY, 1,
                                                         bottleneck=hparams.bottleneck, pooling=hparams.pooling,
                                                         seed=context.seed)

    def forward(self, features, training=False):
        items, behaviors, lengths = last_window(features[F.HISTORY_ITEM_IDX], features[F.HISTORY_BEHAVIOR_IDX],
                                                self.max_len)
        logits = self.classifier({"items": items, "behaviors": behaviors}, training=training)
        # The prediction after the last real item (an empty history reads position 0).
        last = tf.gather(logits, tf.maximum(lengths - 1, 0), batch_dims=1)
        return {self.task_name: last}, tf.constant(0.0)

    def example_labels(self, target_behaviors: tf.Tensor) -> Dict[str, tf.Tensor]:
        """The task's label of user-view examples from their targets' behaviors ([B, >= 1]
        strings, the first target read): 1.0 where it is the task's behavior."""
        return {self.task_name: tf.cast(tf.equal(target_behaviors[:, 0], self.behavior), tf.float32)}
