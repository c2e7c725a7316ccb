"""Exports a trained model as a SavedModel whose signatures follow its capabilities.

- score: `serving_default` (serialized raw `tf.Example`s; the Transform graph runs inside
  the model, so there is no train/serve skew; one output per task) and
  `transform_features` (for the Evaluator).
- retrieve: `recommend` (a batch of histories -> the top-K items over the catalogue and
  their scores, never an item of the history), `recommend_excluding` (the same plus
  `exclude_item_ids`, items never to return that are not part of the query: a client that
  sends only its most recent items still excludes everything it rated), `rank_queries` (serialized user-view
  examples -> ranked item rows, the popularity ranking and the target rows, for the
  Evaluator's protocol K) and `score_queries` (the same examples -> every item's score,
  the history rows, the popularity ranking, the target rows and the user, for protocol
  S's full and sampled candidates). Without `score`, `serving_default` is `recommend`.
  With the family's `scann` on, `recommend`, `recommend_excluding` and `rank_queries` take
  the top K from a ScaNN index of the candidates built here (export/scann_index.py; same
  outputs, the exclusions over-fetched like the history).
- similar: `similar_items` (item ids -> the K items with the closest vectors, cosine, blended
  with category-set cosine by the family's `similar_category_weight`).
- explain: `explain` (the serialized raw examples `serving_default` takes, documents
  included -> each task's output and the generated explanation: decoding (greedy or a beam,
  as the model record's hparams say) inside the SavedModel, at most the family's
  `max_length` words, the words of the Transform vocabulary `model.explanation_vocabulary`,
  `<unk>` for an id outside it).

`serving_default`'s request features are the description's raw features a client sends
(`contract.description.raw_features`, `serving=True`); `recommend`'s behavior vocabulary
and default behavior are the description's.

`recommend` rejects what it would silently misread: `history_item_ids` and
`history_behaviors` of different shapes, a behavior outside the dataset's vocabulary, or a
history whose items are all unknown (INVALID_ARGUMENT in TF Serving, the message naming
the inputs and their shapes or values). Unknown items next to known ones are ignored, and
an empty history is allowed (the answer is the model's item prior). A SavedModel signature
has fixed inputs, and TF Serving's batching needs every input of a request to have the
same number of rows, so the exclusions are a second signature rather than an optional
input with a default. Where fewer than K items are left to recommend, the missing places
have the id "" and the score -inf.
"""

from __future__ import annotations

import json
import os
from typing import Dict

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from contract import datasets as D
from contract import description as desc
from contract import features as F
from common.io_utils import atomic_write
from contract import protocol
from export.request_checks import assert_same_rows, assert_same_shape
from export.scann_index import scann_top_k
from models.base import EXPLAIN, RETRIEVE, SCORE, SIMILAR, TEACH, RecModel

HISTORY_SEQUENCES = (F.HISTORY_ITEM_IDX, F.HISTORY_BEHAVIOR_IDX)
# What a model scoring user-view examples reads of them.
HISTORY_SPEC = {F.HISTORY_ITEM_IDS: tf.io.VarLenFeature(tf.string), F.HISTORY_BEHAVIORS: tf.io.VarLenFeature(tf.string)}


