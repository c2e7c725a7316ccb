"""Reviews benchmark: rating, binary and retrieval families against their peers on one split, in one run.

Data: a dataset description with a rating, binary labels and a retrieval task (`--dataset`,
default `amazon_reviews`: datasets/amazon_reviews.yaml, whose data is not shipped: pass
`--data_dir`; or `--dataset_file FILE`), its split (the Amazon reviews: hash, 80/10/10 by
md5 of user:item) and settings. The pipeline's data stages (`bench.common.data_stages`:
ExampleGen and Transform) run once, so every model below reads the same rows; the eval
split chooses settings and stops training, the test split is only reported.

- Rating (the description's rating label), test RMSE and MAE, no prediction clipped:
  peers global mean, surprise BaselineOnly and surprise SVD (each chosen on eval by the
  shared widening searches of bench.peers); the rating families (`--rating_families`, mf
  and mf_dnn; mf_dnn reads the features the description declares) and the multi-task family's rating output, each
  trained with the pipeline's Trainer code and scored through the exported
  `serving_default` on the raw test examples.
- Binary tasks (the description's binary labels with a condition the rows meet: Amazon's
  liked and helpful), test AUC and PR-AUC: the multi-task family (`--multitask_family`,
  mmoe, trained on the description's pointwise tasks; the implicit label is dropped
  without sampled negatives, as the pipeline does) and any rating family with that
  output, against two peers: `item_prior` (the item's training-split positive rate,
  shrunk to the global rate with PRIOR_STRENGTH pseudo-rows) and BaselineOnly's predicted
  rating used as the score.
- Retrieval (protocol K with the description's targets: every held-out review for the
  Amazon reviews), HR@10, Recall@10, NDCG@10 and MRR@10 over test users with a training
  history and a target: `--retrieval_family` (two_tower) through its exported `recommend`,
  against MostPopular and EASE (its lambda chosen on eval), on the same user view.

Families run once per `--seeds`; their rows are the mean (and std) over seeds. The goals
(issue 27): every rating family below BaselineOnly's test RMSE; two_tower above
MostPopular and at or above EASE on test NDCG@10. Writes `<out>/<name>.json` (every row)
and `<name>.md` (tables, goals, command, commit, machine and date).

    make bench-reviews ARGS="--seeds 42,43,44"
    # = python -m bench.reviews --data_dir ../shared/data/amazon-musical-instruments-5core [--seeds 42]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from bench import common  # noqa: E402  (sets the Keras switch first)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench import peers  # noqa: E402
from contract import description as desc  # noqa: E402
from contract import features as F  # noqa: E402
from contract import tasks as T  # noqa: E402
from evaluation import definitions as d  # noqa: E402

NAME = "amazon_reviews"
DATASET = "amazon_reviews"
K = 10
# The rating peers' settings are chosen on eval by the shared widening searches
# (`peers.tune_baseline_only`, `peers.tune_svd` from `peers.SMALL_LOG_SVD_KNOBS`): a knob chosen
# at the edge of its grid is widened past it until the choice is interior or a stated bound is
# reached.
# EASE's lambda: bench.topk's search (first grid, steps and bounds).
RESAMPLES = 2000  # paired bootstrap resamples of the test rows (rating) or test users (retrieval)
PRIOR_STRENGTH = 10.0  # pseudo-rows at the global positive rate in each item's prior
RATING, BINARY, RETRIEVAL = "rating", "binary", "retrieval"
BASELINE = peers.BASELINE_ONLY
MOST_POPULAR, EASE, ITEM_PRIOR = "most_popular", "ease", "item_prior"


# --------------------------------------------------------------------------
# Labels of raw examples, by the description
# --------------------------------------------------------------------------
def raw_number(example: tf.train.Example, name: str) -> Optional[float]:
    """The single number of a raw feature (int or float list), None when absent or empty."""
    feature = example.features.feature.get(name)
    if feature is None:
        return None
    values = list(feature.int64_list.value) or list(feature.float_list.value)
    return float(values[0]) if values else None


def label_values(dd: desc.Description, examples: Sequence[bytes], label: str) -> np.ndarray:
    """0/1 (or the rating) of `label` for each serialized raw example, as the description defines it:
    a raw label read as written; an expr label computed from its condition on the rating or a
    numeric interaction column (a missing value: 0, as Transform computes it)."""
    spec = dd.label(label)
    rating = peers.rating_label(dd) if dd.rating else ""
    out = np.zeros(len(examples), np.float64)
    for i, record in enumerate(examples):
        example = tf.train.Example.FromString(record)
        if spec.source == desc.EXPR:
            field = rating if spec.condition.field == desc.RATING else dd.column(spec.condition.field).raw_name
            out[i] = float(spec.condition.holds(raw_number(example, field)))
        else:
            value = raw_number(example, label)
            out[i] = 0.0 if value is None else value
    return out


def binary_tasks(dd: desc.Description, tasks: Sequence[T.TaskSpec], implicit: str) -> List[T.TaskSpec]:
    """The binary tasks scored on the rated (logged) rows: not the implicit label's."""
    return [t for t in tasks if t.kind == T.BINARY and t.label != implicit]


