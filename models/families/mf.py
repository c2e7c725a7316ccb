"""Biased matrix factorization: score = u . v + b_u + b_v + b (Koren et al., 2009).

One vector and one bias per user and per item, an L2 penalty on what each example
looks up (the biases' penalty per example, or once per user and item as BaselineOnly's:
`bias_penalty`). The first step of the progression; it needs a user id, so it scores known
users only and does not serve `recommend`.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from contract import features as F
from models import blocks
from models.base import SCORE, SIMILAR, OneScoreModel, bias_penalty, l2
from models.hparams import BiasParams, SimilarParams, TrainingParams


@dataclasses.dataclass(frozen=True)
class MFParams(SimilarParams, BiasParams):
    """Attributes (beyond `BiasParams`'): dim: vector size; l2: penalty weight on looked-up
    vectors; bias_l2_scale: the biases' penalty weight as a multiple of `l2` (with
    `bias_penalty` per_example)."""

    dim: int = 64  # chosen on the eval split: bench/results/tuning/mf.md
    l2: float = 0.05  # with RMSprop: bench/results/tuning/mf_optimizer.md
    bias_l2_scale: float = 1.0
    similar_category_weight: float = 0.2  # eval split, seed mean of 42-44: bench/results/similar.md
    # RMSprop: eval RMSE 0.8626 against Adam's 0.8672 at best: mf_optimizer.md; warm starts at
    # 7x the rate: the best mean eval RMSE of replayed days, tuning/mf_warm_start.md
    training: TrainingParams = TrainingParams(learning_rate=0.003, max_epochs=30, optimizer="rmsprop",
                                              warm_learning_rate_scale=7.0)


class MatrixFactorization(OneScoreModel):
    """Query = user id embedding + bias; item = item id embedding + bias."""

    capabilities = frozenset({SCORE, SIMILAR})

    def __init__(self, context, hparams: MFParams, **kwargs):
        super().__init__(context, hparams, **kwargs)
        seed = context.seed
        self.user_embedding = blocks.embedding(context.num_users, hparams.dim, seed, "user_embedding")
        self.user_bias = blocks.Bias(context.num_users, name="user_bias")
        self.item_embedding = blocks.embedding(context.num_items, hparams.dim, seed + 1, "item_embedding")
        self.item_bias = blocks.Bias(context.num_items, name="item_bias")
        self.bias_penalty = bias_penalty(context, hparams)

    def forward(self, features, training=False):
        u, i = features[F.USER_IDX], features[F.ITEM_IDX]
        q, v = self.user_embedding(u), self.item_embedding(i)
        b_u, b_i = self.user_bias(u), self.item_bias(i)
        logit = tf.reduce_sum(q * v, -1) + b_u + b_i + self.global_bias
        if self.bias_penalty is not None:
            penalty = self.hparams.l2 * tf.reduce_mean(l2(q, v)) + tf.reduce_mean(self.bias_penalty(i, b_i, u, b_u))
        else:
            penalty = self.hparams.l2 * tf.reduce_mean(
                l2(q, v) + self.hparams.bias_l2_scale * l2(b_u[:, None], b_i[:, None]))
        return {self.task_name: logit}, penalty

    def candidates(self):
        return self.item_embedding.embeddings, self.item_bias.all()