def densify(features: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    """Sparse history sequences -> dense, 0-padded (row length = the bucket)."""
    out = dict(features)
    for name in HISTORY_SEQUENCES:
        value = out.get(name)
        if isinstance(value, tf.SparseTensor):
            out[name] = tf.sparse.to_dense(value, default_value=0)
        elif isinstance(value, tf.RaggedTensor):
            out[name] = value.to_tensor(default_value=0)
    return out


def serving_feature_spec(tf_transform_output: tft.TFTransformOutput, spec: D.DatasetSpec) -> Dict:
    """Raw features a client sends to `serving_default`: the description's raw features with
    `serving=True` (ids, history, side-table features, documents; no labels, timestamp,
    split or interaction outcomes), parsed as the Transform's raw schema says. The split
    is parsed too, "" when absent (a client sends none): the Transform gives a row whose
    split is not train the full item statistics, and without the input it would drop them."""
    raw = tf_transform_output.raw_feature_spec()
    served = [f.name for f in desc.raw_features(spec.description) if f.serving]
    missing = [name for name in served if name not in raw]
    if missing:
        raise ValueError(f"the Transform's raw schema has no feature {missing} that dataset {spec.name!r} serves; "
                         f"its raw features: {sorted(raw)} (regenerate the schema from the description)")
    out = {name: raw[name] for name in served}
    if isinstance(raw.get(F.SPLIT), tf.io.FixedLenFeature):
        shape = list(raw[F.SPLIT].shape)
        out[F.SPLIT] = tf.io.FixedLenFeature(shape, tf.string, default_value=[""] * shape[0] if shape else "")
    elif F.SPLIT in raw:
        out[F.SPLIT] = raw[F.SPLIT]  # a VarLenFeature: absent is empty, which is not train
    return out


class Catalogue(tf.Module):
    """Item id strings <-> item rows, which rows are candidates, and their popularity."""

    def __init__(self, vocabulary, valid_rows, num_rows: int, counts):
        super().__init__()
        ids = [b""] + [v if isinstance(v, bytes) else v.encode() for v in vocabulary]
        ids += [b""] * (num_rows - len(ids))
        self.ids = tf.Variable(tf.constant(ids, tf.string), trainable=False, name="candidate_ids")
        self.valid = tf.Variable(tf.constant(valid_rows, tf.bool), trainable=False, name="candidate_valid")
        self.popularity = tf.Variable(tf.constant(np.asarray(counts, np.float32)), trainable=False,
                                      name="candidate_popularity")
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(ids[1: len(vocabulary) + 1], tf.string),
                tf.range(1, len(vocabulary) + 1, dtype=tf.int64),
            ),
            default_value=0,
        )

    def lookup(self, item_ids: tf.Tensor) -> tf.Tensor:
        """Rows of item ids; 0 for unknown ids and padding."""
        return self.table.lookup(item_ids)


class TrainedWeights(tf.Module):
    """The model's trainable weights in its order, saved as the export's own list: a warm start
    reads them (training/warm_start.py) whether or not Keras serialized the model (a model
    never called, such as a retrieve-only one, it does not)."""

    def __init__(self, variables):
        super().__init__()
        self.ordered = list(variables)


def _mask_rows(scores: tf.Tensor, rows: tf.Tensor) -> tf.Tensor:
    """Sets scores[b, rows[b, j]] to -inf for every j (rows: [B, L] int64)."""
    batch = tf.shape(rows, out_type=tf.int64)[0]
    length = tf.shape(rows, out_type=tf.int64)[1]
    b = tf.repeat(tf.range(batch), length)
    indices = tf.stack([b, tf.reshape(rows, [-1])], axis=1)
    return tf.tensor_scatter_nd_update(
        scores, indices, tf.fill(tf.shape(indices)[:1], tf.constant(-float("inf"), scores.dtype)))


