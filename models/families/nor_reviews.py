"""NOR (Lin et al., SIGIR 2019) adapted to user-item matching on review documents.

NOR matches a top with a bottom from their images (CNN encoders, mutual attention) and
generates a comment on the pair (a GRU with cross-modality attention over both encoders),
trained on L = L_mat + L_gen + lambda L_reg. There is no outfit data here: the two
"images" are the user's and the item's review documents, and the match is the rating.

Encoders: a word CNN over each side's documents (the word embedding shared), giving a
state per word position of all the side's documents. Mutual attention (attentive pooling)
reads the two sets of states against each other and pools each into a vector, a and b.
Matching: rating = MLP([a; b; a * b]) + b_u + b_i + b (the squared error is L_mat).
Generation: a GRU started from [a; b] attending over both sides' word states generates the
row's own text of the `target` column (L_gen, token cross entropy); the served rating never
reads it. L_reg: the squared id biases, weighted by `l2`.
"""

from __future__ import annotations

import dataclasses
from typing import Tuple

import tensorflow as tf

from contract import features as F
from models.base import EXPLAIN, SCORE
from models.blocks import MLP, Bias
from models.blocks import text as text_blocks
from models.reviews import ReviewModel, ReviewParams


@dataclasses.dataclass(frozen=True)
class NORParams(ReviewParams):
    """Attributes (beyond ReviewParams'): window: the word CNN's width; hidden: the matching
    MLP's hidden widths; generation_weight: the weight of L_gen."""

    window: int = 3
    hidden: Tuple[int, ...] = (32,)
    generation_weight: float = 1.0


class NORReviews(ReviewModel):
    """Word CNNs over both sides' documents, mutual attention, a matching MLP and a comment generator."""

    capabilities = frozenset({SCORE, EXPLAIN})
    generates = True

    def __init__(self, context, hparams: NORParams, **kwargs):
        super().__init__(context, hparams, **kwargs)
        seed = context.seed
        self.user_cnn = text_blocks.TokenEncoder(self.words, "cnn", hparams.units, seed + 40, hparams.window,
                                                 name="user_cnn")
        self.item_cnn = text_blocks.TokenEncoder(self.words, "cnn", hparams.units, seed + 41, hparams.window,
                                                 name="item_cnn")
        self.mutual = text_blocks.MutualAttention(hparams.units, seed + 42, name="mutual_attention")
        self.match = MLP(tuple(hparams.hidden) + (1,), seed=seed + 43, name="match")
        self.user_bias = Bias(context.num_users, name="user_bias")
        self.item_bias = Bias(context.num_items, name="item_bias")

    def encode(self, features, training=False):
        user = text_blocks.flatten_words(self.user_cnn(features[self.user_documents], training=training))
        item = text_blocks.flatten_words(self.item_cnn(features[self.item_documents], training=training))
        a, b, _, _ = self.mutual(user.states, user.mask, item.states, item.mask)
        return {"user_states": user.states, "user_mask": user.mask, "item_states": item.states,
                "item_mask": item.mask, "a": a, "b": b, "b_u": self.user_bias(features[F.USER_IDX]),
                "b_i": self.item_bias(features[F.ITEM_IDX])}

    def rating(self, encoded, features, training=False):
        a, b = self.dropout(encoded["a"], training=training), self.dropout(encoded["b"], training=training)
        match = tf.squeeze(self.match(tf.concat([a, b, a * b], -1), training=training), -1)
        logit = match + encoded["b_u"] + encoded["b_i"] + self.global_bias
        penalty = self.hparams.l2 * tf.reduce_mean(tf.square(encoded["b_u"]) + tf.square(encoded["b_i"]))
        return logit, penalty

    def decoder_inputs(self, encoded):
        memory = tf.concat([encoded["user_states"], encoded["item_states"]], axis=1)
        mask = tf.concat([encoded["user_mask"], encoded["item_mask"]], axis=1)
        return tf.concat([encoded["a"], encoded["b"]], -1), memory, mask

    def objective(self, rating_loss, penalty, encoded, features, training=False):
        total = rating_loss + penalty  # L_mat + lambda L_reg
        if self.generator is not None:
            total += self.hparams.generation_weight * self.generation_loss(encoded, features, training)
        return total
