"""MF with an item-metadata DNN (the tutorial's third step).

The item vector comes from its id and its metadata: id embedding, mean genre
embedding and the Transform's numeric item features (leave-one-out average rating and
popularity, year) through an MLP, so rare items borrow strength from what they are.
The query is `mf_history`'s: pooled history plus the user's vector when known.
"""

from __future__ import annotations

import dataclasses
from typing import Tuple

import tensorflow as tf

from contract import features as F
from models import blocks
from models.base import SCORE, SIMILAR, OneScoreModel, l2
from models.hparams import HParams

NUMERIC_ITEM_FEATURES = (F.ITEM_AVG_RATING_MM, F.ITEM_POPULARITY_MM, F.ITEM_YEAR_Z)


@dataclasses.dataclass(frozen=True)
class MFDnnParams(HParams):
    """Attributes: dim: vector size; hidden: item MLP widths; l2: penalty weight;
    user_id: add the user vector to the query; history_dropout: training-time dropout
    of history items."""

    dim: int = 32
    hidden: Tuple[int, ...] = (64,)
    l2: float = 0.05
    user_id: bool = True
    history_dropout: float = 0.0
    learning_rate: float = 0.003
    max_epochs: int = 30


class ItemDnnMatrixFactorization(OneScoreModel):
    """Query = pooled history (+ user); item = MLP(id, genres, item statistics, year) + bias."""

    capabilities = frozenset({SCORE, SIMILAR})

    def __init__(self, context, hparams: MFDnnParams, **kwargs):
        super().__init__(context, hparams, **kwargs)
        table = context.item_table or {}
        numeric = [n for n in NUMERIC_ITEM_FEATURES if not table or n in table]
        if not context.dataset.has_rating:
            numeric = [n for n in numeric if n != F.ITEM_AVG_RATING_MM]
        if not context.dataset.has_year:
            numeric = [n for n in numeric if n != F.ITEM_YEAR_Z]
        self.query_layer = blocks.HistoryQuery(context, hparams.dim, hparams.user_id, hparams.history_dropout,
                                               name="query")
        self.item_encoder = blocks.ItemEncoder(
            context.num_items, context.num_genres, hparams.dim, hparams.hidden, numeric=numeric,
            item_table=context.item_table, seed=context.seed, name="item")
        self.item_bias = blocks.Bias(context.num_items, name="item_bias")

    def forward(self, features, training=False):
        q, b_q = self.query_layer(features, training=training)
        i = features[F.ITEM_IDX]
        v, b_i = self.item_encoder(i, features, training=training), self.item_bias(i)
        logit = tf.reduce_sum(q * v, -1) + b_q + b_i + self.global_bias
        penalty = self.hparams.l2 * tf.reduce_mean(l2(q, v, b_q[:, None], b_i[:, None]))
        return {self.task_name: logit}, penalty

    def candidates(self):
        return self.item_encoder.catalogue(), self.item_bias.all()
