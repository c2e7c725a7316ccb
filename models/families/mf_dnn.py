"""MF with an item-metadata DNN (the tutorial's third step).

The item vector comes from its id and its metadata: id embedding, mean genre
embedding and the Transform's numeric item features (leave-one-out average rating and
popularity, year) through an MLP, so rare items borrow strength from what they are.
The query is `mf_history`'s: pooled history plus the user's vector when known.
"""

from __future__ import annotations

import dataclasses
from typing import Tuple

from contract import features as F
from models import blocks
from models.families.mf_history import HistoryMatrixFactorization, MFHistoryParams

NUMERIC_ITEM_FEATURES = (F.ITEM_AVG_RATING_MM, F.ITEM_POPULARITY_MM, F.ITEM_YEAR_Z)


@dataclasses.dataclass(frozen=True)
class MFDnnParams(MFHistoryParams):
    """Attributes (beyond `mf_history`'s): hidden: item MLP widths."""

    hidden: Tuple[int, ...] = (64,)
    similar_genre_weight: float = 0.1  # eval split: bench/results/similar.md


@dataclasses.dataclass(frozen=True)
class MFDnnLikedParams(MFDnnParams):
    """`mf_dnn` on liked: Adam, whose eval AUC is higher here (0.8047 against RMSprop's
    0.8023: bench/results/tuning/mf_dnn_liked_optimizer.md)."""

    optimizer: str = "adam"


class ItemDnnMatrixFactorization(HistoryMatrixFactorization):
    """Query = pooled history (+ user); item = MLP(id, genres, item statistics, year) + bias."""

    def build_items(self, context, hparams: MFDnnParams) -> None:
        table = context.item_table or {}
        numeric = [n for n in NUMERIC_ITEM_FEATURES if not table or n in table]
        if not context.dataset.has_rating:
            numeric = [n for n in numeric if n != F.ITEM_AVG_RATING_MM]
        if not context.dataset.has_year:
            numeric = [n for n in numeric if n != F.ITEM_YEAR_Z]
        self.item_encoder = blocks.ItemEncoder(
            context.num_items, context.num_genres, hparams.dim, hparams.hidden, numeric=numeric,
            item_table=context.item_table, seed=context.seed, name="item")

    def item_vector(self, items, features, training=False):
        return self.item_encoder(items, features, training=training)

    def candidates(self):
        return self.item_encoder.catalogue(), self.item_bias.all()
