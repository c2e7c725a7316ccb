"""'Why I like it' (Lu, Dong & Smyth, RecSys 2018): matrix factorization whose user and item
vectors are regularized by textual features of their review documents, jointly with a
sequence-to-sequence model that generates the user's review of the item (an explanation).

Textual features: a GRU over the words of each of the user's documents, then a GRU over
the documents in time order, projected to theta_u (the item's: theta_i, likewise, the word
encoder shared). Rating: r = U_u . V_i + b_u + b_i + b with U_u = theta_u + eps_u and
V_i = theta_i + eps_i, eps the id vectors. A penalty on ||eps||^2 is a penalty on
||U - theta||^2 (collaborative topic regression's "vector regularized by its text"),
written with the offsets so that a user with few ratings keeps the vector its reviews give.
Generation: a GRU started from [U_u; V_i] attending over the user's and the item's document
states generates the row's own text of the `target` column, trained with teacher forcing.

    loss = L_rating + generation_weight * L_gen + offset_l2 * (||eps_u||^2 + ||eps_i||^2)
           + l2 * (b_u^2 + b_i^2)

Adversarial stage (`adversarial`, off by default; bench/review_text.py measures it against
teacher forcing alone): a convolutional discriminator D(text, user) learns that a human
review of the row's user is real and that a generated review, or a human review paired
with another user of the batch, is not. It acts in the stage that trains the generator
last: the generator stage (`generator_epochs` > 0, training/recipes/generate.py), where the
rating's weights are frozen, or the joint stage when there is no generator stage. From that
stage's step `adversarial_start` on, every step also draws a review per row from the
generator and adds adversarial_weight * the REINFORCE loss -(D(draw) - mean D) * log p(draw)
(SeqGAN) to the stage's loss, and the discriminator takes one step of its own (its optimizer
lives in the model, so the recipe's fit runs it as is).
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf
import tf_keras as keras

from contract import features as F
from models.base import EXPLAIN, SCORE, l2
from models.blocks import text as text_blocks
from models.reviews import ReviewModel, ReviewParams, id_vectors
from models.tasks import token_nll


@dataclasses.dataclass(frozen=True)
class ReviewMTParams(ReviewParams):
    """Attributes (beyond ReviewParams'): encoder: the word encoder of each document;
    generation_weight: the weight of L_gen; offset_l2: the pull of the id vectors towards
    the textual features; adversarial: run the adversarial stage; adversarial_weight: its
    REINFORCE loss's weight; adversarial_start: the steps of its stage (the generator stage,
    or the joint stage without one) trained by teacher forcing alone before it starts;
    discriminator_filters: the discriminator's convolution filters per width."""

    encoder: str = "gru"
    generation_weight: float = 1.0
    offset_l2: float = 0.1
    adversarial: bool = False
    # Chosen on the review benchmark's eval split, seed 42 (bench/results/review_text_adversarial_eval*.md,
    # ROUGE-L and BLEU-4 of the served beam): starts 0, 330, 660, 990 at weight 0.1, then weights
    # 0.01, 0.3, 1.0, 3.0 at start 660 (ten epochs of that data's generator stage).
    adversarial_weight: float = 1.0
    adversarial_start: int = 660
    discriminator_filters: int = 32


