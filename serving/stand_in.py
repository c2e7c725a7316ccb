"""Stand-in SavedModels with the pushed-model signatures, for tests and benchmark dry runs.

A stand-in is a test fixture, not a recommender: scores come from a fixed item -> score
table. It has the exact signature contract of a pushed model (`serving_default`,
`recommend`, `recommend_excluding`, `transform_features`), including the check that a
history's ids and behaviors have one shape, so serving code can be exercised without
training.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Mapping, Optional, Sequence

import tensorflow as tf

from contract import features
from contract import protocol
from export.request_checks import assert_same_rows, assert_same_shape

STRONGEST_BONUS = 0.125  # recommend: added to every score per history item of the strongest behavior
HISTORY_BONUS = 0.25  # serving_default: added per history item in the example
HEAD = "score"  # the default serving_default output


class StandInRecommender(tf.Module):
    """Test fixture: table-lookup scores behind the pushed-model signatures.

    Args:
      item_scores: item id -> base score (the catalog; at least `k` items).
      head: name of the serving_default output (e.g. a task's name).
      k: number of items `recommend` returns.
      strict: `recommend` rejects, with tf.errors.InvalidArgumentError raised inside the
        graph (tf.debugging asserts), a behavior outside `behaviors` and a history without
        any known item id, as a validating exported model does.
      behaviors: the behavior vocabulary, weakest first (a dataset's `behaviors`): each
        history item of the strongest (last) one adds STRONGEST_BONUS to every score;
        needed with `strict`. Empty: no bonus.
    """

    def __init__(
        self, item_scores: Mapping[str, float], head: str = HEAD, k: int = 10, strict: bool = False,
        behaviors: Sequence[str] = (),
    ):
        super().__init__()
        if len(item_scores) < k:
            raise ValueError(f"stand-in catalog has {len(item_scores)} items; recommend needs at least k={k}")
        if strict and not behaviors:
            raise ValueError("a strict stand-in validates behaviors: pass the dataset's behaviors")
        ids = [str(i) for i in item_scores]
        self._head = head
        self._k = k
        self._strict = strict
        self._ids = tf.constant(ids)
        scores = tf.constant([float(item_scores[i]) for i in item_scores], tf.float32)
        # A variable, so the SavedModel has a variables/ checkpoint (which fault tests truncate).
        self._scores = tf.Variable(scores, trainable=False, name="item_scores")
        self._known = list(behaviors)
        self._behaviors = tf.constant(self._known + [protocol.HISTORY_PAD.decode()])
        self._strongest = self._known[-1] if self._known else None
        self._table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(self._ids, scores), default_value=0.0
        )
        self._index = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(self._ids, tf.range(1, len(ids) + 1, dtype=tf.int64)),
            default_value=0,
        )

    def _parse(self, examples):
        return tf.io.parse_example(
            examples,
            {
                features.ITEM_ID: tf.io.FixedLenFeature([], tf.string),
                features.HISTORY_ITEM_IDS: tf.io.RaggedFeature(tf.string),
            },
        )

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def serve_examples(self, examples):
        parsed = self._parse(examples)
        history = tf.cast(parsed[features.HISTORY_ITEM_IDS].row_lengths(), tf.float32)
        return {self._head: self._table.lookup(parsed[features.ITEM_ID]) + HISTORY_BONUS * history}

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string), tf.TensorSpec([None, None], tf.string)])
    def recommend(self, history_item_ids, history_behaviors):
        return self._recommend(protocol.RECOMMEND, history_item_ids, history_behaviors, None)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string), tf.TensorSpec([None, None], tf.string),
                                  tf.TensorSpec([None, None], tf.string)])
    def recommend_excluding(self, history_item_ids, history_behaviors, exclude_item_ids):
        return self._recommend(protocol.RECOMMEND_EXCLUDING, history_item_ids, history_behaviors, exclude_item_ids)

    def _recommend(self, signature, history_item_ids, history_behaviors, exclude_item_ids):
        checks = [assert_same_shape(signature, features.HISTORY_ITEM_IDS, history_item_ids,
                                    features.HISTORY_BEHAVIORS, history_behaviors)]
        if exclude_item_ids is not None:
            checks.append(assert_same_rows(signature, features.HISTORY_ITEM_IDS, history_item_ids,
                                           protocol.EXCLUDE_ITEM_IDS, exclude_item_ids))
        with tf.control_dependencies(checks):
            history_item_ids = tf.identity(history_item_ids)
        seen = tf.reduce_any(
            tf.equal(history_item_ids[:, :, tf.newaxis], self._ids[tf.newaxis, tf.newaxis, :]), axis=1
        )
        if exclude_item_ids is not None:
            seen |= tf.reduce_any(
                tf.equal(exclude_item_ids[:, :, tf.newaxis], self._ids[tf.newaxis, tf.newaxis, :]), axis=1
            )
        if self._strict:
            known = tf.reduce_any(tf.equal(history_behaviors[:, :, tf.newaxis], self._behaviors), axis=2)
            checks = [
                tf.debugging.assert_equal(
                    tf.reduce_all(known), True,
                    message=f"history_behaviors holds a behavior outside {self._known}",
                ),
                tf.debugging.assert_equal(
                    tf.reduce_all(
                        tf.reduce_any(seen, axis=1)
                        | ~tf.reduce_any(tf.not_equal(history_item_ids, protocol.HISTORY_PAD), axis=1)
                    ),
                    True,
                    message="a history holds item ids but none the model knows",
                ),
            ]
            with tf.control_dependencies(checks):
                history_behaviors = tf.identity(history_behaviors)
        scores = tf.tile(self._scores[tf.newaxis, :], [tf.shape(history_item_ids)[0], 1])
        if self._strongest is not None:
            strongest = tf.reduce_sum(tf.cast(tf.equal(history_behaviors, self._strongest), tf.float32), axis=1)
            scores = scores + STRONGEST_BONUS * strongest[:, tf.newaxis]
        scores = tf.where(seen, tf.fill(tf.shape(scores), float("-inf")), scores)
        top = tf.math.top_k(scores, k=self._k)
        ids = tf.where(tf.math.is_finite(top.values), tf.gather(self._ids, top.indices), protocol.HISTORY_PAD)
        return {protocol.RECOMMEND_ITEM_IDS: ids, protocol.RECOMMEND_SCORES: top.values}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def transform_features(self, examples):
        parsed = self._parse(examples)
        return {features.ITEM_IDX: self._index.lookup(parsed[features.ITEM_ID])}


def export_stand_in_model(
    export_dir: str, item_scores: Mapping[str, float], head: str = HEAD, k: int = 10,
    strict: bool = False, behaviors: Sequence[str] = (),
) -> str:
    """Writes a stand-in SavedModel (test fixture) with the pushed-model signatures.

    Args:
      export_dir: directory to create (must not exist or be empty).
      item_scores: item id -> base score.
      head: serving_default output name.
      k: recommend list length.
      strict: `recommend` validates its inputs inside the graph (see StandInRecommender).
      behaviors: the behavior vocabulary (see StandInRecommender).
    """
    module = StandInRecommender(item_scores, head=head, k=k, strict=strict, behaviors=behaviors)
    signatures = {
        protocol.SERVING_DEFAULT: module.serve_examples.get_concrete_function(),
        protocol.RECOMMEND: module.recommend.get_concrete_function(),
        protocol.RECOMMEND_EXCLUDING: module.recommend_excluding.get_concrete_function(),
        protocol.TRANSFORM_FEATURES: module.transform_features.get_concrete_function(),
    }
    tf.saved_model.save(module, export_dir, signatures=signatures)
    return export_dir


def push_stand_in_version(
    model_base: str,
    model_name: str,
    version: int,
    item_scores: Mapping[str, float],
    head: str = HEAD,
    k: int = 10,
    warmup_examples: Optional[Sequence[bytes]] = None,
    warmup_histories=None,
    behaviors: Sequence[str] = (),
) -> str:
    """Exports a stand-in (test fixture) and pushes it as `<model_base>/<name>/<version>` by rename.

    Args:
      model_base: the serving base directory.
      model_name: model directory name.
      version: integer version.
      item_scores, head, k, behaviors: as `export_stand_in_model`.
      warmup_examples, warmup_histories: when given, a warmup file is written first.
    """
    from export import warmup  # local import: warmup imports this package's protocol only

    model_dir = os.path.join(model_base, model_name)
    os.makedirs(model_dir, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".push-{version}-", dir=model_dir)
    try:
        export_stand_in_model(staging, item_scores, head=head, k=k, behaviors=behaviors)
        if warmup_examples is not None:
            warmup.write_warmup_requests(staging, model_name, warmup_examples, histories=warmup_histories,
                                         history_signatures=(protocol.RECOMMEND, protocol.RECOMMEND_EXCLUDING))
        final = os.path.join(model_dir, str(int(version)))
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final


def make_example(item_id: str, user_id: str = "1", history: Sequence[str] = (), timestamp: int = 0) -> bytes:
    """A serialized raw-feature tf.Example (fixture data for stand-in models)."""
    feature = {
        features.USER_ID: tf.train.Feature(bytes_list=tf.train.BytesList(value=[user_id.encode()])),
        features.ITEM_ID: tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(item_id).encode()])),
        features.TIMESTAMP: tf.train.Feature(int64_list=tf.train.Int64List(value=[timestamp])),
        features.HISTORY_ITEM_IDS: tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[str(h).encode() for h in history])
        ),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
