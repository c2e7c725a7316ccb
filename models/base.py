"""The model every family builds: tasks for the loss, capabilities for what it serves.

A family subclasses `RecModel` and defines what its capabilities need:

- `score` (`serving_default`): `forward(features, training)` returns one logit per
  pointwise task plus a penalty; `call` turns logits into served predictions.
- `retrieve` (`recommend`): `query(history items, behaviors)` and `candidates()`;
  the retrieval loss is `compute_loss` on user-view batches (`TARGET_IDX`).
- `similar` (`similar_items`): `item_vectors()`, by default the candidate vectors;
  `similarity_vectors()` blends their cosine with the cosine of the items' category sets
  (the values of their categorical and multi-valued features) by the family's
  `similar_category_weight`.
- `teach` (`soft_labels`): `soft_labels(features)`, the soft labels a student distils.
- `explain` (`explain`): `explain(features)`, generated token ids of the
  `explanation_vocabulary` for the inputs `serving_default` takes (models/reviews.py).

`compute_loss` is the sum over tasks of weight x task loss, plus the family's penalty.
"""

from __future__ import annotations

import math
from typing import Dict, FrozenSet, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from contract import features as F
from contract import tasks as T
from models.context import ModelContext
from models.hparams import PER_ENTITY, BiasParams, HParams, SimilarParams
from models.tasks import FULL_SOFTMAX, PointwiseTask, RetrievalTask

SCORE = "score"
RETRIEVE = "retrieve"
SIMILAR = "similar"
TEACH = "teach"  # `soft_labels`: a distillation teacher's soft labels of transformed examples
EXPLAIN = "explain"  # `explain`: generated text (an explanation) with the rating, from serving_default's inputs
CAPABILITIES = (SCORE, RETRIEVE, SIMILAR, TEACH, EXPLAIN)

# Keys of a retrieval batch (built by training/views.py from the user view).
TARGET_IDX = "target_idx"  # [B] the item row to retrieve
EXCLUDE_IDX = "exclude_idx"  # [B, L] item rows that are not negatives (the user's own items)


