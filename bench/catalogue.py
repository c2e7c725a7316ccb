"""Catalogue-size benchmark: `recommend`'s recall and cost from a dataset's catalogue to a million items.

The catalogue: the item vectors and biases of a two_tower trained on a dataset
description's data (`--dataset` / `--dataset_file`, `--data_dir`, its split unless
`--split` says otherwise; MovieLens by default; seed 42, the family's defaults; the
Trainer's code), plus synthetic items drawn
from a Gaussian fit of the real items' [vector, bias] (mean and full covariance), up to
`--sizes` items in all (the synthetic items of a smaller size are the first ones of a
larger). The queries: real users' query vectors, from their user-view histories through
the trained query tower; the users are split in two halves at random (seed 42): the
eval-split histories of one half choose each index's parameters (held out), the
test-split histories of the other half measure everything reported.

Methods, per size:
- `brute_force`: the SavedModel `export.signatures.export_model` writes (every item scored).
- `scann`: the same with the family's `scann` on (export/scann_index.py), its parameters
  chosen on the held-out queries: of a grid whose recall@10 is >= 0.95, the lowest mean
  batch-1 time (scann's own Python searcher over the same configuration, searched as
  `recommend` does; a query the index leaves short is charged brute force's batch-1 p50).
  `exact_share`: the report queries that `recommend` answers by exact scoring at batch 1.
- `faiss_ivf`: faiss's IndexIVFFlat (inner product, 4 sqrt(N) lists) outside TensorFlow,
  the way a separate index service would run: the query tower is a SavedModel of its own
  (histories -> query vector and history rows) and the index is searched in the calling
  process for K + the history's items, the history dropped; nprobe chosen the same way.

Per method and size: index build seconds, what the server loads (SavedModel, plus the
faiss index), recall@10 against the exact top 10 (history items excluded, as `recommend`
does), and `recommend` latency p50/p99 at batch 1 and 32, in-process (the SavedModel
signature call) and through the local gRPC server (serving/local_server.py in a child
process, serving/client.py), one request at a time, each cell bounded by `--requests`
and `--seconds`. `<out>/<name>_runs.json` keeps each report query's recall@10 and each
in-process batch-1 request's latency, per size and method; from them, bootstrap intervals
of recall@10 (over the queries), of the batch-1 p50 (over the requests) and of the speed-up
over brute force (the ratio of p50s, each method's requests resampled on their own), and a
goal is met only when its whole interval is on the goal's side.

    python -m bench.catalogue [--dataset NAME | --dataset_file FILE] [--data_dir DIR]
        [--sizes 10000,100000,1000000] [--seconds 10] [--out bench/results]
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Sequence, Tuple

from bench import common  # noqa: E402  (sets the Keras switch first)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_transform as tft  # noqa: E402

from bench import serving as serving_bench  # noqa: E402
from contract import features as F  # noqa: E402
from contract import protocol  # noqa: E402
from export.signatures import Catalogue, densify, export_model  # noqa: E402
from models.base import RETRIEVE, RecModel  # noqa: E402
from serving import client as serving_client  # noqa: E402
from training.trainer import train  # noqa: E402
from training.views import USER_VIEW_SPEC  # noqa: E402

K = 10
SEED = 42
FAMILY = "two_tower"
SIZES = (10_000, 100_000, 1_000_000)
BATCHES = (1, 32)
RECALL_GOAL = 0.95
# Parameters are chosen for this recall on the held-out queries: the margin covers the
# difference between two sets of ~300 users (0.007-0.02 at the goal's recall here).
TUNING_RECALL = 0.965
P50_GOAL_MS = 5.0
SPEEDUP_GOAL = 10.0
GOAL_SIZE = 1_000_000
QUERY_SIGNATURE = "query"
QUERY_MODEL = "query_tower"
BRUTE, SCANN, FAISS = "brute_force", "scann", "faiss_ivf"
SYNTHETIC_PREFIX = "s"  # synthetic item ids: "s<row>"
# ScaNN grid: leaves as multiples of sqrt(N), leaves searched as fractions of the leaves,
# rows reordered (at least K + max_history whatever the grid says).
SCANN_LEAVES = (1.0, 2.0, 4.0)
SCANN_SEARCHED = (1 / 200, 1 / 100, 1 / 67, 1 / 50, 1 / 33, 1 / 25, 1 / 16, 1 / 12, 1 / 6)
SCANN_REORDER = (100, 200, 400, 800, 1600)
SCANN_DIMENSIONS_PER_BLOCK = 2
FAISS_NPROBE = (1, 2, 4, 8, 16, 32, 64, 128, 256)


# --------------------------------------------------------------------------
# The catalogue
# --------------------------------------------------------------------------
class ExtendedCatalogue(RecModel):
    """A trained retrieval model's query tower over a catalogue of given candidate
    vectors and biases (its own items followed by synthetic ones), exported as the
    family is.

    Args:
      base: the trained model (its `query` answers).
      vectors: [N, d] candidate vectors of every item row.
      biases: [N] candidate biases.
      counts: [N] training popularity of the rows (0 for synthetic items).
      hparams: the record exported with the model (its `scann` fields decide the index).
    """

    capabilities = frozenset({RETRIEVE})

    def __init__(self, base: RecModel, vectors: np.ndarray, biases: np.ndarray, counts: np.ndarray, hparams):
        context = dataclasses.replace(base.context, num_items=int(len(vectors)), item_counts=counts)
        super().__init__(context, hparams)
        self.base = base
        self.vectors = tf.Variable(vectors, trainable=False, name="catalogue_vectors")
        self.biases = tf.Variable(biases, trainable=False, name="catalogue_biases")

    def query(self, history_item_idx, history_behavior_idx, training=False):
        return self.base.query(history_item_idx, history_behavior_idx, training=training)

    def candidates(self):
        return self.vectors.read_value(), self.biases.read_value()


class ExtendedTransformOutput:
    """The Transform output as `export_model` reads it, with the item vocabulary extended
    to the catalogue's rows (rows without a real item get placeholder ids)."""

    def __init__(self, tft_output: tft.TFTransformOutput, extra_ids: Sequence[bytes]):
        self.tft_output = tft_output
        self.extra_ids = list(extra_ids)

    def transform_features_layer(self):
        return self.tft_output.transform_features_layer()

    def vocabulary_by_name(self, name: str):
        vocabulary = self.tft_output.vocabulary_by_name(name)
        return list(vocabulary) + self.extra_ids if name == F.ITEM_VOCAB else vocabulary


