"""Approximate top K for `recommend`: a ScaNN index of the catalogue built at export time.

A family whose record turns `scann` on (models.hparams.ScannParams) is exported with a
`ScannTopK` over its candidate vectors: tensorflow-recommenders' ScaNN layer indexes
[item vector, item bias] of every candidate row, so that the inner product with
[query, 1] is the brute-force score minus the query's bias (added back). `recommend`
keeps its contract: it asks the index for K + (known items in the longest history of the
batch), at most the rows the index reorders, drops the history's items and keeps the
best K; `recommend_excluding` counts its exclusions with the history (over-fetches by
both and drops both). The index ranks what it returns before what it does not, so those K are the
index's best items outside the history however many history items it skipped. A
history left with fewer than K (a search that found too few, or a long history holding
most of what the index returned) is answered by exact scoring instead, that row alone,
so no history gets fewer items than brute force would give it; bench/results/catalogue.md
reports how often that happens.

The SavedModel then holds ScaNN's TensorFlow ops (`Scann>ScannSearchBatched`,
`Scann>TensorsToScann`): loading it needs them registered (`load_scann_ops`), which
serving/local_server.py does when a model uses them; TF Serving needs a build with the
ops linked (README, "Approximate top K").
"""

from __future__ import annotations

import time
from typing import Callable, Iterable, Optional, Tuple

import numpy as np
import tensorflow as tf

SCANN_OP_PREFIX = "Scann>"
SCANN_REQUIREMENT = "scann==1.3.2"


def load_scann_ops() -> None:
    """Registers ScaNN's TensorFlow ops in this process (what a SavedModel with a ScaNN
    index needs before `tf.saved_model.load`); ImportError naming the package when it is
    not installed."""
    try:
        from scann.scann_ops.py import scann_ops  # noqa: F401  (loading the module registers the ops)
    except ImportError as exc:
        raise ImportError(f"the model searches a ScaNN index and its ops are not available here: install "
                          f"{SCANN_REQUIREMENT} (requirements.lock) ({exc})") from None


def scann_ops_used(op_names: Iterable[str]) -> Tuple[str, ...]:
    """The ScaNN ops among a graph's op names (sorted, without duplicates)."""
    return tuple(sorted({name for name in op_names if name.startswith(SCANN_OP_PREFIX)}))


