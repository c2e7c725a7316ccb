"""Two-tower retrieval on implicit feedback: the family that serves `recommend`.

Query tower: the user's history (items with their behaviors) pooled as in SVD++,
optionally through an MLP. Candidate tower: the item's own embedding (and, with
`item_metadata`, its genres and statistics through an MLP) plus a bias that learns
popularity. Trained on the user view: each training interaction is a target and
the rest of the user's training history (leave-one-out, the most recent
`max_history`) is the query, so the model learns what the whole history says about
one held-out item, which is what `recommend` is asked. The softmax is over the whole
catalogue (`full`) or over the batch's targets with a log-popularity correction
(`sampled`); the user's own other items are not negatives.
"""

from __future__ import annotations

import dataclasses
from typing import Tuple

import tensorflow as tf

from models import blocks
from models.base import RETRIEVE, SIMILAR, RecModel
from models.families.mf_dnn import NUMERIC_ITEM_FEATURES
from models.hparams import HParams
from models.tasks import FULL_SOFTMAX, SAMPLED_SOFTMAX


@dataclasses.dataclass(frozen=True)
class TwoTowerParams(HParams):
    """Attributes:
      dim: vector size of both towers.
      query_hidden: widths of an MLP over the pooled history (empty: none).
      item_metadata: the candidate tower reads genres and item statistics (needs an item
        table, which the user view does not carry: an error there).
      softmax: `full` or `sampled` (in-batch with log-q correction).
      history_dropout: training-time dropout of query history items.
      exclude_own: the user's own other items are not negatives.
      target_behaviors: behaviors whose interactions are training targets (empty: the ones
        the split evaluates, `DatasetSpec.retrieval_targets`: liked on the MovieLens hash
        split, every behavior otherwise; eval split: bench/results/tuning/two_tower_targets.md).
      l2: penalty weight on query vectors.
      user_balance: training targets are drawn with probability proportional to (their
        user's target count) ** -user_balance (training.views.retrieval_dataset): 0 every
        target once per epoch, 1 every user equally often (protocol K averages over users).
      query_attention_heads: > 0: a self-attention layer over the history's item vectors
        before pooling (blocks.HistoryPooling), so the query reads items in the light of
        each other; 0: the SVD++ pooling alone.
    """

    dim: int = 128  # eval split: bench/results/tuning/two_tower_l2.md
    query_hidden: Tuple[int, ...] = ()
    item_metadata: bool = False
    softmax: str = FULL_SOFTMAX
    history_dropout: float = 0.0
    exclude_own: bool = True
    target_behaviors: Tuple[str, ...] = ()
    l2: float = 0.1
    query_attention_heads: int = 0
    user_balance: float = 0.0
    learning_rate: float = 0.005  # eval split: bench/results/tuning/two_tower_liked_lr3.md
    batch_size: int = 512
    max_epochs: int = 30
    patience: int = 2  # eval split: bench/results/tuning/two_tower_patience.md (same best epochs as 3)

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.user_balance <= 1.0:
            raise ValueError(f"user_balance must be in [0, 1], got {self.user_balance}")
        if self.softmax not in (FULL_SOFTMAX, SAMPLED_SOFTMAX):
            raise ValueError(f"softmax must be {FULL_SOFTMAX!r} or {SAMPLED_SOFTMAX!r}, got {self.softmax!r}")


class TwoTower(RecModel):
    """Query = MLP(pooled history); candidate = item embedding (+ metadata MLP) and bias."""

    capabilities = frozenset({RETRIEVE, SIMILAR})

    def __init__(self, context, hparams: TwoTowerParams, **kwargs):
        super().__init__(context, hparams, softmax=hparams.softmax, **kwargs)
        seed = context.seed
        self.pooling = blocks.HistoryPooling(context.num_items, context.num_behaviors, hparams.dim, seed,
                                             dropout=hparams.history_dropout,
                                             attention_heads=hparams.query_attention_heads, name="history")
        self.query_mlp = (blocks.MLP(tuple(hparams.query_hidden) + (hparams.dim,), activation="tanh",
                                     seed=seed + 20, name="query_mlp") if hparams.query_hidden else None)
        if hparams.item_metadata and not context.item_table:
            raise ValueError(
                "two_tower: item_metadata=true needs the item table (genres, item statistics), and the "
                "user view this family trains on carries none; train with item_metadata=false")
        numeric = [n for n in NUMERIC_ITEM_FEATURES if context.item_table and n in context.item_table]
        self.item_encoder = blocks.ItemEncoder(
            context.num_items, context.num_genres, hparams.dim, (2 * hparams.dim,), numeric=numeric,
            item_table=context.item_table, metadata=hparams.item_metadata and bool(context.item_table),
            seed=seed + 30, name="candidate")
        self.item_bias = blocks.Bias(context.num_items, name="candidate_bias")

    def query(self, history_item_idx, history_behavior_idx, training=False):
        q, _ = self.pooling(history_item_idx, history_behavior_idx, training=training)
        if self.query_mlp is not None:
            q = self.query_mlp(q, training=training)
        return q, tf.zeros(tf.shape(q)[:1])

    def query_penalty(self, query):
        return self.hparams.l2 * tf.reduce_mean(tf.reduce_sum(query * query, -1))

    def candidates(self):
        return self.item_encoder.catalogue(), self.item_bias.all()

    def item_vectors(self):
        return self.item_encoder.catalogue()
