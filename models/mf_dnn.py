"""MF with an item-metadata DNN: the item vector comes from its id and its metadata.

Item input = id embedding + mean-pooled genre embedding + normalized average rating,
popularity and year (training-split statistics from Transform), through a 2-layer
ReLU DNN. The query is the pooled history, as in `mf_history`.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from contract import features as F
from models.base import (
    FactorizationModel,
    Head,
    HistoryPooling,
    ModelContext,
    initializer,
    item_table_variables,
)

ITEM_TABLE_FEATURES = (
    F.ITEM_GENRE_IDX,
    F.ITEM_YEAR_Z,
    F.ITEM_AVG_RATING_MM,
    F.ITEM_POPULARITY_MM,
)


class ItemDnnMatrixFactorization(FactorizationModel):
    """Query = pooled history; item = DNN(id embedding, genres, statistics, year)."""

    def __init__(self, context: ModelContext, head: Head, hidden: int = 64, **kwargs):
        super().__init__(context, head, **kwargs)
        self.history_pooling = HistoryPooling(context.num_items, context.num_behaviors, context.dim, context.seed)
        self.item_embedding = keras.layers.Embedding(
            context.num_items, context.dim, embeddings_initializer=initializer(context.seed + 1), name="item_embedding"
        )
        self.genre_embedding = keras.layers.Embedding(
            context.num_genres, context.dim, embeddings_initializer=initializer(context.seed + 2), name="genre_embedding"
        )
        self.item_bias = keras.layers.Embedding(
            context.num_items, 1, embeddings_initializer="zeros", name="item_bias"
        )
        self.numeric_features = [
            name for name in (F.ITEM_AVG_RATING_MM, F.ITEM_POPULARITY_MM, F.ITEM_YEAR_Z)
            if context.item_table is None or name in context.item_table
        ]
        self.dnn = keras.Sequential(
            [
                keras.layers.Dense(hidden, activation="relu", kernel_initializer=keras.initializers.GlorotUniform(context.seed + 3)),
                keras.layers.Dense(context.dim, kernel_initializer=keras.initializers.GlorotUniform(context.seed + 4)),
            ],
            name="item_dnn",
        )
        names = [F.ITEM_GENRE_IDX] + self.numeric_features
        self.item_table = (
            item_table_variables(context.item_table, names) if context.item_table is not None else {}
        )

    def query(self, features):
        return self.history_pooling(features[F.HISTORY_ITEM_IDX], features[F.HISTORY_BEHAVIOR_IDX])

    def history_query(self, item_idx, behavior_idx):
        return self.history_pooling(item_idx, behavior_idx)

    def item(self, item_idx, features):
        genres = features[F.ITEM_GENRE_IDX]
        mask = tf.cast(genres > 0, tf.float32)[..., None]
        pooled_genres = tf.reduce_sum(self.genre_embedding(genres) * mask, axis=1) / tf.maximum(
            tf.reduce_sum(mask, axis=1), 1.0
        )
        numeric = tf.stack([tf.cast(features[name], tf.float32) for name in self.numeric_features], axis=-1)
        inputs = tf.concat([self.item_embedding(item_idx), pooled_genres, numeric], axis=-1)
        return self.dnn(inputs), tf.squeeze(self.item_bias(item_idx), -1)

    def candidate_features(self):
        return dict(self.item_table)
