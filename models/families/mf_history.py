"""MF with the user's history as the query (the tutorial's second step; SVD++-style).

The query is the history's item embeddings, scaled per behavior and pooled with sqrtn
weights, plus a pooled query bias: a user unseen in training is scored from a history
alone. With `user_id=True` the user's own vector and bias are added (as in SVD++),
which helps users with many training ratings and is zero for unknown users.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from contract import features as F
from models import blocks
from models.base import SCORE, SIMILAR, OneScoreModel, bias_penalty, l2
from models.hparams import BiasParams, SimilarParams, TrainingParams


@dataclasses.dataclass(frozen=True)
class MFHistoryParams(SimilarParams, BiasParams):
    """Attributes (beyond `BiasParams`'): dim: vector size; l2: penalty weight; user_id: add a
    user vector and bias to the pooled history; history_dropout: training-time dropout of
    history items; text: read the description's text features and documents (user and, in
    mf_dnn, item side)."""

    dim: int = 32
    l2: float = 0.05
    user_id: bool = True
    history_dropout: float = 0.0
    text: bool = True
    similar_category_weight: float = 0.3  # eval split, seed mean of 42-44: bench/results/similar.md
    # RMSprop on the eval split (mf_history 0.8551 against Adam's 0.8598; mf_dnn 0.8463
    # against 0.8488): bench/results/tuning/mf_history_optimizer.md, mf_dnn_optimizer.md
    training: TrainingParams = TrainingParams(learning_rate=0.003, max_epochs=30, optimizer="rmsprop")


class HistoryMatrixFactorization(OneScoreModel):
    """Query = pooled history (+ user); item = id embedding + bias."""

    capabilities = frozenset({SCORE, SIMILAR})

    def __init__(self, context, hparams: MFHistoryParams, **kwargs):
        super().__init__(context, hparams, **kwargs)
        self.query_layer = blocks.HistoryQuery(context, hparams.dim, hparams.user_id, hparams.history_dropout,
                                               text=hparams.text, name="query")
        self.build_items(context, hparams)
        self.item_bias = blocks.Bias(context.num_items, name="item_bias")
        self.bias_penalty = bias_penalty(context, hparams)

    # The item side: an id embedding here; `mf_dnn` replaces it with a metadata tower.
    def build_items(self, context, hparams) -> None:
        self.item_embedding = blocks.embedding(context.num_items, hparams.dim, context.seed + 1, "item_embedding")

    def item_vector(self, items, features, training=False):
        return self.item_embedding(items)

    def forward(self, features, training=False):
        q, b_q = self.query_layer(features, training=training)
        i = features[F.ITEM_IDX]
        v, b_i = self.item_vector(i, features, training=training), self.item_bias(i)
        logit = tf.reduce_sum(q * v, -1) + b_q + b_i + self.global_bias
        if self.bias_penalty is None:
            penalty = self.hparams.l2 * tf.reduce_mean(l2(q, v, b_q[:, None], b_i[:, None]))
        else:
            penalty = self.hparams.l2 * tf.reduce_mean(l2(q, v)) + self.entity_bias_penalty(features, i, b_q, b_i)
        return {self.task_name: logit}, penalty

    def entity_bias_penalty(self, features, items, query_bias, item_bias):
        """`bias_penalty` per_entity: the user's and item's own biases once per epoch; the
        pooled history bias (the query bias less the user's) per example, at `l2`."""
        users, user_bias = None, None
        if self.query_layer.user_id and F.USER_IDX in features:
            users = features[F.USER_IDX]
            user_bias = self.query_layer.user_bias(users)
            query_bias = query_bias - user_bias
        history = self.hparams.l2 * tf.reduce_mean(tf.square(query_bias))
        return history + tf.reduce_mean(self.bias_penalty(items, item_bias, users, user_bias))

    def candidates(self):
        return self.item_embedding.embeddings, self.item_bias.all()
