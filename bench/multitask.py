"""The multi-task benchmark: the multi-task families per task against per-task peers.

Data (the pipeline's own rows, `bench.common.data_stages`): each of `--datasets` (shipped
description names or description files), its data from `--data_dir DATASET=DIR` (default:
the description's data_dir), its description's split, and `--negatives DATASET=N` sampled
negatives per positive (default: MovieLens 1, otherwise the description's). Tasks: the
description's pointwise tasks, the implicit one dropped without negatives (as the
pipeline's `family_tasks` does); every metric is computed on the rows where the task's
condition holds (the families mask conditional tasks). By default:
- MovieLens ml-latest-small, hash split with 1 sampled negative per positive: tasks
  `watched` (all rows), `liked`, `loved` and `rating` (on watched rows only).
- Taobao UserBehavior sample (`--data_dir taobao=DIR`; the Makefile passes TAOBAO_DIR),
  by-day split (protocol M), no sampled negatives: tasks `cart`, `fav`, `buy` on every
  first page view.

Families (`--families`, registry defaults unless `--hparam FAMILY.NAME=VALUE`) are trained
with the pipeline's Trainer code (`training.trainer.train`, early stopping on the eval
split's mean AUC over the binary tasks), one run per seed, and scored on the transformed
test rows (the features the served model's Transform produces). Peers, trained in the
same run on the same transformed training rows of each task (the rows where its condition
holds) with the same information, per task:
- `logreg`: scikit-learn LogisticRegression (Ridge for the rating) on one-hot user, item
  and set-feature ids (the description's first categorical item feature: MovieLens's
  genres, Taobao's category) plus the dense features below; C (alpha) chosen on the eval
  split by `bench.common.widening_search` (`LR_KNOBS`, `RIDGE_KNOBS`).
- `lightgbm`: LightGBM on user, item and first set-feature ids (categorical) plus the
  same dense features, learning rate 0.1; leaves and smallest leaf chosen by the same
  search (`LGB_KNOBS`) and rounds early-stopped on the eval split (a grid without the ids
  lost on both datasets' eval splits in a trial run, and was dropped for time).
  Each search's knobs end interior or at a stated bound; the status is in the settings.
Dense features: the item's declared numeric features (MovieLens: the year z-score),
popularity and (with a rating) out-of-fold mean rating from Transform; history length;
the share of each behavior type in the history; the share of history items with the
item's (first) set-feature value.

Metrics: evaluation.definitions (the Evaluator's functions): AUC, PR-AUC, log loss and
calibration (mean prediction / positive rate) per binary task, RMSE and MAE for the
rating. Families: mean and standard deviation over seeds. AUCs carry a 95% bootstrap
interval over test rows (resampled rows shared by every model, the seed mean recomputed on
each resample; `--bootstrap_datasets`) and the Hanley-McNeil interval. Comparisons
(`bench.common.compare`: both seed stds and the paired bootstrap interval of the
difference): on every binary task, every family (dtrn included) against single_task, and
the best family against the best peer, both chosen by their eval-split AUC (the test
split never chooses); on the sparse tasks (`--sparse_tasks DATASET=T1,T2`; default
MovieLens loved, Taobao fav and buy) a family must beat single_task. Gates: mean softmax weight per expert per task on the eval split
(trainer.mean_gate_weights), mean over seeds.

    python -m bench.multitask [--datasets taobao,movielens] [--seeds 42,43,44,45,46]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from bench import common  # noqa: E402  (sets the Keras switch first)

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

from contract import datasets as D  # noqa: E402
from contract import description as desc  # noqa: E402
from contract import features as F  # noqa: E402
from contract import tasks as T  # noqa: E402
from evaluation import definitions as d  # noqa: E402
from training.inputs import predict_rows  # noqa: E402,F401  (re-exported for the benchmarks)

FAMILIES = ("single_task", "shared_bottom", "mmoe", "ple", "nmtr")
PEERS = ("logreg", "lightgbm")
# Defaults of the per-dataset options (DATASET=VALUE, the dataset a description's name): the
# benchmark's protocol on the shipped descriptions. Another dataset takes its description's
# negatives, no sparse task and no reference.
DEFAULT_NEGATIVES = ("movielens=1",)
DEFAULT_SPARSE_TASKS = ("movielens=loved", "taobao=fav,buy")
# A logistic regression AUC measured earlier on Taobao's test split.
DEFAULT_REFERENCE_AUC = ("taobao=cart:0.653,fav:0.778,buy:0.677",)
BINARY_METRICS = ("auc", "pr_auc", "log_loss", "calibration")
REGRESSION_METRICS = ("rmse", "mae")
# The peers' knobs, chosen on the eval split by `common.widening_search` (a knob chosen at
# its grid's edge is widened past it until the choice is interior or a stated bound is
# reached; the status is recorded with the setting).
_PENALTY_WHY = "past these, the penalty leaves either only the intercept or an unpenalized fit"
LR_KNOBS = (common.Knob("C", (0.03, 0.3, 3.0), common.GEOMETRIC, 10.0, low=1e-6, high=1e6, why=_PENALTY_WHY),)
RIDGE_KNOBS = (common.Knob("alpha", (1.0, 10.0, 100.0), common.GEOMETRIC, 10.0, low=1e-6, high=1e8,
                           why=_PENALTY_WHY),)
_TREE_WHY = "a tree of one split or with more leaves than the sparse tasks have positives"
LGB_KNOBS = (common.Knob("num_leaves", (15, 63), common.GEOMETRIC, 2.0, low=2, high=1024, integer=True, why=_TREE_WHY),
             common.Knob("min_child_samples", (20,), common.GEOMETRIC, 3.0, low=1, high=5000, integer=True,
                         why=_TREE_WHY))
LGB_LEARNING_RATE = 0.1  # the rounds are early-stopped on the eval split instead
PEER_EVALUATIONS = 24  # a search's most evaluations (its stated cost bound)


def per_dataset(items: Optional[Sequence[str]], option: str) -> Dict[str, str]:
    """`["movielens=1", "taobao=fav,buy"]` (a repeatable DATASET=VALUE option) -> {dataset: value}."""
    out = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"{option} {item!r}: expected DATASET=VALUE")
        out[name.strip()] = value.strip()
    return out


def dataset_name(dataset: str) -> str:
    """The description name of a --datasets entry (a shipped name or a description file)."""
    return D.dataset_spec(dataset).name


def keyed(values: Mapping[str, Any], dataset: str, default: Any = None) -> Any:
    """The value of a per-dataset option for a --datasets entry, by the entry as given or by
    its description's name."""
    if dataset in values:
        return values[dataset]
    return values.get(dataset_name(dataset), default)