class ScannTopK(tf.Module):
    """The top K of the catalogue for query vectors, from a ScaNN index of the candidate rows.

    Args:
      vectors: [N, d] candidate vectors of every item row.
      biases: [N] candidate biases.
      valid_rows: [N] bool, the rows that are candidates (others are never returned).
      params: the family's record (models.hparams.ScannParams fields).
      k: the K the index answers by default.
      max_history: history items a query usually excludes: the index reorders at least
        k + max_history candidates.
    """

    def __init__(self, vectors: np.ndarray, biases: np.ndarray, valid_rows: np.ndarray, params, k: int,
                 max_history: int):
        super().__init__(name="scann_top_k")
        import tensorflow_recommenders as tfrs

        vectors = np.asarray(vectors, np.float32)
        biases = np.asarray(biases, np.float32)
        valid = np.asarray(valid_rows, bool)
        if vectors.ndim != 2 or biases.shape != vectors.shape[:1] or valid.shape != vectors.shape[:1]:
            raise ValueError(f"ScaNN index: vectors {vectors.shape}, biases {biases.shape} and valid rows "
                             f"{valid.shape} must be [N, d], [N] and [N]")
        rows = np.flatnonzero(valid)
        if not len(rows):
            raise ValueError("ScaNN index: the catalogue has no candidate row to index")
        self.size = int(len(rows))
        leaves = min(int(params.scann_num_leaves), self.size)
        reordering = int(params.scann_num_reordering_candidates)
        # The most results one search returns: ScaNN stops at its reordering count.
        self.reach = min(max(reordering, k + int(max_history)), self.size) if reordering > 0 else self.size
        self.settings = {
            "num_leaves": leaves,
            "num_leaves_to_search": min(int(params.scann_num_leaves_to_search), leaves),
            "num_reordering_candidates": self.reach if reordering > 0 else 0,
            "dimensions_per_block": int(params.scann_dimensions_per_block),
        }
        self.layer = tfrs.layers.factorized_top_k.ScaNN(
            k=k, distance_measure="dot_product", num_leaves=leaves,
            num_leaves_to_search=self.settings["num_leaves_to_search"],
            dimensions_per_block=self.settings["dimensions_per_block"],
            num_reordering_candidates=self.reach if reordering > 0 else None, name="scann")
        started = time.monotonic()
        with_bias = np.concatenate([vectors[rows], biases[rows, None]], axis=1)
        self.layer.index(tf.constant(with_bias), tf.constant(rows, tf.int64))
        self.build_seconds = time.monotonic() - started  # read by bench/catalogue.py

    def search(self, queries: tf.Tensor, query_biases: tf.Tensor, count: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
        """Rows [B, w] and scores [B, w] (w <= count; -inf where the search found nothing)
        of the best `count` candidates of each query [B, d] with its bias [B]."""
        ones = tf.ones_like(queries[:, :1])
        scores, rows = self.layer(tf.concat([queries, ones], axis=1), k=count)
        found = tf.math.is_finite(scores)
        scores = tf.where(found, scores + query_biases[:, None], -float("inf"))
        return tf.where(found, rows, tf.zeros_like(rows)), scores

    def top_k(self, queries: tf.Tensor, query_biases: tf.Tensor, history_rows: tf.Tensor, k: int,
              exact: Callable[[tf.Tensor], Tuple[tf.Tensor, tf.Tensor]]) -> Tuple[tf.Tensor, tf.Tensor]:
        """Ranked rows [B, k] (int32, as tf.math.top_k gives them) and scores [B, k] of each
        query, no row of its history [B, L] (0 = padding or unknown) among them; the
        "history" is every row never to return (recommend_excluding passes the history's
        rows and the exclusions' together).

        The index is asked for K + the longest history's known items (at most what it
        reorders); the history is dropped and the best K kept. `exact(which)` answers the
        rows [B] bool `which` where that left fewer than K (module docstring): ranked rows
        [S, k] and scores [S, k] of those rows, by scoring every item.
        """
        known = tf.reduce_sum(tf.cast(history_rows > 0, tf.int32), axis=1)
        longest = tf.reduce_max(tf.concat([known, [0]], axis=0))
        count = tf.minimum(k + longest, self.reach)
        batch = tf.shape(queries)[0]

        def approximate():
            rows, scores = self.search(queries, query_biases, count)
            # A row is the history's when a binary search of the sorted history finds it.
            history = tf.sort(tf.pad(history_rows, [[0, 0], [0, 1]]), axis=1)
            at = tf.minimum(tf.searchsorted(history, rows), tf.shape(history)[1] - 1)
            own = tf.equal(tf.gather(history, at, batch_dims=1), rows) & (rows > 0)
            scores = tf.where(own, -float("inf"), scores)
            short = tf.maximum(k - tf.shape(scores)[1], 0)  # the search may return fewer than k
            scores = tf.pad(scores, [[0, 0], [0, short]], constant_values=-float("inf"))
            rows = tf.pad(rows, [[0, 0], [0, short]])
            top = tf.math.top_k(scores, k=k)
            return tf.cast(tf.gather(rows, top.indices, batch_dims=1), tf.int32), top.values

        def answered():
            rows, scores = approximate()
            unfilled = ~tf.math.is_finite(scores[:, -1])

            def patched():
                exact_rows, exact_scores = exact(unfilled)
                where = tf.where(unfilled)
                return (tf.tensor_scatter_nd_update(rows, where, exact_rows),
                        tf.tensor_scatter_nd_update(scores, where, exact_scores))

            return tf.cond(tf.reduce_any(unfilled), patched, lambda: (rows, scores))

        return tf.cond(batch > 0, answered, lambda: exact(tf.ones([batch], tf.bool)))

    def unfilled(self, queries: np.ndarray, query_biases: np.ndarray, history_rows, k: int) -> np.ndarray:
        """[Q] bool: the queries (one at a time, as `recommend` at batch 1) the index leaves
        with fewer than k items outside their history, which exact scoring then answers."""
        out = np.zeros(len(queries), bool)
        for i, (q, b, own) in enumerate(zip(queries, query_biases, history_rows)):
            own = np.asarray(own)
            own = own[own > 0]
            count = min(k + len(own), self.reach)
            rows, scores = self.search(tf.constant(q[None, :]), tf.constant([b]), tf.constant(count))
            rows, scores = rows.numpy()[0], scores.numpy()[0]
            out[i] = int(np.sum(np.isfinite(scores) & ~np.isin(rows, own))) < k
        return out


def scann_top_k(model, valid_rows: np.ndarray, k: int) -> Optional[ScannTopK]:
    """The model's ScaNN index when its record turns `scann` on, else None (exact top K)."""
    if not getattr(model.hparams, "scann", False):
        return None
    vectors, biases = model.candidates()
    return ScannTopK(np.asarray(vectors), np.asarray(biases), np.asarray(valid_rows, bool), model.hparams, k,
                     int(model.context.max_history))