# --------------------------------------------------------------------------
# Binary peers
# --------------------------------------------------------------------------
def item_prior(train_items: Sequence[str], train_labels: np.ndarray, items: Sequence[str],
               strength: float = PRIOR_STRENGTH) -> np.ndarray:
    """Each item's training positive rate, shrunk to the global rate: (positives + strength *
    global) / (rows + strength); an item without training rows scores the global rate."""
    train_labels = np.asarray(train_labels, np.float64)
    rate = float(train_labels.mean()) if len(train_labels) else 0.0
    sums: Dict[str, List[float]] = {}
    for item, y in zip(train_items, train_labels):
        entry = sums.setdefault(item, [0.0, 0.0])
        entry[0] += y
        entry[1] += 1.0
    return np.array([(sums.get(i, [0.0, 0.0])[0] + strength * rate) / (sums.get(i, [0.0, 0.0])[1] + strength)
                     for i in items], np.float64)


# --------------------------------------------------------------------------
# Paired intervals
# --------------------------------------------------------------------------
def paired_interval(family: np.ndarray, peer: np.ndarray, reduce: str, resamples: int = RESAMPLES,
                    seed: int = 7) -> Dict[str, float]:
    """Paired bootstrap of (family - peer) over the same test units, resampled together.

    Args:
      family: [seeds, N] per-unit values of the family (one row per seed; the difference
        is the mean over seeds).
      peer: [N] per-unit values of the peer on the same units, in the same order.
      reduce: `rmse` (per-unit squared errors; the metric is the root of their mean) or
        `mean` (per-unit metric values, e.g. a user's NDCG@10; the metric is their mean).
      resamples / seed: bootstrap draws and their seed.

    Returns:
      {"diff": the difference on all units, "low" / "high": its 95% percentile interval}.
    """
    family = np.atleast_2d(np.asarray(family, np.float64))
    peer = np.asarray(peer, np.float64)
    if family.shape[1] != peer.shape[0] or peer.size == 0:
        raise ValueError(f"paired units differ: family {family.shape[1]}, peer {peer.shape[0]} (need the same, > 0)")
    if reduce not in ("rmse", "mean"):
        raise ValueError(f"reduce must be 'rmse' or 'mean', got {reduce!r}")
    finish = np.sqrt if reduce == "rmse" else (lambda x: x)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, peer.size, size=(resamples, peer.size))
    # [resamples, seeds] family metric on each resample, minus the peer's on the same resample.
    draws = finish(family[:, idx].mean(axis=-1)).mean(axis=0) - finish(peer[idx].mean(axis=-1))
    point = float(finish(family.mean(axis=-1)).mean() - finish(peer.mean()))
    low, high = np.percentile(draws, [2.5, 97.5])
    return {"diff": point, "low": float(low), "high": float(high)}


def interval_text(name: str, interval: Dict[str, float], lower_is_better: bool) -> str:
    """`name: diff [low, high]`, and which side is better, or `no difference` when 0 is inside."""
    low, high = interval["low"], interval["high"]
    if low <= 0.0 <= high:
        verdict = "no difference"
    else:
        better = (high < 0.0) == lower_is_better
        verdict = "family better" if better else "peer better"
    return f"- {name}: {interval['diff']:+.4f} [{low:+.4f}, {high:+.4f}], {verdict}"