def sparse_tasks(args, dataset: str) -> Tuple[str, ...]:
    """The tasks of `dataset` reported as sparse (paired bootstrap against single_task)."""
    text = keyed(per_dataset(args.sparse_tasks, "--sparse_tasks"), dataset, "")
    return tuple(t for t in text.split(",") if t)


def reference_aucs(args, dataset: str) -> Dict[str, float]:
    """{task: reference AUC} of `dataset` (--reference_auc DATASET=TASK:AUC,...)."""
    text = keyed(per_dataset(args.reference_auc, "--reference_auc"), dataset, "")
    out = {}
    for item in filter(None, text.split(",")):
        task, sep, value = item.partition(":")
        if not sep:
            raise ValueError(f"--reference_auc {dataset}={text!r}: expected TASK:AUC,...")
        out[task.strip()] = float(value)
    return out


def dense_item_features(d: desc.Description) -> Tuple[str, ...]:
    """The transformed item features every peer reads: the declared numeric and time item
    features, then popularity and (with a rating) the out-of-fold mean rating."""
    declared = tuple(f.transformed_name() for f in d.item_features if f.type in (desc.NUMERIC, desc.TIME))
    return declared + (F.ITEM_POPULARITY_MM, F.ITEM_AVG_RATING_MM)


def set_feature(d: desc.Description) -> Optional[desc.Feature]:
    """The first categorical or multi-valued item feature (the peers' set ids), if any."""
    return next((f for f in d.item_features if f.type in (desc.CATEGORICAL, desc.MULTI_CATEGORICAL)), None)


# --------------------------------------------------------------------------
# Tasks and metrics
# --------------------------------------------------------------------------
def dataset_tasks(dataset: str, negatives: int) -> Tuple[T.TaskSpec, ...]:
    """The pointwise tasks the families train (pipeline.model_stages.family_tasks' rule)."""
    spec = D.dataset_spec(dataset)
    tasks = tuple(t for t in spec.tasks if t.kind != T.RETRIEVAL)
    if negatives == 0:
        tasks = tuple(t for t in tasks if t.label != spec.implicit_label)
    return tasks


def task_mask(data: Dict[str, np.ndarray], task: T.TaskSpec) -> np.ndarray:
    """Rows where the task is defined (its condition holds; every row without one)."""
    n = len(data[F.ITEM_IDX])
    if task.condition and task.condition in data:
        return np.asarray(data[task.condition]).reshape(n) > 0
    return np.ones(n, dtype=bool)


def task_metrics(task: T.TaskSpec, predictions: np.ndarray, labels: np.ndarray) -> Dict[str, float]:
    if task.kind == T.REGRESSION:
        m = d.regression_task_metrics(predictions, labels)
        return {k: m[k] for k in REGRESSION_METRICS}
    m = d.binary_task_metrics(predictions, labels)
    return {k: m[k] for k in BINARY_METRICS}


# --------------------------------------------------------------------------
# AUC intervals (the bootstrap and the paired comparisons: bench.common)
# --------------------------------------------------------------------------
def hanley_mcneil(auc: float, n_pos: int, n_neg: int, z: float = 1.959964) -> Tuple[float, float, float]:
    """(standard error, low, high) of an AUC (Hanley & McNeil, Radiology 1982)."""
    q1 = auc / (2.0 - auc)
    q2 = 2.0 * auc * auc / (1.0 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc)) / (n_pos * n_neg)
    se = float(np.sqrt(max(var, 0.0)))
    return se, max(0.0, auc - z * se), min(1.0, auc + z * se)


# --------------------------------------------------------------------------
# Peers' features
# --------------------------------------------------------------------------
def set_table(parts: Sequence[Dict[str, np.ndarray]], num_items: int, feature: Optional[str]) -> np.ndarray:
    """First value row of the set feature (transformed `<raw>_idx`) of each item row (0 unknown,
    every item 0 without a feature), from the item's own metadata."""
    table = np.zeros(num_items, dtype=np.int64)
    if feature is None:
        return table
    for data in parts:
        table[data[F.ITEM_IDX]] = np.asarray(data[feature]).reshape(len(data[F.ITEM_IDX]), -1)[:, 0]
    return table


