"""Protocol R: the rating progression (mf -> mf_history -> mf_dnn) against rating peers.

A description with a rating (`--dataset` / `--dataset_file`; MovieLens ml-latest-small by
default), hash split (80/10/10 by md5 of user:item). Every family is
trained with its registry defaults (chosen on the eval split with `bench.tune`, see
bench/results/tuning/) by the pipeline's Trainer code, with early stopping on the eval
split, for each of `--seeds`, and scored through the exported `serving_default` on the
raw test split's ratings. Peers on the same training rows: the global mean, surprise
BaselineOnly and surprise SVD (its settings chosen on the eval split from a small grid).
No predictions are clipped (surprise's default clipping to [0.5, 5] is turned off).

Metrics (evaluation.definitions, the Evaluator's own): RMSE, MAE, AUC of the
prediction against liked (rating >= x, the x of the description's first `rating >= x`
label, as the Evaluator reads it; MovieLens: 4; `--liked_threshold` otherwise), NDCG@10 with
the rating as gain and Precision@10 (liked items) per user. RMSE per slice: users by training-rating count (light <= 30,
medium <= 150, heavy) and items by training-rating count (tail <= 5, torso <= 50, head).
Goals (`--goal MODEL:METRIC<=BOUND`, repeatable) are reported met or not; the default
ones are the README's MovieLens goals, `--goal none` reports none.

    python -m bench.mf_family [--families mf,mf_history,mf_dnn] [--seeds 42,43,44]
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import os
import sys
import tempfile
import time
from typing import Any, Dict, List, Tuple

from bench import common  # noqa: E402  (sets the Keras switch first)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench import peers  # noqa: E402
from contract.datasets import HASH_SPLIT  # noqa: E402
from contract import features as F  # noqa: E402
from contract import protocol  # noqa: E402
from evaluation import definitions as d  # noqa: E402
from training.trainer import train_and_export  # noqa: E402

K = 10
SVD_GRID = {"n_factors": (50, 100), "n_epochs": (20, 40), "lr_all": (0.005, 0.01), "reg_all": (0.05, 0.1)}
# The README's MovieLens goals (the default of --goal).
DEFAULT_GOALS = ("mf:rmse<=0.875", "mf_dnn:rmse<=0.865", "mf_dnn:auc>=0.80")


def parse_goal(text: str) -> Tuple[str, str, str, float]:
    """`MODEL:METRIC<=BOUND` (or >=) -> (model, metric, operator, bound)."""
    model, sep, rest = text.partition(":")
    for op in ("<=", ">="):
        metric, found, bound = rest.partition(op)
        if sep and found and metric.strip() and model.strip():
            try:
                return model.strip(), metric.strip(), op, float(bound)
            except ValueError:
                break
    raise ValueError(f"--goal {text!r}: expected MODEL:METRIC<=BOUND or MODEL:METRIC>=BOUND, e.g. mf:rmse<=0.875")


def goal_lines(rows: List[Dict[str, Any]], goals: List[str]) -> List[str]:
    """One line per goal whose model was measured: the value (+- the seeds' std), met or not."""
    lines = []
    by_model = {r["model"]: r for r in rows}
    for text in goals:
        model, metric, op, bound = parse_goal(text)
        if model in by_model:
            value = by_model[model][metric]
            met = value <= bound if op == "<=" else value >= bound
            std = by_model[model].get(metric + "_std")
            spread = f" +- {std:.4f}" if std is not None else ""
            lines.append(f"- {model} {metric} {op} {bound}: {value:.4f}{spread} — {'met' if met else 'not met'}")
    return lines


def served_ratings(saved_model_dir: str, examples, output: str, batch: int = 2048) -> np.ndarray:
    fn = tf.saved_model.load(saved_model_dir).signatures[protocol.SERVING_DEFAULT]
    out = [fn(examples=tf.constant(examples[i:i + batch]))[output].numpy().reshape(-1)
           for i in range(0, len(examples), batch)]
    return np.concatenate(out).astype(np.float64)


def metrics(test: peers.RatedRows, scores: np.ndarray, threshold: float) -> Dict[str, float]:
    """Protocol R's metrics of predicted ratings on the test rows; `threshold`: the smallest liked rating."""
    m = d.recommendation_metrics(test.users, scores, test.ratings, threshold, top_k=K)
    return {"rmse": m["rmse"], "mae": m["mae"], "auc": m[d.LIKED_AUC_NAME], "ndcg_at_10": m[d.ndcg_name(K)],
            "precision_at_10": m[d.precision_name(K)]}


def slices(train: peers.RatedRows, test: peers.RatedRows) -> Dict[str, np.ndarray]:
    """Boolean masks over the test rows: user activity and item popularity in training."""
    users = collections.Counter(train.users)
    items = collections.Counter(train.items)
    out = {}
    activity = np.array([F.activity_level(users[u]) for u in test.users])
    for level in F.ACTIVITY_LEVELS:
        out[f"users {level}"] = activity == level
    counts = np.array([items[i] for i in test.items])
    out["items tail"] = counts <= F.POPULARITY_TAIL_MAX
    out["items torso"] = (counts > F.POPULARITY_TAIL_MAX) & (counts <= F.POPULARITY_TORSO_MAX)
    out["items head"] = counts > F.POPULARITY_TORSO_MAX
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="mf,mf_history,mf_dnn")
    parser.add_argument("--seeds", default="42,43,44")
    parser.add_argument("--hparam", action="append", default=[], metavar="FAMILY.NAME=VALUE")
    parser.add_argument("--out", default=common.RESULTS_DIR)
    parser.add_argument("--work_dir", default=common.DEFAULT_WORK_DIR)
    parser.add_argument("--goal", action="append", default=None, metavar="MODEL:METRIC<=BOUND",
                        help=f"a goal to report (repeatable; 'none': no goal); default: {' '.join(DEFAULT_GOALS)}")
    parser.add_argument("--liked_threshold", type=float, default=None,
                        help="the smallest liked rating (AUC, Precision@10); default: the x of the description's "
                             "first `rating >= x` label")
    common.add_dataset_arguments(parser)
    args = parser.parse_args(argv)
    from evaluation.eval_config import rating_settings
    from models.hparams import parse_assignments

    overrides = parse_assignments(args.hparam)
    goals = [g for g in (args.goal or DEFAULT_GOALS) if g != "none"]
    for goal in goals:
        try:
            parse_goal(goal)
        except ValueError as e:
            parser.error(str(e))
    seeds = [int(s) for s in args.seeds.split(",")]
    stages = common.stages_of_args(args, split=HASH_SPLIT)
    description = stages.config.load_description()
    rating = peers.rating_label(description)
    threshold = args.liked_threshold
    if threshold is None:
        threshold = rating_settings(description).get("auc_threshold")
    if threshold is None:
        parser.error(f"the description {description.name!r} has no `rating >= x` label: pass --liked_threshold X")
    raw = stages.raw_examples
    train = peers.read_rated_rows(os.path.join(raw, "Split-train"), description)
    evaluation = peers.read_rated_rows(os.path.join(raw, "Split-eval"), description)
    test = peers.read_rated_rows(os.path.join(raw, "Split-test"), description)
    masks = slices(train, test)
    rows: List[Dict[str, Any]] = []
    slice_rows: List[Dict[str, Any]] = []

    def add(model: str, per_seed: List[np.ndarray], seconds: float, setting: str) -> None:
        values = [metrics(test, s, threshold) for s in per_seed]
        row = {"model": model, **{k: float(np.mean([v[k] for v in values])) for k in values[0]},
               "rmse_std": float(np.std([v["rmse"] for v in values], ddof=1)) if len(values) > 1 else 0.0,
               "auc_std": float(np.std([v["auc"] for v in values], ddof=1)) if len(values) > 1 else 0.0,
               "seeds": len(values), "train_seconds": round(seconds, 1), "setting": setting}
        rows.append(row)
        entry = {"model": model}
        for name, mask in masks.items():
            entry[name] = float(np.mean([d.rmse(s[mask], test.ratings[mask]) for s in per_seed]))
        slice_rows.append(entry)

    add(peers.GLOBAL_MEAN, [peers.global_mean(train, test)], 0.0, "mean training rating")
    scale = peers.rating_scale(description)
    started = time.monotonic()
    add(peers.BASELINE_ONLY, [peers.baseline_only(train, test, scale=scale)], time.monotonic() - started,
        "surprise defaults")
    grid = [dict(zip(SVD_GRID, v)) for v in itertools.product(*SVD_GRID.values())]
    svd_eval = [(g, d.rmse(peers.svd(train, evaluation, seed=seeds[0], scale=scale, **g), evaluation.ratings))
                for g in grid]
    best_svd = min(svd_eval, key=lambda t: t[1])[0]
    started = time.monotonic()
    svd_scores = [peers.svd(train, test, seed=s, scale=scale, **best_svd) for s in seeds]
    add(peers.SVD, svd_scores, (time.monotonic() - started) / len(seeds), json.dumps(best_svd))

    summaries = {}
    for family in [f for f in args.families.split(",") if f]:
        per_seed, seconds = [], []
        for seed in seeds:
            config = common.train_config(stages, family, hparams=overrides.get(family, {}), seed=seed, top_k=K,
                                         tasks=common.task_names(stages.config, family))
            with tempfile.TemporaryDirectory() as tmp:
                started = time.monotonic()
                summary = train_and_export(config, stages.files(F.INTERACTION_VIEW, "train"),
                                           stages.files(F.INTERACTION_VIEW, "eval"), stages.transform_graph, tmp)
                seconds.append(time.monotonic() - started)
                per_seed.append(served_ratings(tmp, test.examples, rating))
            summaries.setdefault(family, []).append({k: summary[k] for k in ("best_epoch", "best_value", "hparams")})
        add(family, per_seed, float(np.mean(seconds)), json.dumps(overrides.get(family, {})) or "defaults")

    command = "python -m bench.mf_family " + " ".join(argv if argv is not None else sys.argv[1:])
    meta = {"command": command.strip(), "machine": json.dumps(common.machine())}
    columns = ["model", "rmse", "rmse_std", "mae", "auc", "auc_std", "ndcg_at_10", "precision_at_10", "seeds",
               "train_seconds", "setting"]
    markdown = "\n".join([
        f"# Protocol R: test ratings ({common.data_label(stages.config)})", "",
        common.md_table(rows, columns), "", "## RMSE per slice (mean over seeds)", "",
        common.md_table(slice_rows, ["model"] + list(masks)), "",
        "Slice sizes (test ratings): " + ", ".join(f"{k} {int(v.sum())}" for k, v in masks.items()), "",
        "## Goals", "", *(goal_lines(rows, goals) or ["- none given"]), "",
        f"SVD grid on the eval split: {json.dumps([{**g, 'rmse': round(v, 4)} for g, v in svd_eval])}",
        f"Families' early stopping: {json.dumps(summaries)}",
    ])
    common.write_results("mf_family", rows, markdown, meta, args.out)
    common.atomic_write(os.path.join(args.out, "mf_family_slices.json"), json.dumps(slice_rows, indent=2) + "\n")
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
