"""Protocol R: the rating progression (mf -> mf_history -> mf_dnn) against rating peers.

A description with a rating (`--dataset` / `--dataset_file`; MovieLens ml-latest-small by
default), hash split (80/10/10 by md5 of user:item). Every family is
trained with its registry defaults (chosen on the eval split with `bench.tune`, see
bench/results/tuning/) by the pipeline's Trainer code, with early stopping on the eval
split, for each of `--seeds`, and scored through the exported `serving_default` on the
raw test split's ratings. Peers on the same training rows: the global mean, surprise
BaselineOnly (its bsl_options: method, regularization, epochs) and surprise SVD (factors,
epochs, learning rate, regularization), each chosen by eval RMSE with
`bench.common.widening_search`, which widens a knob past the grid edge it chooses until the
choice is interior or a stated bound is reached; every evaluated point and each knob's
status are in `<out>/mf_family_tuning.json`. No predictions are clipped (surprise's default
clipping to [0.5, 5] is turned off).

Metrics (evaluation.definitions, the Evaluator's own): RMSE, MAE, AUC of the
prediction against liked (rating >= x, the x of the description's first `rating >= x`
label, as the Evaluator reads it; MovieLens: 4; `--liked_threshold` otherwise), NDCG@10 with
the rating as gain and Precision@10 (liked items) per user. RMSE per slice: users by training-rating count (light <= 30,
medium <= 150, heavy) and items by training-rating count (tail <= 5, torso <= 50, head).
Goals (`--goal MODEL:METRIC<=BOUND`, repeatable) are reported met or not; the default
ones are the README's MovieLens goals, `--goal none` reports none. Comparisons: every family
against the best peer by eval RMSE, and the best family by eval against it (RMSE and AUC),
each with both seed stds and the paired bootstrap interval over the test rows
(`bench.common.compare`).

    python -m bench.mf_family [--families mf,mf_history,mf_dnn] [--seeds 42,43,44]
"""

from __future__ import annotations

import argparse
import collections
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


def comparisons(rows: List[Dict[str, Any]], families: List[str], peer_models: List[str],
                per_seed: Dict[str, List[np.ndarray]], test: peers.RatedRows, threshold: float
                ) -> Tuple[Dict[str, Dict[str, Any]], List[str]]:
    """Every family against the best peer by eval RMSE (test RMSE), and the best family by
    eval against it (test RMSE and AUC): both seed stds and the paired bootstrap over the
    test rows (`common.compare`). Returns family -> its RMSE comparison, and the lines.

    Args:
      rows: the result rows (with `eval_rmse`).
      families / peer_models: which rows are families and which are peers.
      per_seed: model -> each seed's test predictions (the test rows in order).
      test: the test rows; threshold: the smallest liked rating (AUC).
    """
    evals = {r["model"]: r["eval_rmse"] for r in rows}
    fams = [m for m in families if m in per_seed]
    if not fams:
        return {}, ["- no family in this run: nothing to compare"]
    peer = common.best_by_eval({m: evals[m] for m in peer_models}, higher_is_better=False)
    best = common.best_by_eval({m: evals[m] for m in fams}, higher_is_better=False)
    n = len(test)
    rmse = {m: common.Measured.of(m, [common.rmse_statistic(s, test.ratings) for s in per_seed[m]], n)
            for m in fams + [peer]}
    liked = test.ratings >= threshold
    auc = {m: common.Measured.of(m, [common.auc_statistic(s, liked) for s in per_seed[m]], n) for m in (best, peer)}
    out, lines = {}, []
    for family in fams:
        c = common.compare(rmse[family], rmse[peer], "test rows", higher_is_better=False)
        out[family] = c.to_dict()
        lines.append(f"- RMSE, {family} against the best peer by eval ({peer}, eval {evals[peer]:.4f}): {c.text()}")
    lines.append(f"- AUC (liked: rating >= {threshold:g}), the best family by eval ({best}, eval RMSE "
                 f"{evals[best]:.4f}) against {peer}: "
                 + common.compare(auc[best], auc[peer], "test rows").text())
    return out, lines