def export_model(
    model: RecModel,
    tf_transform_output: tft.TFTransformOutput,
    valid_rows,
    output_dir: str,
    top_k: int = 10,
    family: str = "",
) -> None:
    """Saves `model` with the signatures of its capabilities to `output_dir`, and with
    `family`, the model record (`read_model_record`: family, hyperparameters, dataset name
    and description, max_history)."""
    spec = model.context.dataset
    capabilities = model.capabilities
    model.tft_layer = tf_transform_output.transform_features_layer()

    def transform(features):
        """The Transform's outputs for raw `features` (some of its raw features), the history
        sequences dense. It runs the layer's `call`, not the layer: Keras then never marks the
        layer built, so saving skips tracing it again (logging that it skips it), each trace
        pruning the Transform graph anew (about 0.5 s CPU, two traces an export). The layer
        stays tracked by the model, so its tables and vocabulary assets are saved."""
        return densify(model.tft_layer.call(features))

    traced = {}

    def transform_examples(examples, feature_spec):
        """`transform` of serialized examples parsed with `feature_spec`, through one tf.function a
        spec, so the signatures that parse alike share its trace (each trace prunes the Transform graph)."""
        key = repr(sorted(feature_spec.items()))
        if key not in traced:
            traced[key] = tf.function(lambda batch: transform(tf.io.parse_example(batch, feature_spec)),
                                      input_signature=[tf.TensorSpec([None], tf.string)])
        return traced[key](examples)

    @tf.function(input_signature=[{name: tf.SparseTensorSpec([None, None], tf.string) for name in HISTORY_SPEC}])
    def transform_histories(histories):
        """`transform` of sparse string histories, traced once for every signature that reads them."""
        return transform(histories)

    vocabulary = tf_transform_output.vocabulary_by_name(F.ITEM_VOCAB)
    counts = model.context.item_counts if model.context.item_counts is not None else np.zeros(len(valid_rows))
    model.catalogue = Catalogue(vocabulary, valid_rows, model.context.num_items, counts)
    setattr(model, protocol.TRAINED_WEIGHTS, TrainedWeights(model.trainable_variables))
    k = min(top_k, int(np.sum(valid_rows)))
    signatures = {}

    if SCORE in capabilities:
        # A model scoring user-view examples reads their history, and the Evaluator's label
        # comes from the examples' target behaviors (`example_labels`).
        on_users = model.score_view == F.USER_VIEW
        serving_spec = HISTORY_SPEC if on_users else serving_feature_spec(tf_transform_output, spec)
        raw_spec = ({**HISTORY_SPEC, F.TARGET_BEHAVIORS: tf.io.VarLenFeature(tf.string)} if on_users
                    else tf_transform_output.raw_feature_spec())

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=protocol.EXAMPLES)])
        def serve(examples):
            return model(transform_examples(examples, serving_spec))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=protocol.EXAMPLES)])
        def transform_features(examples):
            parsed = tf.io.parse_example(examples, raw_spec)
            out = transform({k: v for k, v in parsed.items() if k != F.TARGET_BEHAVIORS})
            if on_users:
                targets = tf.RaggedTensor.from_sparse(parsed[F.TARGET_BEHAVIORS]).to_tensor(default_value="",
                                                                                             shape=[None, 1])
                out.update(model.example_labels(targets))
            return out

        signatures[protocol.SERVING_DEFAULT] = serve.get_concrete_function()
        signatures[protocol.TRANSFORM_FEATURES] = transform_features.get_concrete_function()

    if EXPLAIN in capabilities:
        model.explanation_words = tf.Variable(
            explanation_words(tf_transform_output, model.explanation_vocabulary, model.generator.end + 2),
            trainable=False, name="explanation_words")
        explain_spec = serving_feature_spec(tf_transform_output, spec)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=protocol.EXAMPLES)])
        def explain(examples):
            features = transform_examples(examples, explain_spec)
            words = tf.gather(model.explanation_words, model.explain(features))
            text = tf.strings.reduce_join(tf.ragged.boolean_mask(words, tf.not_equal(words, "")), axis=-1,
                                          separator=" ")
            return {**model(features), protocol.EXPLANATION: text, protocol.EXPLANATION_TOKENS: words}

        signatures[protocol.EXPLAIN] = explain.get_concrete_function()

    if TEACH in capabilities:
        transformed_spec = tf_transform_output.transformed_feature_spec()

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=protocol.EXAMPLES)])
        def soft_labels(examples):
            parsed = tf.io.parse_example(examples, transformed_spec)
            return model.soft_labels({k: tf.sparse.to_dense(v) if isinstance(v, tf.SparseTensor) else v
                                      for k, v in parsed.items()})

        signatures[protocol.SOFT_LABELS] = soft_labels.get_concrete_function()

    def encoded_histories(history_item_ids, history_behaviors, validate: bool):
        """Transformed histories (item and behavior rows, as the query reads them) of
        histories of strings ("" pads), and their rows [B, L] (0 = padding or unknown)."""
        present = tf.not_equal(history_item_ids, "")
        behaviors = tf.where(present & tf.equal(history_behaviors, ""), tf.constant(spec.default_behavior),
                             history_behaviors)
        rows = model.catalogue.lookup(history_item_ids)
        checks = []
        if validate:
            known_behavior = tf.reduce_any(
                tf.equal(behaviors[..., None], tf.constant(list(spec.behaviors) + [""])), axis=-1)
            checks.append(tf.debugging.assert_equal(
                tf.reduce_all(known_behavior | ~present), True,
                message=f"recommend: history_behaviors holds a value that is not one of "
                        f"{list(spec.behaviors)} (or \"\" for the default {spec.default_behavior!r})"))
            any_known = tf.reduce_any(rows > 0, axis=1) | ~tf.reduce_any(present, axis=1)
            checks.append(tf.debugging.assert_equal(
                tf.reduce_all(any_known), True,
                message="recommend: a history holds item ids but none of them is in the catalogue of the model "
                        "(its training vocabulary); send at least one known item, or an empty history"))
        with tf.control_dependencies(checks):
            history = transform_histories({
                F.HISTORY_ITEM_IDS: tf.ragged.boolean_mask(history_item_ids, present).to_sparse(),
                F.HISTORY_BEHAVIORS: tf.ragged.boolean_mask(behaviors, present).to_sparse(),
            })
        return history, rows

    def exact_scores(history, rows):
        """Scores [B, N] of every row (-inf where no item) for transformed histories."""
        scores = model.score_catalogue(history[F.HISTORY_ITEM_IDX], history[F.HISTORY_BEHAVIOR_IDX])
        return tf.where(model.catalogue.valid[None, :], scores, -float("inf"))

    def catalogue_scores(history_item_ids, history_behaviors, validate: bool):
        """Scores [B, N] of every row (-inf where no item) for histories of strings ("" pads),
        and the histories' rows [B, L] (0 = padding or unknown)."""
        history, rows = encoded_histories(history_item_ids, history_behaviors, validate)
        return exact_scores(history, rows), rows

    def exact_top(history, excluded):
        """The top K [B, k] rows and scores by scoring every item, never a row of `excluded`
        [B, E]: every history item (not only the most recent ones the query read), and
        recommend_excluding's exclusions."""
        top = tf.math.top_k(_mask_rows(exact_scores(history, excluded), excluded), k=k)
        return top.indices, top.values

    # With the family's `scann` on, the top K comes from a ScaNN index of the candidates
    # (export/scann_index.py), the history excluded the same way.
    model.top_k_index = scann_top_k(model, valid_rows, k) if RETRIEVE in capabilities else None

    def top_items(history_item_ids, history_behaviors, validate: bool, exclude_item_ids=None):
        """Ranked rows [B, k] and scores for histories of strings ("" pads), never an item
        of the history or of `exclude_item_ids` ([B, E] strings, "" pads, unknown ids
        ignored), and the histories' rows [B, L]."""
        history, rows = encoded_histories(history_item_ids, history_behaviors, validate)
        excluded = rows if exclude_item_ids is None else tf.concat(
            [rows, model.catalogue.lookup(exclude_item_ids)], axis=1)
        if model.top_k_index is None:
            indices, values = exact_top(history, excluded)
        else:
            # The index over-fetches by the excluded rows (history and exclusions alike).
            queries, query_biases = model.query(history[F.HISTORY_ITEM_IDX], history[F.HISTORY_BEHAVIOR_IDX])

            def exact_rows(which):
                """The exact top K of the histories [B] bool `which` (the index left them short)."""
                return exact_top({name: tf.boolean_mask(history[name], which) for name in HISTORY_SEQUENCES},
                                 tf.boolean_mask(excluded, which))

            indices, values = model.top_k_index.top_k(queries, query_biases, excluded, k, exact=exact_rows)
        return indices, values, rows

    def answer(indices, values):
        """recommend's outputs: ids ("" where no item is left, score -inf) and scores."""
        ids = tf.where(tf.math.is_finite(values), tf.gather(model.catalogue.ids, indices), protocol.HISTORY_PAD)
        return {protocol.RECOMMEND_ITEM_IDS: ids, protocol.RECOMMEND_SCORES: values}

    def history_checks(signature, history_item_ids, history_behaviors):
        """The histories' ids and behaviors align: one shape, checked before anything reads them."""
        return [assert_same_shape(signature, F.HISTORY_ITEM_IDS, history_item_ids,
                                  F.HISTORY_BEHAVIORS, history_behaviors)]

    if RETRIEVE in capabilities:
        @tf.function(input_signature=[
            tf.TensorSpec([None, None], tf.string, name=F.HISTORY_ITEM_IDS),
            tf.TensorSpec([None, None], tf.string, name=F.HISTORY_BEHAVIORS),
        ])
        def recommend(history_item_ids, history_behaviors):
            with tf.control_dependencies(history_checks(protocol.RECOMMEND, history_item_ids, history_behaviors)):
                history_item_ids = tf.identity(history_item_ids)
            indices, values, _ = top_items(history_item_ids, history_behaviors, validate=True)
            return answer(indices, values)

        @tf.function(input_signature=[
            tf.TensorSpec([None, None], tf.string, name=F.HISTORY_ITEM_IDS),
            tf.TensorSpec([None, None], tf.string, name=F.HISTORY_BEHAVIORS),
            tf.TensorSpec([None, None], tf.string, name=protocol.EXCLUDE_ITEM_IDS),
        ])
        def recommend_excluding(history_item_ids, history_behaviors, exclude_item_ids):
            checks = history_checks(protocol.RECOMMEND_EXCLUDING, history_item_ids, history_behaviors)
            checks.append(assert_same_rows(protocol.RECOMMEND_EXCLUDING, F.HISTORY_ITEM_IDS, history_item_ids,
                                           protocol.EXCLUDE_ITEM_IDS, exclude_item_ids))
            with tf.control_dependencies(checks):
                history_item_ids = tf.identity(history_item_ids)
            indices, values, _ = top_items(history_item_ids, history_behaviors, validate=True,
                                           exclude_item_ids=exclude_item_ids)
            return answer(indices, values)

        query_spec = {
            F.HISTORY_ITEM_IDS: tf.io.VarLenFeature(tf.string),
            F.HISTORY_BEHAVIORS: tf.io.VarLenFeature(tf.string),
            F.TARGET_ITEM_IDS: tf.io.VarLenFeature(tf.string),
            F.USER_ID: tf.io.FixedLenFeature([], tf.string, default_value=""),
        }

        def parse_queries(examples):
            """(history ids, behaviors, target rows with TARGET_PAD, user ids) of user-view examples."""
            parsed = tf.io.parse_example(examples, query_spec)
            items = tf.sparse.to_dense(parsed[F.HISTORY_ITEM_IDS], default_value="")
            behaviors = tf.sparse.to_dense(parsed[F.HISTORY_BEHAVIORS], default_value="")
            target_ids = tf.sparse.to_dense(parsed[F.TARGET_ITEM_IDS], default_value="")
            targets = tf.where(tf.not_equal(target_ids, ""), model.catalogue.lookup(target_ids),
                               tf.constant(protocol.TARGET_PAD, tf.int64))
            return items, behaviors, targets, parsed[F.USER_ID]

        def popular_rows(rows):
            """The training-popularity top k per history [B, k], the history excluded."""
            popular = tf.where(model.catalogue.valid, model.catalogue.popularity, -float("inf"))
            popular = _mask_rows(tf.tile(popular[None, :], [tf.shape(rows)[0], 1]), rows)
            return tf.math.top_k(popular, k=k).indices

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=protocol.EXAMPLES)])
        def rank_queries(examples):
            items, behaviors, targets, _ = parse_queries(examples)
            indices, _, rows = top_items(items, behaviors, validate=False)
            return {
                protocol.RANKED_ROWS: indices,
                protocol.POPULAR_ROWS: popular_rows(rows),
                protocol.TARGET_ROWS: targets,
            }

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=protocol.EXAMPLES)])
        def score_queries(examples):
            items, behaviors, targets, users = parse_queries(examples)
            scores, rows = catalogue_scores(items, behaviors, validate=False)
            return {
                protocol.CATALOGUE_SCORES: scores,
                protocol.HISTORY_ROWS: rows,
                protocol.POPULAR_ROWS: popular_rows(rows),
                protocol.TARGET_ROWS: targets,
                protocol.QUERY_USER: users,
            }

        signatures[protocol.RECOMMEND] = recommend.get_concrete_function()
        signatures[protocol.RECOMMEND_EXCLUDING] = recommend_excluding.get_concrete_function()
        signatures[protocol.RANK_QUERIES] = rank_queries.get_concrete_function()
        signatures[protocol.SCORE_QUERIES] = score_queries.get_concrete_function()
        if SCORE not in capabilities:
            signatures[protocol.SERVING_DEFAULT] = signatures[protocol.RECOMMEND]

    if SIMILAR in capabilities:
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=protocol.SIMILAR_INPUT)])
        def similar_items(item_ids):
            rows = model.catalogue.lookup(item_ids)
            check = tf.debugging.assert_positive(
                rows, message="similar_items: unknown item id (not in the training vocabulary)")
            with tf.control_dependencies([check]):
                unit = model.similarity_vectors()
            scores = tf.matmul(tf.gather(unit, rows), unit, transpose_b=True)
            scores = tf.where(model.catalogue.valid[None, :], scores, -float("inf"))
            scores = _mask_rows(scores, rows[:, None])
            top = tf.math.top_k(scores, k=k)
            return {
                protocol.RECOMMEND_ITEM_IDS: tf.gather(model.catalogue.ids, top.indices),
                protocol.RECOMMEND_SCORES: top.values,
            }

        signatures[protocol.SIMILAR_ITEMS] = similar_items.get_concrete_function()

    # A plain SavedModel: every capability is a signature, and a model without `call`
    # (retrieve only) saves the same way.
    tf.saved_model.save(model, output_dir, signatures=signatures)
    if family:
        record = {"family": family, "hparams": model.hparams.to_dict(), "dataset": spec.name,
                  "description": spec.to_dict(), "max_history": int(model.context.max_history)}
        os.makedirs(os.path.join(output_dir, protocol.ASSETS_EXTRA), exist_ok=True)
        atomic_write(os.path.join(output_dir, protocol.ASSETS_EXTRA, protocol.MODEL_RECORD),
                     json.dumps(record, indent=2, sort_keys=True))


