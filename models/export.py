"""Exports a trained family as a SavedModel with its serving signatures.

- `serving_default`: serialized `tf.Example`s with the raw features ExampleGen writes
  (labels and timestamp not needed); the Transform graph runs inside the model, so
  there is no train/serve skew. Output: `{head name: score}`.
- `transform_features`: raw examples -> transformed features (for the Evaluator).
- `recommend`: a batch of histories (item ids, behaviors; "" pads) -> the top-K items
  over the whole catalogue and their scores, never an item of the history.
- `similar_items`: item ids -> the K items whose learned vectors are closest (cosine).
"""

from __future__ import annotations

from typing import Dict

import tensorflow as tf
import tensorflow_transform as tft

from contract import datasets as D
from contract import features as F
from models.base import FactorizationModel
from models.inputs import densify
from contract import protocol

SIMILAR_ITEMS = "similar_items"
SIMILAR_INPUT = "item_ids"


def serving_feature_spec(tf_transform_output: tft.TFTransformOutput, spec: D.DatasetSpec) -> Dict:
    """Raw features a client sends to `serving_default`: no labels, no timestamp."""
    drop = set(spec.raw_labels) | {F.TIMESTAMP}
    return {k: v for k, v in tf_transform_output.raw_feature_spec().items() if k not in drop}


class _Catalogue(tf.Module):
    """Item id strings <-> item_idx rows, and which rows are real candidates."""

    def __init__(self, vocabulary, valid_rows, num_rows: int):
        super().__init__()
        ids = [b""] + [v if isinstance(v, bytes) else v.encode() for v in vocabulary]
        ids += [b""] * (num_rows - len(ids))
        self.ids = tf.Variable(tf.constant(ids, tf.string), trainable=False, name="candidate_ids")
        self.valid = tf.Variable(tf.constant(valid_rows, tf.bool), trainable=False, name="candidate_valid")
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(ids[1 : len(vocabulary) + 1], tf.string),
                tf.range(1, len(vocabulary) + 1, dtype=tf.int64),
            ),
            default_value=0,
        )

    def lookup(self, item_ids: tf.Tensor) -> tf.Tensor:
        return self.table.lookup(item_ids)


def _mask_rows(scores: tf.Tensor, rows: tf.Tensor) -> tf.Tensor:
    """Sets scores[b, rows[b, j]] to -inf for every j (rows: [B, L] int64)."""
    batch = tf.shape(rows, out_type=tf.int64)[0]
    length = tf.shape(rows, out_type=tf.int64)[1]
    b = tf.repeat(tf.range(batch), length)
    indices = tf.stack([b, tf.reshape(rows, [-1])], axis=1)
    return tf.tensor_scatter_nd_update(
        scores, indices, tf.fill(tf.shape(indices)[:1], tf.constant(-float("inf"), scores.dtype))
    )


def export_model(
    model: FactorizationModel,
    tf_transform_output: tft.TFTransformOutput,
    spec: D.DatasetSpec,
    valid_rows,
    output_dir: str,
    top_k: int = 10,
) -> None:
    """Saves `model` with the four signatures to `output_dir` (TF SavedModel)."""
    model.tft_layer = tf_transform_output.transform_features_layer()
    vocabulary = tf_transform_output.vocabulary_by_name(F.ITEM_VOCAB)
    model.catalogue = _Catalogue(vocabulary, valid_rows, model.context.num_items)
    serving_spec = serving_feature_spec(tf_transform_output, spec)
    raw_spec = tf_transform_output.raw_feature_spec()
    head = model.head.name
    k = min(top_k, int(sum(bool(v) for v in valid_rows)))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=protocol.EXAMPLES)])
    def serve(examples):
        parsed = tf.io.parse_example(examples, serving_spec)
        return {head: model(densify(model.tft_layer(parsed)))}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=protocol.EXAMPLES)])
    def transform_features(examples):
        parsed = tf.io.parse_example(examples, raw_spec)
        return densify(model.tft_layer(parsed))

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None], tf.string, name=F.HISTORY_ITEM_IDS),
            tf.TensorSpec([None, None], tf.string, name=F.HISTORY_BEHAVIORS),
        ]
    )
    def recommend(history_item_ids, history_behaviors):
        present = tf.not_equal(history_item_ids, "")
        behaviors = tf.where(
            present & tf.equal(history_behaviors, ""), tf.constant(spec.default_behavior), history_behaviors
        )
        history = densify(
            model.tft_layer(
                {
                    F.HISTORY_ITEM_IDS: tf.ragged.boolean_mask(history_item_ids, present).to_sparse(),
                    F.HISTORY_BEHAVIORS: tf.ragged.boolean_mask(behaviors, present).to_sparse(),
                }
            )
        )
        q, b_q = model.history_query(history[F.HISTORY_ITEM_IDX], history[F.HISTORY_BEHAVIOR_IDX])
        scores = model.score_candidates(q, b_q)
        scores = tf.where(model.catalogue.valid[None, :], scores, -float("inf"))
        # Every history item is excluded, not only the most recent ones the query used.
        scores = _mask_rows(scores, model.catalogue.lookup(history_item_ids))
        top = tf.math.top_k(scores, k=k)
        return {
            protocol.RECOMMEND_ITEM_IDS: tf.gather(model.catalogue.ids, top.indices),
            protocol.RECOMMEND_SCORES: top.values,
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=SIMILAR_INPUT)])
    def similar_items(item_ids):
        rows = model.catalogue.lookup(item_ids)
        tf.debugging.assert_positive(rows, message="similar_items: unknown item id (not in the training vocabulary)")
        vectors, _ = model.candidates()
        unit = tf.math.l2_normalize(vectors, axis=-1)
        scores = tf.matmul(tf.gather(unit, rows), unit, transpose_b=True)
        scores = tf.where(model.catalogue.valid[None, :], scores, -float("inf"))
        scores = _mask_rows(scores, rows[:, None])
        top = tf.math.top_k(scores, k=k)
        return {
            protocol.RECOMMEND_ITEM_IDS: tf.gather(model.catalogue.ids, top.indices),
            protocol.RECOMMEND_SCORES: top.values,
        }

    signatures = {
        protocol.SERVING_DEFAULT: serve.get_concrete_function(),
        protocol.TRANSFORM_FEATURES: transform_features.get_concrete_function(),
        protocol.RECOMMEND: recommend.get_concrete_function(),
        SIMILAR_ITEMS: similar_items.get_concrete_function(),
    }
    model.save(output_dir, save_format="tf", signatures=signatures)