def dense_features(data: Dict[str, np.ndarray], num_behaviors: int, sets: np.ndarray,
                   max_history: int, item_features: Sequence[str] = (F.ITEM_POPULARITY_MM, F.ITEM_AVG_RATING_MM),
                   set_name: str = "set") -> Tuple[np.ndarray, List[str]]:
    """[n, k] float features every peer reads, and their names.

    Args:
      data: transformed rows.
      num_behaviors: the behavior vocabulary's size (history behavior ids 1..n).
      sets: set_table's first set value per item row.
      max_history: the history length the rows were padded to.
      item_features: transformed item features to read when the rows have them
        (dense_item_features of the description).
      set_name: the set feature's name (the name of the share-of-same-value column).
    """
    n = len(data[F.ITEM_IDX])
    cols, names = [], []
    for name in item_features:
        if name in data:
            cols.append(np.asarray(data[name], dtype=np.float64).reshape(n))
            names.append(name)
    hist = np.asarray(data[F.HISTORY_ITEM_IDX]).reshape(n, -1)
    behaviors = np.asarray(data[F.HISTORY_BEHAVIOR_IDX]).reshape(n, -1)
    present = hist > 0
    length = present.sum(axis=1).astype(np.float64)
    denom = np.maximum(length, 1.0)
    cols.append(np.log1p(length) / np.log1p(max_history))
    names.append("history_log_length")
    for b in range(1, num_behaviors + 1):
        cols.append(((behaviors == b) & present).sum(axis=1) / denom)
        names.append(f"history_share_behavior_{b}")
    if sets.any():
        item_set = sets[np.asarray(data[F.ITEM_IDX])]
        hist_set = sets[np.clip(hist, 0, len(sets) - 1)]
        same = (hist_set == item_set[:, None]) & present & (item_set[:, None] > 0)
        cols.append(same.sum(axis=1) / denom)
        names.append(f"history_share_same_{set_name}")
    return np.stack(cols, axis=1), names


def one_hot(values: np.ndarray, width: int) -> sp.csr_matrix:
    """[n, width] one-hot (or multi-hot for [n, k] inputs; 0 = padding is dropped)."""
    values = np.asarray(values).reshape(len(values), -1)
    rows = np.repeat(np.arange(values.shape[0]), values.shape[1])
    cols = values.reshape(-1)
    keep = (cols > 0) & (cols < width)
    m = sp.csr_matrix((np.ones(int(keep.sum())), (rows[keep], cols[keep])), shape=(values.shape[0], width))
    m.data[:] = 1.0
    return m


class PeerFeatures:
    """Builds the peers' inputs from transformed rows: sparse ids for logreg, a frame for LightGBM.

    Args:
      parts: the transformed rows of every split (the id widths and the item sets).
      num_behaviors: the behavior vocabulary's size.
      max_history: the history length the rows were padded to.
      d: the description (its set feature and dense item features); None: no set feature,
        popularity and mean rating only.
    """

    def __init__(self, parts: Sequence[Dict[str, np.ndarray]], num_behaviors: int, max_history: int,
                 d: Optional[desc.Description] = None):
        def width(name):
            return int(max(np.asarray(p[name]).max() for p in parts)) + 1

        feature = set_feature(d) if d is not None else None
        self.set_idx = feature.transformed_names()[0] if feature is not None else None
        self.set_name = feature.name if feature is not None else "set"
        self.item_features = dense_item_features(d) if d is not None else (F.ITEM_POPULARITY_MM, F.ITEM_AVG_RATING_MM)
        self.users, self.items = width(F.USER_IDX), width(F.ITEM_IDX)
        self.sets = width(self.set_idx) if self.set_idx else 0
        self.set_of = set_table(parts, self.items, self.set_idx)
        self.num_behaviors = num_behaviors
        self.max_history = max_history
        self.mean: Optional[np.ndarray] = None
        self.scale: Optional[np.ndarray] = None

    def dense(self, data) -> Tuple[np.ndarray, List[str]]:
        return dense_features(data, self.num_behaviors, self.set_of, self.max_history, self.item_features,
                              self.set_name)

    def fit_scaler(self, data) -> None:
        x, _ = self.dense(data)
        self.mean, self.scale = x.mean(axis=0), np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0)

    def linear(self, data) -> sp.csr_matrix:
        x, _ = self.dense(data)
        x = (x - self.mean) / self.scale
        sets = [one_hot(data[self.set_idx], self.sets)] if self.set_idx else []
        return sp.hstack([one_hot(data[F.USER_IDX], self.users), one_hot(data[F.ITEM_IDX], self.items)] + sets
                         + [sp.csr_matrix(x)], format="csr")

    def trees(self, data, ids: bool = True) -> Tuple[np.ndarray, List[str], List[int]]:
        """(matrix, names, categorical columns) for LightGBM."""
        x, names = self.dense(data)
        if not ids:
            return x, names, []
        n = len(data[F.ITEM_IDX])
        ids = [np.asarray(data[F.USER_IDX]).reshape(n), np.asarray(data[F.ITEM_IDX]).reshape(n)]
        id_names = ["user_idx", "item_idx"]
        if self.set_idx:
            ids.append(np.asarray(data[self.set_idx]).reshape(n, -1)[:, 0])
            id_names.append(self.set_idx)
        id_cols = np.stack(ids, axis=1).astype(np.float64)
        return np.concatenate([id_cols, x], axis=1), id_names + names, list(range(len(ids)))


def _auc_or_neg_rmse(task: T.TaskSpec, predictions: np.ndarray, labels: np.ndarray) -> float:
    """The eval-split selection value (higher is better)."""
    if task.kind == T.REGRESSION:
        return -d.rmse(predictions, labels)
    return d.binary_auc(predictions, labels > 0.5)


def _peer_setting(tuned: common.Tuned) -> Dict[str, Any]:
    """The chosen setting as the results record it: its knobs, each knob's status and every
    evaluated point's eval value."""
    return {**tuned.chosen, "status": tuned.status,
            "eval": [{**{k: v for k, v in p.items() if k != "score"}, "value": round(p["score"], 4)}
                     for p in tuned.points]}


