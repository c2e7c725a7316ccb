"""TAKD: task-augmented knowledge distillation for a pair of binary tasks (A, B).

- The teacher: a multi-task network trained with ranking losses instead of cross-entropy:
  the coarse BPR ranking of each task's positives over its negatives plus the augmented
  fine-grained tasks from label pairs (A: ++ > +-, -+ > --; B: ++ > -+, +- > --;
  models/blocks/distill.py). BPR scores are not probabilities, so each task has a Platt
  head y~ = sigmoid(P r + Q) trained with cross-entropy on the labels on its own optimizer
  step (its loss sees the scores through a stop-gradient, and the ranking step never moves
  P and Q). The served output is the calibrated probability. `ranking="ce"` trains the
  same network with pointwise cross-entropy instead (the vanilla-KD teacher). The network
  is PLE (`TAKDTeacher`) or DTRN, the strongest multi-task family here
  (`TAKDDTRNTeacher`); `RankingTeacher` holds what they share.
- `TAKDStudent`: a small model cheap to serve: the pooled-history query (`mf_history`'s)
  dotted with one item vector per task, plus biases. On training rows that carry the
  teacher's soft labels (`soft_label(task)` columns, training/distillation.py) its loss per
  task is (1 - alpha) CE(y, y_s) + alpha CE(y~ / tau, y_s / tau), the soft labels first
  moved to within `margin` of the hard label (error correction); elsewhere (eval
  batches, or trained alone) it is the tasks' cross-entropy.

Conditions as everywhere: a task's loss and metrics use the rows where its condition
holds; the pair's rows are those where either condition holds, a task whose condition
fails counting as negative there (evaluation.definitions.pair_classes).
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Tuple

import tensorflow as tf
import tf_keras as keras

from contract import features as F
from contract import tasks as T
from models import blocks
from models.base import SCORE, TEACH, RecModel, l2
from models.families.dtrn import DTRNModel, DTRNParams
from models.families.ple import PLEModel, PLEParams
from models.hparams import HParams, TrainingParams
from models.multitask import MultiTaskModel

BPR = "bpr"
CE = "ce"
SOFT_PREFIX = "soft_"


def soft_label(task: str) -> str:
    """The feature holding the teacher's soft label of `task` on a training row."""
    return f"{SOFT_PREFIX}{task}"


def pair_tasks(dataset) -> Tuple[str, ...]:
    """The dataset's default task pair (contract.datasets.DatasetSpec.task_pair)."""
    if len(dataset.task_pair) != 2:
        raise ValueError(f"dataset {dataset.name!r} names no task pair for TAKD")
    return tuple(dataset.task_pair)


def _check_pair(context) -> Tuple[str, str]:
    tasks = context.pointwise_tasks
    if len(tasks) != 2 or len(context.tasks) != 2 or any(t.kind != T.BINARY for t in tasks):
        raise ValueError(f"TAKD trains on a pair of binary tasks, got {[(t.name, t.kind) for t in context.tasks]}")
    return tasks[0].name, tasks[1].name


def pair_labels(model: RecModel, features) -> Tuple[Tuple[tf.Tensor, ...], Tuple[tf.Tensor, ...], tf.Tensor]:
    """(labels A, B with 0 where a condition fails; conditions A, B; rows of the pair)."""
    labels, masks = [], []
    for name in model.names:
        spec = model.pointwise[name].spec
        mask = tf.cast(features[spec.condition], tf.float32) if spec.condition in features else None
        label = tf.cast(features[spec.label], tf.float32)
        mask = tf.ones_like(label) if mask is None else mask
        labels.append(label * mask)
        masks.append(mask)
    return tuple(labels), tuple(masks), (masks[0] > 0) | (masks[1] > 0)


@dataclasses.dataclass(frozen=True)
class RankingParams:
    """A TAKD teacher's training, beside its network's hyperparameters. Attributes:
      ranking: "bpr" (coarse BPR per task, plus the augmented tasks with `aux`) or "ce"
        (pointwise cross-entropy: the vanilla-KD teacher).
      aux: add the fine-grained BPR tasks of the label pairs.
      fine_weights: weights of (A: ++>+-, A: -+>--, B: ++>-+, B: +->--).
      calibrate: Platt heads per task (BPR only); without, the output is sigmoid(score).
      calibration_learning_rate: Adam step size of the Platt heads' own step.
    """

    ranking: str = BPR
    aux: bool = True
    fine_weights: Tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    calibrate: bool = True
    calibration_learning_rate: float = 0.01


