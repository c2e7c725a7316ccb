"""Reusable layers: id embeddings and biases, MLPs, history pooling, the item encoder.

Every layer takes plain tensors (ids with 0 as padding, dense floats) and knows nothing
of tasks or datasets, so a family is a few lines that compose them.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import tensorflow as tf
import tf_keras as keras

from contract import features as F


def normal(seed: int, stddev: float = 0.05):
    """The initializer of every embedding table: N(0, stddev), seeded."""
    return keras.initializers.RandomNormal(stddev=stddev, seed=seed)


def embedding(rows: int, dim: int, seed: int, name: str, stddev: float = 0.05) -> keras.layers.Embedding:
    """An id embedding table (row 0 is padding by convention, not masked), built at once so
    its `embeddings` can be read before the first call (e.g. the catalogue of a model)."""
    layer = keras.layers.Embedding(rows, dim, embeddings_initializer=normal(seed, stddev), name=name)
    layer.build((None,))
    return layer


class Bias(keras.layers.Layer):
    """A learned scalar per id (zero-initialised): ids [...] -> biases [...]."""

    def __init__(self, rows: int, **kwargs):
        super().__init__(**kwargs)
        self.table = keras.layers.Embedding(rows, 1, embeddings_initializer="zeros", name="table")
        self.table.build((None,))

    def call(self, ids: tf.Tensor) -> tf.Tensor:
        return tf.squeeze(self.table(ids), -1)

    def all(self) -> tf.Tensor:
        """Every row's bias, [rows]."""
        return tf.squeeze(self.table.embeddings, -1)