class QueryTower(tf.Module):
    """The TensorFlow half of an index served outside TensorFlow: histories of strings ->
    query vectors [B, d], query biases [B] and the histories' item rows [B, L]."""

    def __init__(self, model: RecModel, tft_output: tft.TFTransformOutput, catalogue: Catalogue):
        super().__init__()
        self.model = model
        self.tft_layer = tft_output.transform_features_layer()
        self.catalogue = catalogue
        self.default_behavior = model.context.dataset.default_behavior

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string, name=F.HISTORY_ITEM_IDS),
                                  tf.TensorSpec([None, None], tf.string, name=F.HISTORY_BEHAVIORS)])
    def query(self, history_item_ids, history_behaviors):
        present = tf.not_equal(history_item_ids, "")
        behaviors = tf.where(present & tf.equal(history_behaviors, ""), tf.constant(self.default_behavior),
                             history_behaviors)
        history = densify(self.tft_layer({
            F.HISTORY_ITEM_IDS: tf.ragged.boolean_mask(history_item_ids, present).to_sparse(),
            F.HISTORY_BEHAVIORS: tf.ragged.boolean_mask(behaviors, present).to_sparse(),
        }))
        q, b = self.model.query(history[F.HISTORY_ITEM_IDX], history[F.HISTORY_BEHAVIOR_IDX])
        return {"query": q, "query_bias": b, "history_rows": self.catalogue.lookup(history_item_ids)}


def synthetic_items(real: np.ndarray, count: int, seed: int, chunk: int = 100_000) -> np.ndarray:
    """`count` rows [count, D] float32 drawn from the Gaussian fit (mean, full covariance)
    of the real rows [n, D]."""
    mean = real.mean(axis=0, dtype=np.float64)
    cov = np.cov(real, rowvar=False, dtype=np.float64)
    rng = np.random.default_rng(seed)
    out = np.empty((count, real.shape[1]), np.float32)
    for start in range(0, count, chunk):
        stop = min(start + chunk, count)
        out[start:stop] = rng.multivariate_normal(mean, cov, size=stop - start, method="cholesky")
    return out


@dataclasses.dataclass
class Queries:
    """Histories (strings) and what the query tower makes of them."""

    items: List[List[bytes]]
    behaviors: List[List[bytes]]
    vectors: np.ndarray = None  # [Q, d]
    biases: np.ndarray = None  # [Q]
    history_rows: List[np.ndarray] = None  # known rows per query (> 0)

    def __len__(self):
        return len(self.items)

    def arrays(self, start: int, stop: int) -> Tuple[np.ndarray, np.ndarray]:
        return protocol.history_arrays(self.items[start:stop], self.behaviors[start:stop])


def read_histories(files: Sequence[str]) -> Dict[bytes, Tuple[List[bytes], List[bytes]]]:
    """user id -> (history item ids, behaviors) of user-view examples with a history."""
    out = {}
    ds = tf.data.TFRecordDataset(list(files), compression_type="GZIP").batch(256)
    for batch in ds:
        parsed = tf.io.parse_example(batch, USER_VIEW_SPEC)
        items = tf.RaggedTensor.from_sparse(parsed[F.HISTORY_ITEM_IDS]).to_list()
        behaviors = tf.RaggedTensor.from_sparse(parsed[F.HISTORY_BEHAVIORS]).to_list()
        for user, i, b in zip(parsed[F.USER_ID].numpy(), items, behaviors):
            if i:
                out[user] = (i, b)
    return out