def user_ndcg(ranked: Sequence[np.ndarray], targets: Sequence[np.ndarray], k: int = K) -> np.ndarray:
    """Each user's NDCG@k (`evaluation.definitions.topk_user_metrics`), in the users' order."""
    return np.array([d.topk_user_metrics(r, t, k)[d.NDCG_PREFIX] for r, t in zip(ranked, targets)], np.float64)


# --------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------
def summary_row(section: str, model: str, kind: str, task: str, per_seed: Sequence[Dict[str, float]],
                seconds: Sequence[float], setting: str) -> Dict[str, Any]:
    """One model's row: every metric's mean over the seeds (`<metric>_std`, None for one value)."""
    row: Dict[str, Any] = {"section": section, "model": model, "kind": kind, "task": task}
    for metric in per_seed[0]:
        if isinstance(per_seed[0][metric], int):  # a count (users): the same for every seed
            row[metric] = per_seed[0][metric]
            continue
        stats = common.mean_std([m[metric] for m in per_seed])
        row[metric], row[f"{metric}_std"] = stats["mean"], stats["std"]
    row.update(seeds=len(per_seed), train_seconds=round(float(np.mean(seconds)), 1) if seconds else 0.0,
               setting=setting)
    return row


def setting_of(hparams: Dict[str, Any]) -> str:
    """A family's row setting: its hyperparameter overrides as JSON, `defaults` when none."""
    return json.dumps(hparams, sort_keys=True) if hparams else "defaults"


def rating_metrics(scores: np.ndarray, ratings: np.ndarray) -> Dict[str, float]:
    return {"rmse": d.rmse(scores, ratings), "mae": d.mae(scores, ratings)}


def binary_metrics(scores: np.ndarray, labels: np.ndarray) -> Dict[str, float]:
    """AUC and PR-AUC (average precision) of any score against 0/1 labels (both read only the
    order of the scores), and the positive rate."""
    positives = np.asarray(labels) > 0.5
    return {"auc": d.binary_auc(scores, positives), "pr_auc": d.average_precision(scores, positives),
            "positive_rate": float(positives.mean()) if positives.size else float("nan")}


def retrieval_metrics(metrics: Dict[str, float]) -> Dict[str, float]:
    return {"hr_at_10": metrics["hit_rate@10"], "recall_at_10": metrics["recall@10"],
            "ndcg_at_10": metrics["ndcg@10"], "mrr_at_10": metrics["mrr@10"], "users": int(metrics["users"])}


def rating_pair(model: str, task: str) -> str:
    """The name of a family's paired interval against BaselineOnly on a regression task."""
    return f"{model} {task} RMSE - {BASELINE}"


def retrieval_pair(family: str, peer: str) -> str:
    """The name of the retrieval family's paired interval against a peer."""
    return f"{family} NDCG@{K} - {peer}"


