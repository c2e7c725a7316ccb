"""DTRN's bottom (Liu et al., CIKM'23): task-specific interest from typed behavior
sequences, and task-specific refinement of the input representation.

- `typed_sequences`: a history (item rows, behavior ids) split by behavior type into one
  sequence per type (the most recent `length` items of that type, oldest first).
- `ConditionalLayerNorm`: layer norm whose scale and shift depend on the (task, type)
  pair: `CLN(X) = gamma_tb * gamma * (X - mu) / sigma + beta_tb + beta`, with
  `gamma_tb = MLP_gamma(T_t, B_b)` and `beta_tb = MLP_beta(T_t, B_b)` produced by two
  hypernetworks (2-layer ReLU MLPs) from a task embedding T_t and a type embedding B_b.
  The hypernetworks' output layers start at gamma_tb = 1 and beta_tb = 0, so a fresh
  layer is a plain layer norm. With `hyper=False` it is a plain layer norm.
- `TaskInterest`: one transformer encoder layer (pre-norm, every norm conditional),
  shared by every (task, type) pair, over every typed sequence; each encoded sequence is
  pooled by attention with the target item as query; a task's interest is its pooled
  vectors over the types, concatenated.
- `Refinement`: per task, `raw * MLP_t(raw)` with a 2-layer MLP (SENet-like; output
  activation `relu`, `sigmoid` or `2sigmoid`).

Pairs are batched: the encoder runs once on [B * pairs, L, d] rows, each row's norms
conditioned on its pair.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import tensorflow as tf
import tf_keras as keras

from models.blocks.core import MLP, embedding
from models.blocks.sequence import attention_mask


def typed_sequences(items: tf.Tensor, behaviors: tf.Tensor, types: Optional[Sequence[int]], length: int,
                    values: Optional[tf.Tensor] = None) -> tf.Tensor:
    """[B, L] item rows and behavior ids (0 = padding) -> [B, len(types), length] item rows:
    per type, the most recent `length` items of that behavior, oldest first, left-aligned,
    0 after the last. `types=None`: one sequence of every real item, whatever its type.
    `values` ([B, L], default `items`): what to place instead of the item rows (e.g. the
    behavior ids aligned with the sequence)."""
    values = items if values is None else values
    real = items > 0
    if types is None:
        match = real[:, None, :]
    else:
        wanted = tf.constant(list(types), dtype=behaviors.dtype)
        match = tf.equal(behaviors[:, None, :], wanted[None, :, None]) & real[:, None, :]  # [B, T, L]
    rank = tf.cumsum(tf.cast(match, tf.int32), axis=-1)  # 1-based rank among the type's items
    start = tf.maximum(rank[..., -1:] - length, 0)  # items of the type before the kept window
    keep = match & (rank > start)
    slot = tf.where(keep, rank - start - 1, -1)  # the kept item's position; -1: dropped
    placed = tf.one_hot(slot, length, dtype=values.dtype)  # [B, T, L, length]; -1 gives a zero row
    return tf.reduce_sum(values[:, None, :, None] * placed, axis=2)


class ConditionalLayerNorm(keras.layers.Layer):
    """Layer norm over the last axis of x [B, P, L, d], conditioned on each of the P
    (task, type) pairs by hypernetworks (see the module docstring).

    Args:
      dim: the normalized width d.
      pair_tasks / pair_types: the task index and type index of each of the P pairs.
      num_tasks / num_types: embedding rows.
      cond_dim: size of the task and type embeddings.
      hidden: the hypernetworks' hidden width.
      hyper: condition on the pair; False: a plain layer norm.
      seed: initialisation seed.
    """

    def __init__(self, dim: int, pair_tasks: Sequence[int], pair_types: Sequence[int], num_tasks: int, num_types: int,
                 cond_dim: int = 16, hidden: int = 32, hyper: bool = True, seed: int = 0, epsilon: float = 1e-6,
                 **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon
        self.hyper = hyper
        self.pair_tasks = tf.constant(list(pair_tasks), tf.int32)
        self.pair_types = tf.constant(list(pair_types), tf.int32)
        self.gamma = self.add_weight(name="gamma", shape=(dim,), initializer="ones")
        self.beta = self.add_weight(name="beta", shape=(dim,), initializer="zeros")
        if hyper:
            self.task_embedding = embedding(num_tasks, cond_dim, seed + 1, "task_embedding", stddev=0.5)
            self.type_embedding = embedding(num_types, cond_dim, seed + 2, "type_embedding", stddev=0.5)
            self.hyper_gamma = self._hypernetwork(dim, hidden, "ones", seed + 3, "hyper_gamma")
            self.hyper_beta = self._hypernetwork(dim, hidden, "zeros", seed + 5, "hyper_beta")

    @staticmethod
    def _hypernetwork(dim: int, hidden: int, start: str, seed: int, name: str) -> keras.Sequential:
        return keras.Sequential([
            keras.layers.Dense(hidden, activation="relu", kernel_initializer=keras.initializers.GlorotUniform(seed)),
            # zero kernel: the output starts at the bias (gamma_tb = 1, beta_tb = 0)
            keras.layers.Dense(dim, kernel_initializer="zeros", bias_initializer=start),
        ], name=name)

    def pair_scales(self):
        """(gamma_tb, beta_tb), each [P, d]: what the hypernetworks give each pair."""
        condition = tf.concat([self.task_embedding(self.pair_tasks), self.type_embedding(self.pair_types)], axis=-1)
        return self.hyper_gamma(condition), self.hyper_beta(condition)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
        normed = (x - mean) * tf.math.rsqrt(variance + self.epsilon)
        if not self.hyper:
            return self.gamma * normed + self.beta
        gamma_tb, beta_tb = self.pair_scales()
        return gamma_tb[None, :, None, :] * self.gamma * normed + beta_tb[None, :, None, :] + self.beta


class TaskInterest(keras.layers.Layer):
    """Each task's interest from typed behavior sequences: {task: [B, types * dim]}.

    Args:
      tasks: task names (the order of the task embeddings).
      num_items: item rows (0 = padding).
      types: the behavior ids to split the history by, or None for one untyped sequence
        (then each item's behavior embedding is added to its vector).
      num_behaviors: behavior id rows (for the untyped sequence's behavior embedding).
      dim: model width.
      length: items per typed sequence (of the untyped one, without types).
      heads: attention heads.
      hyper: conditional layer norms (False: plain ones, every task the same interest).
      cond_dim / hyper_hidden: the hypernetworks' sizes.
      dropout: on attention and the residual branches, training only.
      seed: initialisation seed.
    """

    def __init__(self, tasks: Sequence[str], num_items: int, types: Optional[Sequence[int]], num_behaviors: int,
                 dim: int, length: int, heads: int = 2, hyper: bool = True, cond_dim: int = 16,
                 hyper_hidden: int = 32, dropout: float = 0.0, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        if dim % heads:
            raise ValueError(f"dim {dim} must be a multiple of heads {heads}")
        self.tasks = tuple(tasks)
        self.types = tuple(types) if types is not None else None
        self.num_types = len(self.types) if self.types is not None else 1
        self.length, self.dim, self.hyper = int(length), int(dim), bool(hyper)
        # Without the hypernetwork every task's encoding is the same: encode the types once.
        self.pair_count = self.num_types * (len(self.tasks) if hyper else 1)
        pair_tasks = [p // self.num_types for p in range(self.pair_count)]
        pair_types = [p % self.num_types for p in range(self.pair_count)]
        self.item_embedding = embedding(num_items, dim, seed + 1, "item_embedding")
        self.position_embedding = embedding(self.length, dim, seed + 2, "position_embedding")
        if self.types is None:
            self.behavior_embedding = keras.layers.Embedding(num_behaviors, dim, embeddings_initializer="zeros",
                                                             name="behavior_embedding")

        def norm(i, name):
            return ConditionalLayerNorm(dim, pair_tasks, pair_types, len(self.tasks), self.num_types, cond_dim,
                                        hyper_hidden, hyper=hyper, seed=seed + 10 * i, name=name)

        self.norm1, self.norm2, self.norm_out = norm(1, "norm1"), norm(2, "norm2"), norm(3, "norm_out")
        self.attention = keras.layers.MultiHeadAttention(
            heads, dim // heads, dropout=dropout, kernel_initializer=keras.initializers.GlorotUniform(seed + 40),
            name="attention")
        self.ff1 = keras.layers.Dense(dim, activation="gelu",
                                      kernel_initializer=keras.initializers.GlorotUniform(seed + 41), name="ff1")
        self.ff2 = keras.layers.Dense(dim, kernel_initializer=keras.initializers.GlorotUniform(seed + 42), name="ff2")
        self.drop1 = keras.layers.Dropout(dropout, seed=seed + 43)
        self.drop2 = keras.layers.Dropout(dropout, seed=seed + 44)
        self.query = keras.layers.Dense(dim, kernel_initializer=keras.initializers.GlorotUniform(seed + 45),
                                        name="target_query")

    def sequences(self, items: tf.Tensor, behaviors: tf.Tensor) -> tf.Tensor:
        """[B, types, length] item rows of the typed (or untyped) sequences."""
        return typed_sequences(items, behaviors, self.types, self.length)

    def call(self, items: tf.Tensor, behaviors: tf.Tensor, target: tf.Tensor, training: bool = False
             ) -> Dict[str, tf.Tensor]:
        """items / behaviors: [B, L] history rows and ids; target: [B, e] the target item's vector."""
        seq = self.sequences(items, behaviors)  # [B, K, L'] with K = num_types
        real = tf.cast(seq > 0, tf.float32)
        x = self.item_embedding(seq) + self.position_embedding(tf.range(self.length))[None, None]
        if self.types is None:
            x = x + self.behavior_embedding(typed_sequences(items, behaviors, None, self.length, values=behaviors))
        repeat = self.pair_count // self.num_types  # tasks encoded separately (1 without the hypernetwork)
        x = tf.tile(x, [1, repeat, 1, 1]) * tf.tile(real, [1, repeat, 1])[..., None]  # [B, P, L', d]
        ids = tf.tile(seq, [1, repeat, 1])
        batch = tf.shape(x)[0]
        flat_ids = tf.reshape(ids, [-1, self.length])

        def flat(t):
            return tf.reshape(t, [-1, self.length, self.dim])

        h = flat(self.norm1(x))
        h = self.attention(h, h, attention_mask=attention_mask(flat_ids, causal=False), training=training)
        x = x + tf.reshape(self.drop1(h, training=training), tf.shape(x))
        h = self.ff2(self.ff1(self.norm2(x)))
        x = x + self.drop2(h, training=training)
        x = self.norm_out(x)  # [B, P, L', d]
        # Target attention: the target item's projection scores each encoded position.
        q = self.query(target)  # [B, d]
        scores = tf.einsum("bpld,bd->bpl", x, q) / tf.sqrt(float(self.dim))
        mask = tf.cast(ids > 0, tf.float32)
        weights = tf.nn.softmax(scores + (mask - 1.0) * 1e9, axis=-1) * mask  # 0 for a type with no items
        pooled = tf.einsum("bpl,bpld->bpd", weights, x)  # [B, P, d]
        pooled = tf.reshape(pooled, [batch, repeat, self.num_types * self.dim])
        return {t: pooled[:, i if repeat > 1 else 0] for i, t in enumerate(self.tasks)}


REFINE_GATES = ("relu", "sigmoid", "2sigmoid")


class Refinement(keras.layers.Layer):
    """Task-specific refinement: {task: raw_t * MLP_t(raw_t)}, MLP_t 2 layers (SENet-like).

    The hidden layer is ReLU; `gate` is the output's activation:
    - `relu`: unbounded, and a unit at zero removes its input feature;
    - `sigmoid`: SENet's excitation, a scale in (0, 1);
    - `2sigmoid`: 2 * sigmoid, a scale in (0, 2) that can keep a feature as it is (1 at a
      zero pre-activation) or amplify it.

    Args:
      tasks: task names.
      hidden: the MLPs' hidden width.
      gate: the output activation, one of REFINE_GATES.
      seed: initialisation seed.
    """

    def __init__(self, tasks: Sequence[str], hidden: int, gate: str = "sigmoid", seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        if gate not in REFINE_GATES:
            raise ValueError(f"refinement gate must be one of {REFINE_GATES}, got {gate!r}")
        self.tasks = tuple(tasks)
        self.hidden = int(hidden)
        self.gate = gate
        self.seed = seed
        self.mlps: Dict[str, MLP] = {}

    def build(self, input_shape):
        width = int(next(iter(input_shape.values()))[-1])
        output = {"relu": "relu", "sigmoid": "sigmoid", "2sigmoid": None}[self.gate]
        self.mlps = {t: MLP((self.hidden, width), output_activation=output, seed=self.seed + 17 * i,
                            name=f"refine_{t}") for i, t in enumerate(self.tasks)}
        super().build(input_shape)

    def scale(self, task: str, raw: tf.Tensor, training: bool = False) -> tf.Tensor:
        """The factor task `task` multiplies its raw representation by."""
        out = self.mlps[task](raw, training=training)
        return 2.0 * tf.sigmoid(out) if self.gate == "2sigmoid" else out

    def call(self, raw: Dict[str, tf.Tensor], training: bool = False) -> Dict[str, tf.Tensor]:
        return {t: raw[t] * self.scale(t, raw[t], training=training) for t in self.tasks}
