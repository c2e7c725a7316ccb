"""Sequence layers: item + behavior + position embeddings, a transformer encoder layer,
and NextItNet's residual block of dilated causal convolutions (with PeterRec patches).

Sequences are item rows left-aligned in time order (oldest first), 0 = padding after
the last real item, with aligned behavior rows. Every layer keeps position t's output a
function of the real positions it may see: 0..t for causal layers, every real position
for bidirectional ones.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Tuple

import tensorflow as tf
import tf_keras as keras

from models.blocks.core import embedding


class SequenceEmbedding(keras.layers.Layer):
    """Item embedding + behavior embedding + learned position embedding, then layer norm
    and dropout; padded positions are zero.

    The behavior embedding starts at zero and is added to the item's, so one code path
    serves MovieLens (disliked / neutral / liked) and Taobao (pv / cart / fav / buy).
    The item table has `num_items + extra_rows` rows (BERT4Rec's mask row is
    `num_items`); `items()` is the catalogue part, shared with the output layer.

    Args:
      num_items / num_behaviors: id rows (0 = padding).
      dim: vector size.
      max_len: positions (sequences longer than this are an error at call time).
      dropout: on the summed embedding, training only.
      extra_rows: item rows after the catalogue (e.g. a mask token).
      seed: initialisation seed.
    """

    def __init__(self, num_items: int, num_behaviors: int, dim: int, max_len: int, dropout: float = 0.0,
                 extra_rows: int = 0, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.num_items, self.max_len, self.dim = int(num_items), int(max_len), int(dim)
        self.item_embedding = embedding(num_items + extra_rows, dim, seed + 1, "item_embedding")
        self.behavior_embedding = keras.layers.Embedding(num_behaviors, dim, embeddings_initializer="zeros",
                                                         name="behavior_embedding")
        self.position_embedding = embedding(max_len, dim, seed + 2, "position_embedding")
        self.norm = keras.layers.LayerNormalization(epsilon=1e-6, name="norm")
        self.dropout = keras.layers.Dropout(dropout, seed=seed + 3)

    def items(self) -> tf.Tensor:
        """The catalogue's item vectors [num_items, dim] (without extra rows)."""
        return self.item_embedding.embeddings[: self.num_items]

    def call(self, items: tf.Tensor, behaviors: tf.Tensor, training: bool = False) -> tf.Tensor:
        length = tf.shape(items)[1]
        check = tf.debugging.assert_less_equal(
            length, self.max_len, message=f"sequence longer than the model's max_len {self.max_len}")
        with tf.control_dependencies([check]):
            positions = self.position_embedding(tf.range(length))[None, :, :]
        x = self.item_embedding(items) + self.behavior_embedding(behaviors) + positions
        x = self.dropout(self.norm(x), training=training)
        return x * tf.cast(items > 0, x.dtype)[..., None]


def attention_mask(items: tf.Tensor, causal: bool) -> tf.Tensor:
    """[B, L, L] bool: query position i may attend to key j (j real; j <= i if causal)."""
    keys = (items > 0)[:, None, :]
    length = tf.shape(items)[1]
    if not causal:
        return tf.tile(keys, [1, length, 1])
    lower = tf.linalg.band_part(tf.ones([length, length], tf.bool), -1, 0)
    # A padded query row attends to itself only, so its softmax is defined.
    diagonal = tf.eye(length, dtype=tf.bool)[None]
    return (keys & lower[None]) | diagonal


