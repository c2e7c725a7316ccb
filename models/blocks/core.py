"""Reusable layers: id embeddings and biases, MLPs, history pooling, the item encoder.

Every layer takes plain tensors (ids with 0 as padding, dense floats) and knows nothing
of tasks or datasets, so a family is a few lines that compose them.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

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
    `user_id` (absent or OOV for users unseen in training, whose rows stay near zero),
    plus the user's side-table features (`UserEncoder`) when the dataset declares some.

    Args:
      context: a models.context.ModelContext (sizes, user features, seed).
      dim: vector size.
      user_id: add the user id's vector and bias.
      history_dropout: training-time dropout of history items.
      text: read the user's text features and documents (when declared).
    """

    def __init__(self, context, dim: int, user_id: bool, history_dropout: float = 0.0, text: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.pooling = HistoryPooling(
            context.num_items, context.num_behaviors, dim, context.seed, dropout=history_dropout, name="history")
        self.user_id = user_id
        if user_id:
            self.user_embedding = embedding(context.num_users, dim, context.seed + 5, "user_embedding")
            self.user_bias = Bias(context.num_users, name="user_bias")
        self.user_features = None
        inputs = [f for f in context.user_features if text or not f.text]
        if inputs:
            self.user_features = UserEncoder(inputs, dim, context.seed + USER_FEATURE_SEED, name="user_features")

    def call(self, features, training=False):
        q, b = self.pooling(features[F.HISTORY_ITEM_IDX], features[F.HISTORY_BEHAVIOR_IDX], training=training)
        if self.user_id and F.USER_IDX in features:
            user = features[F.USER_IDX]
            q = q + self.user_embedding(user)
            b = b + self.user_bias(user)
        if self.user_features is not None:
            q = q + self.user_features(features, training=training)
        return q, b


# Seed offsets of the typed-feature layers (from the owning layer's seed), apart from the
# other layers' seeds: an item encoder's first embedded feature keeps seed + 2 (what it was
# when the item encoder read one multi-valued feature by name), its others take
# seed + 200 + k, its text encoders seed + 250 + k; a query's user features seed + 400 + k,
# their text encoders seed + 450 + k and their projection seed + 499.
ITEM_FEATURE_SEED = 200
USER_FEATURE_SEED = 400
TEXT_SEED = 50


class TextEncoder(keras.layers.Layer):
    """A bag of token embeddings: token ids [B, T] (0 = padding) -> the mean of their vectors
    [B, d]; documents [B, D, T] -> the mean over the documents that have a token of each
    document's mean (0 when none).

    Args:
      rows: token ids (padding 0, the vocabulary, unknown).
      dim: vector size.
      seed: initialisation seed.
    """

    def __init__(self, rows: int, dim: int, seed: int, **kwargs):
        super().__init__(**kwargs)
        self.embedding = embedding(rows, dim, seed, "token_embedding")

    def call(self, tokens: tf.Tensor) -> tf.Tensor:
        pooled = masked_mean(self.embedding(tokens), tokens)
        if tokens.shape.rank == 3:
            pooled = masked_mean(pooled, tf.reduce_max(tokens, axis=-1))
        return pooled


class TypedFeatures(keras.layers.Layer):
    """Side-table features read by their type (models.context.FeatureInput), as parts a
    layer concatenates, in this order: an embedding per categorical (or its one-hot with
    `encoding: one_hot`) and per bucketized numeric, a pooled (masked mean) embedding per
    multi-valued feature, in declared order; the normalized numbers stacked after
    `numbers_before`; a text encoder (`TextEncoder`) per text feature and documents.

    Args:
      inputs: the features to read.
      dim: size of every embedding.
      seed: seed of the k-th embedding (seed + k) and text encoder (seed + TEXT_SEED + k).
      first_seed: the first embedding's seed instead (None: seed + 0).
      numbers_before: names of numeric features stacked before the declared numbers
        (an item encoder's statistics).
      text: read the text features and documents (false: skip them).
    """

    def __init__(self, inputs, dim: int, seed: int, first_seed: Optional[int] = None,
                 numbers_before: Sequence[str] = (), text: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.categorical = tuple(f for f in inputs if f.embedded or f.one_hot)
        self.embeddings = {}
        for f in self.categorical:
            if f.embedded:
                k = len(self.embeddings)
                layer_seed = first_seed if k == 0 and first_seed is not None else seed + k
                self.embeddings[f.name] = embedding(f.rows, dim, layer_seed, f"{f.name}_embedding")
        self.numbers = tuple(numbers_before) + tuple(f.name for f in inputs if f.number)
        self.texts = tuple(f for f in inputs if f.text) if text else ()
        self.text_encoders = {f.name: TextEncoder(f.rows, dim, seed + TEXT_SEED + k, name=f"{f.name}_encoder")
                              for k, f in enumerate(self.texts)}

    @property
    def names(self) -> Tuple[str, ...]:
        """Every feature read."""
        return tuple(f.name for f in self.categorical) + self.numbers + tuple(f.name for f in self.texts)

    def call(self, features: Dict[str, tf.Tensor]) -> List[tf.Tensor]:
        parts = []
        for f in self.categorical:
            ids = features[f.name]
            if f.one_hot:
                parts.append(tf.one_hot(ids, f.rows, dtype=tf.float32)[:, 1:])  # no column for "missing"
                continue
            ids = ids[:, None] if ids.shape.rank == 1 else ids
            parts.append(masked_mean(self.embeddings[f.name](ids), ids))
        if self.numbers:
            parts.append(tf.stack([tf.cast(features[n], tf.float32) for n in self.numbers], axis=-1))
        parts += [self.text_encoders[f.name](features[f.name]) for f in self.texts]
        return parts


class UserEncoder(keras.layers.Layer):
    """The user's side-table features read by type (`TypedFeatures`), projected to `dim`: a
    vector added to a query.

    Args:
      inputs: the user features (models.context.FeatureInput).
      dim: output size.
      seed: initialisation seed (embeddings from seed, the projection seed + 99).
    """

    def __init__(self, inputs, dim: int, seed: int, **kwargs):
        super().__init__(**kwargs)
        self.typed = TypedFeatures(inputs, dim, seed, name="typed")
        self.projection = keras.layers.Dense(dim, kernel_initializer=keras.initializers.GlorotUniform(seed + 99),
                                             name="projection")

    def call(self, features: Dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        return self.projection(tf.concat(self.typed(features), axis=-1))


class ItemEncoder(keras.layers.Layer):
    """Item vector from its id and metadata: id embedding, the item's side-table features by
    type (`TypedFeatures`: embeddings of categorical and multi-valued features, the item
    statistics stacked with the declared numerics, text encoders), through an MLP; with
    `metadata=False`, the id embedding alone.

    `call(item_idx, features)` reads the metadata from the example's features;
    `catalogue()` encodes every item row from the item table (training-split values).
    Seeds: id embedding seed + 1, the first embedded feature seed + 2, the MLP seed + 3,
    the other features from seed + ITEM_FEATURE_SEED.

    Args:
      num_items: id rows.
      dim: output size.
      hidden: MLP hidden widths (empty: a single linear layer over the inputs).
      features: the item features to read (models.context.FeatureInput).
      statistics: names of the item statistics stacked before the declared numerics.
      item_table: per-item feature arrays by item row (for `catalogue`).
      metadata: read metadata at all.
      text: read text features and item documents (when declared).
      seed: initialisation seed.
    """

    def __init__(self, num_items: int, dim: int, hidden: Sequence[int] = (64,), features=(),
                 statistics: Sequence[str] = (), item_table: Optional[Dict] = None, metadata: bool = True,
                 text: bool = True, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.num_items = num_items
        self.metadata = metadata
        self.id_embedding = embedding(num_items, dim, seed + 1, "id_embedding")
        self.table = {}
        if metadata:
            self.typed = TypedFeatures(features, dim, seed + ITEM_FEATURE_SEED, first_seed=seed + 2,
                                       numbers_before=statistics, text=text, name="features")
            self.mlp = MLP(tuple(hidden) + (dim,), seed=seed + 3, name="mlp")
            self.table = {
                name: tf.Variable(item_table[name], trainable=False, name=f"item_table_{name}")
                for name in self.typed.names
            } if item_table is not None else {}

    @classmethod
    def for_context(cls, context, dim: int, hidden: Sequence[int], seed: int, metadata: bool = True,
                    text: bool = True, **kwargs) -> "ItemEncoder":
        """The encoder of a model context's items: its item features, statistics and table."""
        return cls(context.num_items, dim, hidden, features=context.item_features,
                   statistics=context.item_statistics, item_table=context.item_table, metadata=metadata,
                   text=text, seed=seed, **kwargs)

    def call(self, item_idx: tf.Tensor, features: Dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        ids = self.id_embedding(item_idx)
        if not self.metadata:
            return ids
        return self.mlp(tf.concat([ids] + self.typed(features), axis=-1), training=training)

    def catalogue(self) -> tf.Tensor:
        """Vectors of every item row, [num_items, dim]."""
        rows = tf.range(self.num_items, dtype=tf.int64)
        return self.call(rows, dict(self.table))
