"""BERT4Rec (Sun et al., CIKM'19): bidirectional self-attention trained with the cloze
objective (random items of a window replaced by a mask row and predicted); a query
appends the mask after the history and reads its hidden state."""

from __future__ import annotations

import dataclasses
from typing import Tuple

import tensorflow as tf

from models.families.sasrec import SASRec, SASRecParams
from models.hparams import TrainingParams
from models.families.sequential import CLOZE, last_window


@dataclasses.dataclass(frozen=True)
class BERT4RecParams(SASRecParams):
    """Attributes (and those of SASRecParams):
      mask_prob: share of a training window's items that are masked (at least one).
      last_mask_prob: share of training windows whose only masked item is the last one,
        as in a query (the appended mask).
    """

    mask_prob: float = 0.2
    last_mask_prob: float = 0.1
    # The cloze objective's eval NDCG@10 is noisy and keeps rising for long: on MovieLens
    # protocol S, patience 5 stopped at epoch 11 (best 6, eval 0.0276); 40 epochs reached
    # eval 0.0331 at epoch 38.
    training: TrainingParams = dataclasses.replace(SASRecParams.training, patience=20)

    def __post_init__(self):
        super().__post_init__()
        for name in ("mask_prob", "last_mask_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


class BERT4Rec(SASRec):
    """SASRec's layers without the causal mask, and a mask item row (`mask_row`)."""

    causal = False
    objective = CLOZE
    extra_item_rows = 1

    @property
    def mask_row(self) -> int:
        return self.context.num_items

    def cloze_masking(self) -> Tuple[int, float, float]:
        return self.mask_row, self.hparams.mask_prob, self.hparams.last_mask_prob

    def query(self, history_item_idx, history_behavior_idx, training=False):
        items, behaviors, lengths = last_window(history_item_idx, history_behavior_idx, self.max_len - 1)
        items = tf.pad(items, [[0, 0], [0, 1]])
        behaviors = tf.pad(behaviors, [[0, 0], [0, 1]])
        at_mask = tf.range(tf.shape(items)[1])[None, :] == lengths[:, None]
        items = tf.where(at_mask, tf.constant(self.mask_row, items.dtype), items)
        h = self.hidden(items, behaviors, training=training)
        last = tf.gather(h, lengths, batch_dims=1)
        return last, tf.zeros(tf.shape(last)[:1])