def fit_logreg(task: T.TaskSpec, feats: PeerFeatures, train, evaluation, test, seed: int):
    """Per-task linear peer (logistic regression, Ridge for a rating), its penalty chosen on
    eval by `common.widening_search`; returns (test predictions, setting, eval value)."""
    from sklearn.linear_model import LogisticRegression, Ridge

    xs = [feats.linear(part) for part in (train, evaluation, test)]
    ys = [np.asarray(part[task.label], dtype=np.float64).reshape(-1) for part in (train, evaluation, test)]
    regression = task.kind == T.REGRESSION
    fitted: Dict[str, Callable[[Any], np.ndarray]] = {}

    def objective(setting):
        if regression:
            predict = Ridge(alpha=setting["alpha"]).fit(xs[0], ys[0]).predict
        else:
            model = LogisticRegression(C=setting["C"], max_iter=2000, solver="lbfgs").fit(xs[0], ys[0] > 0.5)
            predict = lambda x, m=model: m.predict_proba(x)[:, 1]  # noqa: E731
        fitted[json.dumps(setting, sort_keys=True)] = predict
        return _auc_or_neg_rmse(task, predict(xs[1]), ys[1])

    tuned = common.widening_search(objective, RIDGE_KNOBS if regression else LR_KNOBS,
                                   max_evaluations=PEER_EVALUATIONS)
    return fitted[json.dumps(tuned.chosen, sort_keys=True)](xs[2]), _peer_setting(tuned), tuned.score


def fit_lightgbm(task: T.TaskSpec, feats: PeerFeatures, train, evaluation, test, seed: int, threads: int = 2):
    """Per-task LightGBM on the ids (categorical) and the dense features, its leaves and
    smallest leaf chosen by `common.widening_search` and its rounds early-stopped on eval."""
    import lightgbm as lgb

    ys = [np.asarray(part[task.label], dtype=np.float64).reshape(-1) for part in (train, evaluation, test)]
    regression = task.kind == T.REGRESSION
    xs = [feats.trees(part, ids=True) for part in (train, evaluation, test)]
    names, categorical = xs[0][1], xs[0][2]
    boosters: Dict[str, Any] = {}

    def objective(setting):
        params = dict(objective="regression" if regression else "binary", metric="rmse" if regression else "auc",
                      learning_rate=LGB_LEARNING_RATE, num_leaves=setting["num_leaves"],
                      min_child_samples=setting["min_child_samples"], feature_fraction=0.9, seed=seed,
                      num_threads=threads, verbose=-1, deterministic=True, force_row_wise=True, cat_smooth=10,
                      max_cat_to_onehot=4)
        dtrain = lgb.Dataset(xs[0][0], ys[0], feature_name=names, categorical_feature=categorical or "auto",
                             free_raw_data=False)
        deval = lgb.Dataset(xs[1][0], ys[1], reference=dtrain)
        booster = lgb.train(params, dtrain, num_boost_round=1000, valid_sets=[deval],
                            callbacks=[lgb.early_stopping(50, verbose=False)])
        boosters[json.dumps(setting, sort_keys=True)] = booster
        return _auc_or_neg_rmse(task, booster.predict(xs[1][0], num_iteration=booster.best_iteration), ys[1])

    tuned = common.widening_search(objective, LGB_KNOBS, max_evaluations=PEER_EVALUATIONS)
    best = boosters[json.dumps(tuned.chosen, sort_keys=True)]
    setting = {**_peer_setting(tuned), "rounds": best.best_iteration}
    return best.predict(xs[2][0], num_iteration=best.best_iteration), setting, tuned.score


# --------------------------------------------------------------------------
# Families
# --------------------------------------------------------------------------
def train_family(family: str, stages: common.DataStages, tasks: Sequence[str], seed: int,
                 hparams: Dict[str, Any], test, evaluation):
    from training.trainer import train

    config = common.train_config(stages, family, hparams=hparams, seed=seed, tasks=tuple(tasks))
    started = time.monotonic()
    model, summary, _ = train(config, stages.files(F.INTERACTION_VIEW, "train"),
                              stages.files(F.INTERACTION_VIEW, "eval"), stages.transform_graph)
    seconds = time.monotonic() - started
    return predict_rows(model, test), predict_rows(model, evaluation), summary, seconds


# --------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------
def summarize(dataset: str, model: str, task: T.TaskSpec, per_seed: Sequence[np.ndarray], labels: np.ndarray,
              mask: np.ndarray, eval_values: Optional[Sequence[float]] = None) -> List[Dict[str, Any]]:
    """One row per metric: mean and standard deviation over the seeds' predictions; the
    task's main metric (AUC, or RMSE for the rating) also gets `eval_value`, the mean of
    `eval_values` (its value on the eval split per seed), which comparisons choose by."""
    values = [task_metrics(task, np.asarray(p)[mask], labels[mask]) for p in per_seed]
    rows = []
    for metric in values[0]:
        stats = common.mean_std([v[metric] for v in values])
        rows.append({"dataset": dataset, "model": model, "task": task.name, "metric": metric,
                     "value": stats["mean"],
                     # one value (a deterministic peer, one seed): no spread, written 0
                     "std": stats["std"] if stats["std"] is not None else 0.0, "seeds": len(values)})
        if eval_values is not None and metric == main_metric(task):
            rows[-1]["eval_value"] = float(np.mean(eval_values))
    return rows


def main_metric(task: T.TaskSpec) -> str:
    """The metric a task is compared and chosen by: RMSE for a regression, else AUC."""
    return "rmse" if task.kind == T.REGRESSION else "auc"


def add_intervals(rows: List[Dict[str, Any]], dataset: str, scores: Dict[Tuple[str, str], List[np.ndarray]],
                  labels: Dict[str, np.ndarray], resamples: int, bootstrap: bool
                  ) -> Dict[Tuple[str, str], common.Measured]:
    """AUC rows get Hanley-McNeil (and, with `bootstrap`, percentile) 95% intervals; returns
    every (model, task)'s AUC measured per seed on the shared resamples of the test rows
    (empty without `bootstrap`), for `comparisons`."""
    measured: Dict[Tuple[str, str], common.Measured] = {}
    for task, y in labels.items():
        positives = y > 0.5
        n_pos, n_neg = int(positives.sum()), int((~positives).sum())
        for row in rows:
            if row["dataset"] != dataset or row["task"] != task or row["metric"] != "auc":
                continue
            se, low, high = hanley_mcneil(row["value"], n_pos, n_neg)
            row.update({"hm_low": low, "hm_high": high, "positives": n_pos, "examples": n_pos + n_neg})
            if bootstrap:
                m = common.Measured.of(row["model"], [common.auc_statistic(s, positives)
                                                      for s in scores[(row["model"], task)]], len(y), resamples)
                measured[(row["model"], task)] = m
                summary = m.summary()
                row["ci_low"], row["ci_high"] = summary["low"], summary["high"]
    return measured


