"""Task layers: a task spec's loss and Keras metrics.

`PointwiseTask` scores one example at a time (a rating, a 0/1 label), with the loss and
metrics computed only where the task's condition holds. `RetrievalTask` ranks the whole
catalogue for a query: a softmax over every item (full) or over the batch's targets
with the log-popularity (log-q) correction (sampled). `GenerationTask` scores a generated
text token by token (cross entropy, padding masked) with its own metrics, token accuracy
and perplexity.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import tensorflow as tf
import tf_keras as keras

from contract import tasks as T

FULL_SOFTMAX = "full"
SAMPLED_SOFTMAX = "sampled"

# Thresholds of the Keras AUC of a binary task, evenly spaced in logit space (sigmoid of
# -16..16). Keras' default (200 thresholds evenly spaced in probability) puts every
# prediction of a rare task (Taobao: ~1% positives, most predictions below 0.01) into
# a handful of bins, so the eval AUC that early stopping watches was off by up to 0.05.
AUC_THRESHOLDS = tuple(float(x) for x in 1.0 / (1.0 + np.exp(-np.linspace(-16.0, 16.0, 1281))))


def rows_mask(rows: tf.Tensor, num_rows) -> tf.Tensor:
    """[B, num_rows] bool, True at (b, rows[b, j]) for every j; row 0 (padding) included."""
    rows = tf.cast(rows, tf.int64)
    batch = tf.shape(rows, out_type=tf.int64)[0]
    length = tf.shape(rows, out_type=tf.int64)[1]
    indices = tf.stack([tf.repeat(tf.range(batch), length), tf.reshape(rows, [-1])], axis=1)
    counts = tf.scatter_nd(indices, tf.ones(tf.shape(indices)[:1], tf.int32),
                           tf.stack([batch, tf.cast(num_rows, tf.int64)]))
    return counts > 0


class PointwiseTask(keras.layers.Layer):
    """Loss and metrics of a REGRESSION or BINARY task.

    Loss: mean squared error (regression) or sigmoid cross-entropy on logits (binary),
    averaged over the rows where `mask` is 1. Metrics, named `<task>_rmse` or
    `<task>_auc`, see the same rows.
    """

    def __init__(self, spec: T.TaskSpec, **kwargs):
        super().__init__(name=f"task_{spec.name}", **kwargs)
        if spec.kind not in (T.REGRESSION, T.BINARY):
            raise ValueError(f"task {spec.name!r} of kind {spec.kind} is not pointwise")
        self.spec = spec
        if spec.kind == T.REGRESSION:
            self.metric = keras.metrics.RootMeanSquaredError(name=f"{spec.name}_rmse")
        else:
            self.metric = keras.metrics.AUC(name=f"{spec.name}_auc", from_logits=True,
                                              thresholds=list(AUC_THRESHOLDS))

    def link(self, logits: tf.Tensor) -> tf.Tensor:
        """The served prediction: the rating itself, or a probability."""
        return logits if self.spec.kind == T.REGRESSION else tf.sigmoid(logits)

    def call(self, labels: tf.Tensor, logits: tf.Tensor, mask: Optional[tf.Tensor] = None) -> tf.Tensor:
        labels = tf.cast(labels, tf.float32)
        mask = tf.ones_like(labels) if mask is None else tf.cast(mask, tf.float32)
        if self.spec.kind == T.REGRESSION:
            per_example = tf.square(logits - labels)
            self.metric.update_state(labels, logits, sample_weight=mask)
        else:
            per_example = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
            self.metric.update_state(labels, logits, sample_weight=mask)
        return tf.reduce_sum(per_example * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)


class RetrievalTask(keras.layers.Layer):
    """Softmax loss of a query over the catalogue, the target item being the positive.

    Args:
      spec: the RETRIEVAL task.
      softmax: FULL_SOFTMAX (every item is a negative) or SAMPLED_SOFTMAX (the other
        targets of the batch are the negatives; their logits are corrected by
        -log q(item), q the training popularity, so popular items are not punished
        for being sampled often).
    """

    def __init__(self, spec: T.TaskSpec, softmax: str = FULL_SOFTMAX, **kwargs):
        super().__init__(name=f"task_{spec.name}", **kwargs)
        if softmax not in (FULL_SOFTMAX, SAMPLED_SOFTMAX):
            raise ValueError(f"softmax must be {FULL_SOFTMAX!r} or {SAMPLED_SOFTMAX!r}, got {softmax!r}")
        self.spec = spec
        self.softmax = softmax

    def call(self, query: tf.Tensor, candidates: tf.Tensor, bias: tf.Tensor, targets: tf.Tensor,
             exclude: Optional[tf.Tensor] = None, log_q: Optional[tf.Tensor] = None) -> tf.Tensor:
        """Mean cross-entropy of the targets.

        Args:
          query: [B, d] query vectors.
          candidates: [N, d] item vectors (row 0 is padding and never a candidate).
          bias: [N] item biases.
          targets: [B] item rows.
          exclude: [B, L] item rows that are not negatives for that query (e.g. its own
            history; 0 = none). Full softmax only.
          log_q: [N] log sampling probability of each item (sampled softmax).
        """
        targets = tf.cast(targets, tf.int64)
        if self.softmax == FULL_SOFTMAX:
            logits = tf.matmul(query, candidates, transpose_b=True) + bias[None, :]
            num_rows = tf.shape(logits)[1]
            if exclude is None:  # only the padding row is blocked: a [N] mask, not [B, N]
                padding = tf.one_hot(0, num_rows, on_value=-1e9, off_value=0.0, dtype=logits.dtype)
                return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                    labels=targets, logits=logits + padding[None, :]))
            blocked = rows_mask(tf.zeros_like(targets)[:, None], num_rows)  # padding row
            if exclude is not None:
                blocked = blocked | rows_mask(exclude, num_rows)
            blocked = blocked & ~rows_mask(targets[:, None], num_rows)
            logits = tf.where(blocked, tf.constant(-1e9, logits.dtype), logits)
            return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits))
        vectors = tf.gather(candidates, targets)  # [B, d]
        logits = tf.matmul(query, vectors, transpose_b=True) + tf.gather(bias, targets)[None, :]
        if log_q is not None:
            logits -= tf.gather(log_q, targets)[None, :]
        # The same item twice in a batch is not its own negative.
        same = tf.equal(targets[:, None], targets[None, :]) & ~tf.eye(tf.shape(targets)[0], dtype=tf.bool)
        logits = tf.where(same, tf.constant(-1e9, logits.dtype), logits)
        labels = tf.range(tf.shape(targets)[0])
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))


class Perplexity(keras.metrics.Metric):
    """exp of the mean token cross entropy seen so far (tokens weighted by their mask)."""

    def __init__(self, name: str = "perplexity", **kwargs):
        super().__init__(name=name, **kwargs)
        self.total = self.add_weight(name="total", initializer="zeros")
        self.count = self.add_weight(name="count", initializer="zeros")

    def update_state(self, nll: tf.Tensor, sample_weight: Optional[tf.Tensor] = None) -> None:
        weight = tf.ones_like(nll) if sample_weight is None else tf.cast(sample_weight, nll.dtype)
        self.total.assign_add(tf.reduce_sum(nll * weight))
        self.count.assign_add(tf.reduce_sum(weight))

    def result(self) -> tf.Tensor:
        return tf.exp(self.total / tf.maximum(self.count, 1.0))

    def reset_state(self) -> None:
        self.total.assign(0.0)
        self.count.assign(0.0)


def token_nll(targets: tf.Tensor, logits: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    """Per-token negative log-likelihood [B, L] of `targets` under `logits` [B, L, C], and the
    mask [B, L] of target tokens (id > 0; 0 is padding)."""
    targets = tf.cast(targets, tf.int64)
    nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)
    return nll, tf.cast(targets > 0, nll.dtype)


class GenerationTask(keras.layers.Layer):
    """Token-level cross entropy of a text generated under teacher forcing, padding masked.

    Loss: the mean negative log-likelihood per target token over the rows where `mask` is
    1 (targets: [B, L] ids, 0 after the end). Metrics `<name>_token_accuracy` (the most
    likely token is the target) and `<name>_perplexity` (exp of the mean token cross
    entropy) see the same tokens.

    Args:
      name: the generated text column (the metrics' prefix).
    """

    def __init__(self, name: str, **kwargs):
        super().__init__(name=f"generation_{name}", **kwargs)
        self.accuracy = keras.metrics.Mean(name=f"{name}_token_accuracy")
        self.perplexity = Perplexity(name=f"{name}_perplexity")

    def call(self, targets: tf.Tensor, logits: tf.Tensor, mask: Optional[tf.Tensor] = None) -> tf.Tensor:
        nll, tokens = token_nll(targets, logits)
        if mask is not None:
            tokens = tokens * tf.cast(mask, tokens.dtype)[:, None]
        hits = tf.cast(tf.equal(tf.argmax(logits, -1), tf.cast(targets, tf.int64)), nll.dtype)
        self.accuracy.update_state(hits, sample_weight=tokens)
        self.perplexity.update_state(nll, sample_weight=tokens)
        return tf.reduce_sum(nll * tokens) / tf.maximum(tf.reduce_sum(tokens), 1.0)
