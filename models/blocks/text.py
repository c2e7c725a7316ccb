"""Layers over token ids: word and document encoders, attention, and a text generator.

Token ids follow the Transform (0 padding, 1..V the column's vocabulary, V + 1 unknown);
documents are [B, D, T] with a user's or an item's texts oldest first and empty documents
(all 0) after them. A generator adds two ids after the vocabulary's rows: `END` (the text
ends) and `START` (fed before the first token). Nothing here knows of tasks or datasets.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import tensorflow as tf
import tf_keras as keras

from models.blocks.core import embedding

ENCODERS = ("cnn", "gru", "lstm", "mean")
CELLS = ("gru", "lstm")
NEG_INF = -1e9


def _glorot(seed: int):
    return keras.initializers.GlorotUniform(seed)


def masked_softmax(scores: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Softmax over the last axis where `mask` holds; rows with no True are all 0."""
    mask = tf.cast(mask, scores.dtype)
    weights = tf.nn.softmax(scores + (1.0 - mask) * NEG_INF, axis=-1) * mask
    return weights / tf.maximum(tf.reduce_sum(weights, axis=-1, keepdims=True), 1e-9)


def generator_rows(rows: int) -> int:
    """Embedding rows of a generated column: its token ids plus END and START."""
    return rows + 2


def _recurrent(cell: str, units: int, seed: int, name: str, unroll: bool = False) -> keras.layers.Layer:
    """A GRU / LSTM giving its outputs and last state; `unroll` for short sequences of a fixed
    length (documents, generated texts): a graph without a loop, faster to build and run."""
    if cell not in CELLS:
        raise ValueError(f"recurrent cell must be one of {', '.join(CELLS)}, got {cell!r}")
    layer = keras.layers.GRU if cell == "gru" else keras.layers.LSTM
    return layer(units, return_sequences=True, return_state=True, unroll=unroll, kernel_initializer=_glorot(seed),
                 recurrent_initializer=keras.initializers.Orthogonal(seed=seed + 1), name=name)


class Encoded(NamedTuple):
    """What an encoder gives: per-position states [..., L, d], their mask [..., L] and a vector [..., d]."""

    states: tf.Tensor
    mask: tf.Tensor
    vector: tf.Tensor


class TokenEncoder(keras.layers.Layer):
    """A text encoder over token ids [..., T] (any leading axes): each token's state and one
    vector per text, padding masked.

    Kinds: `cnn`: a convolution over a window of word vectors (ReLU), the vector the masked
    max over positions (DeepCoNN, NOR); `gru` / `lstm`: a recurrent layer's outputs, the
    vector its last state (SEMAX's word LSTM); `mean`: the word vectors themselves, the
    vector their masked mean. A text without a token gives zeros.

    Args:
      words: the word embedding (shared by the layers that share it).
      kind: one of ENCODERS.
      units: state size (`mean`: the embedding's size).
      seed: initialisation seed.
      window: the convolution's width.
    """

    def __init__(self, words: keras.layers.Embedding, kind: str, units: int, seed: int, window: int = 3, **kwargs):
        super().__init__(**kwargs)
        if kind not in ENCODERS:
            raise ValueError(f"text encoder must be one of {', '.join(ENCODERS)}, got {kind!r}")
        self.words = words
        self.kind = kind
        self.conv = self.rnn = None
        if kind == "cnn":
            self.conv = keras.layers.Conv1D(units, window, padding="same", activation="relu",
                                            kernel_initializer=_glorot(seed), name="conv")
        elif kind in CELLS:
            self.rnn = _recurrent(kind, units, seed, "rnn")

    def call(self, tokens: tf.Tensor, training: bool = False) -> Encoded:
        tokens = tf.cast(tokens, tf.int64)
        lead = tf.shape(tokens)[:-1]
        length = tf.shape(tokens)[-1]
        flat = tf.reshape(tokens, [-1, length])
        mask = flat > 0
        x = self.words(flat)
        fmask = tf.cast(mask, x.dtype)[..., None]
        if self.kind == "cnn":
            states = self.conv(x * fmask) * fmask
            vector = tf.reduce_max(states + (fmask - 1.0) * 1e4, axis=1) * tf.reduce_max(fmask, axis=1)
        elif self.kind == "mean":
            states = x * fmask
            vector = tf.reduce_sum(states, 1) / tf.maximum(tf.reduce_sum(fmask, 1), 1.0)
        else:
            out = self.rnn(x, mask=mask, training=training)
            states, vector = out[0] * fmask, out[1] * tf.reduce_max(fmask, axis=1)
        size = tf.shape(states)[-1]
        static = tokens.shape
        out = Encoded(tf.reshape(states, tf.concat([lead, [length, size]], 0)),
                      tf.reshape(mask, tf.concat([lead, [length]], 0)),
                      tf.reshape(vector, tf.concat([lead, [size]], 0)))
        out.states.set_shape(static.concatenate([states.shape[-1]]))
        out.mask.set_shape(static)
        out.vector.set_shape(static[:-1].concatenate([states.shape[-1]]))
        return out


