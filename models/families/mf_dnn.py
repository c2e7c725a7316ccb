"""MF with an item-metadata DNN (the tutorial's third step).

The item vector comes from its id and its metadata: id embedding, the item features the
dataset's description declares read by type (an embedding per categorical, a pooled
embedding per multi-valued feature, the out-of-fold average rating and popularity
stacked with the declared numerics, a text encoder per text feature and item
documents; `blocks.ItemEncoder`) through an MLP, so rare items borrow strength from
what they are. The query is `mf_history`'s: pooled history plus the user's vector when
known (and the user's features when the description declares some).
"""

from __future__ import annotations

import dataclasses
from typing import Tuple

from models import blocks
from models.families.mf_history import HistoryMatrixFactorization, MFHistoryParams
from models.hparams import TrainingParams


@dataclasses.dataclass(frozen=True)
class MFDnnParams(MFHistoryParams):
    """Attributes (beyond `mf_history`'s): hidden: item MLP widths."""

    hidden: Tuple[int, ...] = (64,)
    similar_category_weight: float = 0.1  # eval split, seed mean of 42-44: bench/results/similar.md


@dataclasses.dataclass(frozen=True)
class MFDnnLikedParams(MFDnnParams):
    """`mf_dnn` on the dataset's first binary task: Adam, whose eval AUC is higher here
    (0.8047 against RMSprop's 0.8023: bench/results/tuning/mf_dnn_liked_optimizer.md)."""

    training: TrainingParams = dataclasses.replace(MFDnnParams.training, optimizer="adam")


class ItemDnnMatrixFactorization(HistoryMatrixFactorization):
    """Query = pooled history (+ user); item = MLP(id, item features by type, statistics) + bias."""

    def build_items(self, context, hparams: MFDnnParams) -> None:
        self.item_encoder = blocks.ItemEncoder.for_context(context, hparams.dim, hparams.hidden, context.seed,
                                                           text=hparams.text, name="item")

    def item_vector(self, items, features, training=False):
        return self.item_encoder(items, features, training=training)

    def candidates(self):
        return self.item_encoder.catalogue(), self.item_bias.all()