def comparisons(rows: Sequence[Dict[str, Any]], dataset: str, measured: Dict[Tuple[str, str], common.Measured],
                families: Sequence[str]) -> Dict[str, Any]:
    """Paired comparisons on each binary task (`bench.common.compare`), keyed `family/task`
    for every family against single_task, and `best/task` for the best family against the
    best peer, both chosen by eval AUC."""
    out: Dict[str, Any] = {}
    auc = {(r["model"], r["task"]): r for r in rows if r["dataset"] == dataset and r["metric"] == "auc"}
    for task in sorted({t for _, t in measured}):
        for family in families:
            if family != "single_task" and (family, task) in measured and ("single_task", task) in measured:
                out[f"{family}/{task}"] = common.compare(measured[(family, task)], measured[("single_task", task)],
                                                         "test rows").to_dict()
        best = best_family_and_peer(auc, task, families)
        if best and all((m, task) in measured for m in best):
            entry = common.compare(measured[(best[0], task)], measured[(best[1], task)], "test rows").to_dict()
            out[f"best/{task}"] = {**entry, "chosen_by": "eval AUC"}
    return out


def best_family_and_peer(auc: Dict[Tuple[str, str], Dict[str, Any]], task: str,
                         families: Sequence[str]) -> Optional[Tuple[str, str]]:
    """(best family, best peer) on a task by their eval-split AUC, or None without both."""
    fams = {f: auc[(f, task)].get("eval_value") for f in families if (f, task) in auc}
    peers = {p: auc[(p, task)].get("eval_value") for p in PEERS if (p, task) in auc}
    if not fams or not peers:
        return None
    return common.best_by_eval(fams), common.best_by_eval(peers)


def goals(rows: Sequence[Dict[str, Any]], datasets: Sequence[str], families: Sequence[str],
          paired: Optional[Dict[str, Any]] = None, sparse: Optional[Mapping[str, Sequence[str]]] = None,
          references: Optional[Mapping[str, Mapping[str, float]]] = None) -> List[str]:
    """The goals, met / not met, each with both seed stds and the paired bootstrap interval;
    the best family and the best peer are chosen on the eval split.

    Args:
      rows: the result rows.
      datasets: the datasets, in order.
      families: the families, in order.
      paired: `comparisons` keyed `dataset/...`.
      sparse: {dataset: its sparse tasks} (a family must beat single_task on them).
      references: {dataset: {task: a reference AUC}} quoted beside the best family.
    """
    paired, sparse, references = paired or {}, sparse or {}, references or {}
    out = []
    for dataset in datasets:
        auc = {(r["model"], r["task"]): r for r in rows if r["dataset"] == dataset and r["metric"] == "auc"}
        tasks = sorted({t for _, t in auc}, key=[t.name for t in D.dataset_spec(dataset).tasks].index)
        for task in tasks:
            best = best_family_and_peer(auc, task, families)
            if best is None:
                continue
            bf, bp = (auc[(m, task)] for m in best)
            reference = references.get(dataset, {}).get(task)
            extra = (f"; reference LR AUC {reference:.3f}: {'>=' if bf['value'] >= reference else '<'}"
                     if reference is not None else "")
            chosen = (f"best family by eval AUC {best[0]} (eval {bf['eval_value']:.4f}), best peer by eval AUC "
                      f"{best[1]} (eval {bp['eval_value']:.4f})")
            out.append(f"- {dataset} {task}: {chosen}; test: " + _compared(paired.get(f"{dataset}/best/{task}"), bf, bp)
                       + extra)
        for task in sparse.get(dataset, ()):
            if ("single_task", task) not in auc:
                continue
            lines, beats = [], []
            for f in families:
                if f == "single_task" or (f, task) not in auc:
                    continue
                c = paired.get(f"{dataset}/{f}/{task}")
                lines.append(_compared(c, auc[(f, task)], auc[("single_task", task)]))
                if c is not None and c["verdict"] == "better":
                    beats.append(f)
            out.append(f"- {dataset} {task} (sparse), each family against single_task: " + "; ".join(lines) + " — "
                       + (f"met by {', '.join(beats)}" if beats else "not met: no family beats single_task "
                          "(paired interval above 0 and a difference beyond both seed stds)"))
    return out


def _compared(c: Optional[Dict[str, Any]], a: Dict[str, Any], b: Dict[str, Any]) -> str:
    """A comparison's text with its verdict (met = better), or both means ± std when no
    paired interval was measured (no verdict then)."""
    if c is None:
        return (f"{a['model']} {a['value']:.4f} ± {a['std']:.4f} vs {b['model']} {b['value']:.4f} ± {b['std']:.4f}: "
                "undecided, no paired interval (add the dataset to --bootstrap_datasets)")
    verdict = {"better": "met", "worse": "not met: worse"}.get(c["verdict"], "not met: " + c["verdict"])
    return common.Comparison(**{k: v for k, v in c.items() if k not in ("verdict", "chosen_by")}).text() + \
        f" — {verdict}"


def gate_lines(gates: Dict[str, Dict[str, Dict[str, List[List[float]]]]]) -> List[Dict[str, Any]]:
    rows = []
    for dataset, by_family in gates.items():
        for family, by_task in by_family.items():
            for task, per_seed in by_task.items():
                arr = np.asarray(per_seed, dtype=np.float64)
                rows.append({"dataset": dataset, "model": family, "task": task,
                             "mean weight per expert": " ".join(f"{v:.3f}" for v in arr.mean(axis=0)),
                             "std over seeds": " ".join(f"{v:.3f}" for v in arr.std(axis=0, ddof=1))
                             if len(arr) > 1 else "",
                             "max": float(arr.mean(axis=0).max())})
    return rows


