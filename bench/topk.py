"""Protocol K: full-catalogue top-10 of the retrieving families against classic peers.

Protocol K (hash split; the dataset is a description, `--dataset` / `--dataset_file`,
MovieLens by default): every user with at least one test target and one training
interaction. Input: the user's training interactions with their behaviors, oldest first
(the user view's test examples); a family's query reads the most recent `max_history` of
them, a peer uses what its method uses. Candidates: every item of the training
vocabulary except the input's items. Targets: the user view's test targets (the
description's retrieval task: MovieLens's liked test items). HR@10, Recall@10
(denominator min(10, targets)), NDCG@10 (binary gain) and MRR@10 per user, averaged
(evaluation.definitions.topk_metrics, the Evaluator's own).

Every model is tuned on the eval split (same protocol, eval targets); the test split is
only reported. Families are trained with the pipeline's Trainer code and scored through
the exported `recommend` signature (the served path), for each of `--seeds`.
Peers, on the same training rows: MostPopular, ItemKNN (cosine; its input either the whole
history or the items of the strongest behavior, chosen on eval), EASE (Steck 2019; its
lambda) and implicit ALS (factors, regularization, alpha), their numeric knobs chosen by
eval NDCG@10 with `bench.common.widening_search`: a knob chosen at the edge of its grid is
widened past it until the choice is interior or a stated bound is reached (every evaluated
point and each knob's status in `<name>_tuning.json`). The comparison at the end takes the best family and the best peer by eval
NDCG@10 and shows each one's seed mean ± std and the paired bootstrap interval over test
users of their difference (`bench.common.compare`).

    python -m bench.topk [--dataset NAME | --dataset_file FILE] [--data_dir DIR] [--families two_tower]
        [--seeds 42,43,44] [--out bench/results]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Sequence, Tuple

from bench import common  # noqa: E402  (sets the Keras switch first)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_transform as tft  # noqa: E402

from bench.retrieval_peers import (  # noqa: E402
    FullHistoryScorer, als_fit, ease_weights, fitted_user_scores, interaction_matrix, item_knn_weights, longest,
    popularity_counts)
from contract import features as F  # noqa: E402
from contract import protocol  # noqa: E402
from evaluation import definitions as d  # noqa: E402
from training import topk  # noqa: E402
from training.trainer import train_and_export  # noqa: E402
from training.views import ItemRows, UserView, load_user_view  # noqa: E402
from contract.datasets import HASH_SPLIT  # noqa: E402

K = 10
EASE_LAMBDAS = (50.0, 100.0, 200.0, 300.0, 500.0, 1000.0, 2000.0)
# EASE's lambda past its first grid: halved / doubled; a lambda past 1e5 on MovieLens's
# gram (diagonal <= a few hundred) leaves item popularity alone (MostPopular's model).
EASE_KNOBS = (common.Knob("lambda", EASE_LAMBDAS, common.GEOMETRIC, 2.0, low=1.0, high=1e5,
                          why="below 1 the inverse is unregularized; past 1e5 EASE is MostPopular"),)
# ALS (15 iterations): the first grid, widened by the steps below. Bounds: cost on the
# shared 2 cores (factors), and where the factors are no longer fitted (regularization,
# alpha at the extremes).
ALS_KNOBS = (
    common.Knob("factors", (32, 64, 128), common.GEOMETRIC, 2.0, low=2, high=512, integer=True,
                why="cost: an ALS fit and a full-catalogue ranking grow with factors; 2 shared cores"),
    common.Knob("regularization", (0.01, 0.1, 1.0), common.GEOMETRIC, 3.0, low=1e-4, high=1e3,
                why="below 1e-4 no regularization, past 1e3 the factors shrink to zero"),
    common.Knob("alpha", (1.0, 10.0, 40.0), common.GEOMETRIC, 3.0, low=0.01, high=1e3,
                why="alpha is the confidence of an observed pair; below 0.01 or past 1e3 one class dominates"),
)
ALS_EVALUATIONS = 120  # ALS fits one search makes (cost: ~10 s each with one thread on the shared 2 cores)
PEERS = ("most_popular", "item_knn", "ease", "als")
ALL_ITEMS = "all"  # ItemKNN's input: every history item (or those of the strongest behavior)


# --------------------------------------------------------------------------
# Peers: score functions over item rows (bench.retrieval_peers), fitted on the train split.
# --------------------------------------------------------------------------
def most_popular(train: UserView, num_rows: int) -> Callable:
    return topk.popularity_scores(popularity_counts(train, num_rows))


def als_evaluate(train: UserView, view: UserView, num_rows: int, valid: np.ndarray, factors: int,
                 regularization: float, alpha: float, seed: int) -> Tuple[Dict[str, float], List[float]]:
    """ALS with the user vectors fitted on the train split: protocol K metrics on `view`
    and each user's NDCG@10 (`evaluate_users`)."""
    model = als_fit(train, num_rows, factors, regularization, alpha, seed)
    scores = fitted_user_scores(model.user_factors, model.item_factors, train.users, view)
    return evaluate_users(scores, view, 1, valid)