def explanation_words(tf_transform_output: tft.TFTransformOutput, vocabulary: str, rows: int) -> tf.Tensor:
    """The word of each generated id [rows]: "" for padding and the ids after the vocabulary's
    unknown id (end, start), the vocabulary's words for 1..V, UNKNOWN_WORD for V + 1."""
    words = [w if isinstance(w, bytes) else str(w).encode() for w in tf_transform_output.vocabulary_by_name(vocabulary)]
    table = [b""] + words + [protocol.UNKNOWN_WORD.encode()]
    if len(table) > rows:
        raise ValueError(f"vocabulary {vocabulary!r} has {len(words)} words; the model generates {rows} ids")
    return tf.constant(table + [b""] * (rows - len(table)), tf.string)


def read_model_record(saved_model_dir: str) -> Dict:
    """The family, hyperparameters, dataset (name and description mapping) and max_history an
    exported model was built with (written by `export_model` beside the SavedModel, where TF
    Serving ignores it)."""
    path = os.path.join(saved_model_dir, protocol.ASSETS_EXTRA, protocol.MODEL_RECORD)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"no model record at {path}: was {saved_model_dir} exported by this project's "
                                "Trainer (export.signatures.export_model with its family)?")
    with tf.io.gfile.GFile(path) as f:
        return json.loads(f.read())