def markdown(rows, datasets, families, seeds, meta_lines, gates, paired, checks, settings, sparse=None,
             references=None) -> str:
    few = any(len(v) < 5 for v in seeds.values())
    parts = ["# Multi-task families against per-task peers", "",
             "Seeds per family: " + "; ".join(f"{k} {len(v)} ({', '.join(map(str, v))})" for k, v in seeds.items())
             + "; peers are deterministic "
             "(one run). Test split only reported; everything tuned or early-stopped on the eval split."
             + (" Fewer than 5 seeds: 5 did not fit the benchmark's time budget (about 100 min "
                "on 2 shared cores)." if few else ""), ""]
    parts += meta_lines + [""]
    for dataset in datasets:
        table = []
        sub = [r for r in rows if r["dataset"] == dataset]
        if not sub:
            continue
        tasks = [t.name for t in D.dataset_spec(dataset).tasks if any(r["task"] == t.name for r in sub)]
        for task in tasks:
            for model in list(families) + list(PEERS):
                got = {r["metric"]: r for r in sub if r["task"] == task and r["model"] == model}
                if not got:
                    continue
                entry = {"task": task, "model": model, "seeds": next(iter(got.values()))["seeds"]}
                for metric in BINARY_METRICS + REGRESSION_METRICS:
                    if metric in got:
                        entry[metric] = got[metric]["value"]
                        entry[metric + " std"] = got[metric]["std"]
                if "auc" in got:
                    a = got["auc"]
                    if "ci_low" in a:
                        entry["AUC 95% bootstrap"] = f"[{a['ci_low']:.3f}, {a['ci_high']:.3f}]"
                    entry["AUC 95% Hanley-McNeil"] = f"[{a['hm_low']:.3f}, {a['hm_high']:.3f}]"
                    entry["test positives"] = a["positives"]
                table.append(entry)
        columns = ["task", "model", "auc", "auc std", "pr_auc", "pr_auc std", "log_loss", "calibration", "rmse",
                   "rmse std", "mae", "seeds", "test positives", "AUC 95% Hanley-McNeil"]
        if any("AUC 95% bootstrap" in e for e in table):
            columns.insert(-1, "AUC 95% bootstrap")
        if not any("rmse" in e for e in table):
            columns = [c for c in columns if not c.startswith(("rmse", "mae"))]
        parts += [f"## {dataset}", "", common.md_table(table, columns), ""]
    parts += ["## Goals", "", "A verdict needs the paired bootstrap interval (over test rows, seed means, "
              "95%) to exclude 0 and the difference to exceed both seed stds; the best family and the best peer "
              "are chosen by eval AUC.", ""] + goals(rows, datasets, families, paired, sparse, references) + [""]
    if paired:
        parts += ["Every paired comparison (A minus B, seed means; 95% interval; share of resamples where A is "
                  "not better):", ""]
        parts += [f"- {k}: {v['a']} - {v['b']} = {v['diff']:+.4f} [{v['low']:+.4f}, {v['high']:+.4f}], "
                  f"P(diff <= 0) = {v['p_not_better']:.3f}, {v['verdict']}"
                  for k, v in sorted(paired.items())] + [""]
    gate_rows = gate_lines(gates)
    if gate_rows:
        parts += ["## Gates: mean softmax weight per expert on the eval split (mean over seeds)", "",
                  "MMoE: the shared experts in order. PLE: the last extraction level's gate of the task, "
                  "the task's own experts first, then the shared experts.", "",
                  common.md_table(gate_rows, ["dataset", "model", "task", "mean weight per expert",
                                              "std over seeds", "max"], digits=3), ""]
    parts += ["## Checks and settings", ""] + checks + [""]
    parts += [f"- settings chosen on the eval split (peers per task; families from the grid): `{json.dumps(settings)}`", ""]
    return "\n".join(parts)


def data_options(args, dataset: str) -> Dict[str, Any]:
    """PipelineConfig fields of one --datasets entry besides the description itself: its --data_dir
    and --negatives (unset: the description's)."""
    values: Dict[str, Any] = {}
    data_dir = keyed(per_dataset(args.data_dir, "--data_dir"), dataset)
    if data_dir:
        values["data_dir"] = data_dir
    negatives = keyed(per_dataset(args.negatives, "--negatives"), dataset)
    if negatives is not None:
        values["negatives_per_positive"] = int(negatives)
    return values


def load_dataset(dataset: str, work_dir: str, **data: Any):
    """(data stages, {split: transformed rows}) of `dataset` (a description's name or file),
    with its description's split.

    Args:
      dataset: the --datasets entry.
      work_dir: where the data stages are written (and reused).
      data: more PipelineConfig fields (data_options: data_dir, negatives_per_positive).
    """
    import tensorflow_transform as tft

    from training.inputs import load_examples

    stages = common.data_stages(work_dir, **{"dataset": dataset, **data})
    tft_output = tft.TFTransformOutput(stages.transform_graph)
    parts = {split: load_examples(stages.files(F.INTERACTION_VIEW, split), tft_output, stages.config.max_history)
             for split in ("train", "eval", "test")}
    return stages, parts