@dataclasses.dataclass(frozen=True)
class TAKDTeacherParams(PLEParams, RankingParams):
    """PLE's hyperparameters and the teacher's training (RankingParams)."""


@dataclasses.dataclass(frozen=True)
class TAKDDTRNTeacherParams(DTRNParams, RankingParams):
    """DTRN's hyperparameters and the teacher's training (RankingParams)."""


class RankingTeacher:
    """The teacher's training over a multi-task network (a MultiTaskModel subclass after this
    one in the bases): ranking losses, Platt heads on their own step, soft labels."""

    capabilities = frozenset({SCORE, TEACH})

    def __init__(self, context, hparams: RankingParams, **kwargs):
        super().__init__(context, hparams, **kwargs)
        _check_pair(context)
        if hparams.ranking not in (BPR, CE):
            raise ValueError(f"a TAKD teacher's ranking must be {BPR!r} or {CE!r}, got {hparams.ranking!r}")
        self.ranking = blocks.AugmentedBPR(hparams.fine_weights, aux=hparams.aux, name="ranking")
        self.platt = {}
        if hparams.calibrate and hparams.ranking == BPR:
            for name in self.names:
                self.platt[name] = blocks.PlattScaling(name=f"platt_{name}")
                self.platt[name].build(())
        self.calibration_optimizer = keras.optimizers.Adam(hparams.calibration_learning_rate)

    def scores(self, features, training=False):
        """The towers' raw scores per task (BPR scores or logits) and the penalty."""
        return MultiTaskModel.forward(self, features, training=training)

    def forward(self, features, training=False):
        scores, penalty = self.scores(features, training=training)
        return {t: self.platt[t](s) if t in self.platt else s for t, s in scores.items()}, penalty

    def soft_labels(self, features, calibrated: bool = True) -> Dict[str, tf.Tensor]:
        """{soft_label(task): [B] probabilities}: the calibrated output, or with
        `calibrated=False` sigmoid of the raw scores (the without-calibration ablation)."""
        logits = self.forward(features)[0] if calibrated else self.scores(features)[0]
        return {soft_label(t): tf.sigmoid(v) for t, v in logits.items()}

    def loss_terms(self, features, training=False) -> Tuple[tf.Tensor, tf.Tensor]:
        """(the network's loss, the Platt heads' cross-entropy on stop-gradient scores)."""
        scores, penalty = self.scores(features, training=training)
        labels, masks, rows = pair_labels(self, features)
        main, calibration = penalty, tf.constant(0.0)
        if self.hparams.ranking == CE:
            for i, name in enumerate(self.names):
                main += self.loss_weights[name] * self.pointwise[name](labels[i], scores[name], masks[i])
            return main, calibration
        main += self.ranking(tuple(scores[t] for t in self.names), labels, masks, rows)
        for i, name in enumerate(self.names):
            if name in self.platt:
                calibrated = self.platt[name](tf.stop_gradient(scores[name]))
                calibration += self.pointwise[name](labels[i], calibrated, masks[i])
            else:
                self.pointwise[name].metric.update_state(labels[i], scores[name], sample_weight=masks[i])
        return main, calibration

    def compute_loss(self, features, training: bool = False) -> tf.Tensor:
        main, calibration = self.loss_terms(features, training=training)
        return main + calibration

    def calibration_variables(self):
        return [v for layer in self.platt.values() for v in layer.trainable_variables]

    def _step(self, features, rank: bool = True):
        with tf.GradientTape(persistent=True) as tape:
            main, calibration = self.loss_terms(features, training=True)
        heads = self.calibration_variables()
        if rank:
            skip = {v.ref() for v in heads}
            network = [v for v in self.trainable_variables if v.ref() not in skip]
            self.optimizer.apply_gradients(zip(tape.gradient(main, network), network))
        if heads:
            self.calibration_optimizer.apply_gradients(zip(tape.gradient(calibration, heads), heads))
        del tape
        metrics = {m.name: m.result() for m in self.metrics}
        metrics.update(loss=main + calibration, ranking_loss=main, calibration_loss=calibration)
        return metrics

    def train_step(self, features):
        """The ranking step on the network, then the calibration step on the Platt heads."""
        return self._step(features)

    def calibration_step(self, features):
        """The Platt heads' step alone (the network stays as it is)."""
        return self._step(features, rank=False)