class RecModel(tfrs.Model):
    """Base of every family.

    Args:
      context: sizes, tasks and training statistics.
      hparams: the family's hyperparameters.
      softmax: how retrieval tasks normalise (models.tasks.FULL_SOFTMAX / SAMPLED_SOFTMAX).
    """

    capabilities: FrozenSet[str] = frozenset()
    # The examples `score` reads: the interaction view (through the Transform), or the
    # user view (its history; the Evaluator's labels from `example_labels`).
    score_view: str = F.INTERACTION_VIEW

    def __init__(self, context: ModelContext, hparams: HParams, softmax: str = FULL_SOFTMAX,
                 loss_weights: Sequence[float] = (), **kwargs):
        """Also takes `loss_weights`: one weight per task, in task order (empty: 1 each)."""
        super().__init__(**kwargs)
        self.context = context
        self.hparams = hparams
        self.pointwise = {t.name: PointwiseTask(t) for t in context.pointwise_tasks}
        self.retrieval = {t.name: RetrievalTask(t, softmax) for t in context.retrieval_tasks}
        self.loss_weights = (_weights(context, loss_weights) if loss_weights
                             else {t.name: 1.0 for t in context.tasks})

    # -- score ----------------------------------------------------------------
    def forward(self, features: Dict[str, tf.Tensor], training: bool = False) -> Tuple[Dict[str, tf.Tensor], tf.Tensor]:
        """Logits per pointwise task and the penalty (scalar) of this batch."""
        raise NotImplementedError(f"{type(self).__name__} does not score examples")

    def call(self, features: Dict[str, tf.Tensor], training: bool = False) -> Dict[str, tf.Tensor]:
        logits, _ = self.forward(features, training=training)
        return {name: self.pointwise[name].link(value) for name, value in logits.items()}

    # -- retrieve ---------------------------------------------------------------
    def query(self, history_item_idx: tf.Tensor, history_behavior_idx: tf.Tensor,
              training: bool = False) -> Tuple[tf.Tensor, tf.Tensor]:
        """Query vectors [B, d] and query biases [B] of histories (0 = padding)."""
        raise NotImplementedError(f"{type(self).__name__} does not retrieve")

    def candidates(self) -> Tuple[tf.Tensor, tf.Tensor]:
        """Vectors [N, d] and biases [N] of every item row (row = item_idx)."""
        raise NotImplementedError(f"{type(self).__name__} does not retrieve")

    def score_catalogue(self, history_item_idx: tf.Tensor, history_behavior_idx: tf.Tensor) -> tf.Tensor:
        """Scores [B, N] of every item row for each history (higher ranks first)."""
        q, b_q = self.query(history_item_idx, history_behavior_idx)
        vectors, biases = self.candidates()
        return tf.matmul(q, vectors, transpose_b=True) + biases[None, :] + b_q[:, None]

    # -- similar --------------------------------------------------------------
    def item_vectors(self) -> tf.Tensor:
        """[N, d] vectors whose cosine similarity answers `similar_items`."""
        return self.candidates()[0]

    def similarity_vectors(self) -> tf.Tensor:
        """[N, D] vectors whose dot products are the `similar_items` scores, in [-1, 1]:
        (cos(item vectors) + w * cos(category sets)) / (1 + w), w = `similar_category_weight`.

        Learned item vectors on few users order items by taste and popularity more than
        by kind; the category term, weighted as chosen on the eval split, keeps an item's
        neighbours of its kind (bench/results/similar.md).
        """
        unit = tf.math.l2_normalize(self.item_vectors(), axis=-1)
        weight = float(self.hparams.similar_category_weight) if isinstance(self.hparams, SimilarParams) else 0.0
        sets = category_sets(self.context.item_table, self.context.item_features) if weight > 0 else None
        if sets is None:
            return unit
        sets = tf.math.l2_normalize(tf.constant(sets), -1)
        rows = tf.shape(unit)[0]
        sets = sets[:rows]
        return tf.concat([unit, math.sqrt(weight) * sets], axis=-1) / math.sqrt(1.0 + weight)

    # -- training ---------------------------------------------------------------
    def retrieval_loss(self, features: Dict[str, tf.Tensor], training: bool) -> tf.Tensor:
        q, _ = self.query(features[F.HISTORY_ITEM_IDX], features[F.HISTORY_BEHAVIOR_IDX], training=training)
        vectors, biases = self.candidates()
        return self.query_penalty(q) + self.retrieval_terms(features, q, vectors, biases)

    def retrieval_terms(self, features: Dict[str, tf.Tensor], query: tf.Tensor, vectors: tf.Tensor,
                        biases: tf.Tensor) -> tf.Tensor:
        """The retrieval tasks' weighted losses of queries [B, d] against candidates [N, d], [N]."""
        log_q = self.log_popularity() if any(t.softmax != FULL_SOFTMAX for t in self.retrieval.values()) else None
        total = tf.constant(0.0)
        for name, task in self.retrieval.items():
            total += self.loss_weights[name] * task(
                query, vectors, biases, features[TARGET_IDX], exclude=features.get(EXCLUDE_IDX), log_q=log_q)
        return total

    def log_popularity(self) -> tf.Tensor:
        """[N] log of each item's share of the training interactions (smoothed by 1)."""
        counts = tf.constant(self.context.item_counts, tf.float32) + 1.0
        return tf.math.log(counts / tf.reduce_sum(counts))

    def compute_loss(self, features, training: bool = False) -> tf.Tensor:
        if TARGET_IDX in features:
            return self.retrieval_loss(features, training)
        logits, penalty = self.forward(features, training=training)
        total = penalty
        for name, value in logits.items():
            task = self.pointwise[name]
            condition = task.spec.condition
            mask = features[condition] if condition and condition in features else None
            total += self.loss_weights[name] * task(features[task.spec.label], value, mask)
        return total

    def train_step(self, inputs):
        """tfrs.Model's step, with the loss divided by the replicas in sync: under a
        `tf.distribute` strategy the replicas' gradients are summed, so this keeps the step
        the gradient of the mean loss (one replica: unchanged)."""
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            loss = self.compute_loss(inputs, training=True)
            regularization_loss = tf.reduce_sum([tf.reduce_sum(loss) for loss in self.losses])
            total_loss = loss + regularization_loss
            scaled = total_loss / replicas if replicas > 1 else total_loss
        gradients = tape.gradient(scaled, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        return self._step_logs(loss, regularization_loss, total_loss)

    def test_step(self, inputs):
        loss = self.compute_loss(inputs, training=False)
        regularization_loss = tf.reduce_sum([tf.reduce_sum(loss) for loss in self.losses])
        return self._step_logs(loss, regularization_loss, loss + regularization_loss)

    def _step_logs(self, loss, regularization_loss, total_loss):
        """The step's metrics (synchronised across replicas by Keras) and its losses, averaged
        over the replicas in sync."""
        context = tf.distribute.get_replica_context()
        if context is not None and tf.distribute.get_strategy().num_replicas_in_sync > 1:
            loss, regularization_loss, total_loss = context.all_reduce(
                tf.distribute.ReduceOp.MEAN, [loss, regularization_loss, total_loss])
        metrics = {metric.name: metric.result() for metric in self.metrics}
        metrics.update(loss=loss, regularization_loss=regularization_loss, total_loss=total_loss)
        return metrics

    def query_penalty(self, query: tf.Tensor) -> tf.Tensor:
        """Regularization of a retrieval batch's query vectors [B, d] (families override)."""
        return tf.constant(0.0)

    def monitor(self, top_k: int) -> Tuple[str, str]:
        """(metric, 'min' or 'max') that early stopping watches on the eval split (a
        retrieval model: NDCG@top_k of the top-K callback)."""
        task = self.context.tasks[0]
        if task.name in self.pointwise:
            metric = self.pointwise[task.name].metric
            return f"val_{metric.name}", ("min" if "rmse" in metric.name else "max")
        return f"val_ndcg@{top_k}", "max"


class OneScoreModel(RecModel):
    """A model with one score per example, read by its single pointwise task."""

    def __init__(self, context, hparams, **kwargs):
        super().__init__(context, hparams, **kwargs)
        if len(context.pointwise_tasks) != 1 or context.retrieval_tasks:
            raise ValueError(
                f"{type(self).__name__} predicts one pointwise task; got {[t.name for t in context.tasks]}")
        task = context.pointwise_tasks[0]
        start = context.mean_rating if task.kind == T.REGRESSION else 0.0
        self.task_name = task.name
        self.global_bias = tf.Variable(start, dtype=tf.float32, name="global_bias")



class BiasPenalty:
    """The per-entity penalty of a family's user and item biases (`BiasParams.bias_penalty`
    `per_entity`): per example reg_u * b_u^2 / n_u + reg_i * b_i^2 / n_i, n being the
    user's and the item's training examples (`ModelContext.user_row_counts`,
    `item_row_counts`), so that over a training epoch each bias is penalised once:
    reg_u * sum b_u^2 + reg_i * sum b_i^2, BaselineOnly's regularizer.

    Args:
      context: the model context (its training-split row counts).
      hparams: the family's record (`bias_reg_user`, `bias_reg_item`).
    """

    def __init__(self, context: ModelContext, hparams: BiasParams):
        if context.user_row_counts is None or context.item_row_counts is None:
            raise ValueError(
                f"bias_penalty={PER_ENTITY} needs the training examples per user and item "
                "(ModelContext.user_row_counts, item_row_counts: the pointwise recipe's context); "
                "this context has none")
        self.user_weight = self._weights(hparams.bias_reg_user, context.user_row_counts)
        self.item_weight = self._weights(hparams.bias_reg_item, context.item_row_counts)

    @staticmethod
    def _weights(reg: float, counts: np.ndarray) -> tf.Tensor:
        """reg / n per row; a row without training examples is never looked up in training (1)."""
        return tf.constant(reg / np.maximum(np.asarray(counts, np.float64), 1.0), tf.float32)

    def __call__(self, items: tf.Tensor, item_bias: tf.Tensor, users: Optional[tf.Tensor] = None,
                 user_bias: Optional[tf.Tensor] = None) -> tf.Tensor:
        """[B] each example's penalty of its item's bias and, when given, its user's."""
        out = tf.gather(self.item_weight, items) * tf.square(item_bias)
        if users is not None:
            out += tf.gather(self.user_weight, users) * tf.square(user_bias)
        return out


def bias_penalty(context: ModelContext, hparams: HParams) -> Optional[BiasPenalty]:
    """The family's per-entity bias penalty, or None when its biases are penalised per example."""
    per_entity = isinstance(hparams, BiasParams) and hparams.bias_penalty == PER_ENTITY
    return BiasPenalty(context, hparams) if per_entity else None


def _weights(context: ModelContext, values: Sequence[float]) -> Dict[str, float]:
    if len(values) != len(context.tasks):
        raise ValueError(
            f"loss_weights has {len(values)} values for {len(context.tasks)} tasks "
            f"({', '.join(t.name for t in context.tasks)})")
    return {t.name: float(w) for t, w in zip(context.tasks, values)}


def l2(*tensors: tf.Tensor) -> tf.Tensor:
    """Per-example sum of squares over the given [B, ...] tensors: [B]."""
    total = 0.0
    for t in tensors:
        t = tf.reshape(t, [tf.shape(t)[0], -1])
        total += tf.reduce_sum(t * t, axis=-1)
    return total


def category_sets(table, inputs) -> "np.ndarray | None":
    """Multi-hot [N, sum of vocabulary rows] float32 of each item row's categorical and
    multi-valued feature values (0 = missing / padding), one block per feature in
    declared order; None without such a feature in the item table.

    Args:
      table: the item table (feature name -> [N] or [N, L] ids by item row).
      inputs: the item features (models.context.FeatureInput).
    """
    blocks = []
    for f in inputs:
        if not f.category_set or not table or f.name not in table:
            continue
        ids = np.asarray(table[f.name])
        ids = ids[:, None] if ids.ndim == 1 else ids
        out = np.zeros((ids.shape[0], f.rows), np.float32)
        rows, cols = np.nonzero(ids > 0)
        out[rows, ids[rows, cols]] = 1.0
        blocks.append(out)
    return np.concatenate(blocks, axis=1) if blocks else None