def goals(rows: Sequence[Dict[str, Any]], rating_models: Sequence[str], retrieval_family: str,
          intervals: Optional[Dict[str, Dict[str, float]]] = None) -> List[str]:
    """The issue's goals, met or not, with the numbers (mean +- std over seeds).

    With `intervals` (name -> paired interval of family - peer, `rating_pair` / `retrieval_pair`),
    "below" and "above" are met only when the family is ahead by the project's rule
    (`common.PairedVerdict`: the interval excludes 0 and the difference exceeds the larger seed
    std), and "at or above" when the peer is not ahead: means alone decide nothing the rule calls
    no difference. Without an interval for a pair, its means decide.
    """
    intervals = intervals or {}

    def get(section, model, task=None):
        return next((r for r in rows if r["section"] == section and r["model"] == model
                     and (task is None or r["task"] == task)), None)

    def value(row, metric):
        std = row.get(f"{metric}_std")
        return f"{row[metric]:.4f}" + (f" +- {std:.4f}" if std is not None else "")

    def judged(name: str, by_means: bool, family: Dict[str, Any], peer: Dict[str, Any], metric: str,
               higher_is_better: bool, strict: bool) -> Tuple[bool, str]:
        """(met, the interval's text) for the pair `name` by the project's verdict rule
        (`common.PairedVerdict`): strict, the family ahead; else the peer not ahead."""
        interval = intervals.get(name)
        if interval is None:
            return by_means, ""
        ahead = common.IntervalVerdict(interval["diff"], interval["low"], interval["high"],
                                       family.get(f"{metric}_std"), peer.get(f"{metric}_std"), higher_is_better).ahead
        met = ahead is True if strict else ahead is not False
        return met, f" (paired interval [{interval['low']:+.4f}, {interval['high']:+.4f}])"

    out = []
    base = next((r for r in rows if r["section"] == RATING and r["model"] == BASELINE), None)
    for model in rating_models:
        row = next((r for r in rows if r["section"] == RATING and r["model"] == model), None)
        if row is None or base is None:
            continue
        met, text = judged(rating_pair(model, row["task"]), row["rmse"] < base["rmse"], row, base, "rmse",
                           False, True)
        out.append(f"- {model} test RMSE {value(row, 'rmse')} below {BASELINE} {base['rmse']:.4f}{text}: "
                   f"{'met' if met else 'not met'}")
    tower, popular, ease = (get(RETRIEVAL, m) for m in (retrieval_family, MOST_POPULAR, EASE))
    if tower is not None and popular is not None and ease is not None:
        above, above_text = judged(retrieval_pair(retrieval_family, MOST_POPULAR),
                                   tower["ndcg_at_10"] > popular["ndcg_at_10"], tower, popular, "ndcg_at_10",
                                   True, True)
        at_least, at_least_text = judged(retrieval_pair(retrieval_family, EASE),
                                         tower["ndcg_at_10"] >= ease["ndcg_at_10"], tower, ease, "ndcg_at_10",
                                         True, False)
        out.append(f"- {retrieval_family} test NDCG@10 {value(tower, 'ndcg_at_10')} above {MOST_POPULAR} "
                   f"{popular['ndcg_at_10']:.4f}{above_text}: {'met' if above else 'not met'}; at or above {EASE} "
                   f"{ease['ndcg_at_10']:.4f}{at_least_text}: {'met' if at_least else 'not met'}")
    return out


def markdown(rows: Sequence[Dict[str, Any]], meta: Dict[str, Any], goal_lines: Sequence[str]) -> str:
    """The results page: one table per section, the goals, and how the numbers were made."""
    rating = [r for r in rows if r["section"] == RATING]
    binary = [r for r in rows if r["section"] == BINARY]
    retrieval = [r for r in rows if r["section"] == RETRIEVAL]
    parts = [f"# {meta['dataset']}: rating, binary and retrieval families against peers (one split, one run)", "",
             f"Data: {meta['data']}; rows train / eval / test {meta['rows']}. Test split reported; settings chosen "
             f"and training stopped on eval. Families: mean and std over seeds {meta['seeds']}; peers are "
             "deterministic (one run).", ""]
    if rating:
        parts += ["## Rating (test rows)", "",
                  common.md_table(rating, ["model", "kind", "task", "rmse", "rmse_std", "mae", "seeds",
                                           "train_seconds", "setting"]), ""]
    if binary:
        parts += ["## Binary tasks (test rows)", "",
                  common.md_table(binary, ["task", "model", "kind", "auc", "auc_std", "pr_auc", "positive_rate",
                                           "seeds", "train_seconds", "setting"]), ""]
    if retrieval:
        parts += ["## Retrieval: top-10 over the catalogue (protocol K, test users)", "",
                  common.md_table(retrieval, ["model", "kind", "hr_at_10", "recall_at_10", "ndcg_at_10",
                                              "ndcg_at_10_std", "mrr_at_10", "users", "seeds", "train_seconds",
                                              "setting"]), ""]
    parts += ["## Goals", ""] + (list(goal_lines) or ["- nothing to compare"]) + [""]
    if meta.get("paired"):
        parts += [f"Paired bootstrap over the same test rows (rating) or test users (NDCG@{K}), family minus peer "
                  f"(the family's mean over seeds), 95% interval of {RESAMPLES} resamples; `no difference` when it "
                  "holds 0:", ""] + list(meta["paired"]) + [""]
    if meta.get("peer_status"):
        parts += ["Peers' settings, chosen on eval by a search that widens a knob past the edge it chooses "
                  "(interior, or the bound it stopped at):", ""]
        parts += [f"- {peer}: {status}" for peer, status in meta["peer_status"].items()] + [""]
    parts += [f"Settings chosen on eval (BaselineOnly's and SVD's searches, EASE's lambda) and each family's early stopping: "
              f"`{meta['name']}_tuning.json`. Training seconds were measured on a machine shared with other jobs: "
              "not a speed comparison.", ""]
    return "\n".join(parts)


