"""PeterRec's downstream model: a pretrained NextItNet encoder, patches per mode, a new head.

`PatchedClassifier` takes the pretrained network's sequence embedding, residual blocks
and final layer norm (`PatchedClassifier.from_network`; not its next-item output layer,
the item bias: a downstream model carries only what it serves), inserts the patches of
its fine-tuning mode (`models.blocks.patches`), pools the encoder's outputs per position
and applies a new dense head:

- `last` pooling: position t's own output, which a causal encoder computes from
  items 0..t (PeterRec's choice);
- `mean` pooling: the mean of the outputs at real positions 0..t.

Its output is one logit (binary task) or one logit per class (multi-class) at every
position, [B, L] or [B, L, C]; `loss` reads the labels where the mask is 1. Every
position of a sequence is scored in one pass, so a training sequence contributes all
of its labelled positions and an eval/test example its last one.
"""

from __future__ import annotations

from typing import List, Sequence

import tensorflow as tf
import tf_keras as keras

from models.blocks import patches as P

LAST = "last"
MEAN = "mean"
POOLINGS = (LAST, MEAN)
BINARY = "binary"
MULTICLASS = "multiclass"


class PatchedClassifier(keras.Model):
    """Sequence classifier on a (pretrained) NextItNet with the patches of `mode`.

    Args:
      embedding: the network's sequence embedding layer, `(items, behaviors, training) -> [B, L, d]`.
      blocks: its residual blocks in order (`block(x, training=, patches=)`).
      final_norm: the layer norm after the last block (trained with it in `fine_last`).
      mode: a fine-tuning mode of `models.blocks.patches` (decides what trains).
      kind: BINARY or MULTICLASS.
      outputs: classes of a multi-class task (1 for binary).
      dim: the encoder's width.
      bottleneck: the patches' hidden width.
      pooling: LAST or MEAN.
      seed: initialisation seed of the patches and the head.
    """

    def __init__(self, embedding: keras.layers.Layer, blocks: Sequence[keras.layers.Layer],
                 final_norm: keras.layers.Layer, mode: str, kind: str, outputs: int, dim: int, bottleneck: int = 8,
                 pooling: str = LAST, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        if kind not in (BINARY, MULTICLASS):
            raise ValueError(f"kind must be {BINARY!r} or {MULTICLASS!r}, got {kind!r}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if kind == BINARY and outputs != 1:
            raise ValueError(f"a binary task has 1 output, got {outputs}")
        self.mode, self.kind, self.pooling = P.check_mode(mode), kind, pooling
        self.embedding = embedding
        self.blocks: List[keras.layers.Layer] = list(blocks)
        self.final_norm = final_norm
        self.patches = P.make_patches(mode, len(self.blocks), dim, bottleneck, seed=seed + 500)
        # Tracked so their weights are the model's (a list of dataclasses is not).
        self.patch_layers = P.patch_layers(self.patches)
        self.head = keras.layers.Dense(outputs, kernel_initializer=keras.initializers.GlorotUniform(seed + 600),
                                       name="head")
        P.apply_mode(mode, [self.embedding] + self.blocks + [final_norm], self.blocks, self.patches, self.head)
        if mode == P.FINE_LAST:
            self.final_norm.trainable = True

    @classmethod
    def from_network(cls, network, mode: str, kind: str, outputs: int, **kwargs) -> "PatchedClassifier":
        """A classifier on the layers of a NextItNet (`models.families.nextitnet`).

        The classifier shares the network's layers and sets their `trainable` flags:
        build one classifier per network (a fresh copy of the pretrained weights each)."""
        return cls(network.embedding, network.residual_blocks, network.final_norm, mode, kind, outputs,
                   dim=network.hparams.dim, **kwargs)

    def encode(self, items: tf.Tensor, behaviors: tf.Tensor, training: bool = False) -> tf.Tensor:
        """[B, L, d] patched encoder outputs after the final norm (position t reads items 0..t).

        NextItNet.encode and hidden without the network object, whose item bias (the
        next-item output) this model does not carry."""
        x = self.embedding(items, behaviors, training=training)
        for block, patch in zip(self.blocks, self.patches):
            x = block(x, training=training, patches=patch)
        return self.final_norm(x)

    def call(self, inputs, training: bool = False) -> tf.Tensor:
        items, behaviors = inputs["items"], inputs["behaviors"]
        h = self.encode(items, behaviors, training=training)
        if self.pooling == MEAN:
            mask = tf.cast(items > 0, h.dtype)[..., None]
            h = tf.cumsum(h * mask, axis=1) / tf.maximum(tf.cumsum(mask, axis=1), 1.0)
        logits = self.head(h)
        return tf.squeeze(logits, -1) if self.kind == BINARY else logits

    def loss_of(self, logits: tf.Tensor, labels: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
        """Mean cross-entropy over the labelled positions (sigmoid or softmax on soft labels)."""
        if self.kind == BINARY:
            per = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
        else:
            per = tf.nn.softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        return tf.reduce_sum(per * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)

    def train_step(self, data):
        with tf.GradientTape() as tape:
            logits = self(data, training=True)
            loss = self.loss_of(logits, data["labels"], data["mask"])
        variables = self.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return {"loss": loss}

    def trained_parameters(self) -> int:
        """Weights this mode trains (the paper's parameter count)."""
        return P.trained_parameter_count(self)
