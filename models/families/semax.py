"""SEMAX (Zhang et al.): a review-aware temporal rating model trained with a related task.

Recommendation task: each of the user's and the item's earlier reviews is embedded by an
LSTM over its words (`encoder`), an LSTM over the time-ordered review embeddings gives the
user's and the item's dynamic representations d_u, d_i, and a two-layer network over
[d_u; d_i; p_u; q_i] (p, q the latent factors of the ids) gives h_rec; the rating is
w . h_rec + b_u + b_i + b. Related task (training only): the rating of the row's own
review from its text: an LSTM over its words (`encoder`; the same word embeddings), attention over
the words conditioned on [p_u; q_i], a layer to h_rel, a rating w' . h_rel + b'.

    loss = beta * L1 + (1 - beta) * (L2 + lambda * L3)

L1 the recommendation task's squared error, L2 the related task's (rows with a review),
L3 = ||h_rec - h_rel||^2 with h_rel held fixed (it pulls the recommendation task's
representation towards the related task's, not the reverse). The served rating never reads
the row's own review: only L2 and L3 do, in the loss. `text_task=false`: L1 alone.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf
import tf_keras as keras

from contract import features as F
from models.base import l2
from models.blocks import MLP
from models.blocks import text as text_blocks
from models.reviews import ReviewModel, ReviewParams, id_vectors


@dataclasses.dataclass(frozen=True)
class SEMAXParams(ReviewParams):
    """Attributes (beyond ReviewParams'): encoder: the word encoder of each review (lstm as
    the paper; cnn, gru or mean are cheaper); hidden: width of the two-layer network and of
    h_rec / h_rel; beta: weight of the recommendation task; pull: lambda, the weight of L3."""

    encoder: str = "lstm"
    hidden: int = 32
    beta: float = 0.5
    pull: float = 0.1

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 < self.beta <= 1.0:
            raise ValueError(f"beta must be in (0, 1], got {self.beta}")


class SEMAX(ReviewModel):
    """Rating from time-ordered review documents and latent factors; a related review-rating task."""

    def __init__(self, context, hparams: SEMAXParams, **kwargs):
        super().__init__(context, hparams, **kwargs)
        seed = context.seed
        self.user_embedding, self.user_bias, self.item_embedding, self.item_bias = id_vectors(
            context, hparams.dim, seed)
        words = text_blocks.TokenEncoder(self.words, hparams.encoder, hparams.units, seed + 40, name="review_encoder")
        self.user_time = text_blocks.DocumentEncoder(words, hparams.units, "lstm", seed + 42, name="user_time")
        self.item_time = text_blocks.DocumentEncoder(words, hparams.units, "lstm", seed + 44, name="item_time")
        hidden = hparams.hidden
        self.rec_network = MLP((hidden, hidden), output_activation="relu", seed=seed + 46, name="rec_network")
        self.rec_output = keras.layers.Dense(1, kernel_initializer=keras.initializers.GlorotUniform(seed + 48),
                                             name="rec_output")
        if hparams.text_task:
            self.related_words = text_blocks.TokenEncoder(self.target_words, hparams.encoder, hparams.units, seed + 50,
                                                          name="related_encoder")
            self.related_attention = text_blocks.WordAttention(hparams.units, seed + 52, name="related_attention")
            self.related_network = keras.layers.Dense(
                hidden, activation="relu", kernel_initializer=keras.initializers.GlorotUniform(seed + 55),
                name="related_network")
            self.related_output = keras.layers.Dense(
                1, kernel_initializer=keras.initializers.GlorotUniform(seed + 56), name="related_output")
            self.related_bias = tf.Variable(context.mean_rating, dtype=tf.float32, name="related_bias")

    def encode(self, features, training=False):
        users, items = features[F.USER_IDX], features[F.ITEM_IDX]
        user_docs, _ = self.user_time(features[self.user_documents], training=training)
        item_docs, _ = self.item_time(features[self.item_documents], training=training)
        p, q = self.user_embedding(users), self.item_embedding(items)
        texts = self.dropout(tf.concat([user_docs.vector, item_docs.vector], -1), training=training)
        h_rec = self.rec_network(tf.concat([texts, p, q], -1), training=training)
        return {"p": p, "q": q, "h_rec": h_rec, "b_u": self.user_bias(users), "b_i": self.item_bias(items)}

    def rating(self, encoded, features, training=False):
        logit = tf.squeeze(self.rec_output(encoded["h_rec"]), -1) + encoded["b_u"] + encoded["b_i"] + self.global_bias
        penalty = self.hparams.l2 * tf.reduce_mean(l2(encoded["p"], encoded["q"], encoded["b_u"][:, None],
                                                      encoded["b_i"][:, None]))
        return logit, penalty

    def related(self, encoded, features, training=False):
        """(related task's rating [B], h_rel [B, hidden]) from the row's own review."""
        review = self.related_words(features[self.target], training=training)
        condition = tf.concat([encoded["p"], encoded["q"]], -1)
        pooled, _ = self.related_attention(review.states, review.mask, condition)
        h_rel = self.related_network(pooled)
        return tf.squeeze(self.related_output(h_rel), -1) + self.related_bias, h_rel

    def objective(self, rating_loss, penalty, encoded, features, training=False):
        if not self.hparams.text_task:
            return rating_loss + penalty
        rows = self.text_rows(features)
        count = tf.maximum(tf.reduce_sum(rows), 1.0)
        review_rating, h_rel = self.related(encoded, features, training)
        label = tf.cast(features[self.pointwise[self.task_name].spec.label], tf.float32)
        related_loss = tf.reduce_sum(rows * tf.square(review_rating - label)) / count
        pull_loss = tf.reduce_sum(rows * l2(encoded["h_rec"] - tf.stop_gradient(h_rel))) / count
        beta = self.hparams.beta
        return beta * rating_loss + (1.0 - beta) * (related_loss + self.hparams.pull * pull_loss) + penalty