class TransformerLayer(keras.layers.Layer):
    """A pre-norm transformer encoder layer: x + MHA(LN(x)), then x + FFN(LN(x)).

    Args:
      dim: model width.
      heads: attention heads (dim must divide by it).
      ff_dim: the feed-forward hidden width.
      dropout: on attention weights and on both residual branches.
      causal: position i attends to positions <= i only (SASRec); else to all (BERT4Rec).
      seed: initialisation seed.
    """

    def __init__(self, dim: int, heads: int = 2, ff_dim: Optional[int] = None, dropout: float = 0.0,
                 causal: bool = True, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        if dim % heads:
            raise ValueError(f"dim {dim} must be a multiple of heads {heads}")
        self.causal = causal
        self.norm1 = keras.layers.LayerNormalization(epsilon=1e-6, name="norm1")
        self.attention = keras.layers.MultiHeadAttention(
            heads, dim // heads, dropout=dropout, kernel_initializer=keras.initializers.GlorotUniform(seed),
            name="attention")
        self.norm2 = keras.layers.LayerNormalization(epsilon=1e-6, name="norm2")
        self.ff1 = keras.layers.Dense(ff_dim or dim, activation="gelu",
                                      kernel_initializer=keras.initializers.GlorotUniform(seed + 1), name="ff1")
        self.ff2 = keras.layers.Dense(dim, kernel_initializer=keras.initializers.GlorotUniform(seed + 2), name="ff2")
        self.drop1 = keras.layers.Dropout(dropout, seed=seed + 3)
        self.drop2 = keras.layers.Dropout(dropout, seed=seed + 4)

    def call(self, x: tf.Tensor, items: tf.Tensor, training: bool = False) -> tf.Tensor:
        """x: [B, L, d]; items: [B, L] rows (0 = padding) for the mask."""
        h = self.norm1(x)
        h = self.attention(h, h, attention_mask=attention_mask(items, self.causal), training=training)
        x = x + self.drop1(h, training=training)
        h = self.ff2(self.ff1(self.norm2(x)))
        x = x + self.drop2(h, training=training)
        return x * tf.cast(items > 0, x.dtype)[..., None]


class BottleneckPatch(keras.layers.Layer):
    """PeterRec's model patch: x + up(relu(down(x))), a bottleneck residual block (serial
    patch), or without the skip, up(relu(down(x))), added beside a block (parallel patch).

    `up` starts at zero, so a freshly inserted patch leaves the pretrained network's
    output unchanged.

    Args:
      dim: input and output width.
      bottleneck: the hidden width.
      seed: initialisation seed.
      skip: add the input (serial); False for a parallel patch, whose block adds its input.
    """

    def __init__(self, dim: int, bottleneck: int, seed: int = 0, skip: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.skip = skip
        self.down = keras.layers.Dense(bottleneck, activation="relu",
                                       kernel_initializer=keras.initializers.GlorotUniform(seed), name="down")
        self.up = keras.layers.Dense(dim, kernel_initializer="zeros", name="up")

    def call(self, x: tf.Tensor) -> tf.Tensor:
        out = self.up(self.down(x))
        return x + out if self.skip else out


@dataclasses.dataclass(eq=False)
class BlockPatches:
    """Patches of one `NextItNetBlock` (PeterRec): `serial` holds one layer per dilated
    convolution, applied right after it; `parallel` is applied to the block's input and
    added to its output (a `BottleneckPatch` with `skip=False`: the block already adds its
    input). Either may be empty / None. Hashed by identity (`eq=False`): saving a model
    traces the blocks' calls, and a traced argument must be hashable."""

    serial: Sequence[keras.layers.Layer] = ()
    parallel: Optional[keras.layers.Layer] = None


class NextItNetBlock(keras.layers.Layer):
    """NextItNet's residual block: two dilated causal 1-D convolutions (dilation d, then
    2d), each followed by layer norm and ReLU, added to the input.

    Args:
      dim: channels.
      dilation: the first convolution's dilation (the second's is twice it).
      kernel_size: convolution width.
      dropout: on the residual branch, training only.
      seed: initialisation seed.
    """

    CONVOLUTIONS = 2

    def __init__(self, dim: int, dilation: int, kernel_size: int = 3, dropout: float = 0.0, seed: int = 0,
                 **kwargs):
        super().__init__(**kwargs)
        self.dilations: Tuple[int, int] = (int(dilation), 2 * int(dilation))
        self.convs = [keras.layers.Conv1D(dim, kernel_size, padding="causal", dilation_rate=d,
                                          kernel_initializer=keras.initializers.GlorotUniform(seed + i),
                                          name=f"conv_{i}")
                      for i, d in enumerate(self.dilations)]
        self.norms = [keras.layers.LayerNormalization(epsilon=1e-6, name=f"norm_{i}")
                      for i in range(self.CONVOLUTIONS)]
        self.dropout = keras.layers.Dropout(dropout, seed=seed + 10)

    def call(self, x: tf.Tensor, training: bool = False, patches: Optional[BlockPatches] = None) -> tf.Tensor:
        """x: [B, L, dim] -> [B, L, dim]; position t reads positions <= t only."""
        serial = tuple(patches.serial) if patches is not None else ()
        if serial and len(serial) != self.CONVOLUTIONS:
            raise ValueError(f"a NextItNet block takes {self.CONVOLUTIONS} serial patches, got {len(serial)}")
        h = x
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            h = conv(h)
            if serial:
                h = serial[i](h)
            h = tf.nn.relu(norm(h))
        out = x + self.dropout(h, training=training)
        if patches is not None and patches.parallel is not None:
            out = out + patches.parallel(x)
        return out
