"""MF with the user's history as the query (SVD++-style implicit query).

The query is the history's item embeddings (scaled per behavior) pooled with sqrtn
weights, plus a pooled query bias, so a new user with a history gets scores without
retraining.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from contract import features as F
from models.base import FactorizationModel, Head, HistoryPooling, ModelContext, initializer


class HistoryMatrixFactorization(FactorizationModel):
    """Query = pooled history; item = id embedding + bias."""

    def __init__(self, context: ModelContext, head: Head, **kwargs):
        super().__init__(context, head, **kwargs)
        self.history_pooling = HistoryPooling(context.num_items, context.num_behaviors, context.dim, context.seed)
        self.item_embedding = keras.layers.Embedding(
            context.num_items, context.dim, embeddings_initializer=initializer(context.seed + 1), name="item_embedding"
        )
        self.item_bias = keras.layers.Embedding(
            context.num_items, 1, embeddings_initializer="zeros", name="item_bias"
        )

    def query(self, features):
        return self.history_pooling(features[F.HISTORY_ITEM_IDX], features[F.HISTORY_BEHAVIOR_IDX])

    def history_query(self, item_idx, behavior_idx):
        return self.history_pooling(item_idx, behavior_idx)

    def item(self, item_idx, features):
        return self.item_embedding(item_idx), tf.squeeze(self.item_bias(item_idx), -1)