def tuning_lines(tuning: Dict[str, Any]) -> List[str]:
    """One line per peer's search: the chosen setting, its eval RMSE, how many points, each
    knob's status (interior or the bound it stopped at)."""
    lines = []
    for model, t in tuning.items():
        searches = {"": t} if "points" in t else {f" ({m})": s for m, s in t.items() if isinstance(s, dict)}
        for method, s in searches.items():
            lines.append(f"- {model}{method}: {json.dumps(s['chosen'])}, eval RMSE {s['score']:.4f}, "
                         f"{len(s['points'])} points; " + "; ".join(f"{k} {v}" for k, v in s["status"].items()))
        if "chosen_method" in t:
            lines.append(f"- {model}: method {t['chosen_method']} chosen (the lower eval RMSE)")
    return lines


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

    per_seed_scores: Dict[str, List[np.ndarray]] = {}
    eval_rmse: Dict[str, float] = {}

    def add(model: str, per_seed: List[np.ndarray], seconds: float, setting: str, eval_value: float) -> None:
        values = [metrics(test, s, threshold) for s in per_seed]
        row = {"model": model, **{k: float(np.mean([v[k] for v in values])) for k in values[0]},
               "rmse_std": float(np.std([v["rmse"] for v in values], ddof=1)) if len(values) > 1 else 0.0,
               "auc_std": float(np.std([v["auc"] for v in values], ddof=1)) if len(values) > 1 else 0.0,
               "seeds": len(values), "eval_rmse": eval_value, "train_seconds": round(seconds, 1),
               "setting": setting}
        rows.append(row)
        per_seed_scores[model] = per_seed
        eval_rmse[model] = eval_value
        entry = {"model": model}
        for name, mask in masks.items():
            entry[name] = float(np.mean([d.rmse(s[mask], test.ratings[mask]) for s in per_seed]))
        slice_rows.append(entry)

    add(peers.GLOBAL_MEAN, [peers.global_mean(train, test)], 0.0, "mean training rating",
        d.rmse(peers.global_mean(train, evaluation), evaluation.ratings))
    scale = peers.rating_scale(description)
    baseline = peers.tune_baseline_only(train, evaluation, scale=scale)
    best_baseline = peers.best_baseline(baseline)
    started = time.monotonic()
    add(peers.BASELINE_ONLY, [peers.baseline_only(train, test, scale=scale, **best_baseline.chosen)],
        time.monotonic() - started, json.dumps(best_baseline.chosen), best_baseline.score)
    svd_search = peers.tune_svd(train, evaluation, seed=seeds[0], scale=scale)
    started = time.monotonic()
    svd_scores = [peers.svd(train, test, seed=s, scale=scale, **svd_search.chosen) for s in seeds]
    add(peers.SVD, svd_scores, (time.monotonic() - started) / len(seeds), json.dumps(svd_search.chosen),
        svd_search.score)
    tuning = {peers.SVD: svd_search.to_dict(),
              peers.BASELINE_ONLY: {"chosen_method": best_baseline.chosen["method"],
                                    **{m: t.to_dict() for m, t in baseline.items()}}}
    peer_models = [r["model"] for r in rows]

    summaries = {}
    families = [f for f in args.families.split(",") if f]
    command = common.command_line("bench.mf_family", argv)

    def write(done: List[str]) -> str:
        """The result files with the models measured so far (after the peers and after each
        family, so a run stopped early leaves what it measured, and says so)."""
        comparison_rows, lines = comparisons(rows, done, peer_models, per_seed_scores, test, threshold)
        for r in rows:
            if r["model"] in comparison_rows:
                r["vs_best_peer"] = comparison_rows[r["model"]]
        meta = {"command": command, "machine": json.dumps(common.machine())}
        columns = ["model", "rmse", "rmse_std", "mae", "auc", "auc_std", "ndcg_at_10", "precision_at_10", "seeds",
                   "eval_rmse", "train_seconds", "setting"]
        missing = [f for f in families if f not in done]
        markdown = "\n".join([
            f"# Protocol R: test ratings ({common.data_label(stages.config)})", "",
            *([f"**Partial: the families {', '.join(missing)} of this command are not measured yet.**", ""]
              if missing else []),
            common.md_table(rows, columns), "", "## RMSE per slice (mean over seeds)", "",
            common.md_table(slice_rows, ["model"] + list(masks)), "",
            "Slice sizes (test ratings): " + ", ".join(f"{k} {int(v.sum())}" for k, v in masks.items()), "",
            "## Goals", "", *(goal_lines(rows, goals) or ["- none given"]), "",
            "## Comparisons (test rows; the best peer and the best family chosen by eval RMSE)", "",
            "A verdict needs the paired bootstrap interval (95%, over the test rows, seed means) to exclude 0 and "
            "the difference to exceed both seed stds.", "", *lines, "",
            "## Peers' settings (chosen by eval RMSE; every evaluated point in `mf_family_tuning.json`)", "",
            *tuning_lines(tuning), "",
            f"Families' early stopping: {json.dumps(summaries)}",
        ])
        common.write_results("mf_family", rows, markdown, meta, args.out)
        common.atomic_write(os.path.join(args.out, "mf_family_tuning.json"), json.dumps(tuning, indent=2) + "\n")
        common.atomic_write(os.path.join(args.out, "mf_family_slices.json"), json.dumps(slice_rows, indent=2) + "\n")
        return markdown

    markdown = write([])
    for i, family in enumerate(families):
        per_seed, seconds, evals = [], [], []
        for seed in seeds:
            config = common.train_config(stages, family, hparams=overrides.get(family, {}), seed=seed, top_k=K,
                                         tasks=common.task_names(stages.config, family))
            with tempfile.TemporaryDirectory() as tmp:
                started = time.monotonic()
                summary = train_and_export(config, stages.files(F.INTERACTION_VIEW, "train"),
                                           stages.files(F.INTERACTION_VIEW, "eval"), stages.transform_graph, tmp)
                seconds.append(time.monotonic() - started)
                per_seed.append(served_ratings(tmp, test.examples, rating))
                evals.append(d.rmse(served_ratings(tmp, evaluation.examples, rating), evaluation.ratings))
            summaries.setdefault(family, []).append({k: summary[k] for k in ("best_epoch", "best_value", "hparams")})
        add(family, per_seed, float(np.mean(seconds)), json.dumps(overrides.get(family, {})) or "defaults",
            float(np.mean(evals)))
        markdown = write(families[:i + 1])
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