class TAKDTeacher(RankingTeacher, PLEModel):
    """PLE as the teacher's network."""


class TAKDDTRNTeacher(RankingTeacher, DTRNModel):
    """DTRN (task-specific bottoms over typed behavior sequences) as the teacher's network."""


@dataclasses.dataclass(frozen=True)
class TAKDStudentParams(HParams):
    """Attributes:
      dim: vector size; user_id: add the user's vector and bias to the pooled history;
      l2: penalty on the query and item vectors;
      alpha: weight of the soft-label term; tau: temperature (divides logits);
      correct: apply error correction; margin: largest distance of a soft label from its
        hard label before it is corrected.
    """

    # dim, l2 and the learning rate: the distilled student's eval choice (eval mean AUC of
    # the pair 0.8106 against 0.8075 at dim 32, L2 0.05; bench/results/tuning/takd_student.md).
    dim: int = 64
    user_id: bool = True
    l2: float = 0.02
    alpha: float = 0.5
    tau: float = 1.0
    correct: bool = True
    margin: float = 0.6
    training: TrainingParams = TrainingParams(learning_rate=0.01, batch_size=512, max_epochs=30)


class TAKDStudent(RecModel):
    """Query = pooled history (+ user); one item vector and item bias per task."""

    capabilities = frozenset({SCORE})

    def __init__(self, context, hparams: TAKDStudentParams, **kwargs):
        super().__init__(context, hparams, **kwargs)
        self.names = _check_pair(context)
        if not 0.0 <= hparams.alpha <= 1.0 or hparams.tau <= 0 or hparams.margin > 1.0:
            raise ValueError(f"takd_student needs 0 <= alpha <= 1, tau > 0 and margin <= 1, got alpha={hparams.alpha}, "
                             f"tau={hparams.tau}, margin={hparams.margin}")
        self.query_layer = blocks.HistoryQuery(context, hparams.dim, hparams.user_id, name="query")
        self.item_embedding = blocks.embedding(context.num_items, hparams.dim * 2, context.seed + 1, "item_embedding")
        self.item_bias = {t: blocks.Bias(context.num_items, name=f"item_bias_{t}") for t in self.names}
        self.global_bias = tf.Variable(tf.zeros([2]), name="global_bias")

    def forward(self, features, training=False):
        q, b_q = self.query_layer(features, training=training)
        items = features[F.ITEM_IDX]
        v = tf.reshape(self.item_embedding(items), [-1, 2, self.hparams.dim])
        logits = {t: tf.reduce_sum(q * v[:, i], -1) + b_q + self.item_bias[t](items) + self.global_bias[i]
                  for i, t in enumerate(self.names)}
        return logits, self.hparams.l2 * tf.reduce_mean(l2(q, v))

    def monitor(self, top_k: int) -> Tuple[str, str]:
        return "val_mean_auc", "max"  # the pair's mean eval AUC, as the teacher's

    def compute_loss(self, features, training: bool = False) -> tf.Tensor:
        logits, total = self.forward(features, training=training)
        labels, masks, _ = pair_labels(self, features)
        hp = self.hparams
        for i, name in enumerate(self.names):
            task = self.pointwise[name]
            if soft_label(name) in features and hp.alpha > 0:
                soft = tf.cast(features[soft_label(name)], tf.float32)
                if hp.correct:
                    soft = blocks.correct_soft_labels(soft, labels[i], hp.margin)
                loss = blocks.distillation_loss(labels[i], soft, logits[name], hp.alpha, hp.tau, masks[i])
                task.metric.update_state(labels[i], logits[name], sample_weight=masks[i])
            else:
                loss = task(labels[i], logits[name], masks[i])
            total += self.loss_weights[name] * loss
        return total