class DocumentEncoder(keras.layers.Layer):
    """A time-ordered document encoder: documents [B, D, T] (oldest first) -> a text encoder
    on each document, then a GRU / LSTM over the document vectors in time order (empty
    documents masked). Gives the per-document states [B, D, d], the document mask and the
    last state [B, d] (SEMAX's dynamic user / item representation); `words` the per-word
    states [B, D, T, u] of the text encoder.

    Args:
      text: the per-document TokenEncoder (shared where documents share it).
      units: the recurrent layer's size.
      cell: gru or lstm.
      seed: initialisation seed.
    """

    def __init__(self, text: TokenEncoder, units: int, cell: str, seed: int, **kwargs):
        super().__init__(**kwargs)
        self.text = text
        self.rnn = _recurrent(cell, units, seed, "time_rnn", unroll=True)

    def call(self, documents: tf.Tensor, training: bool = False) -> Tuple[Encoded, Encoded]:
        """(documents encoded in time order, their words encoded)."""
        words = self.text(documents, training=training)
        present = tf.reduce_any(words.mask, axis=-1)  # [B, D]
        out = self.rnn(words.vector, mask=present, training=training)
        fmask = tf.cast(present, out[0].dtype)
        states = out[0] * fmask[..., None]
        last = out[1] * tf.reduce_max(fmask, axis=1, keepdims=True)
        return Encoded(states, present, last), words


def flatten_words(words: Encoded) -> Encoded:
    """Word states of several documents [B, D, T, d] as one sequence [B, D * T, d]."""
    shape = tf.shape(words.states)
    states = tf.reshape(words.states, [shape[0], shape[1] * shape[2], shape[3]])
    return Encoded(states, tf.reshape(words.mask, [shape[0], shape[1] * shape[2]]), words.vector)


