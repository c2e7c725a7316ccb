"""Losses and layers of task-augmented knowledge distillation (TAKD) for a pair of binary tasks.

- `label_pair_masks` / `AugmentedBPR`: the teacher's ranking losses. Rows split by label
  pair (A, B) into D++, D+-, D-+ and D--; task A ranks ++ over +- and -+ over --, task B
  ranks ++ over -+ and +- over -- (the fine-grained order ++ > +- > -+ > --), each
  with its own weight, plus the coarse BPR ranking of each task's positives over its
  negatives.
- `PlattScaling`: y~ = sigmoid(P * r + Q) per task, turning a ranking score into a
  probability (trained with cross-entropy on its own optimizer step by the teacher).
- `correct_soft_labels`: where a soft label is further than a margin from the hard
  label, it is moved to the margin.
- `distillation_loss`: (1 - alpha) CE(y, y_s) + alpha CE(y~_t / tau, y_s / tau), with
  the temperature applied to logits.

Every function takes plain tensors and knows nothing of datasets.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import tensorflow as tf
import tf_keras as keras

PP, PN, NP, NN = "++", "+-", "-+", "--"
# (better, worse) label pairs each task of (A, B) is trained to rank, in weight order.
FINE_PAIRS = {0: ((PP, PN), (NP, NN)), 1: ((PP, NP), (PN, NN))}


def masked_mean(values: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Mean of values where mask is 1 (0 when the mask is empty)."""
    mask = tf.cast(mask, values.dtype)
    return tf.reduce_sum(values * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)


def bpr(scores: tf.Tensor, better: tf.Tensor, worse: tf.Tensor) -> tf.Tensor:
    """Mean of -log sigmoid(s_i - s_j) over every pair of rows i in `better`, j in `worse`
    of the batch ([B] scores, [B] bool masks); 0 when either set is empty."""
    pairs = tf.cast(better[:, None] & worse[None, :], scores.dtype)
    margins = scores[:, None] - scores[None, :]
    return masked_mean(tf.nn.softplus(-margins), pairs)


def label_pair_masks(labels_a: tf.Tensor, labels_b: tf.Tensor, valid: Optional[tf.Tensor] = None) -> Dict[str, tf.Tensor]:
    """{"++", "+-", "-+", "--"}: [B] bool masks of the rows with each label pair (valid rows only)."""
    a = tf.cast(labels_a, tf.float32) > 0.5
    b = tf.cast(labels_b, tf.float32) > 0.5
    v = tf.ones_like(a) if valid is None else tf.cast(valid, tf.bool)
    return {PP: a & b & v, PN: a & ~b & v, NP: ~a & b & v, NN: ~a & ~b & v}


class AugmentedBPR(keras.layers.Layer):
    """The teacher's ranking loss of a task pair: coarse BPR per task plus, with `aux`, the
    augmented fine-grained BPR tasks.

    Args:
      fine_weights: weights of (A: ++>+-, A: -+>--, B: ++>-+, B: +->--).
      coarse_weights: weights of (A: positives > negatives, B: positives > negatives).
      aux: include the fine-grained tasks.
    """

    def __init__(self, fine_weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
                 coarse_weights: Sequence[float] = (1.0, 1.0), aux: bool = True, **kwargs):
        super().__init__(**kwargs)
        if len(fine_weights) != 4 or len(coarse_weights) != 2:
            raise ValueError(f"AugmentedBPR needs 4 fine and 2 coarse weights, got {list(fine_weights)} and "
                             f"{list(coarse_weights)}")
        self.fine_weights = tuple(float(w) for w in fine_weights)
        self.coarse_weights = tuple(float(w) for w in coarse_weights)
        self.aux = aux

    def terms(self, scores: Tuple[tf.Tensor, tf.Tensor], labels: Tuple[tf.Tensor, tf.Tensor],
              masks: Tuple[tf.Tensor, tf.Tensor], pair_rows: tf.Tensor) -> Dict[str, tf.Tensor]:
        """Each unweighted loss term by name (`coarse_<i>`, `<i>:<better>><worse>`).

        Args:
          scores: each task's [B] scores.
          labels: each task's [B] 0/1 labels (0 where its condition fails).
          masks: each task's [B] condition (its coarse ranking uses those rows).
          pair_rows: [B] rows where the pair is defined (the fine-grained ranking uses those).
        """
        out = {}
        for i in (0, 1):
            positive = tf.cast(labels[i], tf.float32) > 0.5
            own = tf.cast(masks[i], tf.bool)
            out[f"coarse_{i}"] = bpr(scores[i], positive & own, ~positive & own)
        if self.aux:
            classes = label_pair_masks(labels[0], labels[1], pair_rows)
            for i in (0, 1):
                for better, worse in FINE_PAIRS[i]:
                    out[f"{i}:{better}>{worse}"] = bpr(scores[i], classes[better], classes[worse])
        return out

    def call(self, scores, labels, masks, pair_rows) -> tf.Tensor:
        terms = self.terms(scores, labels, masks, pair_rows)
        total = self.coarse_weights[0] * terms["coarse_0"] + self.coarse_weights[1] * terms["coarse_1"]
        if self.aux:
            for i in (0, 1):
                for j, (better, worse) in enumerate(FINE_PAIRS[i]):
                    total += self.fine_weights[2 * i + j] * terms[f"{i}:{better}>{worse}"]
        return total


class PlattScaling(keras.layers.Layer):
    """The calibrated logit P * r + Q of a score r (P starts at 1, Q at 0)."""

    def build(self, input_shape):
        self.scale = self.add_weight(name="P", shape=(), initializer="ones")
        self.shift = self.add_weight(name="Q", shape=(), initializer="zeros")
        super().build(input_shape)

    def call(self, scores: tf.Tensor) -> tf.Tensor:
        return self.scale * scores + self.shift


def correct_soft_labels(soft: tf.Tensor, labels: tf.Tensor, margin: float) -> tf.Tensor:
    """Soft labels moved to within `margin` of the 0/1 labels where they are further:
    a positive's soft label is at least 1 - margin, a negative's at most margin."""
    labels = tf.cast(labels, soft.dtype)
    return tf.clip_by_value(soft, labels - margin, labels + margin)


def distillation_loss(labels: tf.Tensor, soft: tf.Tensor, logits: tf.Tensor, alpha: float, tau: float,
                      mask: Optional[tf.Tensor] = None, eps: float = 1e-6) -> tf.Tensor:
    """(1 - alpha) CE(y, y_s) + alpha CE(y~ / tau, y_s / tau), averaged over `mask` rows.

    The temperature divides logits: the soft target is sigmoid(logit(y~) / tau) and the
    student's prediction sigmoid(z_s / tau).

    Args:
      labels: [B] 0/1 hard labels.
      soft: [B] the teacher's soft labels (probabilities).
      logits: [B] the student's logits z_s.
      alpha: weight of the soft term in [0, 1].
      tau: temperature > 0.
      mask: [B] rows that count (None: every row).
    """
    if not 0.0 <= alpha <= 1.0 or tau <= 0:
        raise ValueError(f"distillation needs 0 <= alpha <= 1 and tau > 0, got alpha={alpha}, tau={tau}")
    labels = tf.cast(labels, tf.float32)
    soft = tf.clip_by_value(tf.cast(soft, tf.float32), eps, 1.0 - eps)
    hard = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
    target = tf.sigmoid((tf.math.log(soft) - tf.math.log1p(-soft)) / tau)
    distilled = tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=logits / tau)
    per_example = (1.0 - alpha) * hard + alpha * distilled
    return masked_mean(per_example, tf.ones_like(labels) if mask is None else mask)
