"""What the review families share (semax, review_mt, nor_reviews): the text they read, the
rating they predict, their text task and the explanations they generate.

A review family predicts the description's rating (its first regression task: RMSE and,
in the Evaluator, AUC at the description's `rating >= x` label, as every rating family)
from the user and item ids and the two sides' review documents: the `documents` column's
`user_<c>_docs_tokens` and `item_<c>_docs_tokens` [B, D, T], the user's and the item's
most recent earlier TRAINING reviews, oldest first (ExampleGen and Transform guarantee
that a row never sees its own text and that eval / test texts are never inputs).

Its text task reads the row's own text of the `target` column (`<c>_tokens`) in the loss
only: generating it (review_mt, nor_reviews) or rating it (SEMAX's related task). `forward`,
which gives the served rating, never reads it; `tests/test_review_families.py` changes a
row's own tokens and checks the rating does not move. `text_task=false` drops the text
task (the rating-only ablation; the model still reads the documents).

A family with a generator serves `explain`: for the raw inputs of `serving_default` it
generates the target column's text, up to `max_length` tokens, greedily or with a beam
(`beam_width`, `length_penalty`, `min_length`). It is trained by the `generate` recipe: the
joint objective stopped on `stop_on`, then, for `generator_epochs` > 0, the generator alone
until its eval perplexity stops falling (training/recipes/generate.py).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Tuple

import tensorflow as tf
import tf_keras as keras

from contract import description as desc
from contract import features as F
from models.base import EXPLAIN, SCORE, OneScoreModel
from models.blocks import text as text_blocks
from models.blocks.core import Bias, embedding
from models.hparams import HParams, TrainingParams
from models.tasks import GenerationTask

Encoded = Dict[str, tf.Tensor]
WORDS_SEED = 20  # seed offsets: the shared word embedding, the target column's own, the generator
TARGET_WORDS_SEED = 21
GENERATOR_SEED = 30
STOP_ON = ("rating", "joint")


@dataclasses.dataclass(frozen=True)
class ReviewParams(HParams):
    """What every review family takes.

    Attributes:
      documents: the interaction text column whose user and item documents are read
        ('': the description's first text column with `documents: true`).
      target: the text column of the row's own text that the text task reads ('': the
        documents column).
      dim: word embedding and id vector size.
      units: encoder and decoder state size.
      max_length: tokens of the target text trained on (the first ones, then the end) and
        generated at most by `explain`.
      text_task: train the text task; false: rating only (the ablation).
      l2: penalty on the looked-up id vectors and biases.
      dropout: dropout on the text representations the rating reads (training only).
      stop_on: what early stopping watches on the eval split: `rating` (its RMSE, what the
        Evaluator gates) or `joint` (the family's whole objective, text task included; the
        text task keeps training after the rating's best epoch).
      beam_width: `explain`'s decoding: 1 greedy, more a beam search of that width.
      length_penalty: the beam's texts are ranked by log-probability / length ** this
        (0: the most likely text, which favours short ones).
      min_length: `explain` writes at least this many tokens before the end.
      generator_epochs: after the joint training (stopped on `stop_on`), the generator's own
        weights train alone on the text task for up to this many epochs, stopped on the
        eval perplexity (training/recipes/generate.py); 0: no such stage. The rating's
        weights are frozen in it.
    """

    documents: str = ""
    target: str = ""
    dim: int = 32
    units: int = 32
    max_length: int = 12
    text_task: bool = True
    # Regularization chosen on the review benchmark's eval split (bench/review_text.py): with
    # l2 1e-3 and no dropout the rating's eval RMSE was best after one epoch and then rose.
    l2: float = 0.1
    dropout: float = 0.5
    stop_on: str = "rating"
    # Chosen on the review benchmark's eval split (bench/results/review_text_generator_stage_eval.md,
    # seed 42): greedy decoding wrote one text for nearly every row; a beam of 8 ranked per
    # token had the best ROUGE-L of the two generators within 0.1 of a beam of 16, at half
    # its cost, with length penalties 0.5 and 1.5 on either side. The generator stage ran 22
    # and 18 epochs before its eval perplexity stopped falling (157 -> 73, 168 -> 73).
    beam_width: int = 8
    length_penalty: float = 1.0
    min_length: int = 1
    generator_epochs: int = 40
    training: TrainingParams = TrainingParams(learning_rate=0.003, batch_size=128, max_epochs=15)

    def __post_init__(self):
        super().__post_init__()
        if self.stop_on not in STOP_ON:
            raise ValueError(f"stop_on must be one of {', '.join(STOP_ON)}, got {self.stop_on!r}")
        if self.dim < 1 or self.units < 1 or self.max_length < 1 or self.beam_width < 1:
            raise ValueError(f"dim, units, max_length and beam_width must be >= 1, got {self.dim}, {self.units}, "
                             f"{self.max_length}, {self.beam_width}")
        if not 1 <= self.min_length <= self.max_length:
            raise ValueError(f"min_length must be in [1, max_length={self.max_length}], got {self.min_length}")


def text_column(d: desc.Description, name: str, family: str, documents: bool) -> desc.Feature:
    """The interaction text column `name` ('' : the first one) of a description; with
    `documents`, among those with `documents: true`. A clear error when there is none."""
    columns = desc.text_docs(d.columns) if documents else d.text_columns
    what = "interaction text column with `documents: true`" if documents else "interaction text column"
    if not columns:
        raise ValueError(f"{family} reads review texts: dataset {d.name!r} ({d.path or 'a mapping'}) declares no "
                         f"{what} (interactions.columns.<name>: {{type: text"
                         f"{', documents: true' if documents else ''}}})")
    if not name:
        return columns[0]
    for c in columns:
        if c.name == name:
            return c
    names = [c.name for c in columns]
    raise ValueError(f"{family}: {name!r} is not an {what} of dataset {d.name!r}{desc.closest(name, names)}; "
                     f"those: {', '.join(names)}")


class ReviewModel(OneScoreModel):
    """Base of the review families: columns, word embeddings, the rating loss and the text task.

    A family defines `encode(features)` (everything both tasks read, from inputs only),
    `rating(encoded, features)` (the rating logit and the penalty), `objective(...)` (its paper's
    equation over the rating loss and its text terms) and, when it generates,
    `decoder_inputs(encoded)` (the generator's context, memory and memory mask).
    """

    capabilities = frozenset({SCORE})
    generates = False  # builds a SequenceGenerator (and serves `explain`)
    text_only = False  # a training step moves the generator's own weights on the text task alone

    def __init__(self, context, hparams: ReviewParams, **kwargs):
        super().__init__(context, hparams, **kwargs)
        family = type(self).__name__
        d = context.dataset.description
        self.documents_column = text_column(d, hparams.documents, family, documents=True)
        self.target_column = text_column(d, hparams.target or self.documents_column.name, family, documents=False)
        self.user_documents, self.item_documents = self.documents_column.document_transformed_names()
        self.target = self.target_column.transformed_name()
        self.document_rows = context.text_rows[self.documents_column.name]
        self.target_rows = context.text_rows[self.target_column.name]
        shared = self.target_column.name == self.documents_column.name
        rows = text_blocks.generator_rows(self.document_rows) if shared and self.generates else self.document_rows
        self.words = embedding(rows, hparams.dim, context.seed + WORDS_SEED, "words")
        if shared:
            self.target_words = self.words
        else:
            target_rows = text_blocks.generator_rows(self.target_rows) if self.generates else self.target_rows
            self.target_words = embedding(target_rows, hparams.dim, context.seed + TARGET_WORDS_SEED, "target_words")
        self.dropout = keras.layers.Dropout(hparams.dropout, seed=context.seed + 19)
        self.generator = self.generation = None
        if self.generates and hparams.text_task:
            self.generator = text_blocks.SequenceGenerator(self.target_rows, hparams.units, words=self.target_words,
                                                           seed=context.seed + GENERATOR_SEED, unknown=F.OOV_BUCKETS,
                                                           name="generator")
            self.generation = GenerationTask(self.target_column.name)
        else:
            self.capabilities = self.capabilities - {EXPLAIN}

    # -- what a family defines ---------------------------------------------------------
    def encode(self, features: Dict[str, tf.Tensor], training: bool = False) -> Encoded:
        raise NotImplementedError

    def rating(self, encoded: Encoded, features, training: bool = False) -> Tuple[tf.Tensor, tf.Tensor]:
        raise NotImplementedError

    def objective(self, rating_loss: tf.Tensor, penalty: tf.Tensor, encoded: Encoded, features,
             training: bool = False) -> tf.Tensor:
        raise NotImplementedError

    def decoder_inputs(self, encoded: Encoded) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} does not generate text")

    # -- shared -------------------------------------------------------------------------
    def forward(self, features, training=False):
        logit, penalty = self.rating(self.encode(features, training), features, training)
        return {self.task_name: logit}, penalty

    def compute_loss(self, features, training: bool = False) -> tf.Tensor:
        return self.loss_and_encoded(features, training)[0]

    def train_step(self, inputs):
        """The joint objective's step, or with `text_only` the text task's alone on the
        generator's own weights (the encoders read in inference mode, nothing else moves)."""
        if not self.text_only:
            return super().train_step(inputs)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            loss, _ = self.text_only_loss(inputs)
            scaled = loss / replicas if replicas > 1 else loss
        variables = self.generator_variables()
        self.optimizer.apply_gradients(zip(tape.gradient(scaled, variables), variables))
        return self._step_logs(loss, tf.constant(0.0), loss)

    def text_only_loss(self, features) -> Tuple[tf.Tensor, Encoded]:
        """The generator stage's loss (the text task alone, the encoders read in inference
        mode) and what `encode` gave."""
        encoded = self.encode(features, training=False)
        return self.generation_loss(encoded, features, training=True), encoded

    def generator_variables(self) -> List[tf.Variable]:
        """The generator's own trainable weights: its decoder, and its word vectors unless the
        encoders share them (then they stay what the rating reads)."""
        shared = {id(v) for v in self.words.weights} if self.generator.words is self.words else set()
        return [v for v in self.generator.trainable_variables if id(v) not in shared]

    def loss_and_encoded(self, features, training: bool = False) -> Tuple[tf.Tensor, Encoded]:
        """The family's objective on a batch, and what `encode` gave (a training step that
        needs more of the encoders reuses it)."""
        encoded = self.encode(features, training)
        logit, penalty = self.rating(encoded, features, training)
        task = self.pointwise[self.task_name]
        rating_loss = task(features[task.spec.label], logit, self.condition(features))
        return self.objective(rating_loss, penalty, encoded, features, training), encoded

    def condition(self, features) -> Optional[tf.Tensor]:
        """The rating task's condition (the rows with a rating), when the batch has it."""
        name = self.pointwise[self.task_name].spec.condition
        return features[name] if name and name in features else None

    def text_rows(self, features) -> tf.Tensor:
        """[B] 1.0 where the row's own target text exists and the rating's condition holds."""
        present = tf.cast(tf.reduce_any(tf.cast(features[self.target], tf.int64) > 0, axis=-1), tf.float32)
        condition = self.condition(features)
        return present if condition is None else present * tf.cast(condition, tf.float32)

    def generation_loss(self, encoded: Encoded, features, training: bool = False) -> tf.Tensor:
        """The generation task's loss: the row's own target text under teacher forcing."""
        targets = text_blocks.decoder_targets(features[self.target], self.hparams.max_length, self.generator.end)
        logits = self.generator(*self.decoder_inputs(encoded), targets, training=training)
        return self.generation(targets, logits, self.text_rows(features))

    def teacher_forced(self, features) -> Tuple[tf.Tensor, tf.Tensor]:
        """(targets [B, L], logits [B, L, C]) of the rows' own target texts (perplexity)."""
        targets = text_blocks.decoder_targets(features[self.target], self.hparams.max_length, self.generator.end)
        return targets, self.generator(*self.decoder_inputs(self.encode(features)), targets)

    def monitor(self, top_k: int = 10) -> Tuple[str, str]:
        """The rating's eval RMSE, or with `stop_on=joint` the eval objective (`val_loss`)."""
        if self.hparams.stop_on == "joint":
            return "val_loss", "min"
        return super().monitor(top_k)

    def explain(self, features: Dict[str, tf.Tensor]) -> tf.Tensor:
        """Generated target-column ids [B, max_length] (0 after the end) from the inputs alone,
        decoded as the hyperparameters say (greedy or a beam)."""
        if self.generator is None:
            raise ValueError(f"{type(self).__name__} trained without its text task generates nothing")
        return self.generator.generate(*self.decoder_inputs(self.encode(features)), self.hparams.max_length,
                                       **decoding(self.hparams))

    @property
    def explanation_vocabulary(self) -> str:
        """The Transform vocabulary whose words `explain`'s ids are."""
        return self.target_column.vocabulary_name


def decoding(hparams: ReviewParams) -> Dict[str, Any]:
    """The keyword arguments of `SequenceGenerator.generate` that the hyperparameters choose."""
    return {"beam_width": hparams.beam_width, "length_penalty": hparams.length_penalty,
            "min_length": hparams.min_length}


def id_vectors(context, dim: int, seed: int) -> Tuple[keras.layers.Layer, ...]:
    """User and item id embeddings and biases (the seeds of mf: users seed, items seed + 1)."""
    return (embedding(context.num_users, dim, seed, "user_embedding"), Bias(context.num_users, name="user_bias"),
            embedding(context.num_items, dim, seed + 1, "item_embedding"), Bias(context.num_items, name="item_bias"))