class WordAttention(keras.layers.Layer):
    """Additive attention over states [B, T, d] conditioned on a vector [B, c] (SEMAX's word
    attention given the user and the item): weights softmax_t(v . tanh(W s_t + U c)) over the
    unmasked positions; returns the weighted sum [B, d] and the weights [B, T].

    Args:
      units: the attention's hidden size.
      seed: initialisation seed.
    """

    def __init__(self, units: int, seed: int, **kwargs):
        super().__init__(**kwargs)
        self.keys = keras.layers.Dense(units, use_bias=False, kernel_initializer=_glorot(seed), name="keys")
        self.query = keras.layers.Dense(units, kernel_initializer=_glorot(seed + 1), name="query")
        self.score = keras.layers.Dense(1, use_bias=False, kernel_initializer=_glorot(seed + 2), name="score")

    def call(self, states: tf.Tensor, mask: tf.Tensor, condition: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
        hidden = tf.tanh(self.keys(states) + self.query(condition)[:, None, :])
        weights = masked_softmax(tf.squeeze(self.score(hidden), -1), mask)
        return tf.reduce_sum(states * weights[..., None], axis=1), weights


class MutualAttention(keras.layers.Layer):
    """Two sets of states read against each other (NOR's mutual attention, as attentive
    pooling: dos Santos et al., 2016): G = tanh(A W B^T) [B, M, N]; A's weights are the
    softmax over M of each row's max over B's positions, B's the softmax over N of each
    column's max over A's (masked positions take no part). Returns the two weighted sums
    [B, d] and the two weight vectors.

    Args:
      size: the states' size.
      seed: initialisation seed.
    """

    def __init__(self, size: int, seed: int, **kwargs):
        super().__init__(**kwargs)
        self.bilinear = self.add_weight(name="bilinear", shape=(size, size), initializer=_glorot(seed))

    def call(self, a: tf.Tensor, a_mask: tf.Tensor, b: tf.Tensor, b_mask: tf.Tensor):
        g = tf.tanh(tf.matmul(tf.einsum("bmd,de->bme", a, self.bilinear), b, transpose_b=True))
        both = tf.cast(a_mask, g.dtype)[:, :, None] * tf.cast(b_mask, g.dtype)[:, None, :]
        g = g * both + (both - 1.0) * 2.0  # masked entries below tanh's range
        a_weights = masked_softmax(tf.reduce_max(g, axis=2), a_mask)
        b_weights = masked_softmax(tf.reduce_max(g, axis=1), b_mask)
        pooled_a = tf.reduce_sum(a * a_weights[..., None], axis=1)
        pooled_b = tf.reduce_sum(b * b_weights[..., None], axis=1)
        return pooled_a, pooled_b, a_weights, b_weights


def decoder_targets(tokens: tf.Tensor, max_length: int, end: int) -> tf.Tensor:
    """A text's ids [B, T] (0-padded) -> the generator's targets [B, max_length + 1]: the first
    `max_length` tokens, then END, then 0. A row without a token gets END alone."""
    tokens = tf.cast(tokens[:, :max_length], tf.int64)
    width = tf.shape(tokens)[1]
    tokens = tf.pad(tokens, [[0, 0], [0, max_length + 1 - width]])
    tokens.set_shape([None, max_length + 1])
    length = tf.reduce_sum(tf.cast(tokens > 0, tf.int64), axis=1)
    return tokens + tf.one_hot(length, max_length + 1, on_value=tf.constant(end, tf.int64),
                               off_value=tf.constant(0, tf.int64), dtype=tf.int64)


class SequenceGenerator(keras.layers.Layer):
    """A GRU / LSTM decoder with attention over encoder states: it generates a text's ids given
    a context vector (the initial state: tanh(W context)) and a memory of states with their
    mask. At each position the decoder state attends over the memory (Luong's global
    attention, dot product of the state with the projected memory) and tanh(W_c [state;
    attended]) gives the logits over the column's ids, END and START (0 and START never come
    out). `call` is teacher forcing (the target shifted right after START), `generate` greedy
    decoding or sampling.

    Args:
      rows: the generated column's token ids (padding 0, vocabulary, unknown); END = rows,
        START = rows + 1.
      unknown: how many of the last ids before END are unknown-word ids: trained on (a
        target may hold them) but never generated.
      units: the decoder's size.
      words: the word embedding of the generated column with `generator_rows(rows)` rows
        (shared with an encoder of the same column), or None for its own of size `units`.
      cell: gru or lstm.
      seed: initialisation seed.
    """

    def __init__(self, rows: int, units: int, words: Optional[keras.layers.Embedding] = None, cell: str = "gru",
                 seed: int = 0, unknown: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.rows = int(rows)
        self.end = self.rows
        self.start = self.rows + 1
        self.cell = cell
        self.words = words if words is not None else embedding(generator_rows(rows), units, seed, "words")
        self.init = keras.layers.Dense(units * (2 if cell == "lstm" else 1), activation="tanh",
                                       kernel_initializer=_glorot(seed + 1), name="init")
        self.rnn = _recurrent(cell, units, seed + 2, "rnn", unroll=True)
        self.memory_keys = keras.layers.Dense(units, kernel_initializer=_glorot(seed + 4), name="memory_keys")
        self.combine = keras.layers.Dense(units, activation="tanh", kernel_initializer=_glorot(seed + 5),
                                          name="combine")
        self.out = keras.layers.Dense(generator_rows(rows), kernel_initializer=_glorot(seed + 6), name="out")
        blocked = [0.0] * generator_rows(rows)
        blocked[0] = blocked[self.start] = NEG_INF
        self.blocked = tf.constant(blocked, tf.float32)
        never = [0.0] * generator_rows(rows)
        for i in range(self.rows - int(unknown), self.rows):
            never[i] = NEG_INF
        self.never = tf.constant(never, tf.float32)  # what `generate` never writes: the unknown ids

    def _state(self, context: tf.Tensor):
        state = self.init(context)
        return tf.split(state, 2, axis=-1) if self.cell == "lstm" else [state]

    def _logits(self, outputs: tf.Tensor, keys: tf.Tensor, memory_mask: tf.Tensor) -> tf.Tensor:
        weights = masked_softmax(tf.matmul(outputs, keys, transpose_b=True), memory_mask[:, None, :])
        attended = tf.matmul(weights, keys)
        return self.out(self.combine(tf.concat([outputs, attended], -1))) + self.blocked

    def call(self, context: tf.Tensor, memory: tf.Tensor, memory_mask: tf.Tensor, targets: tf.Tensor,
             training: bool = False) -> tf.Tensor:
        """Teacher forcing: logits [B, L, rows + 2] of targets [B, L] (`decoder_targets`)."""
        targets = tf.cast(targets, tf.int64)
        inputs = tf.concat([tf.fill([tf.shape(targets)[0], 1], tf.constant(self.start, tf.int64)), targets[:, :-1]], 1)
        out = self.rnn(self.words(inputs), initial_state=self._state(context), training=training)
        return self._logits(out[0], self.memory_keys(memory), memory_mask)

    def _step(self, token: tf.Tensor, state, keys: tf.Tensor, memory_mask: tf.Tensor, step: int, min_length: int):
        """One decoding step: (log-probabilities [N, C] of the next id, the new state); the
        unknown ids never, END not before `min_length` tokens."""
        out = self.rnn(self.words(token[:, None]), initial_state=state)
        logits = self._logits(out[0], keys, memory_mask)[:, 0, :] + self.never
        if step < min_length:
            logits += tf.one_hot(self.end, generator_rows(self.rows), on_value=NEG_INF, off_value=0.0)
        return logits, list(out[1:])

    def generate(self, context: tf.Tensor, memory: tf.Tensor, memory_mask: tf.Tensor, max_length: int,
                 sample: bool = False, seed: Optional[int] = None, min_length: int = 1, beam_width: int = 1,
                 length_penalty: float = 0.0) -> tf.Tensor:
        """Ids [B, max_length] one token at a time, each fed back: the most likely token
        (greedy), one drawn from the softmax with `sample`, or with `beam_width` > 1 the text
        of highest log-probability / length ** length_penalty among `beam_width` kept
        prefixes (beam search); never an unknown-word id, and END not before `min_length`
        tokens (a text has a word); 0 from the END on (END itself is not returned)."""
        if beam_width > 1:
            if sample:
                raise ValueError("decoding either samples or searches a beam, not both")
            return self._beam(context, memory, memory_mask, int(max_length), int(min_length), int(beam_width),
                              float(length_penalty))
        keys = self.memory_keys(memory)
        state = self._state(context)
        batch = tf.shape(context)[0]
        token = tf.fill([batch], tf.constant(self.start, tf.int64))
        done = tf.zeros([batch], tf.bool)
        ids = []
        for step in range(int(max_length)):
            logits, state = self._step(token, state, keys, memory_mask, step, min_length)
            if sample:
                token = tf.random.categorical(logits, 1, seed=seed)[:, 0]
            else:
                token = tf.argmax(logits, axis=-1)
            done = done | tf.equal(token, self.end)
            token = tf.where(done, tf.constant(0, tf.int64), token)
            ids.append(token)
        return tf.stack(ids, axis=1)

    def _beam(self, context, memory, memory_mask, max_length: int, min_length: int, width: int,
              length_penalty: float) -> tf.Tensor:
        """Beam search (see `generate`): per row `width` prefixes [B, K]; a finished prefix
        carries its score unchanged; at the end each prefix's log-probability is divided by
        its length (END counted) ** length_penalty and the best one is returned."""
        classes = generator_rows(self.rows)
        batch = tf.shape(context)[0]

        def tile(x):  # [B, ...] -> [B * K, ...], each row's K copies together
            return tf.repeat(x, width, axis=0)

        keys = tile(self.memory_keys(memory))
        mask = tile(memory_mask)
        state = [tile(s) for s in self._state(context)]
        token = tf.fill([batch * width], tf.constant(self.start, tf.int64))
        # Only the first prefix is alive at the start (the K copies would give K equal beams).
        scores = tf.tile(tf.concat([[0.0], tf.fill([width - 1], NEG_INF)], 0)[None, :], [batch, 1])
        done = tf.zeros([batch, width], tf.bool)
        lengths = tf.zeros([batch, width], tf.float32)
        history = tf.zeros([batch, width, 0], tf.int64)
        # A finished prefix continues with id 0 alone, at no cost.
        finished_row = tf.one_hot(0, classes, on_value=0.0, off_value=NEG_INF)
        for step in range(max_length):
            logits, state = self._step(token, state, keys, mask, step, min_length)
            log_p = tf.reshape(tf.nn.log_softmax(logits), [batch, width, classes])
            log_p = tf.where(done[..., None], finished_row[None, None, :], log_p)
            total = tf.reshape(scores[..., None] + log_p, [batch, width * classes])
            scores, flat = tf.math.top_k(total, k=width)
            parent = flat // classes
            chosen = tf.cast(flat % classes, tf.int64)
            done = tf.gather(done, parent, batch_dims=1)
            lengths = tf.gather(lengths, parent, batch_dims=1) + tf.cast(~done, tf.float32)
            history = tf.gather(history, parent, batch_dims=1)
            written = tf.where(done | tf.equal(chosen, self.end), tf.constant(0, tf.int64), chosen)
            history = tf.concat([history, written[..., None]], axis=-1)
            done = done | tf.equal(chosen, self.end)
            rows = tf.reshape(parent + tf.range(batch)[:, None] * width, [-1])
            state = [tf.gather(s, rows) for s in state]
            token = tf.reshape(tf.where(done, tf.constant(self.end, tf.int64), chosen), [-1])
        normalized = scores / tf.pow(tf.maximum(lengths, 1.0), length_penalty)
        best = tf.argmax(normalized, axis=-1, output_type=tf.int32)
        return tf.gather(history, best, batch_dims=1)


class TextDiscriminator(keras.layers.Layer):
    """A convolutional discriminator of texts written by a user ("Why I like it"'s adversarial
    stage): token ids [B, L] (0-padded) and user ids [B] -> a logit that the text is a human
    review written by that user. Its own word and user embeddings, convolutions of widths
    `windows` (ReLU, max over positions), then a layer over [text features; user vector].

    Args:
      rows: token id rows (a generator's `generator_rows`).
      num_users: user id rows.
      dim: embedding size.
      filters: convolution filters per width.
      seed: initialisation seed.
      windows: convolution widths.
    """

    def __init__(self, rows: int, num_users: int, dim: int, filters: int, seed: int,
                 windows: Tuple[int, ...] = (2, 3), **kwargs):
        super().__init__(**kwargs)
        self.words = embedding(rows, dim, seed, "words")
        self.users = embedding(num_users, dim, seed + 1, "users")
        self.convs = [keras.layers.Conv1D(filters, w, padding="same", activation="relu",
                                          kernel_initializer=_glorot(seed + 2 + k), name=f"conv_{w}")
                      for k, w in enumerate(windows)]
        self.hidden = keras.layers.Dense(filters, activation="relu", kernel_initializer=_glorot(seed + 10),
                                         name="hidden")
        self.logit = keras.layers.Dense(1, kernel_initializer=_glorot(seed + 11), name="logit")

    def call(self, tokens: tf.Tensor, users: tf.Tensor) -> tf.Tensor:
        tokens = tf.cast(tokens, tf.int64)
        mask = tf.cast(tokens > 0, tf.float32)[..., None]
        x = self.words(tokens) * mask
        pooled = [tf.reduce_max(conv(x) * mask, axis=1) for conv in self.convs]
        features = tf.concat(pooled + [self.users(users)], -1)
        return tf.squeeze(self.logit(self.hidden(features)), -1)