def ranked_metrics(ranked: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> Tuple[Dict[str, float], List[float]]:
    """Protocol K metrics of ranked lists (`evaluation.definitions.topk_metrics`) and each
    user's NDCG@10, in the same order (what the paired comparison resamples)."""
    per_user = [d.topk_user_metrics(r, t, K)[d.NDCG_PREFIX] for r, t in zip(ranked, targets)]
    return d.topk_metrics(ranked, targets, K), per_user


def evaluate_users(scores: Callable, view: UserView, max_history: int, valid: np.ndarray
                   ) -> Tuple[Dict[str, float], List[float]]:
    """`training.topk.evaluate` of a score function, with each user's NDCG@10."""
    return ranked_metrics(topk.rank(scores, view, max_history, valid, K), view.targets)


def scorer_users(scorer: FullHistoryScorer, valid: np.ndarray) -> Tuple[Dict[str, float], List[float]]:
    """`FullHistoryScorer.evaluate`, with each user's NDCG@10."""
    return evaluate_users(scorer.scores, scorer.view, longest(scorer.view), valid)


# --------------------------------------------------------------------------
# Families: trained with the Trainer code, scored through `recommend`.
# --------------------------------------------------------------------------
def served_ranking(saved_model_dir: str, raw_files: Sequence[str], rows: ItemRows) -> Tuple[List[np.ndarray], List[np.ndarray]]:
    """Ranked rows and target rows of every user-view example, through `recommend`."""
    recommend = tf.saved_model.load(saved_model_dir).signatures[protocol.RECOMMEND]
    from training.views import USER_VIEW_SPEC

    ds = tf.data.TFRecordDataset(list(raw_files), compression_type="GZIP").batch(64)
    ranked, targets = [], []
    for batch in ds:
        parsed = tf.io.parse_example(batch, USER_VIEW_SPEC)
        items = tf.sparse.to_dense(parsed[F.HISTORY_ITEM_IDS], default_value="")
        behaviors = tf.sparse.to_dense(parsed[F.HISTORY_BEHAVIORS], default_value="")
        out = recommend(history_item_ids=items, history_behaviors=behaviors)
        for ids in out[protocol.RECOMMEND_ITEM_IDS].numpy():
            ranked.append(rows.rows(list(ids)))
        for t in tf.RaggedTensor.from_sparse(parsed[F.TARGET_ITEM_IDS]).to_list():
            targets.append(rows.rows(t))
    return ranked, targets


def train_family(stages: common.DataStages, family: str, hparams: Dict[str, Any], seed: int,
                 out_dir: str) -> Tuple[Dict[str, Any], float]:
    config = common.train_config(stages, family, hparams=hparams, tasks=common.task_names(stages.config, family),
                                 seed=seed, top_k=K)
    started = time.monotonic()
    summary = train_and_export(config, stages.files(F.USER_VIEW, "train"), stages.files(F.USER_VIEW, "eval"),
                               stages.transform_graph, out_dir)
    return summary, time.monotonic() - started


def row(model: str, metrics: Dict[str, float], seconds: float, **extra) -> Dict[str, Any]:
    return {"model": model, "hr_at_10": metrics["hit_rate@10"], "recall_at_10": metrics["recall@10"],
            "ndcg_at_10": metrics["ndcg@10"], "mrr_at_10": metrics["mrr@10"], "users": int(metrics["users"]),
            "train_seconds": round(seconds, 1), **extra}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="two_tower")
    parser.add_argument("--seeds", default="42,43,44")
    parser.add_argument("--preset", default=None, help="a shipped preset's hyperparameters (presets/NAME.yaml)")
    parser.add_argument("--hparam", action="append", default=[], metavar="FAMILY.NAME=VALUE")
    parser.add_argument("--out", default=common.RESULTS_DIR)
    parser.add_argument("--work_dir", default=common.DEFAULT_WORK_DIR)
    parser.add_argument("--skip_als", action="store_true", help="when the `implicit` package is missing")
    parser.add_argument("--peers", default=",".join(PEERS),
                        help=f"the peers to measure (default every one: {','.join(PEERS)})")
    parser.add_argument("--name", default="topk", help="result files <out>/<name>.json, .md, <name>_tuning.json")
    common.add_dataset_arguments(parser)
    args = parser.parse_args(argv)
    from models.hparams import parse_assignments

    from pipeline.configs import load_preset, merge_hparams

    preset = load_preset(args.preset).get("hparams", {}) if args.preset else {}
    overrides = merge_hparams(preset, parse_assignments(args.hparam))
    seeds = [int(s) for s in args.seeds.split(",")]
    stages = common.stages_of_args(args, split=HASH_SPLIT)
    spec = stages.config.spec
    tft_output = tft.TFTransformOutput(stages.transform_graph)
    rows = ItemRows(tft_output.vocabulary_by_name(F.ITEM_VOCAB), spec.behaviors)
    num_rows = len(rows.ids) + 1
    views = {s: load_user_view(stages.raw_files(F.USER_VIEW, s), rows) for s in ("train", "eval", "test")}
    valid = np.ones(num_rows, dtype=bool)
    valid[0] = False
    strongest = spec.behaviors[-1]  # the vocabulary is ordered weakest first; history behavior ids 1..n
    knn_sources = {strongest: len(spec.behaviors), ALL_ITEMS: 0}
    results: List[Dict[str, Any]] = []
    tuning: Dict[str, Any] = {}
    per_user: Dict[str, List[List[float]]] = {}  # model -> per seed, each test user's NDCG@10

    chosen_peers = [p for p in args.peers.split(",") if p]
    unknown = sorted(set(chosen_peers) - set(PEERS))
    if unknown:
        parser.error(f"--peers {unknown}: expected some of {','.join(PEERS)}")
    if "most_popular" in chosen_peers:
        started = time.monotonic()
        pop = most_popular(views["train"], num_rows)
        seconds = time.monotonic() - started
        test, users = evaluate_users(pop, views["test"], 1, valid)
        per_user["most_popular"] = [users]
        results.append(row("most_popular", test, seconds,
                           eval_ndcg_at_10=topk.evaluate(pop, views["eval"], 1, valid, K)["ndcg@10"]))

    # Two inputs for the history-based peers: the whole training history (how the peers'
    # numbers are usually quoted), and its most recent max_history items (what a family's
    # query reads). Each is tuned on the eval split for its own input.
    max_history = stages.config.max_history
    inputs = {"": 0, f"_recent{max_history}": max_history}
    started = time.monotonic()
    sim = item_knn_weights(views["train"], num_rows) if "item_knn" in chosen_peers else None
    seconds = time.monotonic() - started
    for suffix, window in (inputs.items() if "item_knn" in chosen_peers else ()):
        knn_eval = {src: FullHistoryScorer(views["eval"], num_rows, sim, row_of, window).evaluate(valid)
                    for src, row_of in knn_sources.items()}
        best_src = max(knn_eval, key=lambda s: knn_eval[s]["ndcg@10"])
        tuning["item_knn" + suffix] = {"grid": {s: knn_eval[s]["ndcg@10"] for s in knn_sources}, "chosen": best_src}
        test, users = scorer_users(FullHistoryScorer(views["test"], num_rows, sim, knn_sources[best_src], window),
                                   valid)
        per_user["item_knn" + suffix] = [users]
        results.append(row("item_knn" + suffix, test, seconds, setting=f"history: {best_src} items",
                           eval_ndcg_at_10=knn_eval[best_src]["ndcg@10"]))

    x = interaction_matrix(views["train"], num_rows)
    gram = (x.T @ x).toarray()
    # Each lambda's weights are computed once and scored on both inputs (the weights of
    # several lambdas are not held at once: a 9k x 9k matrix each).
    ease_eval: Dict[float, Dict[str, float]] = {}

    def ease_ndcg(lam: float) -> Dict[str, float]:
        if lam not in ease_eval:
            w = ease_weights(gram, lam)
            ease_eval[lam] = {suffix: FullHistoryScorer(views["eval"], num_rows, w, 0, window).evaluate(valid)["ndcg@10"]
                              for suffix, window in inputs.items()}
        return ease_eval[lam]

    for suffix, window in (inputs.items() if "ease" in chosen_peers else ()):
        tuned = common.widening_search(lambda g: ease_ndcg(g["lambda"])[suffix], EASE_KNOBS,
                                       log=lambda line: print(f"ease{suffix} {line}", file=sys.stderr, flush=True))
        best_lam = tuned.chosen["lambda"]
        tuning["ease" + suffix] = tuned.to_dict()
        fit = time.monotonic()
        weights = ease_weights(gram, best_lam)
        seconds = time.monotonic() - fit
        test, users = scorer_users(FullHistoryScorer(views["test"], num_rows, weights, 0, window), valid)
        del weights
        per_user["ease" + suffix] = [users]
        results.append(row("ease" + suffix, test, seconds, setting=f"lambda {best_lam:g}",
                           eval_ndcg_at_10=tuned.score, tuning_status=tuned.status_text()))

    if not args.skip_als and "als" in chosen_peers:
        tuned = common.widening_search(
            lambda g: als_evaluate(views["train"], views["eval"], num_rows, valid, seed=seeds[0], **g)[0]["ndcg@10"],
            ALS_KNOBS, max_evaluations=ALS_EVALUATIONS,
            log=lambda line: print(f"als {line}", file=sys.stderr, flush=True))
        best, best_eval = tuned.chosen, tuned.score
        tuning["als"] = tuned.to_dict()
        per_seed = []
        for seed in seeds:
            fit = time.monotonic()
            test, users = als_evaluate(views["train"], views["test"], num_rows, valid, seed=seed, **best)
            per_seed.append((test, time.monotonic() - fit))
            per_user.setdefault("als", []).append(users)
        results.append(_seed_row("als", per_seed, setting=json.dumps(best), eval_ndcg_at_10=best_eval,
                                 tuning_status=tuned.status_text()))

    families = [f for f in args.families.split(",") if f]
    command = common.command_line("bench.topk", argv)

    def write(done: List[str]) -> str:
        """The result files with the models measured so far (after the peers and after each
        family, so a run stopped early leaves what it measured, and says so)."""
        meta = {"command": command, "machine": json.dumps(common.machine())}
        columns = ["model", "hr_at_10", "recall_at_10", "ndcg_at_10", "ndcg_std", "mrr_at_10", "users", "seeds",
                   "eval_ndcg_at_10", "train_seconds", "setting"]
        missing = [f for f in families if f not in done]
        markdown = "\n".join([
            f"# Protocol K: top-10 over the whole catalogue ({common.data_label(stages.config)}, test users)", "",
            *([f"**Partial: the families {', '.join(missing)} of this command are not measured yet.**", ""]
              if missing else []),
            common.md_table(results, columns), "",
            "Tuned on the eval split (same protocol, eval targets); the test split is only reported:",
            f"the grids and the eval values are in `{args.name}_tuning.json`. Rows `*_recent{max_history}` read only "
            f"the most recent {max_history} training interactions of each user, as the families' queries do; the",
            "other peers read the whole training history. Every model excludes the whole history.",
            "", "## Peers' knobs (eval NDCG@10; interior, or the bound the search stopped at)", "",
            *[f"- {r['model']}: {r['setting']}: {r['tuning_status']}" for r in results if r.get("tuning_status")],
            "", "## Comparison", "", *comparison_lines(results, done, per_user),
        ])
        common.write_results(args.name, results, markdown, meta, args.out)
        common.atomic_write(os.path.join(args.out, f"{args.name}_tuning.json"),
                            json.dumps(tuning, indent=2, default=str) + "\n")
        return markdown

    markdown = write([])
    for i, family in enumerate(families):
        per_seed, evals = [], []
        for seed in seeds:
            with tempfile.TemporaryDirectory() as tmp:
                summary, seconds = train_family(stages, family, overrides.get(family, {}), seed, tmp)
                test, users = ranked_metrics(*served_ranking(tmp, stages.raw_files(F.USER_VIEW, "test"), rows))
                evals.append(ranked_metrics(*served_ranking(tmp, stages.raw_files(F.USER_VIEW, "eval"),
                                                            rows))[0]["ndcg@10"])
            per_seed.append((test, seconds))
            per_user.setdefault(family, []).append(users)
            tuning.setdefault(family, []).append({"seed": seed, "eval_best": summary["best_value"],
                                                  "eval_ndcg@10": evals[-1], "best_epoch": summary["best_epoch"],
                                                  "hparams": summary["hparams"]})
        results.append(_seed_row(family, per_seed, setting=json.dumps(overrides.get(family, {})) or "defaults",
                                 eval_ndcg_at_10=float(np.mean(evals))))
        markdown = write(families[:i + 1])
    print(markdown)
    return 0