def run_dataset(dataset: str, args, seeds: List[int], families: List[str], overrides, rows, gates, paired,
                checks, settings, timings) -> None:
    stages, parts = load_dataset(dataset, args.work_dir, **data_options(args, dataset))
    tasks = dataset_tasks(dataset, stages.config.negatives_per_positive)
    spec = stages.config.spec
    masks = {split: {t.name: task_mask(parts[split], t) for t in tasks} for split in parts}
    labels = {t.name: np.asarray(parts["test"][t.label], dtype=np.float64).reshape(-1)[masks["test"][t.name]]
              for t in tasks}
    counts = {split: {t.name: [int(m[t.name].sum()),
                               int((np.asarray(parts[split][t.label]).reshape(-1)[m[t.name]] > 0.5).sum())]
                      for t in tasks} for split, m in masks.items()}
    checks.append(f"- {dataset}: rows train/eval/test {[len(p[F.ITEM_IDX]) for p in parts.values()]}; "
                  f"[task rows, positives] per split {json.dumps(counts)}")
    scores: Dict[Tuple[str, str], List[np.ndarray]] = {}

    # Peers.
    feats = PeerFeatures(list(parts.values()), len(spec.behaviors), stages.config.max_history,
                         stages.config.load_description())
    for task in tasks:
        sub = {split: {k: v[masks[split][task.name]] for k, v in parts[split].items()} for split in parts}
        feats.fit_scaler(sub["train"])
        for peer, fit in (("logreg", fit_logreg), ("lightgbm", fit_lightgbm)):
            started = time.monotonic()
            pred, setting, eval_value = fit(task, feats, sub["train"], sub["eval"], sub["test"], seeds[0])
            timings[f"{dataset}/{peer}/{task.name}"] = round(time.monotonic() - started, 1)
            settings.setdefault(dataset, {}).setdefault(peer, {})[task.name] = setting
            full = np.zeros(len(masks["test"][task.name]))
            full[masks["test"][task.name]] = pred
            scores[(peer, task.name)] = [pred]
            rows.extend(summarize(dataset, peer, task, [full], labels_full(parts["test"], task),
                                  masks["test"][task.name], eval_values=[abs(eval_value)]))
            print(f"{dataset} {peer} {task.name}: {setting}", file=sys.stderr, flush=True)
    _, dense_names = feats.dense(parts["test"])
    checks.append(f"- {dataset} peers' dense features: {', '.join(dense_names)}")

    # Families.
    grid = parse_grid(args.grid) if dataset in args.grid_datasets.split(",") else {}
    for family in families:
        per_seed: Dict[str, List[np.ndarray]] = {}
        eval_values: Dict[str, List[float]] = {}
        check = []
        hparams, runs = dict(overrides.get(family, {})), {}
        if grid:  # eval-split choice with the first seed; the chosen run is reused as that seed's
            trials = []
            for combo in (dict(zip(grid, v)) for v in itertools.product(*grid.values())):
                trial = {**hparams, **combo}
                run = train_family(family, stages, [t.name for t in tasks], seeds[0], trial, parts["test"],
                                   parts["eval"])
                trials.append((run[2]["best_value"], json.dumps(combo, sort_keys=True), trial, run))
                print(f"{dataset} {family} grid {combo}: {run[2]['monitor']} {run[2]['best_value']:.4f} "
                      f"(epoch {run[2]['best_epoch']})", file=sys.stderr, flush=True)
            best = max(trials, key=lambda t: t[0])
            hparams, runs = best[2], {seeds[0]: best[3]}
            settings.setdefault(dataset, {}).setdefault(family, {"chosen": json.loads(best[1]),
                                                                 "eval": {t[1]: round(t[0], 4) for t in trials}})
        for seed in seeds:
            test_pred, eval_pred, summary, seconds = runs.get(seed) or train_family(
                family, stages, [t.name for t in tasks], seed, hparams, parts["test"], parts["eval"])
            timings.setdefault(f"{dataset}/{family}", []).append(round(seconds, 1))
            for task in tasks:
                per_seed.setdefault(task.name, []).append(test_pred[task.name])
                m = masks["eval"][task.name]
                eval_values.setdefault(task.name, []).append(task_metrics(
                    task, np.asarray(eval_pred[task.name])[m], labels_full(parts["eval"], task)[m])[main_metric(task)])
            if "gates" in summary:
                for task, weights in summary["gates"].items():
                    gates.setdefault(dataset, {}).setdefault(family, {}).setdefault(task, []).append(weights)
            # Our eval AUC against the Keras metric of the kept (best) epoch.
            best = summary["best_epoch"] - 1
            for task in tasks:
                key = f"val_{task.name}_auc"
                if task.kind == T.BINARY and key in summary["history"]:
                    m = masks["eval"][task.name]
                    ours = d.binary_auc(eval_pred[task.name][m], np.asarray(parts["eval"][task.label]).reshape(-1)[m] > 0.5)
                    check.append(abs(ours - summary["history"][key][best]))
            print(f"{dataset} {family} seed {seed}: best epoch {summary['best_epoch']}/{summary['epochs_run']} "
                  f"{summary['monitor']} {summary['best_value']:.4f} ({seconds:.0f} s)", file=sys.stderr, flush=True)
        for task in tasks:
            scores[(family, task.name)] = [p[masks["test"][task.name]] for p in per_seed[task.name]]
            rows.extend(summarize(dataset, family, task, per_seed[task.name], labels_full(parts["test"], task),
                                  masks["test"][task.name], eval_values=eval_values[task.name]))
        if check:
            checks.append(f"- {dataset} {family}: max |eval AUC here - Keras val AUC of the kept epoch| = "
                          f"{max(check):.4f} (Keras' AUC: models.tasks.AUC_THRESHOLDS)")
    binary = {t.name: labels[t.name] for t in tasks if t.kind == T.BINARY}
    chosen = args.bootstrap_datasets.split(",")
    measured = add_intervals(rows, dataset, scores, binary, args.bootstrap,
                             bootstrap=dataset in chosen or dataset_name(dataset) in chosen)
    paired.update({f"{dataset}/{k}": v for k, v in comparisons(rows, dataset, measured, families).items()})


