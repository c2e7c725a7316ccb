"""The base of the sequential families (SASRec, BERT4Rec, NextItNet): a user's items in
time order, with their behaviors, encoded into one hidden state per position.

- `encode(items, behaviors, training)` -> [B, L, d] (each family's network).
- `query`: the hidden state at the last real position of the history (BERT4Rec: at a
  mask token appended after it), after a final layer norm.
- `candidates`: the item embedding table the input reads (shared) and an item bias.
- Training (`objective`): `next` predicts the next item at every position of a window
  of the training sequence; `cloze` predicts the masked items of a window (BERT4Rec).
  The softmax is over the whole catalogue (`full`) or over the batch's targets with the
  log-popularity correction (`sampled`), models/tasks.RetrievalTask either way.

Batches come from training/views.sequence_dataset: `history_item_idx` /
`history_behavior_idx` the (masked) input windows, `SEQUENCE_TARGET_IDX` the item row
to predict at each position (0 = none). Protocol S (the leave_last_two_out split)
evaluates them; the Trainer stops early on the eval split's full NDCG@10.
"""

from __future__ import annotations

import dataclasses
from typing import Tuple

import tensorflow as tf
import tf_keras as keras

from contract import features as F
from contract import tasks as T
from models import blocks
from models.base import RETRIEVE, SIMILAR, RecModel
from models.blocks.sequence import SequenceEmbedding
from models.hparams import ScannParams, TrainingParams
from models.tasks import FULL_SOFTMAX, SAMPLED_SOFTMAX

SEQUENCE_TARGET_IDX = "sequence_target_idx"  # [B, L] the item row to predict at each position, 0 = none
NEXT_ITEM = "next"
CLOZE = "cloze"