def _seed_row(model: str, per_seed, setting: str, **extra) -> Dict[str, Any]:
    names = ("hit_rate@10", "recall@10", "ndcg@10", "mrr@10")
    mean = {n: float(np.mean([m[n] for m, _ in per_seed])) for n in names}
    mean["users"] = per_seed[0][0]["users"]
    out = row(model, mean, float(np.mean([s for _, s in per_seed])), setting=setting, seeds=len(per_seed), **extra)
    out["ndcg_std"] = float(np.std([m["ndcg@10"] for m, _ in per_seed], ddof=1)) if len(per_seed) > 1 else 0.0
    return out


def comparison_lines(results: Sequence[Dict[str, Any]], families: Sequence[str],
                     per_user: Dict[str, List[List[float]]]) -> List[str]:
    """The best family against the best peer, both chosen by eval NDCG@10: each one's test
    seed mean ± std and the paired bootstrap interval over test users of the difference.

    Args:
      results: the rows (with `eval_ndcg_at_10`).
      families: the families of the run (every other row is a peer).
      per_user: model -> per seed, each test user's NDCG@10 (the same users in the same order).
    """
    evals = {r["model"]: r.get("eval_ndcg_at_10") for r in results}
    fams = {m: v for m, v in evals.items() if m in families}
    peers = {m: v for m, v in evals.items() if m not in families}
    if not fams or not peers:
        return ["- no family or no peer in this run: nothing to compare"]
    best, peer = common.best_by_eval(fams), common.best_by_eval(peers)
    a, b = (common.Measured.of(m, [common.mean_statistic(u) for u in per_user[m]], len(per_user[m][0]))
            for m in (best, peer))
    return [f"- NDCG@10, the best family by eval ({best}, eval {fams[best]:.4f}) against the best peer by eval "
            f"({peer}, eval {peers[peer]:.4f}): " + common.compare(a, b, "test users").text()]


if __name__ == "__main__":
    sys.exit(main())