def parse_grid(items: Sequence[str]) -> Dict[str, List[str]]:
    """`["learning_rate=0.002,0.0005", "l2=0.0001,0.01"]` -> {name: [values]} (every family)."""
    grid: Dict[str, List[str]] = {}
    for item in items:
        name, sep, values = item.partition("=")
        if not sep or not values:
            raise ValueError(f"--grid {item!r}: expected NAME=V1,V2")
        grid[name.strip()] = [v.strip() for v in values.split(",")]
    return grid


def describe_data(args, dataset: str) -> str:
    """`dataset: name (file), split S split, N sampled negative(s) per positive` (its data stages,
    already run: reused)."""
    config = common.data_stages(args.work_dir, dataset=dataset, **data_options(args, dataset)).config
    return f"{dataset}: {common.data_label(config)}, {config.negatives_per_positive} sampled negative(s) per positive"


def labels_full(data: Dict[str, np.ndarray], task: T.TaskSpec) -> np.ndarray:
    return np.asarray(data[task.label], dtype=np.float64).reshape(-1)


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of every benchmark on this benchmark's rows: --data_dir and --negatives per
    dataset, --out, --work_dir."""
    parser.add_argument("--data_dir", action="append", default=[], metavar="DATASET=DIR",
                        help="the data of a dataset (repeatable; default: its description's data_dir)")
    parser.add_argument("--negatives", action="append", default=None, metavar="DATASET=N",
                        help="sampled negatives per positive of a dataset (repeatable; default: "
                             f"{' '.join(DEFAULT_NEGATIVES)}, otherwise the description's)")
    parser.add_argument("--out", default=common.RESULTS_DIR)
    parser.add_argument("--work_dir", default=common.DEFAULT_WORK_DIR)


def parse_data_arguments(args) -> None:
    """Fills the defaults of add_data_arguments' per-dataset options (argparse's `append`
    would add to a default list instead of replacing it)."""
    if args.negatives is None:
        args.negatives = list(DEFAULT_NEGATIVES)
    per_dataset(args.data_dir, "--data_dir")
    per_dataset(args.negatives, "--negatives")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="taobao,movielens")
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--seeds", default="42,43,44,45,46")
    parser.add_argument("--dataset_seeds", action="append", default=[], metavar="DATASET=S1,S2",
                        help="seeds for one dataset instead of --seeds")
    parser.add_argument("--hparam", action="append", default=[], metavar="FAMILY.NAME=VALUE")
    parser.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2",
                        help="eval-split grid for every family (first seed), on --grid_datasets")
    parser.add_argument("--grid_datasets", default="taobao")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of the test rows")
    parser.add_argument("--bootstrap_datasets", default="taobao,movielens",
                        help="datasets whose AUCs get bootstrap intervals and paired comparisons")
    parser.add_argument("--sparse_tasks", action="append", default=None, metavar="DATASET=T1,T2",
                        help="tasks a family must beat single_task on (repeatable); "
                             f"default: {' '.join(DEFAULT_SPARSE_TASKS)}")
    parser.add_argument("--reference_auc", action="append", default=None, metavar="DATASET=TASK:AUC,...",
                        help=f"reference AUCs quoted in the goals (repeatable); default: {' '.join(DEFAULT_REFERENCE_AUC)}")
    add_data_arguments(parser)
    args = parser.parse_args(argv)
    parse_data_arguments(args)
    if args.sparse_tasks is None:
        args.sparse_tasks = list(DEFAULT_SPARSE_TASKS)
    if args.reference_auc is None:
        args.reference_auc = list(DEFAULT_REFERENCE_AUC)
    from models.hparams import parse_assignments

    overrides = parse_assignments(args.hparam)
    seeds = [int(s) for s in args.seeds.split(",")]
    families = [f for f in args.families.split(",") if f]
    datasets = [x for x in args.datasets.split(",") if x]
    command = common.command_line("bench.multitask", argv)
    rows: List[Dict[str, Any]] = []
    gates: Dict[str, Any] = {}
    paired: Dict[str, Any] = {}
    checks: List[str] = []
    settings: Dict[str, Any] = {}
    timings: Dict[str, Any] = {}
    started = time.monotonic()
    done: List[str] = []
    described: Dict[str, str] = {}
    seeds_of = {x: seeds for x in datasets}
    for item in args.dataset_seeds:
        name, _, values = item.partition("=")
        seeds_of[name.strip()] = [int(v) for v in values.split(",")]
    for dataset in datasets:
        run_dataset(dataset, args, seeds_of[dataset], families, overrides, rows, gates, paired, checks, settings, timings)
        done.append(dataset)
        described[dataset] = describe_data(args, dataset)
        meta_lines = [
            "; ".join(described[x] for x in done) + ". Family hyperparameters: registry defaults"
            + (f" with overrides {json.dumps(overrides)}" if overrides else "")
            + (f"; on {args.grid_datasets} each family's setting is chosen from the grid "
               f"{json.dumps(parse_grid(args.grid))} by its eval mean AUC with seed {seeds[0]} "
               "(choices under 'Checks and settings')" if args.grid else "") + ".",
            f"Datasets finished: {', '.join(done)} of {', '.join(datasets)}; wall time so far "
            f"{(time.monotonic() - started) / 60:.1f} min.",
            f"Train seconds per run: `{json.dumps({k: v for k, v in timings.items() if isinstance(v, list)})}`",
        ]
        md = markdown(rows, done, families, {x: seeds_of[x] for x in done}, meta_lines, gates, paired, checks, settings,
                      sparse={x: sparse_tasks(args, x) for x in done},
                      references={x: reference_aucs(args, x) for x in done})
        meta = {"command": command, "machine": json.dumps(common.machine())}
        common.write_results("multitask", rows, md, meta, args.out)
        common.atomic_write(os.path.join(args.out, "multitask_gates.json"),
                            json.dumps({"gates": gates, "paired_comparisons": paired, "peer_settings": settings,
                                        "seconds": timings}, indent=2) + "\n")
        print(md, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
