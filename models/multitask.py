"""What the multi-task families share: the input, the towers, the loss weighting.

Every multi-task family reads the same input representation (`InteractionEncoder`: the
user's pooled history with its behavior types plus the user's own vector when known
(and the user's features when the description declares some), the item's id and the
item features the description declares, read by type, and their elementwise product) and ends in one tower per
task, so the families differ only in how the bottom between the two is shared
(`make_bottom`, one of models/blocks/experts.py) and, for the cascade, how the towers'
logits combine (`combine`).

Conditional tasks are masked: a task with a condition (e.g. a rating-derived task
conditioned on the implicit label) is trained and measured on the rows where its
condition holds only (its label is undefined on sampled negatives), and its output is
the conditional prediction p(task | condition). A served ranking that wants p(task and
condition) multiplies the two outputs.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tf_keras as keras

from contract import features as F
from contract import tasks as T
from models import blocks
from models.base import SCORE, RecModel, bias_penalty, l2
from models.hparams import BiasParams, TrainingParams


@dataclasses.dataclass(frozen=True)
class MultiTaskParams(BiasParams):
    """Attributes (beyond `BiasParams`'):
      dim: embedding size of users, items, item features and history items.
      user_id: add the user's own vector to the pooled history.
      bottom: widths of the bottom MLPs (each expert, or the shared bottom).
      tower: widths of each task's tower before its logit.
      loss_weights: one weight per task, in task order (empty: 1 each).
      uncertainty: learn the task weights as homoscedastic uncertainty (Kendall et al.,
        CVPR'18): sum_t exp(-s_t) L_t + s_t, s_t learned; replaces `loss_weights`.
      l2: penalty on the looked-up embeddings.
      dropout: dropout in the bottom and towers.
      text: read the description's text features and documents (item and user side).
      entity_biases: add a learned bias per user and per item to each regression output
        (as MF's), penalised as `bias_penalty` says (per example: at `l2`).
      stop_on: the task whose eval metric early stopping watches (its RMSE or AUC); empty:
        the mean AUC of the binary tasks when there are several, else the first task's.
    """

    dim: int = 32
    user_id: bool = True
    bottom: Tuple[int, ...] = (128, 64)
    tower: Tuple[int, ...] = (32,)
    loss_weights: Tuple[float, ...] = ()
    uncertainty: bool = False
    l2: float = 1e-4
    dropout: float = 0.0
    text: bool = True
    entity_biases: bool = False
    stop_on: str = ""
    training: TrainingParams = TrainingParams(learning_rate=0.002, batch_size=512)


class InteractionEncoder(keras.layers.Layer):
    """[query, item, query * item] of an interaction: the input every multi-task family reads."""

    def __init__(self, context, dim: int, user_id: bool, seed: int = 0, text: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.query = blocks.HistoryQuery(context, dim, user_id, text=text, name="query")
        self.item = blocks.ItemEncoder.for_context(context, dim, (2 * dim,), seed, text=text, name="item")

    def call(self, features, training=False, with_item=False):
        """(input [B, 3 dim], embedding penalty), plus the target item's vector with `with_item`."""
        q, _ = self.query(features, training=training)
        v = self.item(features[F.ITEM_IDX], features, training=training)
        out = tf.concat([q, v, q * v], axis=-1), l2(q, v)
        return out + (v,) if with_item else out


def task_names(dataset) -> Tuple[str, ...]:
    """Every pointwise task of a dataset (the pipeline drops the implicit one without negatives)."""
    return tuple(t.name for t in dataset.tasks if t.kind != T.RETRIEVAL)


class MultiTaskModel(RecModel):
    """Input encoder -> shared bottom (`make_bottom`) -> one tower per task -> `combine`."""

    capabilities = frozenset({SCORE})
    shared_input = True  # single_task gives every task its own encoder

    def __init__(self, context, hparams: MultiTaskParams, **kwargs):
        super().__init__(context, hparams, loss_weights=hparams.loss_weights, **kwargs)
        self.names = tuple(t.name for t in context.pointwise_tasks)
        seed = context.seed
        if self.shared_input:
            self.encoder = InteractionEncoder(context, hparams.dim, hparams.user_id, seed=seed, text=hparams.text,
                                              name="encoder")
        else:
            self.encoders = {t: InteractionEncoder(context, hparams.dim, hparams.user_id, seed=seed + 31 * i,
                                                   text=hparams.text, name=f"encoder_{t}")
                             for i, t in enumerate(self.names)}
        self.bottom = self.make_bottom(self.names, hparams, seed + 500)
        self.towers = {t: blocks.MLP(tuple(hparams.tower) + (1,), dropout=hparams.dropout, seed=seed + 900 + 13 * i,
                                     name=f"tower_{t}") for i, t in enumerate(self.names)}
        self.biases = {t.name: tf.Variable(context.mean_rating if t.kind == T.REGRESSION else 0.0,
                                           name=f"bias_{t.name}") for t in context.pointwise_tasks}
        if hparams.uncertainty:
            self.log_variance = tf.Variable(tf.zeros([len(self.names)]), name="log_variance")
        if hparams.stop_on and hparams.stop_on not in self.names:
            raise ValueError(f"stop_on={hparams.stop_on!r} is not a task of {type(self).__name__}; "
                             f"its tasks: {', '.join(self.names)}")
        self.rated = tuple(t.name for t in context.pointwise_tasks if t.kind == T.REGRESSION)
        self.user_bias = self.item_bias = self.bias_penalty = None
        if hparams.entity_biases and self.rated:
            self.user_bias = blocks.Bias(context.num_users, name="user_bias")
            self.item_bias = blocks.Bias(context.num_items, name="item_bias")
            self.bias_penalty = bias_penalty(context, hparams)

    # -- what a family chooses ---------------------------------------------------------
    def make_bottom(self, names: Sequence[str], hparams: MultiTaskParams, seed: int) -> keras.layers.Layer:
        raise NotImplementedError

    def combine(self, logits: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        """Final logits from the towers' (the cascade adds its predecessors')."""
        return logits

    # -- shared -------------------------------------------------------------------------
    def represent(self, features, training=False):
        if self.shared_input:
            x, penalty = self.encoder(features, training=training)
        else:
            encoded = {t: self.encoders[t](features, training=training) for t in self.names}
            x = {t: v[0] for t, v in encoded.items()}
            penalty = tf.add_n([v[1] for v in encoded.values()])
        reps, gates = self.bottom(x, training=training)
        return reps, gates, penalty

    def forward(self, features, training=False):
        reps, _, penalty = self.represent(features, training=training)
        logits = {t: tf.squeeze(self.towers[t](reps[t], training=training), -1) + self.biases[t] for t in self.names}
        penalty = self.hparams.l2 * tf.reduce_mean(penalty)
        if self.user_bias is not None:
            users, items = features[F.USER_IDX], features[F.ITEM_IDX]
            b_u, b_i = self.user_bias(users), self.item_bias(items)
            for t in self.rated:
                logits[t] = logits[t] + b_u + b_i
            if self.bias_penalty is None:
                penalty += self.hparams.l2 * tf.reduce_mean(tf.square(b_u) + tf.square(b_i))
            else:
                penalty += tf.reduce_mean(self.bias_penalty(items, b_i, users, b_u))
        return self.combine(logits), penalty

    def gate_weights(self, features) -> Dict[str, tf.Tensor]:
        """{task: [B, experts]} softmax weights of the task's gate (empty without gates)."""
        return self.represent(features)[1]

    def compute_loss(self, features, training: bool = False) -> tf.Tensor:
        if not self.hparams.uncertainty:
            return super().compute_loss(features, training)
        logits, penalty = self.forward(features, training=training)
        total = penalty
        for i, name in enumerate(self.names):
            task = self.pointwise[name]
            condition = task.spec.condition
            mask = features[condition] if condition and condition in features else None
            loss = task(features[task.spec.label], logits[name], mask)
            total += tf.exp(-self.log_variance[i]) * loss + self.log_variance[i]
        return total

    def monitor(self, top_k: int) -> Tuple[str, str]:
        if self.hparams.stop_on:
            metric = self.pointwise[self.hparams.stop_on].metric
            return f"val_{metric.name}", ("min" if "rmse" in metric.name else "max")
        binary = [t for t in self.context.pointwise_tasks if t.kind == T.BINARY]
        return ("val_mean_auc", "max") if len(binary) > 1 else super().monitor(top_k)

    def task_weights(self) -> Dict[str, float]:
        """The effective loss weight of each task (learned ones with `uncertainty`)."""
        if self.hparams.uncertainty:
            values = np.exp(-self.log_variance.numpy())
            return {t: float(v) for t, v in zip(self.names, values)}
        return dict(self.loss_weights)


def ancestors(context, name: str) -> Tuple[str, ...]:
    """The tasks before `name` in its funnel that the model also predicts, nearest first."""
    present = {t.name: t for t in context.pointwise_tasks}
    specs = {t.name: t for t in context.dataset.tasks}
    out = []
    parent = specs[name].parent
    while parent:
        if parent in present:
            out.append(parent)
        parent = specs[parent].parent if parent in specs else ""
    return tuple(out)