def held_out_queries(stages: common.DataStages, seed: int) -> Tuple[Queries, Queries]:
    """(tuning, report): the eval-split histories of one random half of the users and the
    test-split histories of the other half."""
    eval_h = read_histories(stages.raw_files(F.USER_VIEW, "eval"))
    test_h = read_histories(stages.raw_files(F.USER_VIEW, "test"))
    users = sorted(set(eval_h) | set(test_h))
    order = np.random.default_rng(seed).permutation(len(users))
    half = set(users[i] for i in order[: len(users) // 2])
    tuning = [eval_h[u] for u in users if u in half and u in eval_h]
    report = [test_h[u] for u in users if u not in half and u in test_h]
    return (Queries([h[0] for h in tuning], [h[1] for h in tuning]),
            Queries([h[0] for h in report], [h[1] for h in report]))


def encode_queries(queries: Queries, tower: QueryTower, batch: int = 64) -> None:
    vectors, biases, rows = [], [], []
    for start in range(0, len(queries), batch):
        items, behaviors = queries.arrays(start, start + batch)
        out = tower.query(tf.constant(items), tf.constant(behaviors))
        vectors.append(out["query"].numpy())
        biases.append(out["query_bias"].numpy())
        rows += [r[r > 0] for r in out["history_rows"].numpy()]
    queries.vectors = np.concatenate(vectors).astype(np.float32)
    queries.biases = np.concatenate(biases).astype(np.float32)
    queries.history_rows = rows


def exact_top(queries: Queries, vectors: np.ndarray, biases: np.ndarray, valid: np.ndarray, k: int = K,
              chunk: int = 32) -> np.ndarray:
    """The exact top-k rows [Q, k] of each query over the valid rows, its history excluded."""
    prior = np.where(valid, biases, -np.inf).astype(np.float32)
    out = []
    for start in range(0, len(queries), chunk):
        scores = queries.vectors[start:start + chunk] @ vectors.T + prior[None, :]
        for j, rows in enumerate(queries.history_rows[start:start + chunk]):
            scores[j, rows] = -np.inf
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
        out.append(np.take_along_axis(top, order, axis=1))
    return np.concatenate(out)


def recalls(ranked: Sequence[Sequence[int]], exact: np.ndarray) -> np.ndarray:
    """[Q] each query's recall: the share of its exact top rows that its ranking holds."""
    return np.array([len(set(map(int, r)) & set(map(int, e))) / len(e) for r, e in zip(ranked, exact)], np.float64)


def recall(ranked: Sequence[Sequence[int]], exact: np.ndarray) -> float:
    """The mean over queries of `recalls`."""
    return float(np.mean(recalls(ranked, exact)))


# --------------------------------------------------------------------------
# Indexes
# --------------------------------------------------------------------------
def tune_scann(db: np.ndarray, db_rows: np.ndarray, tuning: Queries, exact: np.ndarray, max_history: int,
               exact_ms: float) -> Tuple[Dict[str, int], List[Dict[str, Any]]]:
    """The ScaNN setting for this catalogue, searched the way `ScannTopK` does (K + the
    history's items, at most the rows it reorders; the history dropped; a query left with
    fewer than K scored exactly, which costs `exact_ms`): the lowest mean batch-1 time of
    the grid whose recall@10 is >= TUNING_RECALL (else the best recall)."""
    from scann.scann_ops.py import scann_ops_pybind

    n = len(db)
    grid = []
    queries = np.concatenate([tuning.vectors, np.ones((len(tuning), 1), np.float32)], axis=1)
    for leaves in sorted({min(n, max(1, round(math.sqrt(n) * c))) for c in SCANN_LEAVES}):
        started = time.monotonic()
        searcher = scann_ops_pybind.builder(db, K, "dot_product").tree(
            num_leaves=leaves, num_leaves_to_search=1, training_iterations=12).score_ah(
            SCANN_DIMENSIONS_PER_BLOCK).reorder(max(SCANN_REORDER)).build()
        build = time.monotonic() - started
        for searched in sorted({max(1, round(leaves * f)) for f in SCANN_SEARCHED}):
            for reorder in SCANN_REORDER:
                reach = min(max(reorder, K + max_history), n)
                found, seconds, unfilled = [], [], 0
                for q, own, best in zip(queries, tuning.history_rows, exact):
                    count = min(K + len(own), reach)
                    t0 = time.perf_counter()
                    idx, _ = searcher.search(q, count, reach, searched)
                    seconds.append(time.perf_counter() - t0)
                    rows = db_rows[np.asarray(idx, np.int64)]
                    rows = rows[~np.isin(rows, own)][:K]
                    if len(rows) < K:  # answered exactly
                        unfilled += 1
                        rows = best
                        seconds[-1] += exact_ms / 1000
                    found.append(rows)
                grid.append({"num_leaves": leaves, "num_leaves_to_search": searched, "num_reordering_candidates": reorder,
                             "recall_at_10": recall(found, exact), "mean_ms": 1000 * float(np.mean(seconds)),
                             "exact_share": unfilled / len(queries), "build_seconds": round(build, 2)})
        del searcher
    chosen = _fastest(grid, "mean_ms")
    return {k: chosen[k] for k in ("num_leaves", "num_leaves_to_search", "num_reordering_candidates")}, grid


def _fastest(grid: List[Dict[str, Any]], time_key: str, within: float = 0.05) -> Dict[str, Any]:
    """The fastest setting with recall >= TUNING_RECALL (the best recall among those within
    `within` of its time, which timing noise cannot tell apart); else the best recall."""
    good = [g for g in grid if g["recall_at_10"] >= TUNING_RECALL]
    if not good:
        return max(grid, key=lambda g: (g["recall_at_10"], -g[time_key]))
    fastest = min(g[time_key] for g in good)
    return max((g for g in good if g[time_key] <= fastest * (1 + within)),
               key=lambda g: (g["recall_at_10"], -g[time_key]))


class FaissIndex:
    """faiss IndexIVFFlat (inner product) over [vector, bias] of the valid rows, searched
    as `recommend` is: K + history items fetched, the history dropped, the best K kept."""

    def __init__(self, db: np.ndarray, db_rows: np.ndarray, seed: int):
        import faiss

        self.faiss = faiss
        n, dim = db.shape
        self.rows = db_rows
        self.nlist = max(1, min(n // 39, round(4 * math.sqrt(n))))
        started = time.monotonic()
        quantizer = faiss.IndexFlatIP(dim)
        self.index = faiss.IndexIVFFlat(quantizer, dim, self.nlist, faiss.METRIC_INNER_PRODUCT)
        # 64 training points per list (faiss asks for 39 at least): k-means on all of a
        # million rows would take minutes for no better lists.
        sample = db if n <= 64 * self.nlist else db[np.random.default_rng(seed).choice(n, 64 * self.nlist,
                                                                                      replace=False)]
        self.index.cp.seed = seed
        self.index.train(sample)
        self.index.add(db)
        self.build_seconds = time.monotonic() - started
        self.nprobe = 1

    def size_bytes(self) -> int:
        return int(self.faiss.serialize_index(self.index).size)

    def top_rows(self, vectors: np.ndarray, history_rows: Sequence[np.ndarray]) -> np.ndarray:
        """Ranked rows [B, K] (0 where fewer were found) of query vectors [B, d]."""
        self.index.nprobe = self.nprobe
        count = K + max((len(r) for r in history_rows), default=0)
        queries = np.concatenate([vectors, np.ones((len(vectors), 1), np.float32)], axis=1)
        _, idx = self.index.search(np.ascontiguousarray(queries, np.float32), count)
        out = np.zeros((len(vectors), K), np.int64)
        for b, (found, own) in enumerate(zip(idx, history_rows)):
            rows = self.rows[found[found >= 0]]
            rows = rows[~np.isin(rows, own)][:K]
            out[b, : len(rows)] = rows
        return out

    def tune(self, tuning: Queries, exact: np.ndarray) -> List[Dict[str, Any]]:
        """Sets nprobe as `tune_scann` chooses; returns the grid."""
        grid = []
        for nprobe in [p for p in FAISS_NPROBE if p <= self.nlist]:
            self.nprobe = nprobe
            ranked, seconds = [], []
            for q, own in zip(tuning.vectors, tuning.history_rows):
                t0 = time.perf_counter()
                ranked.append(self.top_rows(q[None, :], [own])[0])
                seconds.append(time.perf_counter() - t0)
            grid.append({"nprobe": nprobe, "recall_at_10": recall(ranked, exact),
                         "mean_ms": 1000 * float(np.mean(seconds))})
        self.nprobe = _fastest(grid, "mean_ms")["nprobe"]
        return grid


# --------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------
def dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def ids_to_rows(ids: np.ndarray, vocabulary_rows: Dict[bytes, int]) -> List[List[int]]:
    out = []
    for row in ids:
        rows = []
        for item in row:
            if item.startswith(SYNTHETIC_PREFIX.encode()):
                rows.append(int(item[len(SYNTHETIC_PREFIX):]))
            else:
                rows.append(vocabulary_rows.get(item, 0))
        out.append(rows)
    return out


def served_ranking(recommend: Callable, queries: Queries, vocabulary_rows: Dict[bytes, int], batch: int = 64):
    ranked = []
    for start in range(0, len(queries), batch):
        items, behaviors = queries.arrays(start, start + batch)
        out = recommend(history_item_ids=tf.constant(items), history_behaviors=tf.constant(behaviors))
        ranked += ids_to_rows(out[protocol.RECOMMEND_ITEM_IDS].numpy(), vocabulary_rows)
    return ranked


def request_inputs(queries: Queries, batch: int, limit: int = 64) -> List[Dict[str, np.ndarray]]:
    """Up to `limit` requests of `batch` consecutive report histories (cycling)."""
    out = []
    for r in range(limit):
        picks = [(r * batch + j) % len(queries) for j in range(batch)]
        items, behaviors = protocol.history_arrays([queries.items[p] for p in picks],
                                                   [queries.behaviors[p] for p in picks])
        out.append({F.HISTORY_ITEM_IDS: items, F.HISTORY_BEHAVIORS: behaviors})
    return out


def cycling(calls: Sequence[Callable[[], Any]]) -> Callable[[], Any]:
    it = itertools.cycle(calls)
    return lambda: next(it)()


def measure(call: Callable[[], Any], args, keep_latencies: bool = False) -> Dict[str, Any]:
    """p50 / p99 ms of one latency cell (one request at a time, bounded by --requests and
    --seconds); with `keep_latencies`, every request's ms too (`latencies_ms`)."""
    stats = serving_bench.run_cell(call, 1, args.requests, args.seconds, warm=5, keep_latencies=keep_latencies)
    if stats["errors"]:
        raise RuntimeError(f"{stats['errors']} requests failed: {stats['first_error']}")
    out = {"p50_ms": stats["p50_ms"], "p99_ms": stats["p99_ms"], "requests": stats["requests"]}
    if keep_latencies:
        out["latencies_ms"] = stats["latencies_ms"]
    return out


def run_of(row: Dict[str, Any], per_query_recall: Sequence[float], b1_cell: Dict[str, Any]) -> Dict[str, Any]:
    """One row's values per test unit, for the runs file: each report query's recall@10 and
    each in-process batch-1 request's latency (the cell the goals read)."""
    return {"items": row["items"], "method": row["method"],
            "recall_at_10": [round(float(x), 4) for x in per_query_recall],
            "in_process_b1_ms": [round(float(x), 4) for x in b1_cell["latencies_ms"]]}


def signature_calls(fn, requests: Sequence[Dict[str, np.ndarray]]) -> List[Callable[[], Any]]:
    tensors = [{k: tf.constant(v) for k, v in r.items()} for r in requests]
    return [lambda t=t: fn(**t)[protocol.RECOMMEND_ITEM_IDS].numpy() for t in tensors]


def faiss_calls(index: FaissIndex, query: Callable[[Dict[str, np.ndarray]], Dict[str, np.ndarray]],
                requests: Sequence[Dict[str, np.ndarray]], ids: np.ndarray) -> List[Callable[[], Any]]:
    """`recommend` the split way: the query tower (in-process or over gRPC), then the index."""

    def call(request):
        out = query(request)
        rows = out["history_rows"]
        ranked = index.top_rows(np.asarray(out["query"], np.float32), [r[r > 0] for r in rows])
        return ids[ranked]

    return [lambda r=r: call(r) for r in requests]


# --------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------
def peak_rss_mb(pid: str = "self") -> float:
    """Peak resident memory (VmHWM) of a running process, in MB (0 when unknown)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0


def run_size(size: int, args, model: RecModel, tft_output, real: Dict[str, np.ndarray], synthetic: np.ndarray,
             tuning: Queries, report: Queries, vocabulary_rows: Dict[bytes, int], work: str, log) -> Tuple[
        List[Dict[str, Any]], Dict[str, Any], List[Dict[str, Any]]]:
    """The rows of one catalogue size, its tuning grids and its runs (`run_of`: per report
    query and per in-process batch-1 request)."""
    dim = real["vectors"].shape[1]
    num_rows = len(real["valid"])
    extra = size - int(real["valid"].sum())
    if extra < 0:
        raise ValueError(f"--sizes: {size} is smaller than the trained catalogue ({int(real['valid'].sum())} items)")
    vectors = np.concatenate([real["vectors"], synthetic[:extra, :dim]])
    biases = np.concatenate([real["biases"], synthetic[:extra, dim]])
    valid = np.concatenate([real["valid"], np.ones(extra, bool)])
    counts = np.concatenate([real["counts"], np.zeros(extra, np.float32)])
    placeholders = [f"<row {r}>".encode() for r in range(len(vocabulary_rows) + 1, num_rows)]
    extra_ids = placeholders + [f"{SYNTHETIC_PREFIX}{r}".encode() for r in range(num_rows, num_rows + extra)]
    ids = np.array([b""] + list(vocabulary_rows) + extra_ids, dtype=object)
    db_rows = np.flatnonzero(valid)
    db = np.concatenate([vectors[db_rows], biases[db_rows, None]], axis=1).astype(np.float32)
    log(f"[{size}] catalogue of {len(db_rows)} items ({extra} synthetic); exact top {K} of "
        f"{len(tuning)} tuning and {len(report)} report queries")
    exact_tuning = exact_top(tuning, vectors, biases, valid)
    exact_report = exact_top(report, vectors, biases, valid)
    transform = ExtendedTransformOutput(tft_output, extra_ids)
    base_dir = os.path.join(work, f"serving-{size}")
    rows, tuning_out, runs = [], {}, []
    requests = {b: request_inputs(report, b) for b in BATCHES}

    # In-process: export, load, recall, latency.
    loaded, expected = {}, {}
    for method in (BRUTE, SCANN):
        setting = {}
        if method == SCANN:
            chosen, grid = tune_scann(db, db_rows, tuning, exact_tuning, model.context.max_history,
                                      rows[0]["in_process_b1_p50_ms"])
            tuning_out[SCANN] = {"chosen": chosen, "grid": grid}
            best = next(g for g in grid if all(g[k] == v for k, v in chosen.items()))
            setting = {"scann": True, **{f"scann_{k}": v for k, v in chosen.items()},
                       "scann_dimensions_per_block": SCANN_DIMENSIONS_PER_BLOCK}
            log(f"[{size}] scann chosen {chosen}: tuning recall {best['recall_at_10']:.4f}")
        hparams = model.hparams.override(setting)
        extended = ExtendedCatalogue(model, vectors, biases, counts, hparams)
        out_dir = os.path.join(base_dir, method, "1")
        started = time.monotonic()
        export_model(extended, transform, valid, out_dir, top_k=K, family=FAMILY)
        export_seconds = time.monotonic() - started
        index = extended.top_k_index
        loaded[method] = tf.saved_model.load(out_dir)
        fn = loaded[method].signatures[protocol.RECOMMEND]
        # The answers to the first request of each batch size, which gRPC must give too.
        expected[method] = {b: signature_calls(fn, requests[b][:1])[0]() for b in BATCHES}
        row = {"items": size, "method": method, "setting": json.dumps({k: v for k, v in setting.items() if k != "scann"}),
               "index_build_s": round(index.build_seconds, 2) if index is not None else 0.0,
               "export_s": round(export_seconds, 1), "size_mb": round(dir_bytes(out_dir) / 2**20, 1)}
        per_query = recalls(served_ranking(fn, report, vocabulary_rows), exact_report)
        row["recall_at_10"] = float(per_query.mean())
        if method == SCANN:
            row["tuning_recall_at_10"] = best["recall_at_10"]
            row["exact_share"] = float(np.mean(index.unfilled(report.vectors, report.biases, report.history_rows, K)))
        for b in BATCHES:
            cell = measure(cycling(signature_calls(fn, requests[b])), args, keep_latencies=b == 1)
            row.update({f"in_process_b{b}_p50_ms": cell["p50_ms"], f"in_process_b{b}_p99_ms": cell["p99_ms"]})
            if b == 1:
                runs.append(run_of(row, per_query, cell))
        log(f"[{size}] {method}: {json.dumps(row)}")
        rows.append(row)
        del extended, index, loaded[method], fn
        gc.collect()

    # The peer outside TensorFlow, with the query tower as its own SavedModel.
    faiss_index = FaissIndex(db, db_rows, SEED)
    tuning_out[FAISS] = {"nlist": faiss_index.nlist, "grid": faiss_index.tune(tuning, exact_tuning)}
    tuning_out[FAISS]["chosen"] = {"nprobe": faiss_index.nprobe}
    catalogue = Catalogue(tft_output.vocabulary_by_name(F.ITEM_VOCAB), real["valid"], num_rows, real["counts"])
    tower = QueryTower(model, tft_output, catalogue)
    tower_dir = os.path.join(base_dir, QUERY_MODEL, "1")
    tf.saved_model.save(tower, tower_dir, signatures={QUERY_SIGNATURE: tower.query.get_concrete_function()})
    loaded[QUERY_MODEL] = tf.saved_model.load(tower_dir)
    query_fn = loaded[QUERY_MODEL].signatures[QUERY_SIGNATURE]

    def in_process_query(request):
        out = query_fn(**{k: tf.constant(v) for k, v in request.items()})
        return {k: v.numpy() for k, v in out.items()}

    ranked = []
    for start in range(0, len(report), 64):
        items, behaviors = report.arrays(start, start + 64)
        out = in_process_query({F.HISTORY_ITEM_IDS: items, F.HISTORY_BEHAVIORS: behaviors})
        ranked += faiss_index.top_rows(out["query"], [r[r > 0] for r in out["history_rows"]]).tolist()
    faiss_recalls = recalls(ranked, exact_report)
    faiss_row = {"items": size, "method": FAISS, "setting": json.dumps({"nlist": faiss_index.nlist,
                                                                        "nprobe": faiss_index.nprobe}),
                 "index_build_s": round(faiss_index.build_seconds, 2), "export_s": None,
                 "size_mb": round((dir_bytes(tower_dir) + faiss_index.size_bytes()) / 2**20, 1),
                 "recall_at_10": float(faiss_recalls.mean()),
                 "tuning_recall_at_10": next(g["recall_at_10"] for g in tuning_out[FAISS]["grid"]
                                             if g["nprobe"] == faiss_index.nprobe)}
    for b in BATCHES:
        cell = measure(cycling(faiss_calls(faiss_index, in_process_query, requests[b], ids)), args,
                       keep_latencies=b == 1)
        faiss_row.update({f"in_process_b{b}_p50_ms": cell["p50_ms"], f"in_process_b{b}_p99_ms": cell["p99_ms"]})
        if b == 1:
            runs.append(run_of(faiss_row, faiss_recalls, cell))
    log(f"[{size}] {FAISS}: {json.dumps(faiss_row)}")
    rows.append(faiss_row)

    # Through the local gRPC server (a child process serving the three SavedModels).
    log_path = os.path.join(work, f"server-{size}.log")
    names = [BRUTE, SCANN, QUERY_MODEL]
    proc, target = serving_bench.start_local_server(base_dir, ",".join(names), log_path)
    try:
        for name in names:
            serving_bench.wait_ready(target, name, proc, log_path, timeout_s=1800.0)
        client = serving_client.ServingClient(target, timeout_s=120.0, retries=2)

        def grpc_query(request, client=client):
            out = client.predict(QUERY_MODEL, protocol.as_input_protos(request), QUERY_SIGNATURE).outputs
            return out

        for row in rows:
            method = row["method"]
            for b in BATCHES:
                if method == FAISS:
                    calls = faiss_calls(faiss_index, grpc_query, requests[b], ids)
                    local = faiss_calls(faiss_index, in_process_query, requests[b][:1], ids)[0]()
                else:
                    protos = [protocol.as_input_protos(r) for r in requests[b]]
                    calls = [lambda p=p, m=method: client.predict(m, p, protocol.RECOMMEND).outputs[
                        protocol.RECOMMEND_ITEM_IDS] for p in protos]
                    local = expected[method][b]
                # The same answers both ways, or the comparison means nothing.
                np.testing.assert_array_equal(np.asarray(calls[0]()).astype(bytes), np.asarray(local).astype(bytes),
                                              err_msg=f"{method} batch {b}: gRPC and in-process answers differ")
                cell = measure(cycling(calls), args)
                row.update({f"grpc_b{b}_p50_ms": cell["p50_ms"], f"grpc_b{b}_p99_ms": cell["p99_ms"]})
            log(f"[{size}] {method} gRPC: b1 p50 {row['grpc_b1_p50_ms']} ms, b32 p50 {row['grpc_b32_p50_ms']} ms")
        client.close()
    finally:
        server_peak = peak_rss_mb(str(proc.pid))
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    brute = rows[0]
    for row in rows:
        row["speedup_b1"] = round(brute["in_process_b1_p50_ms"] / row["in_process_b1_p50_ms"], 1)
    tuning_out["server_peak_rss_mb"] = server_peak
    del loaded, faiss_index
    gc.collect()
    shutil.rmtree(base_dir, ignore_errors=True)
    return rows, tuning_out, runs


# --------------------------------------------------------------------------
# Intervals and goals
# --------------------------------------------------------------------------
LATENCY_STREAMS = (BRUTE, SCANN, FAISS)  # each method's requests are resampled with its own seed


def intervals(runs: Sequence[Dict[str, Any]], resamples: int = common.BOOTSTRAP_RESAMPLES) -> List[Dict[str, Any]]:
    """Per run (`run_of`: one size and method), with bootstrap intervals (common.LEVEL):
    recall@10 over the report queries (every method on the same resamples: the same queries);
    the in-process batch-1 p50 over the requests; and the speed-up over brute force of the
    same size (brute force's p50 over the method's), the interval of that ratio with the two
    methods' requests resampled independently: they are separate request streams, so no
    request of one pairs with a request of the other.

    Args:
      runs: the runs file's entries.
      resamples: bootstrap resamples per interval.
    """
    out, p50 = [], {}
    for run in runs:
        method = run["method"]
        if method not in LATENCY_STREAMS:
            raise ValueError(f"runs entry {run['items']}/{method}: the method is not one of {LATENCY_STREAMS}")
        queries, requests = len(run["recall_at_10"]), len(run["in_process_b1_ms"])
        recall_at_10 = common.Measured.of(method, [common.mean_statistic(run["recall_at_10"])], queries,
                                          resamples).summary()
        latency = common.Measured.of(method, [common.percentile_statistic(run["in_process_b1_ms"], 50)], requests,
                                     resamples, seed=common.BOOTSTRAP_SEED + LATENCY_STREAMS.index(method))
        p50[(run["items"], method)] = latency
        low, high = common.percentile_interval(latency.draws[0])
        out.append({"items": run["items"], "method": method, "queries": queries,
                    "recall_at_10": recall_at_10["mean"], "recall_low": recall_at_10["low"],
                    "recall_high": recall_at_10["high"], "requests": requests, "b1_p50_ms": latency.values[0],
                    "b1_p50_low": low, "b1_p50_high": high, "speedup_b1": None, "speedup_low": None,
                    "speedup_high": None})
    for entry in out:
        brute = p50.get((entry["items"], BRUTE))
        if entry["method"] == BRUTE or brute is None:
            continue
        mine = p50[(entry["items"], entry["method"])]
        entry["speedup_b1"] = brute.values[0] / mine.values[0]
        entry["speedup_low"], entry["speedup_high"] = common.percentile_interval(brute.draws[0] / mine.draws[0])
    return out


def goals(interval_rows: Sequence[Dict[str, Any]]) -> List[str]:
    """The three goal lines at GOAL_SIZE, each with its bootstrap interval (`intervals`) and
    met only when the whole interval is on the goal's side."""
    at = {r["method"]: r for r in interval_rows if r["items"] == GOAL_SIZE}
    if SCANN not in at or BRUTE not in at:
        return [f"goals: not measured ({GOAL_SIZE} items is not among --sizes)"]
    s, b = at[SCANN], at[BRUTE]
    level = f"{common.LEVEL:.0%} bootstrap"
    return [
        f"recall@10 >= {RECALL_GOAL} at {GOAL_SIZE:,} items (scann): {s['recall_at_10']:.4f}, {level} "
        f"[{s['recall_low']:.4f}, {s['recall_high']:.4f}] over {s['queries']} report queries: "
        f"{common.goal_verdict(s['recall_low'], s['recall_high'], RECALL_GOAL, at_least=True)}",
        f"recommend p50 <= {P50_GOAL_MS:g} ms at batch 1 in-process (scann): {s['b1_p50_ms']:.3f} ms, {level} "
        f"[{s['b1_p50_low']:.3f}, {s['b1_p50_high']:.3f}] ms over {s['requests']} requests: "
        f"{common.goal_verdict(s['b1_p50_low'], s['b1_p50_high'], P50_GOAL_MS, at_least=False, unit=' ms')}",
        f">= {SPEEDUP_GOAL:g}x faster than brute force at batch 1 in-process: {b['b1_p50_ms']:.3f} / "
        f"{s['b1_p50_ms']:.3f} ms = {s['speedup_b1']:.1f}x, {level} [{s['speedup_low']:.1f}, "
        f"{s['speedup_high']:.1f}]x of the ratio of p50s, brute force's {b['requests']} and scann's "
        f"{s['requests']} requests resampled independently (separate request streams, nothing to pair): "
        f"{common.goal_verdict(s['speedup_low'], s['speedup_high'], SPEEDUP_GOAL, at_least=True, unit='x')}",
    ]


INTERVAL_COLUMNS = ["items", "method", "recall_at_10", "recall_low", "recall_high", "b1_p50_ms", "b1_p50_low",
                    "b1_p50_high", "speedup_b1", "speedup_low", "speedup_high"]


COLUMNS = ["items", "method", "setting", "recall_at_10", "exact_share", "index_build_s", "size_mb", "in_process_b1_p50_ms",
           "in_process_b1_p99_ms", "in_process_b32_p50_ms", "in_process_b32_p99_ms", "grpc_b1_p50_ms",
           "grpc_b1_p99_ms", "grpc_b32_p50_ms", "grpc_b32_p99_ms", "speedup_b1"]


def render(rows, meta, interval_rows) -> str:
    lines = [
        f"# Catalogue size: recommend's recall and latency from {meta['dataset']}'s catalogue to a million items",
        "",
        common.md_table(rows, COLUMNS, digits=3),
        "",
        f"- catalogue: the item vectors and biases of {FAMILY} trained on {meta['data']} (seed {SEED}, "
        f"{meta['training']['epochs_run']} epochs, best eval {meta['training']['monitor']} "
        f"{meta['training']['best_value']:.4f}) and synthetic items from a Gaussian fit of the real items' "
        "[vector, bias] (mean, full covariance).",
        f"- queries: test-split histories of {meta['report_queries']} users (recall and latency); the "
        f"parameters were chosen on the eval-split histories of {meta['tuning_queries']} other users "
        f"(held out): the setting with recall@10 >= {TUNING_RECALL} there (a margin over the goal's "
        f"{RECALL_GOAL} for other users) of the lowest mean batch-1 time, a query "
        "answered exactly charged brute force's batch-1 p50 (grids in "
        f"`{meta['name']}.json`). exact_share: the report queries scann's `recommend` answers by exact "
        "scoring at batch 1 (the index left fewer than 10 items outside the history).",
        f"- histories: a user's whole training history, oldest first ({meta['report_history_items']['p50']} "
        f"items at the median, {meta['report_history_items']['p90']} at p90, {meta['report_history_items']['max']} "
        "at most); the query reads the most recent 64, and every item of it is excluded. A batch-32 "
        "request carries 32 of them padded to the longest (a multiple of 64).",
        "- recall_at_10: share of the exact top 10 (history excluded, as recommend does) that the method "
        "returns; brute_force's is that of the exported SavedModel against numpy's float32 ranking.",
        "- size_mb: what the server loads: the SavedModel (faiss_ivf: the query tower's SavedModel plus the "
        "serialized index). index_build_s: building the index (ScaNN inside export).",
        "- latency: one request at a time, p50/p99 over at most "
        f"{meta['requests']} requests or {meta['seconds_per_cell']:g} s per cell; in_process calls the SavedModel's "
        "`recommend` signature (faiss_ivf: the query tower's signature, then the index, in this process); "
        "grpc goes through serving/local_server.py in a child process and serving/client.py "
        "(faiss_ivf: the query tower over gRPC, the index in the client). speedup_b1: brute force's "
        "in-process batch-1 p50 over the method's.",
        "",
        f"## {common.LEVEL:.0%} bootstrap intervals",
        "",
        common.md_table(interval_rows, INTERVAL_COLUMNS, digits=3),
        "",
        f"- recall_low / recall_high: the percentile interval of recall@10 over {meta['bootstrap']['resamples']} "
        f"bootstrap resamples of the {meta['report_queries']} report queries (the same resamples for every "
        "method). b1_p50_low / high: that of the in-process batch-1 p50 over resamples of the cell's requests "
        "(the cell cycles through 64 report histories, and its requests are taken as independent draws: a load "
        "that changes during the cell is not in the interval). "
        "speedup_low / high: that of brute force's p50 over the method's, each method's requests resampled on "
        "their own (separate request streams: no request of one pairs with a request of the other). A goal is "
        "met only when its whole interval is on the goal's side. Each query's recall and each request's "
        f"latency: `{meta['name']}_runs.json`.",
        "",
        "## Goals",
        "",
    ] + [f"- {g}" for g in meta["goals"]] + [
        "",
        f"Machine: {json.dumps(meta['machine'])}; 1-minute load average {meta['load_before']} at the start, "
        f"{meta['load_after']} at the end (latencies taken while other work runs are provisional).",
        f"Wall time {meta['seconds'] / 60:.1f} min; peak resident memory {meta['peak_rss_mb']['this_process']:.0f} MB "
        f"(this process), {meta['peak_rss_mb']['local_server']:.0f} MB (the local server, at its largest size).",
        f"Commit: {meta['commit']}.",
    ]
    return "\n".join(lines)


def write_outputs(out: str, rows: List[Dict[str, Any]], runs: List[Dict[str, Any]], tuning_grids: Dict[str, Any],
                  meta: Dict[str, Any]) -> str:
    """Writes `<out>/<name>_runs.json` (each report query's recall@10 and each in-process
    batch-1 request's latency per size and method), then `<out>/<name>.json` (meta, rows,
    intervals, tuning grids) and `.md` with the goals judged on the intervals; returns the
    markdown.

    Args:
      out: the results directory.
      rows: the table's rows.
      runs: `run_of` per size and method.
      tuning_grids: per size, the indexes' grids.
      meta: the run's record (`main`'s); gets `bootstrap` and `goals`.
    """
    meta["bootstrap"] = {"resamples": common.BOOTSTRAP_RESAMPLES, "seed": common.BOOTSTRAP_SEED,
                         "level": common.LEVEL}
    interval_rows = intervals(runs)
    meta["goals"] = goals(interval_rows)
    markdown = render(rows, meta, interval_rows)
    os.makedirs(out, exist_ok=True)
    common.atomic_write(os.path.join(out, f"{meta['name']}_runs.json"),
                        json.dumps({"command": meta["command"], "commit": meta["commit"],
                                    "report_queries": meta["report_queries"], "bootstrap": meta["bootstrap"],
                                    "runs": runs}) + "\n")
    common.atomic_write(os.path.join(out, f"{meta['name']}.json"),
                        json.dumps({"meta": meta, "rows": rows, "intervals": interval_rows, "tuning": tuning_grids},
                                   indent=2) + "\n")
    common.atomic_write(os.path.join(out, f"{meta['name']}.md"), markdown + "\n\nProduced by: `" +
                        meta["command"] + "`\n")
    return markdown


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(str(s) for s in SIZES), help="catalogue sizes in items")
    parser.add_argument("--seconds", type=float, default=10.0, help="time bound of one latency cell")
    parser.add_argument("--requests", type=int, default=2000, help="request bound of one latency cell")
    parser.add_argument("--hparam", action="append", default=[], metavar="two_tower.NAME=VALUE",
                        help="training overrides (e.g. max_epochs=2 for a dry run)")
    parser.add_argument("--out", default=common.RESULTS_DIR)
    parser.add_argument("--name", default="catalogue", help="result files <out>/<name>.json and .md")
    parser.add_argument("--work_dir", default=common.DEFAULT_WORK_DIR)
    common.add_dataset_arguments(parser)
    args = parser.parse_args(argv)
    from models.hparams import parse_assignments

    sizes = sorted(int(s) for s in args.sizes.split(",") if s)
    overrides = parse_assignments(args.hparam).get(FAMILY, {})
    started = time.monotonic()
    load_before = round(os.getloadavg()[0], 2)

    def log(message):
        print(f"[{time.monotonic() - started:7.1f}s] {message}", file=sys.stderr, flush=True)

    stages = common.stages_of_args(args)
    tft_output = tft.TFTransformOutput(stages.transform_graph)
    config = common.train_config(stages, FAMILY, hparams=overrides, tasks=common.task_names(stages.config, FAMILY),
                                 seed=SEED, top_k=K)
    model, summary, valid = train(config, stages.files(F.USER_VIEW, "train"), stages.files(F.USER_VIEW, "eval"),
                                  stages.transform_graph)
    log(f"trained {FAMILY}: {summary['epochs_run']} epochs, best {summary['monitor']} {summary['best_value']:.4f}")
    vectors, biases = (np.asarray(t, np.float32) for t in model.candidates())
    real = {"vectors": vectors, "biases": biases, "valid": np.asarray(valid, bool),
            "counts": np.asarray(model.context.item_counts, np.float32)}
    vocabulary = tft_output.vocabulary_by_name(F.ITEM_VOCAB)
    vocabulary_rows = {v: r for r, v in enumerate(vocabulary, start=1)}
    catalogue = Catalogue(vocabulary, real["valid"], len(valid), real["counts"])
    tuning, report = held_out_queries(stages, SEED)
    tower = QueryTower(model, tft_output, catalogue)
    encode_queries(tuning, tower)
    encode_queries(report, tower)
    real_rows = np.flatnonzero(real["valid"])
    with_bias = np.concatenate([vectors[real_rows], biases[real_rows, None]], axis=1)
    synthetic = synthetic_items(with_bias, max(0, sizes[-1] - len(real_rows)), SEED)
    log(f"{len(real_rows)} real items, {len(synthetic)} synthetic drawn; {len(tuning)} tuning and {len(report)} "
        "report queries")

    rows, runs, tuning_grids = [], [], {}
    with tempfile.TemporaryDirectory(prefix="bench-catalogue-") as work:
        for size in sizes:
            size_rows, grids, size_runs = run_size(size, args, model, tft_output, real, synthetic, tuning, report,
                                                   vocabulary_rows, work, log)
            rows += size_rows
            runs += size_runs
            tuning_grids[str(size)] = grids
    meta = {
        "name": args.name,
        "command": common.command_line("bench.catalogue", argv),
        "commit": common.commit(),
        "dataset": stages.config.dataset_name,
        "data": common.data_label(stages.config),
        "machine": common.machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_before": load_before,
        "load_after": round(os.getloadavg()[0], 2),
        "seconds": round(time.monotonic() - started, 1),
        "peak_rss_mb": {"this_process": peak_rss_mb(),
                        "local_server": max(g["server_peak_rss_mb"] for g in tuning_grids.values())},
        "requests": args.requests,
        "seconds_per_cell": args.seconds,
        "tuning_queries": len(tuning),
        "report_history_items": {q: int(np.percentile([len(i) for i in report.items], p))
                                 for q, p in (("p50", 50), ("p90", 90), ("max", 100))},
        "report_queries": len(report),
        "training": {k: summary[k] for k in ("epochs_run", "best_epoch", "monitor", "best_value", "hparams")},
    }
    print(write_outputs(args.out, rows, runs, tuning_grids, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
