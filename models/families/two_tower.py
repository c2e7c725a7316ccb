"""Two-tower retrieval on implicit feedback: the family that serves `recommend`.

Query tower: the user's history (items with their behaviors) pooled as in SVD++,
optionally through an MLP. Candidate tower: the item's own embedding (and, with
`item_metadata`, the item features the description declares, read by type, and the item
statistics through an MLP) plus a bias that learns
popularity. Trained on the user view: each training interaction is a target and
the rest of the user's training history (leave-one-out, the most recent
`max_history`) is the query, so the model learns what the whole history says about
one held-out item, which is what `recommend` is asked. The softmax is over the whole
catalogue (`full`) or over the batch's targets with a log-popularity correction
(`sampled`); the user's own other items are not negatives.

With `members` k > 1 the family is an ensemble of k such models: the ensemble recipe
trains k one-member models one after the other, member m with seed + m (its own initial
weights, data order and early stopping; training/recipes/ensemble.py), and `assemble` puts
them side by side. The served score is the sum of the members' scores: the query is the members' query
vectors concatenated, the candidate the members' item vectors concatenated and their
biases summed, so `recommend` and the Evaluator read one dot product as before. Fitted as
one model (fit_on_arrays), each member has its own softmax loss, so with Adam's per-weight
steps each trains as it would alone on the same batches; so trained, the members agree
too much to gain from each other (bench/results/tuning/two_tower_members_joint.md).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Tuple

import tensorflow as tf

from contract import features as F
from models import blocks
from models.base import RETRIEVE, SIMILAR, RecModel
from models.hparams import RetrievalParams, ScannParams, TrainingParams
from models.tasks import FULL_SOFTMAX, SAMPLED_SOFTMAX


@dataclasses.dataclass(frozen=True)
class TwoTowerParams(RetrievalParams, ScannParams):
    """Attributes (and those of RetrievalParams and ScannParams):
      dim: vector size of both towers.
      query_hidden: widths of an MLP over the pooled history (empty: none).
      item_metadata: the candidate tower reads the item features and statistics (needs an
        item table, which the user view does not carry: an error there).
      softmax: `full` or `sampled` (in-batch with log-q correction).
      full_softmax_max_items: the largest catalogue (item rows) trained with the full
        softmax; a larger one trains with the in-batch `sampled` softmax. The full softmax
        scores every item for every training row, so its cost per row grows with the
        catalogue and a whole epoch with rows x items (bench/results/scale_pipeline.md: 2
        epochs took 12.3x as long on 4x MovieLens); the in-batch softmax's cost per row is
        the batch's. 50,000 items is about 5x MovieLens's catalogue.
      history_dropout: training-time dropout of query history items.
      l2: penalty weight on query vectors.
      query_attention_heads: > 0: a self-attention layer over the history's item vectors
        before pooling (blocks.HistoryPooling), so the query reads items in the light of
        each other; 0: the SVD++ pooling alone.
    """

    dim: int = 128  # eval split: bench/results/tuning/two_tower_l2.md
    query_hidden: Tuple[int, ...] = ()
    item_metadata: bool = False
    softmax: str = FULL_SOFTMAX
    full_softmax_max_items: int = 50_000
    history_dropout: float = 0.0
    l2: float = 0.1
    query_attention_heads: int = 0
    # The shared learning rate 0.005 and patience 2 are two_tower's eval choices too
    # (bench/results/tuning/two_tower_liked_lr3.md, two_tower_patience.md).
    # weight_average 0.99: eval NDCG@10 0.1920 +- 0.0044 against 0.1845 +- 0.0012 without
    # (bench/results/tuning/two_tower_weight_average.md; 0.995's 0.1934 is within a std and slower;
    # past it, 0.999 falls to 0.1856 +- 0.0012: two_tower_weight_average_wide.md).
    training: TrainingParams = TrainingParams(batch_size=512, max_epochs=30, warm_start=False,
                                              weight_average=0.99)  # see TrainingParams

    def __post_init__(self):
        super().__post_init__()
        if self.softmax not in (FULL_SOFTMAX, SAMPLED_SOFTMAX):
            raise ValueError(f"softmax must be {FULL_SOFTMAX!r} or {SAMPLED_SOFTMAX!r}, got {self.softmax!r}")
        if self.full_softmax_max_items < 1:
            raise ValueError(f"full_softmax_max_items must be at least 1, got {self.full_softmax_max_items}")


def softmax_for(hparams: TwoTowerParams, num_items: int) -> str:
    """The softmax a catalogue of `num_items` rows trains with: the record's, unless it is the
    full softmax over more than `full_softmax_max_items` rows."""
    if hparams.softmax == FULL_SOFTMAX and num_items > hparams.full_softmax_max_items:
        logging.info("two_tower: %d item rows > full_softmax_max_items=%d: training with the in-batch %s softmax",
                     num_items, hparams.full_softmax_max_items, SAMPLED_SOFTMAX)
        return SAMPLED_SOFTMAX
    return hparams.softmax


class TwoTower(RecModel):
    """Query = MLP(pooled history); candidate = item embedding (+ metadata MLP) and bias."""

    capabilities = frozenset({RETRIEVE, SIMILAR})

    def __init__(self, context, hparams: TwoTowerParams, **kwargs):
        super().__init__(context, hparams, softmax=softmax_for(hparams, context.num_items), **kwargs)
        if hparams.item_metadata and not context.item_table:
            raise ValueError(
                "two_tower: item_metadata=true needs the item table (item features, item statistics), and the "
                "user view this family trains on carries none; train with item_metadata=false")
        # Member 0 keeps the one-model names (a members=1 model is what it always was).
        self.pooling, self.query_mlp, self.item_encoder, self.item_bias = self._towers(context, hparams, 0)
        extra = [self._towers(context, hparams, m) for m in range(1, hparams.training.members)]
        self.member_poolings = [t[0] for t in extra]
        self.member_mlps = [t[1] for t in extra if t[1] is not None]
        self.member_encoders = [t[2] for t in extra]
        self.member_biases = [t[3] for t in extra]

    @staticmethod
    def _towers(context, hparams: TwoTowerParams, member: int):
        """(history pooling, query MLP or None, item encoder, item bias) of one member."""
        seed = context.seed + 1000 * member
        suffix = f"_{member}" if member else ""
        pooling = blocks.HistoryPooling(context.num_items, context.num_behaviors, hparams.dim, seed,
                                        dropout=hparams.history_dropout,
                                        attention_heads=hparams.query_attention_heads, name="history" + suffix)
        mlp = (blocks.MLP(tuple(hparams.query_hidden) + (hparams.dim,), activation="tanh", seed=seed + 20,
                          name="query_mlp" + suffix) if hparams.query_hidden else None)
        encoder = blocks.ItemEncoder.for_context(
            context, hparams.dim, (2 * hparams.dim,), seed + 30,
            metadata=hparams.item_metadata and bool(context.item_table), name="candidate" + suffix)
        return pooling, mlp, encoder, blocks.Bias(context.num_items, name="candidate_bias" + suffix)

    def members(self):
        """[(pooling, query MLP or None, item encoder, item bias)] of every member."""
        mlps = [self.query_mlp] + (self.member_mlps or [None] * len(self.member_poolings))
        return list(zip([self.pooling] + self.member_poolings, mlps, [self.item_encoder] + self.member_encoders,
                        [self.item_bias] + self.member_biases))

    def assemble(self, models) -> None:
        """Takes each member's weights from a one-member model of the same setting (in order)."""
        if len(models) != self.hparams.training.members:
            raise ValueError(f"two_tower with {self.hparams.training.members} members assembles {self.hparams.training.members} "
                             f"one-member models, got {len(models)}")
        probe = tf.constant([[1]], tf.int64)
        for model in [self] + list(models):
            model.score_catalogue(probe, probe)  # builds every weight
        for target, source in zip(self.members(), models):
            (only,) = source.members()
            for to, frm in zip(target, only):
                if to is not None:
                    to.set_weights(frm.get_weights())

    def member_queries(self, history_item_idx, history_behavior_idx, training=False):
        out = []
        for pooling, mlp, _, _ in self.members():
            q, _ = pooling(history_item_idx, history_behavior_idx, training=training)
            out.append(mlp(q, training=training) if mlp is not None else q)
        return out

    def query(self, history_item_idx, history_behavior_idx, training=False):
        q = tf.concat(self.member_queries(history_item_idx, history_behavior_idx, training=training), axis=-1)
        return q, tf.zeros(tf.shape(q)[:1])

    def query_penalty(self, query):
        # Over the members' concatenated queries: the sum of each member's own penalty.
        return self.hparams.l2 * tf.reduce_mean(tf.reduce_sum(query * query, -1))

    def candidates(self):
        members = self.members()
        return (tf.concat([encoder.catalogue() for _, _, encoder, _ in members], axis=-1),
                tf.add_n([bias.all() for _, _, _, bias in members]))

    def item_vectors(self):
        return tf.concat([encoder.catalogue() for _, _, encoder, _ in self.members()], axis=-1)

    def retrieval_loss(self, features, training):
        """Each member's softmax on its own scores (an ensemble of models trained alone),
        not one softmax on their sum (one wider model)."""
        queries = self.member_queries(features[F.HISTORY_ITEM_IDX], features[F.HISTORY_BEHAVIOR_IDX],
                                      training=training)
        total = self.query_penalty(tf.concat(queries, axis=-1))
        for q, (_, _, encoder, bias) in zip(queries, self.members()):
            total += self.retrieval_terms(features, q, encoder.catalogue(), bias.all())
        return total