@dataclasses.dataclass(frozen=True)
class SequentialParams(ScannParams):
    """Attributes:
      dim: embedding and hidden width.
      max_len: the most recent items the model reads (inputs and training windows); at
        most the pipeline's max_history, which is what a served query holds.
      dropout: on embeddings and residual branches.
      softmax: `full` (every item) or `sampled` (the batch's targets, log-q corrected).
      item_bias: candidates carry a learned bias (the prior of an empty history).
      window_stride: the next-item objective's training windows step back by this many
        items (0: max_len, no overlap); smaller overlaps them so that targets are read
        with a context as long as a served query's (training.views.sequence_windows).
    """

    dim: int = 64
    max_len: int = 200
    dropout: float = 0.2
    softmax: str = FULL_SOFTMAX
    item_bias: bool = True
    window_stride: int = 0
    training: TrainingParams = TrainingParams(learning_rate=0.002, batch_size=32, max_epochs=200, patience=5,
                                              warm_start=False)  # not measured warm: see TrainingParams

    def __post_init__(self):
        super().__post_init__()
        if self.softmax not in (FULL_SOFTMAX, SAMPLED_SOFTMAX):
            raise ValueError(f"softmax must be {FULL_SOFTMAX!r} or {SAMPLED_SOFTMAX!r}, got {self.softmax!r}")
        if self.max_len < 2 or self.dim < 1:
            raise ValueError(f"need max_len >= 2 and dim >= 1; got max_len={self.max_len}, dim={self.dim}")
        if not 0 <= self.window_stride <= self.max_len:
            raise ValueError(f"window_stride must be in [0, max_len={self.max_len}], got {self.window_stride}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


def last_window(items: tf.Tensor, behaviors: tf.Tensor, max_len: int):
    """The most recent `max_len` items of left-aligned histories, left-aligned again:
    (items [B, W], behaviors [B, W], lengths [B]) with W = min(width, max_len)."""
    lengths = tf.reduce_sum(tf.cast(items > 0, tf.int32), axis=1)
    width = tf.minimum(tf.shape(items)[1], max_len)
    start = tf.maximum(lengths - max_len, 0)
    index = start[:, None] + tf.range(width)[None, :]
    inside = index < lengths[:, None]
    index = tf.minimum(index, tf.shape(items)[1] - 1)
    pick = lambda x: tf.where(inside, tf.gather(x, index, batch_dims=1), tf.zeros_like(x[:, :1]))
    return pick(items), pick(behaviors), tf.minimum(lengths, max_len)


class SequentialModel(RecModel):
    """Base of the sequential families (see the module docstring)."""

    capabilities = frozenset({RETRIEVE, SIMILAR})
    objective = NEXT_ITEM
    extra_item_rows = 0  # item rows after the catalogue (BERT4Rec: the mask)

    def __init__(self, context, hparams: SequentialParams, **kwargs):
        super().__init__(context, hparams, softmax=hparams.softmax, **kwargs)
        seed = context.seed
        # The pipeline's max_history is what a served query holds: reading more is never used.
        self.max_len = min(int(hparams.max_len), int(context.max_history))
        self.embedding = SequenceEmbedding(context.num_items, context.num_behaviors, hparams.dim, self.max_len,
                                           dropout=hparams.dropout, extra_rows=self.extra_item_rows, seed=seed,
                                           name="sequence_embedding")
        self.final_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="final_norm")
        self.item_bias = blocks.Bias(context.num_items, name="candidate_bias") if hparams.item_bias else None

    # -- the network ------------------------------------------------------------
    def encode(self, items: tf.Tensor, behaviors: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Hidden states [B, L, d] of left-aligned sequences (0 = padding)."""
        raise NotImplementedError

    def hidden(self, items: tf.Tensor, behaviors: tf.Tensor, training: bool = False) -> tf.Tensor:
        """`encode` followed by the final layer norm: the vectors scored against items."""
        return self.final_norm(self.encode(items, behaviors, training=training))

    # -- retrieve ---------------------------------------------------------------
    def query(self, history_item_idx, history_behavior_idx, training=False):
        items, behaviors, lengths = last_window(history_item_idx, history_behavior_idx, self.max_len)
        h = self.hidden(items, behaviors, training=training)
        # An empty history reads position 0, a padded (zero) input: the query is the
        # normalised zero vector, so the answer is the items' bias (their prior).
        last = tf.gather(h, tf.maximum(lengths - 1, 0), batch_dims=1)
        return last, tf.zeros(tf.shape(last)[:1])

    def candidates(self):
        vectors = self.embedding.items()
        biases = self.item_bias.all() if self.item_bias is not None else tf.zeros(tf.shape(vectors)[:1])
        return vectors, biases

    def item_vectors(self):
        return self.embedding.items()

    # -- training ---------------------------------------------------------------
    def cloze_masking(self) -> Tuple[int, float, float]:
        """(mask item row, share of a training window's items masked, share of windows whose
        only masked item is the last) of a cloze objective; a next-item model masks nothing."""
        return 0, 0.0, 0.0

    def sequence_loss(self, features, training: bool) -> tf.Tensor:
        """Softmax cross-entropy of every position's target (SEQUENCE_TARGET_IDX > 0)."""
        targets = features[SEQUENCE_TARGET_IDX]
        h = self.hidden(features[F.HISTORY_ITEM_IDX], features[F.HISTORY_BEHAVIOR_IDX], training=training)
        where = tf.where(targets > 0)
        query = tf.gather_nd(h, where)
        wanted = tf.gather_nd(targets, where)
        vectors, biases = self.candidates()
        log_q = self.log_popularity() if self.hparams.softmax == SAMPLED_SOFTMAX else None
        total = tf.constant(0.0)
        for name, task in self.retrieval.items():
            total += self.loss_weights[name] * task(query, vectors, biases, wanted, log_q=log_q)
        return total

    def monitor(self, top_k: int):
        # Protocol S reports NDCG at its own K (contract.tasks.NEXT_ITEM_NDCG_K), the
        # full-catalogue value early stopping watches, whatever the K of `recommend`.
        return f"val_{T.ndcg_at(T.NEXT_ITEM_NDCG_K)}", "max"

    def compute_loss(self, features, training: bool = False) -> tf.Tensor:
        if SEQUENCE_TARGET_IDX in features:
            return self.sequence_loss(features, training)
        return super().compute_loss(features, training)