# --------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------
def served_outputs(saved_model_dir: str, examples: Sequence[bytes], outputs: Sequence[str],
                   batch: int = 2048) -> Dict[str, np.ndarray]:
    """`serving_default` of an exported model on raw examples: {output: [N] float64} of the
    outputs it has among `outputs`."""
    from contract import protocol

    fn = tf.saved_model.load(saved_model_dir).signatures[protocol.SERVING_DEFAULT]
    parts: Dict[str, List[np.ndarray]] = {}
    for i in range(0, len(examples), batch):
        result = fn(examples=tf.constant(list(examples[i:i + batch])))
        for name in outputs:
            if name in result:
                parts.setdefault(name, []).append(result[name].numpy().reshape(-1))
    return {name: np.concatenate(values).astype(np.float64) for name, values in parts.items()}


def run(args) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    """Trains and measures every model of the benchmark; returns (rows, meta)."""
    import tensorflow_transform as tft

    from bench import retrieval_peers as rp
    from bench import topk as bench_topk
    from models.hparams import parse_assignments
    from pipeline.configs import merge_hparams
    from training import topk
    from training.trainer import train_and_export
    from training.views import ItemRows, load_user_view

    seeds = [int(s) for s in args.seeds.split(",") if s]
    stages = common.stages_of_args(args)
    config, dd = stages.config, stages.config.load_description()
    # The description's hparams (chosen on eval for this dataset), each replaced by --hparam.
    overrides = merge_hparams(dd.hparams, parse_assignments(args.hparam))
    rating_name = peers.rating_label(dd)
    scale = peers.rating_scale(dd)
    raw = stages.raw_examples
    split = {s: peers.read_rated_rows(os.path.join(raw, f"Split-{s}"), dd) for s in ("train", "eval", "test")}
    train, evaluation, test = split["train"], split["eval"], split["test"]
    rows: List[Dict[str, Any]] = []
    tuning: Dict[str, Any] = {}
    paired: List[str] = []
    intervals: Dict[str, Dict[str, float]] = {}

    # Rating peers.
    rows.append(summary_row(RATING, peers.GLOBAL_MEAN, "peer", rating_name,
                            [rating_metrics(peers.global_mean(train, test), test.ratings)], [0.0], "mean training rating"))
    baseline_search = peers.tune_baseline_only(train, evaluation, scale=scale)
    best_baseline = peers.best_baseline(baseline_search)
    tuning[BASELINE] = {"chosen_method": best_baseline.chosen["method"],
                        **{method: t.to_dict() for method, t in baseline_search.items()}}
    started = time.monotonic()
    baseline = peers.baseline_only(train, test, scale=scale, **best_baseline.chosen)
    rows.append(summary_row(RATING, BASELINE, "peer", rating_name, [rating_metrics(baseline, test.ratings)],
                            [time.monotonic() - started], json.dumps(best_baseline.chosen)))
    svd_search = peers.tune_svd(train, evaluation, seed=seeds[0], scale=scale, knobs=peers.SMALL_LOG_SVD_KNOBS,
                                max_evaluations=peers.SMALL_LOG_SVD_EVALUATIONS)
    best_svd = svd_search.chosen
    tuning[peers.SVD] = svd_search.to_dict()
    searches = {BASELINE: best_baseline, peers.SVD: svd_search}
    per_seed, seconds = [], []
    for seed in seeds:
        started = time.monotonic()
        per_seed.append(rating_metrics(peers.svd(train, test, seed=seed, scale=scale, **best_svd), test.ratings))
        seconds.append(time.monotonic() - started)
    rows.append(summary_row(RATING, peers.SVD, "peer", rating_name, per_seed, seconds, json.dumps(best_svd)))

    # Binary peers.
    tasks = {t.name: t for t in config.spec.tasks}
    binary = binary_tasks(dd, list(tasks.values()), dd.implicit_label)
    labels = {t.name: label_values(dd, test.examples, t.label) for t in binary}
    train_labels = {t.name: label_values(dd, train.examples, t.label) for t in binary}
    for task in binary:
        prior = item_prior(train.items, train_labels[task.name], test.items)
        rows.append(summary_row(BINARY, ITEM_PRIOR, "peer", task.name, [binary_metrics(prior, labels[task.name])],
                                [0.0], f"item's training positive rate, {PRIOR_STRENGTH:g} prior rows"))
        rows.append(summary_row(BINARY, BASELINE, "peer", task.name, [binary_metrics(baseline, labels[task.name])],
                                [0.0], "BaselineOnly's predicted rating as the score"))

    # Pointwise families: the rating families, then the multi-task family.
    baseline_errors = (baseline - test.ratings) ** 2
    for family in [f for f in args.rating_families.split(",") if f] + [args.multitask_family]:
        names = common.task_names(config, family)
        per_task: Dict[str, List[Dict[str, float]]] = {}
        errors: Dict[str, List[np.ndarray]] = {}
        seconds = []
        for seed in seeds:
            train_config = common.train_config(stages, family, hparams=overrides.get(family, {}), seed=seed, top_k=K,
                                               tasks=names)
            with tempfile.TemporaryDirectory() as tmp:
                started = time.monotonic()
                summary = train_and_export(train_config, stages.files(F.INTERACTION_VIEW, "train"),
                                           stages.files(F.INTERACTION_VIEW, "eval"), stages.transform_graph, tmp)
                seconds.append(time.monotonic() - started)
                outputs = served_outputs(tmp, test.examples, names)
            tuning.setdefault(family, []).append({k: summary[k] for k in ("best_epoch", "best_value", "hparams")})
            for name, scores in outputs.items():
                if tasks[name].kind == T.REGRESSION:
                    per_task.setdefault(name, []).append(rating_metrics(scores, test.ratings))
                    errors.setdefault(name, []).append((scores - test.ratings) ** 2)
                elif name in labels:
                    per_task.setdefault(name, []).append(binary_metrics(scores, labels[name]))
        setting = setting_of(overrides.get(family, {}))
        for name, per_seed in per_task.items():
            section = RATING if tasks[name].kind == T.REGRESSION else BINARY
            rows.append(summary_row(section, family, "family", name, per_seed, seconds, setting))
        for name, per_seed_errors in errors.items():
            pair = rating_pair(family, name)
            intervals[pair] = paired_interval(np.stack(per_seed_errors), baseline_errors, "rmse")
            paired.append(interval_text(pair, intervals[pair], True))

    # Retrieval: the family through `recommend`, the peers on the same user view.
    tft_output = tft.TFTransformOutput(stages.transform_graph)
    item_rows = ItemRows(tft_output.vocabulary_by_name(F.ITEM_VOCAB), config.spec.behaviors)
    num_rows = len(item_rows.ids) + 1
    views = {s: load_user_view(stages.raw_files(F.USER_VIEW, s), item_rows) for s in ("train", "eval", "test")}
    valid = np.ones(num_rows, dtype=bool)
    valid[0] = False
    started = time.monotonic()
    popular = bench_topk.most_popular(views["train"], num_rows)
    popular_ranked = topk.rank(popular, views["test"], 1, valid, K)
    rows.append(summary_row(RETRIEVAL, MOST_POPULAR, "peer", "", [retrieval_metrics(
        d.topk_metrics(popular_ranked, views["test"].targets, K))], [time.monotonic() - started],
        "training interactions"))
    x = rp.interaction_matrix(views["train"], num_rows)
    gram = (x.T @ x).toarray()
    ease_eval: Dict[float, float] = {}

    def ease_ndcg(setting: Dict[str, Any]) -> float:
        lam = setting["lambda"]
        if lam not in ease_eval:
            ease_eval[lam] = rp.FullHistoryScorer(views["eval"], num_rows, rp.ease_weights(gram, lam)) \
                .evaluate(valid)["ndcg@10"]
        return ease_eval[lam]

    ease_search = common.widening_search(ease_ndcg, bench_topk.EASE_KNOBS)
    best_lam = ease_search.chosen["lambda"]
    tuning[EASE] = ease_search.to_dict()
    searches[EASE] = ease_search
    started = time.monotonic()
    ease = rp.FullHistoryScorer(views["test"], num_rows, rp.ease_weights(gram, best_lam))
    ease_ranked = topk.rank(ease.scores, ease.view, rp.longest(ease.view), valid, K)
    rows.append(summary_row(RETRIEVAL, EASE, "peer", "", [retrieval_metrics(
        d.topk_metrics(ease_ranked, views["test"].targets, K))], [time.monotonic() - started],
        f"lambda {best_lam:g}, the whole training history"))
    family = args.retrieval_family
    per_seed, seconds, ndcgs = [], [], []
    for seed in seeds:
        with tempfile.TemporaryDirectory() as tmp:
            summary, fit_seconds = bench_topk.train_family(stages, family, overrides.get(family, {}), seed, tmp)
            ranked, targets = bench_topk.served_ranking(tmp, stages.raw_files(F.USER_VIEW, "test"), item_rows)
        per_seed.append(retrieval_metrics(d.topk_metrics(ranked, targets, K)))
        ndcgs.append(user_ndcg(ranked, targets))
        seconds.append(fit_seconds)
        tuning.setdefault(family, []).append({k: summary[k] for k in ("best_epoch", "best_value", "hparams")})
    rows.append(summary_row(RETRIEVAL, family, "family", "items", per_seed, seconds,
                            setting_of(overrides.get(family, {}))))
    # The served users are the user view's, in its file order (bench.topk.served_ranking).
    for peer, peer_ranked in ((MOST_POPULAR, popular_ranked), (EASE, ease_ranked)):
        pair = retrieval_pair(family, peer)
        intervals[pair] = paired_interval(np.stack(ndcgs), user_ndcg(peer_ranked, views["test"].targets), "mean")
        paired.append(interval_text(pair, intervals[pair], False))

    meta = {
        "dataset": dd.name,
        "data": common.data_label(config),
        "rows": [len(train), len(evaluation), len(test)],
        "seeds": seeds,
        "tuning": tuning,
        "peer_status": {peer: search.status_text() for peer, search in searches.items()},
        "paired": paired,
        "intervals": intervals,
        "machine": common.machine(),
        "commit": common.commit(),
    }
    return rows, meta


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rating_families", default="mf,mf_dnn")
    parser.add_argument("--multitask_family", default="mmoe")
    parser.add_argument("--retrieval_family", default="two_tower")
    parser.add_argument("--seeds", default="42")
    parser.add_argument("--hparam", action="append", default=[], metavar="FAMILY.NAME=VALUE")
    parser.add_argument("--out", default=common.RESULTS_DIR)
    parser.add_argument("--work_dir", default=common.DEFAULT_WORK_DIR)
    parser.add_argument("--name", default=NAME, help="result files <out>/<name>.json and .md")
    common.add_dataset_arguments(parser)
    parser.set_defaults(dataset=DATASET)
    args = parser.parse_args(argv)
    rows, meta = run(args)
    meta["command"] = common.command_line("bench.reviews", argv)
    rating_models = [f for f in args.rating_families.split(",") if f] + [args.multitask_family]
    goal_lines = goals(rows, rating_models, args.retrieval_family, meta["intervals"])
    meta["name"] = args.name
    text = markdown(rows, meta, goal_lines)
    common.write_results(args.name, rows, text, {"command": meta["command"],
                                                 "machine": json.dumps(meta["machine"]), "commit": meta["commit"]},
                         args.out)
    common.atomic_write(os.path.join(args.out, f"{args.name}_tuning.json"),
                        json.dumps(meta["tuning"], indent=2, default=str) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
