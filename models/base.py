"""What every matrix-factorization-style family shares.

A family says how it represents the query (a user, or a user's history) and the item;
this base turns the two into the score

    score = q . v + b_q + b_m + b_global

and owns the loss (MSE on the rating, or sigmoid cross-entropy on liked), the L2
penalty on the looked-up embeddings and biases, and the candidate side used by the
`recommend` and `similar_items` signatures.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs
import tf_keras as keras

from contract import features as F


@dataclasses.dataclass(frozen=True)
class Head:
    """A prediction target: the output name, its label and whether it is a probability."""

    name: str
    label: str
    classification: bool


RATING_HEAD = Head(name=F.RATING, label=F.RATING, classification=False)
LIKED_HEAD = Head(name=F.LIKED, label=F.LIKED, classification=True)


@dataclasses.dataclass(frozen=True)
class ModelContext:
    """Sizes and statistics a model is built with (all from the training split).

    Attributes:
      num_users / num_items / num_genres: embedding rows (vocabulary + OOV + padding 0).
      num_behaviors: history behavior ids (padding 0, behaviors, unknown).
      mean_rating: training-split mean rating (initial global bias).
      dim: embedding dimension.
      l2: L2 weight on looked-up embeddings and biases, per example.
      seed: initialisation seed.
      item_table: per-item Transform features indexed by item_idx (for candidates).
    """

    num_users: int
    num_items: int
    num_genres: int
    num_behaviors: int
    mean_rating: float
    dim: int = 32
    l2: float = 0.02
    seed: int = 42
    item_table: Optional[Dict[str, np.ndarray]] = None


def initializer(seed: int, stddev: float = 0.05):
    return keras.initializers.RandomNormal(stddev=stddev, seed=seed)


class HistoryPooling(keras.layers.Layer):
    """Pools a history (item ids, behavior ids; 0 = padding) into one query vector.

    Each item's embedding is scaled by a learned weight of its behavior (so a
    disliked item can pull the query away) plus a behavior embedding, then summed with
    sqrtn weights (sum / sqrt(n)). Also pools a per-item scalar into the query bias.
    """

    def __init__(self, num_items: int, num_behaviors: int, dim: int, seed: int, **kwargs):
        super().__init__(**kwargs)
        self.item_embedding = keras.layers.Embedding(
            num_items, dim, embeddings_initializer=initializer(seed + 11), name="history_item_embedding"
        )
        self.item_bias = keras.layers.Embedding(
            num_items, 1, embeddings_initializer="zeros", name="history_item_bias"
        )
        self.behavior_embedding = keras.layers.Embedding(
            num_behaviors, dim, embeddings_initializer="zeros", name="behavior_embedding"
        )
        self.behavior_weight = keras.layers.Embedding(
            num_behaviors, 1, embeddings_initializer="ones", name="behavior_weight"
        )

    def call(self, item_idx: tf.Tensor, behavior_idx: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
        mask = tf.cast(item_idx > 0, tf.float32)[..., None]  # [B, L, 1]
        weight = self.behavior_weight(behavior_idx)
        vectors = self.item_embedding(item_idx) * weight + self.behavior_embedding(behavior_idx)
        biases = self.item_bias(item_idx) * weight
        norm = tf.sqrt(tf.maximum(tf.reduce_sum(mask, axis=1), 1.0))  # [B, 1]
        query = tf.reduce_sum(vectors * mask, axis=1) / norm
        bias = tf.reduce_sum(biases * mask, axis=1) / norm
        return query, tf.squeeze(bias, -1)


class FactorizationModel(tfrs.Model):
    """Base of the MF family: score = q . v + b_q + b_m + b_global.

    Subclasses implement `query(features)`, `history_query(items, behaviors)`,
    `item(item_idx, features)` and `candidate_features()`.
    """

    def __init__(self, context: ModelContext, head: Head, **kwargs):
        super().__init__(**kwargs)
        self.context = context
        self.head = head
        self.global_bias = tf.Variable(
            context.mean_rating if not head.classification else 0.0, name="global_bias", dtype=tf.float32
        )
        if head.classification:
            loss = keras.losses.BinaryCrossentropy(from_logits=True)
            metrics = [keras.metrics.AUC(name="auc", from_logits=True)]
        else:
            loss = keras.losses.MeanSquaredError()
            metrics = [keras.metrics.RootMeanSquaredError(name="rmse")]
        self.task = tfrs.tasks.Ranking(loss=loss, metrics=metrics)

    # -- what a family defines ------------------------------------------------
    def query(self, features: Dict[str, tf.Tensor]) -> Tuple[tf.Tensor, tf.Tensor]:
        raise NotImplementedError

    def history_query(self, item_idx: tf.Tensor, behavior_idx: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
        raise NotImplementedError

    def item(self, item_idx: tf.Tensor, features: Dict[str, tf.Tensor]) -> Tuple[tf.Tensor, tf.Tensor]:
        raise NotImplementedError

    def candidate_features(self) -> Dict[str, tf.Tensor]:
        """Item features for every item row (the `recommend` candidates)."""
        return {}

    # -- shared ---------------------------------------------------------------
    def logits(self, features: Dict[str, tf.Tensor]) -> Tuple[tf.Tensor, tf.Tensor]:
        """Pre-activation scores [B] and the L2 penalty of what was looked up."""
        q, b_q = self.query(features)
        v, b_m = self.item(features[F.ITEM_IDX], features)
        logits = tf.reduce_sum(q * v, axis=-1) + b_q + b_m + self.global_bias
        penalty = tf.reduce_sum(q * q, -1) + tf.reduce_sum(v * v, -1) + b_q * b_q + b_m * b_m
        return logits, penalty

    def call(self, features: Dict[str, tf.Tensor]) -> tf.Tensor:
        logits, _ = self.logits(features)
        return tf.sigmoid(logits) if self.head.classification else logits

    def compute_loss(self, features, training: bool = False) -> tf.Tensor:
        logits, penalty = self.logits(features)
        labels = tf.cast(features[self.head.label], tf.float32)
        loss = self.task(labels=labels, predictions=logits)
        return loss + self.context.l2 * tf.reduce_mean(penalty)

    def candidates(self) -> Tuple[tf.Tensor, tf.Tensor]:
        """Vectors [N, d] and biases [N] of every item row (row = item_idx)."""
        idx = tf.range(self.context.num_items, dtype=tf.int64)
        return self.item(idx, self.candidate_features())

    def score_candidates(self, q: tf.Tensor, b_q: tf.Tensor) -> tf.Tensor:
        """Scores [B, N] of every item for each query, in the head's units."""
        vectors, biases = self.candidates()
        logits = tf.matmul(q, vectors, transpose_b=True) + b_q[:, None] + biases[None, :] + self.global_bias
        return tf.sigmoid(logits) if self.head.classification else logits


def item_table_variables(table: Dict[str, np.ndarray], names) -> Dict[str, tf.Variable]:
    """Per-item feature rows as non-trainable variables (a model attribute tracks them)."""
    return {name: tf.Variable(table[name], trainable=False, name=f"item_table_{name}") for name in names}
