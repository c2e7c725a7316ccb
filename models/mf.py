"""Biased matrix factorization: rating = u . m + b_u + b_m + b_global."""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from contract import features as F
from models.base import FactorizationModel, Head, ModelContext, initializer


class MatrixFactorization(FactorizationModel):
    """Learns one vector and one bias per user and per item.

    A user id is the query, so `recommend` (which has only a history) falls back to
    item-to-item scoring: the query is the mean embedding of the history's items and
    the user bias is 0.
    """

    def __init__(self, context: ModelContext, head: Head, **kwargs):
        super().__init__(context, head, **kwargs)
        self.user_embedding = keras.layers.Embedding(
            context.num_users, context.dim, embeddings_initializer=initializer(context.seed), name="user_embedding"
        )
        self.user_bias = keras.layers.Embedding(
            context.num_users, 1, embeddings_initializer="zeros", name="user_bias"
        )
        self.item_embedding = keras.layers.Embedding(
            context.num_items, context.dim, embeddings_initializer=initializer(context.seed + 1), name="item_embedding"
        )
        self.item_bias = keras.layers.Embedding(
            context.num_items, 1, embeddings_initializer="zeros", name="item_bias"
        )

    def query(self, features):
        user = features[F.USER_IDX]
        return self.user_embedding(user), tf.squeeze(self.user_bias(user), -1)

    def history_query(self, item_idx, behavior_idx):
        mask = tf.cast(item_idx > 0, tf.float32)[..., None]
        total = tf.reduce_sum(self.item_embedding(item_idx) * mask, axis=1)
        query = total / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)
        return query, tf.zeros(tf.shape(query)[:1])

    def item(self, item_idx, features):
        return self.item_embedding(item_idx), tf.squeeze(self.item_bias(item_idx), -1)