class ReviewMT(ReviewModel):
    """MF with text-regularized vectors + a review generator (+ an optional adversarial stage)."""

    capabilities = frozenset({SCORE, EXPLAIN})
    generates = True

    def __init__(self, context, hparams: ReviewMTParams, **kwargs):
        super().__init__(context, hparams, **kwargs)
        seed = context.seed
        self.user_embedding, self.user_bias, self.item_embedding, self.item_bias = id_vectors(
            context, hparams.dim, seed)
        words = text_blocks.TokenEncoder(self.words, hparams.encoder, hparams.units, seed + 40, name="review_encoder")
        self.user_text = text_blocks.DocumentEncoder(words, hparams.units, "gru", seed + 42, name="user_text")
        self.item_text = text_blocks.DocumentEncoder(words, hparams.units, "gru", seed + 44, name="item_text")
        init = keras.initializers.GlorotUniform
        self.user_theta = keras.layers.Dense(hparams.dim, kernel_initializer=init(seed + 46), name="user_theta")
        self.item_theta = keras.layers.Dense(hparams.dim, kernel_initializer=init(seed + 47), name="item_theta")
        self.discriminator = None
        if hparams.adversarial and self.generator is not None:
            self.discriminator = text_blocks.TextDiscriminator(
                text_blocks.generator_rows(self.target_rows), context.num_users, hparams.dim,
                hparams.discriminator_filters, seed + 60, name="discriminator")
            self.discriminator_optimizer = keras.optimizers.Adam(hparams.training.learning_rate)

    def encode(self, features, training=False):
        users, items = features[F.USER_IDX], features[F.ITEM_IDX]
        user_docs, _ = self.user_text(features[self.user_documents], training=training)
        item_docs, _ = self.item_text(features[self.item_documents], training=training)
        eps_u, eps_i = self.user_embedding(users), self.item_embedding(items)
        theta_u = self.user_theta(self.dropout(user_docs.vector, training=training))
        theta_i = self.item_theta(self.dropout(item_docs.vector, training=training))
        return {"U": theta_u + eps_u, "V": theta_i + eps_i,
                "eps_u": eps_u, "eps_i": eps_i, "b_u": self.user_bias(users), "b_i": self.item_bias(items),
                "user_docs": user_docs.states, "user_mask": user_docs.mask,
                "item_docs": item_docs.states, "item_mask": item_docs.mask}

    def rating(self, encoded, features, training=False):
        logit = tf.reduce_sum(encoded["U"] * encoded["V"], -1) + encoded["b_u"] + encoded["b_i"] + self.global_bias
        penalty = tf.reduce_mean(self.hparams.offset_l2 * l2(encoded["eps_u"], encoded["eps_i"])
                                 + self.hparams.l2 * l2(encoded["b_u"][:, None], encoded["b_i"][:, None]))
        return logit, penalty

    def decoder_inputs(self, encoded):
        memory = tf.concat([encoded["user_docs"], encoded["item_docs"]], axis=1)
        mask = tf.concat([encoded["user_mask"], encoded["item_mask"]], axis=1)
        return tf.concat([encoded["U"], encoded["V"]], -1), memory, mask

    def objective(self, rating_loss, penalty, encoded, features, training=False):
        total = rating_loss + penalty
        if self.generator is not None:
            total += self.hparams.generation_weight * self.generation_loss(encoded, features, training)
        return total

    # -- the adversarial stage ------------------------------------------------------------
    @property
    def adversarial_now(self) -> bool:
        """The adversarial stage acts in this stage: the generator stage when there is one,
        else the joint stage."""
        in_generator_stage = self.hparams.generator_epochs > 0
        return self.discriminator is not None and self.text_only == in_generator_stage

    def train_step(self, inputs):
        if not self.adversarial_now:
            return super().train_step(inputs)
        if tf.distribute.get_strategy().num_replicas_in_sync > 1:
            raise ValueError("review_mt's adversarial stage trains in one replica (its two optimizer steps do not "
                             "scale by the replicas in sync): use the default training strategy or adversarial=false")
        hp = self.hparams
        active = tf.cast(self.optimizer.iterations >= hp.adversarial_start, tf.float32)
        users = inputs[F.USER_IDX]
        rows = self.text_rows(inputs)
        count = tf.maximum(tf.reduce_sum(rows), 1.0)
        human = text_blocks.decoder_targets(inputs[self.target], hp.max_length, self.generator.end)
        with tf.GradientTape() as tape:
            if self.text_only:  # the generator stage
                loss, encoded = self.text_only_loss(inputs)
                regularization = tf.constant(0.0)
            else:
                loss, encoded = self.loss_and_encoded(inputs, training=True)
                regularization = tf.reduce_sum([tf.reduce_sum(x) for x in self.losses])
            context = self.decoder_inputs(encoded)
            drawn = tf.stop_gradient(self.generator.generate(*context, hp.max_length, sample=True))
            drawn = text_blocks.decoder_targets(drawn, hp.max_length, self.generator.end)
            nll, mask = token_nll(drawn, self.generator(*context, drawn, training=True))
            log_p = -tf.reduce_sum(nll * mask, axis=-1)
            reward = tf.stop_gradient(tf.sigmoid(self.discriminator(drawn, users)))
            advantage = reward - tf.reduce_sum(reward * rows) / count
            adversarial = -tf.reduce_sum(rows * advantage * log_p) / count
            total = loss + regularization + active * hp.adversarial_weight * adversarial
        if self.text_only:
            variables = self.generator_variables()
        else:
            judge = {id(v) for v in self.discriminator.trainable_variables}
            variables = [v for v in self.trainable_variables if id(v) not in judge]
        self.optimizer.apply_gradients(zip(tape.gradient(total, variables), variables))
        with tf.GradientTape() as tape:
            bce = tf.nn.sigmoid_cross_entropy_with_logits
            real = self.discriminator(human, users)
            fake = self.discriminator(drawn, users)
            other = self.discriminator(human, tf.roll(users, 1, axis=0))
            judged = (bce(labels=tf.ones_like(real), logits=real) + bce(labels=tf.zeros_like(fake), logits=fake)
                      + bce(labels=tf.zeros_like(other), logits=other))
            d_loss = active * tf.reduce_sum(rows * judged) / count
        d_vars = self.discriminator.trainable_variables
        self.discriminator_optimizer.apply_gradients(zip(tape.gradient(d_loss, d_vars), d_vars))
        logs = self._step_logs(loss, regularization, total)
        logs.update(adversarial_loss=adversarial, discriminator_loss=d_loss)
        return logs