class MLP(keras.layers.Layer):
    """Dense layers with one activation; the last layer's activation is `output_activation`.

    Args:
      units: width of each layer.
      activation: hidden activation.
      output_activation: activation of the last layer (None: linear).
      dropout: dropout rate after each hidden layer (training only).
      seed: initialisation seed.
    """

    def __init__(self, units: Sequence[int], activation: str = "relu", output_activation: Optional[str] = None,
                 dropout: float = 0.0, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.units = tuple(int(u) for u in units)
        self.dense = [
            keras.layers.Dense(
                u,
                activation=activation if i < len(self.units) - 1 else output_activation,
                kernel_initializer=keras.initializers.GlorotUniform(seed + i),
                name=f"dense_{i}",
            )
            for i, u in enumerate(self.units)
        ]
        self.dropout = [keras.layers.Dropout(dropout, seed=seed + 100 + i) for i in range(len(self.units) - 1)] if dropout else []

    def call(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        for i, layer in enumerate(self.dense):
            x = layer(x)
            if self.dropout and i < len(self.dense) - 1:
                x = self.dropout[i](x, training=training)
        return x


def masked_mean(vectors: tf.Tensor, ids: tf.Tensor) -> tf.Tensor:
    """Mean of vectors [..., L, d] over positions whose id [..., L] is not 0 (0 when none)."""
    mask = tf.cast(ids > 0, vectors.dtype)[..., None]
    return tf.reduce_sum(vectors * mask, axis=-2) / tf.maximum(tf.reduce_sum(mask, axis=-2), 1.0)


class HistoryPooling(keras.layers.Layer):
    """A history (item ids, behavior ids; 0 = padding) pooled into one vector and one bias.

    Each item's embedding is scaled by a learned weight of its behavior (a disliked item
    can pull the query away) plus a behavior embedding, then summed with sqrtn weights
    (sum / sqrt(n)), as SVD++ pools implicit feedback. Also pools a per-item scalar
    into a query bias.

    Args:
      num_items / num_behaviors: id rows.
      dim: vector size.
      seed: initialisation seed.
      dropout: at training time, each history item is dropped with this probability
        (the query must not rely on any single item).
      attention_heads: > 0 puts a self-attention layer (that many heads, residual and layer
        norm, padding masked) over the item vectors before they are pooled, so that each
        history item is read in the light of the others (as EASE's item-item weights do).
    """

    def __init__(self, num_items: int, num_behaviors: int, dim: int, seed: int, dropout: float = 0.0,
                 attention_heads: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.item_embedding = embedding(num_items, dim, seed + 11, "item_embedding")
        self.item_bias = Bias(num_items, name="item_bias")
        self.behavior_embedding = keras.layers.Embedding(
            num_behaviors, dim, embeddings_initializer="zeros", name="behavior_embedding")
        self.behavior_weight = keras.layers.Embedding(
            num_behaviors, 1, embeddings_initializer="ones", name="behavior_weight")
        self.dropout = float(dropout)
        self.seed = seed
        self.attention = self.attention_norm = None
        if attention_heads:
            self.attention = keras.layers.MultiHeadAttention(
                attention_heads, key_dim=max(dim // attention_heads, 1),
                kernel_initializer=keras.initializers.GlorotUniform(seed + 13), name="attention")
            self.attention_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="attention_norm")

    def call(self, item_idx: tf.Tensor, behavior_idx: tf.Tensor, training: bool = False) -> Tuple[tf.Tensor, tf.Tensor]:
        mask = tf.cast(item_idx > 0, tf.float32)[..., None]  # [B, L, 1]
        if training and self.dropout > 0:
            keep = tf.cast(tf.random.uniform(tf.shape(mask), seed=self.seed) >= self.dropout, tf.float32)
            mask = mask * keep
        weight = self.behavior_weight(behavior_idx)
        vectors = self.item_embedding(item_idx) * weight + self.behavior_embedding(behavior_idx)
        if self.attention is not None:
            present = mask[..., 0] > 0
            both = present[:, :, None] & present[:, None, :]
            vectors = self.attention_norm(
                vectors + self.attention(vectors, vectors, attention_mask=both, training=training))
        biases = self.item_bias(item_idx)[..., None] * weight
        norm = tf.sqrt(tf.maximum(tf.reduce_sum(mask, axis=1), 1.0))  # [B, 1]
        query = tf.reduce_sum(vectors * mask, axis=1) / norm
        bias = tf.reduce_sum(biases * mask, axis=1) / norm
        return query, tf.squeeze(bias, -1)


class HistoryQuery(keras.layers.Layer):
    """Query of a user: the pooled history, plus the user's own vector and bias when
    `user_id` (absent or OOV for users unseen in training, whose rows stay near zero).

    Args:
      context: a models.context.ModelContext (sizes, seed).
      dim: vector size.
      user_id: add the user id's vector and bias.
      history_dropout: training-time dropout of history items.
    """

    def __init__(self, context, dim: int, user_id: bool, history_dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.pooling = HistoryPooling(
            context.num_items, context.num_behaviors, dim, context.seed, dropout=history_dropout, name="history")
        self.user_id = user_id
        if user_id:
            self.user_embedding = embedding(context.num_users, dim, context.seed + 5, "user_embedding")
            self.user_bias = Bias(context.num_users, name="user_bias")

    def call(self, features, training=False):
        q, b = self.pooling(features[F.HISTORY_ITEM_IDX], features[F.HISTORY_BEHAVIOR_IDX], training=training)
        if self.user_id and F.USER_IDX in features:
            user = features[F.USER_IDX]
            q = q + self.user_embedding(user)
            b = b + self.user_bias(user)
        return q, b



class ItemEncoder(keras.layers.Layer):
    """Item vector from its id and metadata: id embedding, mean genre embedding, and the
    Transform's numeric item features, through an MLP; with `metadata=False`, the id
    embedding alone.

    `call(item_idx, features)` reads the metadata from the example's features;
    `catalogue()` encodes every item row from the item table (training-split values).

    Args:
      num_items / num_genres: id rows.
      dim: output size.
      hidden: MLP hidden widths (empty: a single linear layer over the inputs).
      numeric: names of the numeric item features to read.
      item_table: per-item feature arrays by item row (for `catalogue`).
      metadata: read metadata at all.
      seed: initialisation seed.
    """

    def __init__(self, num_items: int, num_genres: int, dim: int, hidden: Sequence[int] = (64,),
                 numeric: Sequence[str] = (), item_table: Optional[Dict] = None, metadata: bool = True,
                 seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.num_items = num_items
        self.metadata = metadata
        self.id_embedding = embedding(num_items, dim, seed + 1, "id_embedding")
        self.numeric = tuple(numeric)
        self.table = {}
        if metadata:
            self.genre_embedding = embedding(num_genres, dim, seed + 2, "genre_embedding")
            self.mlp = MLP(tuple(hidden) + (dim,), seed=seed + 3, name="mlp")
            names = (F.ITEM_GENRE_IDX,) + self.numeric
            self.table = {
                name: tf.Variable(item_table[name], trainable=False, name=f"item_table_{name}")
                for name in names
            } if item_table is not None else {}

    def call(self, item_idx: tf.Tensor, features: Dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        ids = self.id_embedding(item_idx)
        if not self.metadata:
            return ids
        genres = features[F.ITEM_GENRE_IDX]
        parts = [ids, masked_mean(self.genre_embedding(genres), genres)]
        if self.numeric:
            parts.append(tf.stack([tf.cast(features[n], tf.float32) for n in self.numeric], axis=-1))
        return self.mlp(tf.concat(parts, axis=-1), training=training)

    def catalogue(self) -> tf.Tensor:
        """Vectors of every item row, [num_items, dim]."""
        rows = tf.range(self.num_items, dtype=tf.int64)
        return self.call(rows, dict(self.table))
