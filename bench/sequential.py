"""Protocol S: the next item of every user, sequential families against peers.

Protocol S (a dataset description, `--dataset` / `--dataset_file`, MovieLens by default;
ExampleGen split `leave_last_two_out`): per user (with at least
three ratings), the last rating by (timestamp, item) is the test item and the second to
last the eval item. The user view gives per split the input and the target: eval input =
every rating before the eval item, test input = every rating before the test item (the
eval item included). The target is ranked against every item of the training vocabulary
minus the input's items (full) and against 100 items the user never rated, drawn
uniformly with a fixed seed per user (sampled); HR@5/10, NDCG@10, MRR@5/10 of both, by
`evaluation.definitions` through `training.topk.evaluate_next_item`, the Trainer's and
the Evaluator's own definitions.

Every model is fitted on the training sequences only (the train split's histories: every
rating before the eval item), for the eval and the test inputs alike; nothing is refitted
on train + eval. Its knobs are chosen on the eval split by full NDCG@10, the test split
is only reported. Families (the sequential ones and the retrieval family `two_tower`)
are trained by the Trainer's code (early stopping on the eval split, as in the
pipeline), exported with `recommend` returning the whole catalogue, and scored through
it; the grid runs at the first seed, the chosen setting at every seed. Peers, on the
same rows in the same run: MostPopular, ItemKNN, the last-item Markov chain, ALS and BPR
(`implicit`, benchmark-only); the numeric knobs of the Markov chain, ALS and BPR are chosen
with `bench.common.widening_search` (a knob chosen at its grid's edge is widened past it
until the choice is interior or a stated bound is reached; the status is recorded). The goal lines take the best family and the best peer by
their eval-split value of the goal's metric, and show each one's seed mean ± std and the
paired bootstrap interval over test users of their difference (`bench.common.compare`); a
threshold is met only when the whole bootstrap interval of the family's mean over test users
is at or above it (`bench.common.goal_verdict`). `--merge A,B` writes one page from runs of
the same data (each family of every run against the same peers); `--rerender NAME` writes a
run's page again from its files by today's page code.

    python -m bench.sequential [--families sasrec,bert4rec,nextitnet] [--peer_families two_tower]
        [--seeds 42,43,44] [--family_seeds 42] [--grid FAMILY.NAME=V1,V2 ...]
        [--hparam FAMILY.NAME=VALUE ...] [--jobs N] [--name sequential]
    python -m bench.sequential --merge sequential,sequential_sasrec --name sequential_all
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Dict, List, NamedTuple, Sequence, Tuple

from bench import common  # noqa: E402  (sets the Keras switch first)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_transform as tft  # noqa: E402

from bench import retrieval_peers as rp  # noqa: E402
from bench.tune import parse_grid  # noqa: E402
from contract import datasets as D  # noqa: E402
from contract import features as F  # noqa: E402
from contract import protocol  # noqa: E402
from evaluation import definitions as d  # noqa: E402
from training import topk  # noqa: E402
from training.views import ItemRows, UserView, load_user_view  # noqa: E402

NAME = "sequential"
SPLIT = D.LEAVE_LAST_TWO_OUT_SPLIT
TUNE_ON = "ndcg@10"  # full NDCG@10 on the eval split: the gate's metric
FULL = d.next_item_metric_names()
SAMPLED = d.next_item_metric_names(d.SAMPLED_PREFIX)

# Peer grids (eval split). ItemKNN: which input items vote and how many of the most recent.
KNN_WINDOWS = (0, 50, 20, 5, 1)
ALL_ITEMS = "all"  # ItemKNN's input: every history item, or those of the strongest behavior


def knn_grid(behaviors: Sequence[str]) -> Dict[str, Tuple]:
    """ItemKNN's grid: its input (every item or the strongest behavior's) and window."""
    return {"history": (ALL_ITEMS, behaviors[-1]), "window": KNN_WINDOWS}
# The Markov chain, ALS and BPR: numeric knobs chosen by eval full NDCG@10 with
# `common.widening_search`, which widens a knob past the edge of its grid until the choice
# is interior or a stated bound is reached. Bounds: cost on the shared 2 cores (factors),
# or where the knob stops changing the model.
MARKOV_BACKOFF = (1e-4, 0.1, 1.0, 10.0, 100.0)  # popularity is a distribution: ~1e-3 per top item
MARKOV_KNOBS = (common.Knob("backoff", MARKOV_BACKOFF, common.GEOMETRIC, 10.0, low=1e-9, high=1e6,
                            why="below 1e-9 popularity only breaks the transitions' ties (as at 1e-4); past 1e6 "
                                "the transitions only break popularity's ties"),)
_FACTORS_WHY = "cost: a fit and a full-catalogue ranking grow with factors; 2 shared cores"
ALS_KNOBS = (
    common.Knob("factors", (64, 128), common.GEOMETRIC, 2.0, low=2, high=512, integer=True, why=_FACTORS_WHY),
    common.Knob("regularization", (0.1, 1.0), common.GEOMETRIC, 3.0, low=1e-4, high=1e3,
                why="below 1e-4 no regularization, past 1e3 the factors shrink to zero"),
    common.Knob("alpha", (1.0,), common.GEOMETRIC, 3.0, low=0.01, high=1e3,
                why="alpha is the confidence of an observed pair; below 0.01 or past 1e3 one class dominates"),
)
BPR_KNOBS = (
    common.Knob("factors", (64, 128), common.GEOMETRIC, 2.0, low=2, high=512, integer=True, why=_FACTORS_WHY),
    common.Knob("learning_rate", (0.01, 0.05), common.GEOMETRIC, 2.0, low=1e-4, high=0.4,
                why="SGD steps past 0.4 were not tried"),
    common.Knob("regularization", (0.01,), common.GEOMETRIC, 3.0, low=1e-5, high=10.0,
                why="below 1e-5 no regularization, past 10 the factors shrink to zero"),
)
BPR_ITERATIONS = 100  # fixed, not searched: the cost of each BPR fit on the shared machine
PEER_EVALUATIONS = 40  # the most fits one peer's search makes (cost on the shared machine)


def grid_points(grid: Dict[str, Sequence[Any]]) -> List[Dict[str, Any]]:
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())] or [{}]


def evaluate(scores: rp.ScoreFn, view: UserView, valid: np.ndarray) -> Dict[str, float]:
    """Protocol S metrics of a score function reading every input whole."""
    return d.mean_user_metrics(evaluate_users(scores, view, valid))


def evaluate_users(scores: rp.ScoreFn, view: UserView, valid: np.ndarray) -> List[Dict[str, float]]:
    """`evaluate`'s metrics of each user of the view, in its order."""
    return topk.next_item_user_metrics(scores, view, rp.longest(view), valid)


def goal_values(per_user: Sequence[Dict[str, float]]) -> Dict[str, List[float]]:
    """Each user's value of the goals' metrics (what the paired comparisons resample)."""
    return {name: [u[name] for u in per_user] for name, _ in GOALS}


# --------------------------------------------------------------------------
# Families: trained with the Trainer's code, scored through `recommend`.
# --------------------------------------------------------------------------
def served_scores(saved_model_dir: str, rows: ItemRows, behaviors: Sequence[str], num_rows: int) -> rp.ScoreFn:
    """A score function (bench.retrieval_peers) over `recommend` of an export whose K is the
    whole catalogue: inputs go in as item ids and behavior names (unknown items as "",
    which `recommend` ignores, as it ignores unknown ids), the scores of the K returned
    items come back at their rows; items `recommend` does not return (the input's) are -inf."""
    recommend = tf.saved_model.load(saved_model_dir).signatures[protocol.RECOMMEND]
    id_of = np.array([b""] + list(rows.ids) + [b""], dtype=object)  # rows 0 (pad) .. V + 1 (unknown)
    behavior_of = np.array([b""] + [b.encode() for b in behaviors] + [b""], dtype=object)

    def scores(items: np.ndarray, behavior_rows: np.ndarray) -> np.ndarray:
        out = recommend(history_item_ids=tf.constant(id_of[np.clip(items, 0, len(id_of) - 1)].astype(bytes)),
                        history_behaviors=tf.constant(
                            behavior_of[np.clip(behavior_rows, 0, len(behavior_of) - 1)].astype(bytes)))
        ids = out[protocol.RECOMMEND_ITEM_IDS].numpy()
        values = out[protocol.RECOMMEND_SCORES].numpy()
        full = np.full((len(items), num_rows), -np.inf, dtype=np.float64)
        for i in range(len(items)):
            at = rows.rows(list(ids[i]))
            known = at < num_rows
            full[i, at[known]] = values[i][known]
        return full

    return scores


def fit_family(stages: common.DataStages, family: str, hparams: Dict[str, Any], seed: int,
               out_dir: str) -> Tuple[Dict[str, Any], float]:
    """Trains `family` as the Trainer does and exports it with `recommend` over the whole catalogue."""
    from export.signatures import export_model
    from training.trainer import train

    config = common.train_config(stages, family, hparams=hparams, seed=seed,
                                 tasks=common.task_names(stages.config, family))
    started = time.monotonic()
    model, summary, valid = train(config, stages.files(F.USER_VIEW, "train"), stages.files(F.USER_VIEW, "eval"),
                                  stages.transform_graph)
    seconds = time.monotonic() - started
    export_model(model, tft.TFTransformOutput(stages.transform_graph), valid, out_dir, top_k=int(valid.sum()))
    return summary, seconds


# --------------------------------------------------------------------------
# Rows of the results.
# --------------------------------------------------------------------------
def result_row(model: str, kind: str, runs: Sequence[Tuple[Dict[str, float], float]], setting: str,
               **extra) -> Dict[str, Any]:
    """Mean and std (over seeds; None for one run) of every metric and of the training time."""
    out: Dict[str, Any] = {"model": model, "kind": kind, "setting": setting, "seeds": len(runs),
                           "users": int(runs[0][0]["users"])}
    for name in FULL + SAMPLED:
        stats = common.mean_std([m[name] for m, _ in runs])
        out[name], out[name + "_std"] = stats["mean"], stats["std"]
    seconds = common.mean_std([s for _, s in runs])
    out["train_seconds"], out["train_seconds_std"] = round(seconds["mean"], 1), seconds["std"]
    out.update(extra)
    return out


def eval_fields(metrics: Dict[str, float]) -> Dict[str, float]:
    """`eval_<metric>` of the goals' metrics: the eval-split values a goal line chooses by."""
    return {f"eval_{name}": float(metrics[name]) for name, _ in GOALS}


def _cell(row: Dict[str, Any], name: str) -> str:
    std = row.get(name + "_std")
    return f"{row[name]:.4f}" + ("" if std is None else f" ± {std:.4f}")


def tables(results: Sequence[Dict[str, Any]]) -> str:
    """The two tables (full, sampled) with mean ± std per metric."""
    out = []
    for title, names in (("Full candidate set (every training item minus the input's)", FULL),
                         (f"Sampled candidate set ({d.SAMPLED_NEGATIVES} never-rated items, seed "
                          f"{d.SAMPLED_SEED})", SAMPLED)):
        header = ["model", "kind"] + [n.replace(d.SAMPLED_PREFIX, "") for n in names] + ["seeds", "train s"]
        if names is FULL:
            header.append("setting")
        lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        for r in results:
            cells = [r["model"], r["kind"]] + [_cell(r, n) for n in names]
            cells += [str(r["seeds"]), f"{r['train_seconds']:.1f}"]
            if names is FULL:
                cells.append(r["setting"])
            lines.append("| " + " | ".join(cells) + " |")
        out.append("\n".join(lines))
    return "\n\n".join(out)


GOALS = (("ndcg@10", 0.060), (d.SAMPLED_PREFIX + "hit_rate@10", 0.72))


def goal_lines(results: Sequence[Dict[str, Any]], families: Sequence[str],
               per_user: Dict[str, List[Dict[str, List[float]]]]) -> List[str]:
    """Per goal: the best family by its eval value of the goal's metric against the
    threshold (its test seed mean ± std and bootstrap interval), and against the best peer
    by eval (`bench.common.compare` over the test users).

    Args:
      results: the result rows (with `eval_<metric>`).
      families: the sequential families of the run.
      per_user: model -> per seed, {goal metric: each test user's value}.
    """
    fams = {r["model"]: r for r in results if r["model"] in families}
    peers = {r["model"]: r for r in results if r["model"] not in families}
    lines = []
    for name, threshold in GOALS:
        if not fams:
            lines.append(f"- best sequential family {name} >= {threshold}: not measured (no family in this run)")
            continue
        best = common.best_by_eval({m: r.get(f"eval_{name}") for m, r in fams.items()})
        measured = {m: common.Measured.of(m, [common.mean_statistic(u[name]) for u in per_user[m]],
                                          len(per_user[m][0][name]))
                    for m in [best] + list(peers) if m in per_user}
        summary = measured[best].summary()
        met = common.goal_verdict(summary["low"], summary["high"], threshold, at_least=True)
        line = (f"- best sequential family by eval {name} ({best}, eval {fams[best][f'eval_{name}']:.4f}) >= "
                f"{threshold} on test: **{met}** ({best} {_cell(fams[best], name)}, 95% bootstrap interval of the "
                f"seed mean over test users [{summary['low']:.4f}, {summary['high']:.4f}])")
        if peers:
            peer = common.best_by_eval({m: r.get(f"eval_{name}") for m, r in peers.items()})
            line += (f"; against the best peer by eval {name} ({peer}): "
                     + common.compare(measured[best], measured[peer], "test users").text())
        lines.append(line)
    return lines


def paired_lines(results: Sequence[Dict[str, Any]], families: Sequence[str],
                 per_user: Dict[str, List[Dict[str, List[float]]]]) -> List[str]:
    """Per goal metric: every other model against the best peer by eval (its eval value of
    the metric), each as `bench.common.compare` over the test users (seed means: each side's
    mean ± seed std and the paired bootstrap interval of the difference).

    Args:
      results: the result rows (with `eval_<metric>`).
      families: the sequential families of the run (every other row is a peer).
      per_user: model -> per seed, {goal metric: each test user's value}.
    """
    peers = {r["model"]: r for r in results if r["model"] not in families}
    if not peers:
        return []
    lines = []
    for name, _ in GOALS:
        peer = common.best_by_eval({m: r.get(f"eval_{name}") for m, r in peers.items()})
        measured = {r["model"]: common.Measured.of(r["model"], [common.mean_statistic(u[name])
                                                               for u in per_user[r["model"]]],
                                                   len(per_user[r["model"]][0][name]))
                    for r in results if r["model"] in per_user}
        lines += ["", f"{name} on test, against the best peer by eval {name} ({peer}):", ""]
        lines += [f"- {common.compare(measured[r['model']], measured[peer], 'test users').text()}"
                  for r in results if r["model"] != peer and r["model"] in measured]
    return lines


def runs_record(results: Sequence[Dict[str, Any]], per_user: Dict[str, List[Dict[str, List[float]]]],
                users: Sequence[bytes]) -> Dict[str, Any]:
    """What the paired comparisons resample, kept next to the results: the test users (in
    order) and per model, per seed, each user's goal values."""
    return {"users": [u.decode() if isinstance(u, bytes) else str(u) for u in users],
            "goals": [name for name, _ in GOALS],
            "models": {r["model"]: {"seeds": r["seeds"], "per_user": per_user[r["model"]]}
                       for r in results if r["model"] in per_user}}


class RunHeader(NamedTuple):
    """What a page's first paragraph states about its run: the data, the user counts, the seeds."""
    data_label: str
    test_users: int
    eval_users: int
    seeds: str
    family_seeds: str


_HEADER = re.compile(r"^# Protocol S: the next item \((?P<label>.*), test users\)\n\n(?P<test>\d+) test users "
                     r"\(eval: (?P<eval>\d+)\).*?seeds (?P<seeds>[\d,]+) \(families: (?P<fseeds>[\d,]+);", re.S)


def page(results: Sequence[Dict[str, Any]], families: Sequence[str], per_user: Dict[str, List[Dict[str, List[float]]]],
         tuning: Dict[str, Any], name: str, header: RunHeader, footer: str) -> str:
    """The markdown page of a run (or of merged runs): tables, goal lines, paired lines, what
    was tried on eval."""
    return "\n".join([
        f"# Protocol S: the next item ({header.data_label}, test users)", "",
        f"{header.test_users} test users (eval: {header.eval_users}); input = every rating before the target "
        "(test: the eval item included); every model fitted on the training sequences only (every rating before "
        "the eval item), tuned on the eval split by full NDCG@10, test reported. Trained models: mean ± std over "
        f"seeds {header.seeds} (families: {header.family_seeds}; std over seeds, none "
        "for one run; deterministic peers: one run). `train s`: fitting "
        "time per seed (families: the Trainer's fit with early stopping on eval).", "",
        tables(results), "",
        "## Goals (issue 9)", "",
        "The best family and the best peer are chosen by their eval value of the goal's metric. A threshold is "
        "met only when the whole 95% bootstrap interval of the family's seed mean over test users is at or "
        "above it; a verdict against the peer needs the paired bootstrap interval (95%, over test users, seed "
        "means) to exclude 0 and the difference to exceed both seed stds.", "",
        *goal_lines(results, families, per_user), "",
        "## Paired comparisons", "",
        "Each line: the model's test mean ± std over its seeds against the peer's, and the paired 95% "
        "bootstrap interval of the difference of their seed means over the same test users (each user's "
        f"values in `{name}_runs.json`); \"better\" or \"worse\" only where the interval excludes 0 and "
        "the difference exceeds the larger seed std, otherwise \"no difference\".",
        *paired_lines(results, families, per_user), "",
        f"## What was tried on the eval split (full NDCG@10; all grids in `{name}_tuning.json`)",
        *tried_lines(tuning, [r["model"] for r in results]), "",
        "Families: `epochs` = best epoch / epochs run per seed: " + "; ".join(
            f"{r['model']} {r['epochs']}" for r in results if "epochs" in r),
        footer,
    ])


class Merged(NamedTuple):
    """Runs of the same protocol S data joined (`merge_parts`)."""
    results: List[Dict[str, Any]]
    per_user: Dict[str, List[Dict[str, List[float]]]]
    tuning: Dict[str, Any]
    users: List[str]
    header: RunHeader
    produced: Dict[str, str]  # part -> its command and commit


def merge_parts(parts: Sequence[str], out: str = common.RESULTS_DIR) -> Merged:
    """Joins the runs `<out>/<part>.json`, `_runs.json`, `_tuning.json` and `.md` of the same
    data: every family of every part, the peers once. The parts must agree on the test users
    (in order), the user counts and the data, and each peer's per-user values must be the same
    in every part (the peers are deterministic or seeded: a difference means different data or
    code); a family in two parts is an error (which run would the page report?).

    Args:
      parts: results names (e.g. `sequential`, `sequential_sasrec`).
      out: the results directory.
    """
    results: List[Dict[str, Any]] = []
    per_user: Dict[str, List[Dict[str, List[float]]]] = {}
    tuning: Dict[str, Any] = {}
    users: List[str] = []
    header: RunHeader = None
    produced: Dict[str, str] = {}
    owner: Dict[str, str] = {}
    for part in parts:
        def path(suffix: str) -> str:
            return os.path.join(out, f"{part}{suffix}")
        missing = [path(s) for s in (".json", "_runs.json", "_tuning.json", ".md") if not os.path.exists(path(s))]
        if missing:
            raise ValueError(f"--merge {part}: missing {', '.join(missing)} (a bench.sequential run writes all four)")
        with open(path(".json")) as f:
            rows = json.load(f)
        with open(path("_runs.json")) as f:
            runs = json.load(f)
        with open(path("_tuning.json")) as f:
            part_tuning = json.load(f)
        with open(path(".md")) as f:
            md = f.read()
        found = _HEADER.search(md)
        if not found:
            raise ValueError(f"{path('.md')}: no protocol S header (title and user counts) to merge")
        part_header = RunHeader(found["label"], int(found["test"]), int(found["eval"]), found["seeds"],
                                found["fseeds"])
        produced[part] = " ".join(line.strip() for line in md.splitlines()
                                  if line.startswith(("Produced by: ", "Commit: ")))
        if header is None:
            header, users = part_header, runs["users"]
        elif (part_header.data_label, part_header.test_users, part_header.eval_users) != \
                (header.data_label, header.test_users, header.eval_users) or runs["users"] != users:
            raise ValueError(f"--merge {part}: its data or test users differ from {parts[0]}'s "
                             f"({part_header[:3]} against {header[:3]}); only runs of the same data merge")
        else:
            if part_header.seeds != header.seeds or part_header.family_seeds != header.family_seeds:
                header = header._replace(seeds=f"{header.seeds} / {part_header.seeds}",
                                         family_seeds=f"{header.family_seeds} / {part_header.family_seeds}")
        for row in rows:
            model = row["model"]
            mine = runs["models"][model]["per_user"]
            if model in owner:
                if row["kind"] == "family" or owner[model] == "family":
                    raise ValueError(f"--merge: {model} is in both {owner[model + ':part']} and {part}; "
                                     "merge runs of different families")
                if mine != per_user[model]:
                    raise ValueError(f"--merge {part}: peer {model}'s per-user test values differ from "
                                     f"{owner[model + ':part']}'s: the runs did not see the same data and code")
                continue
            owner[model], owner[model + ":part"] = row["kind"], part
            results.append(row)
            per_user[model] = mine
            if model in part_tuning:
                tuning[model] = part_tuning[model]
    peers = [r for r in results if r["kind"] != "family"]
    fams = [r for r in results if r["kind"] == "family"]
    return Merged(peers + fams, per_user, tuning, users, header, produced)


# --------------------------------------------------------------------------
# The benchmark.
# --------------------------------------------------------------------------
class Bench:
    """The data of one run: views, rows, candidates, and what was tried.

    Args:
      stages: the data stages.
      data: the PipelineConfig fields they were run with (the worker processes run the
        same ones).
    """

    def __init__(self, stages: common.DataStages, data: Dict[str, Any]):
        self.stages = stages
        self.data = data
        self.spec = stages.config.spec
        tft_output = tft.TFTransformOutput(stages.transform_graph)
        self.rows = ItemRows(tft_output.vocabulary_by_name(F.ITEM_VOCAB), self.spec.behaviors)
        self.num_rows = len(self.rows.ids) + 1
        self.views = {s: load_user_view(stages.raw_files(F.USER_VIEW, s), self.rows) for s in ("train", "eval", "test")}
        self.valid = np.ones(self.num_rows, dtype=bool)
        self.valid[0] = False
        self.results: List[Dict[str, Any]] = []
        self.tuning: Dict[str, Any] = {}
        # model -> per seed, {goal metric: each test user's value} (the paired comparisons)
        self.per_user: Dict[str, List[Dict[str, List[float]]]] = {}
        self.peer_error: BaseException = None

    def tune(self, model: str, grid: Sequence[Dict[str, Any]], make: Callable[[Dict[str, Any]], rp.ScoreFn]):
        """Evaluates every grid point on eval; returns the best point (full NDCG@10) and its
        eval metrics."""
        tried = []
        for g in grid:
            tried.append((g, evaluate(make(g), self.views["eval"], self.valid)))
            print(f"{model} {json.dumps(g)}: eval {TUNE_ON} {tried[-1][1][TUNE_ON]:.4f}", file=sys.stderr, flush=True)
        best, metrics = max(tried, key=lambda t: t[1][TUNE_ON])
        self.tuning[model] = {"split": "eval", "metric": TUNE_ON, "chosen": best,
                              "grid": [{**g, **m} for g, m in tried]}
        return best, metrics

    def tune_knobs(self, model: str, knobs: Sequence[common.Knob], make: Callable[[Dict[str, Any]], rp.ScoreFn]):
        """`common.widening_search` on eval full NDCG@10; records every point with its eval
        metrics and each knob's status (interior or the bound it stopped at); returns the
        chosen point, its eval metrics and the search."""
        metrics: Dict[str, Dict[str, float]] = {}

        def objective(g):
            m = evaluate(make(g), self.views["eval"], self.valid)
            metrics[json.dumps(g, sort_keys=True)] = m
            return m[TUNE_ON]

        tuned = common.widening_search(objective, knobs, max_evaluations=PEER_EVALUATIONS,
                                       log=lambda line: print(f"{model} {line}", file=sys.stderr, flush=True))
        points = [{k: v for k, v in p.items() if k != "score"} for p in tuned.points]
        self.tuning[model] = {"split": "eval", "metric": TUNE_ON, "chosen": tuned.chosen, "status": tuned.status,
                              "grid": [{**g, **metrics[json.dumps(g, sort_keys=True)]} for g in points]}
        return tuned.chosen, metrics[json.dumps(tuned.chosen, sort_keys=True)], tuned

    def test_run(self, model: str, scores: rp.ScoreFn) -> Dict[str, float]:
        """Test metrics of one fitted model (one seed), keeping each user's goal values."""
        users = evaluate_users(scores, self.views["test"], self.valid)
        self.per_user.setdefault(model, []).append(goal_values(users))
        return d.mean_user_metrics(users)

    def deterministic_peer(self, model: str, grid, make, fit_seconds: float) -> None:
        best, eval_metrics = self.tune(model, grid, make)
        test = self.test_run(model, make(best))
        self.results.append(result_row(model, "peer", [(test, fit_seconds)], json.dumps(best),
                                       **eval_fields(eval_metrics)))
        print(f"{model}: {json.dumps(best)} test ndcg@10 {test['ndcg@10']:.4f}", file=sys.stderr, flush=True)

    def peers(self, seeds: Sequence[int], with_implicit: bool) -> None:
        train, n = self.views["train"], self.num_rows
        strongest = len(self.spec.behaviors)  # behavior ids 1..n, weakest first

        started = time.monotonic()
        counts = rp.popularity_counts(train, n)
        self.deterministic_peer("most_popular", [{}], lambda g: topk.popularity_scores(counts),
                                time.monotonic() - started)

        started = time.monotonic()
        sim = rp.item_knn_weights(train, n)
        seconds = time.monotonic() - started

        def knn(g):
            return rp.FullHistoryScorer(train, n, sim, 0 if g["history"] == ALL_ITEMS else strongest,
                                        g["window"]).scores

        self.deterministic_peer("item_knn", grid_points(knn_grid(self.spec.behaviors)), knn, seconds)

        started = time.monotonic()
        transitions = rp.markov_transitions(train, n)
        seconds = time.monotonic() - started
        make = lambda g: rp.markov_scores(transitions, counts, g["backoff"])  # noqa: E731
        best, eval_metrics, tuned = self.tune_knobs("markov", MARKOV_KNOBS, make)
        test = self.test_run("markov", make(best))
        self.results.append(result_row("markov", "peer", [(test, seconds)], json.dumps(best),
                                       tuning_status=tuned.status_text(), **eval_fields(eval_metrics)))
        if not with_implicit:
            return

        def als(g, seed, view):
            return rp.als_input_scores(rp.als_fit(train, n, seed=seed, **g), n)

        def bpr(g, seed, view):
            model = rp.bpr_fit(train, n, iterations=BPR_ITERATIONS, seed=seed, **g)
            return rp.fitted_user_scores(model.user_factors, model.item_factors, train.users, view)

        for model, knobs, make, setting in (
                ("als", ALS_KNOBS, als, "user vector solved from the input"),
                ("bpr", BPR_KNOBS, bpr, f"{BPR_ITERATIONS} iterations, fitted user vectors")):
            best, eval_metrics, tuned = self.tune_knobs(model, knobs, lambda g: make(g, seeds[0], self.views["eval"]))
            runs = []
            for seed in seeds:
                started = time.monotonic()
                scores = make(best, seed, self.views["test"])
                seconds = time.monotonic() - started
                runs.append((self.test_run(model, scores), seconds))
            self.results.append(result_row(model, "peer", runs, f"{json.dumps(best)}; {setting}",
                                           tuning_status=tuned.status_text(), **eval_fields(eval_metrics)))
            print(f"{model}: {json.dumps(best)} test ndcg@10 {runs[0][0]['ndcg@10']:.4f}", file=sys.stderr,
                  flush=True)

    def families(self, specs: Sequence[Tuple[str, str, Dict[str, Any], Dict[str, List[str]]]],
                 seeds: Sequence[int], jobs: int, during: Callable[[], None]) -> None:
        """Every (family, kind, fixed hparams, grid): the grid on eval at the first seed, then
        the chosen setting at the other seeds; test reported. Fits run in `jobs` worker
        processes; `during` (the peers) runs in a thread of this process meanwhile."""
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        from bench.sequential import fit_and_score  # by module name, also when this file runs as __main__

        work_dir = os.path.dirname(self.stages.config.output_dir)
        with ProcessPoolExecutor(max(1, jobs), mp_context=multiprocessing.get_context("spawn")) as pool:
            first, later = {}, {}
            for family, _, fixed, grid in specs:
                points = [{**fixed, **g} for g in grid_points(grid)]
                first[family] = [(p, pool.submit(fit_and_score, work_dir, self.data, family, p, seeds[0]))
                                 for p in points]
                if len(points) == 1:  # nothing to choose: every seed at once
                    later[family] = [pool.submit(fit_and_score, work_dir, self.data, family, points[0], seed)
                                     for seed in seeds[1:]]
            peers = threading.Thread(target=during, name="peers")
            peers.start()
            chosen = {}
            for family, _, _, _ in specs:
                tried = [(p, f.result()) for p, f in first[family]]
                best_i = max(range(len(tried)), key=lambda i: tried[i][1][0]["eval"][TUNE_ON])
                chosen[family] = (tried, best_i)
                if family not in later:
                    later[family] = [pool.submit(fit_and_score, work_dir, self.data, family, tried[best_i][0],
                                                 seed) for seed in seeds[1:]]
            for family, kind, _, _ in specs:
                tried, best_i = chosen[family]
                best = tried[best_i][0]
                runs = [tried[best_i][1]] + [f.result() for f in later[family]]
                per_seed = [info for info, _ in runs]
                self.per_user[family] = [info["test_users"] for info in per_seed]
                for p, r in tried:  # the tuning file keeps the metrics, not every user's values
                    r[0].pop("test_users", None)
                for info in per_seed:
                    info.pop("test_users", None)
                self.tuning[family] = {"split": "eval", "metric": TUNE_ON, "chosen": best,
                                       "grid": [{"grid_point": p, **r[0]} for p, r in tried], "seeds": per_seed}
                epochs = ", ".join(f"{i['best_epoch']}/{i['epochs_run']}" for i in per_seed)
                eval_means = {n: float(np.mean([i["eval"][n] for i in per_seed])) for n, _ in GOALS}
                self.results.append(result_row(family, kind, [run for _, run in runs],
                                               json.dumps(best) if best else "defaults", epochs=epochs,
                                               hparams=per_seed[0]["hparams"], **eval_fields(eval_means)))
            peers.join()
        if self.peer_error is not None:
            raise self.peer_error


_WORKER_BENCH: Dict[str, Bench] = {}


def fit_and_score(work_dir: str, data: Dict[str, Any], family: str, hparams: Dict[str, Any], seed: int):
    """One fit of a family (a worker process's job) on the data stages of `data` (PipelineConfig
    fields) under `work_dir`: its eval metrics and summary, and (test metrics, training seconds).
    A failure comes back as a RuntimeError holding the worker's traceback: some exceptions
    (autograph's) cannot be unpickled in the parent, which then loses the whole pool."""
    import traceback

    try:
        return _fit_and_score(work_dir, data, family, hparams, seed)
    except Exception:
        raise RuntimeError(f"{family} seed {seed} {json.dumps(hparams)} failed in its worker:\n"
                           f"{traceback.format_exc()}") from None


def _fit_and_score(work_dir: str, data: Dict[str, Any], family: str, hparams: Dict[str, Any], seed: int):
    key = json.dumps([work_dir, data], sort_keys=True)
    if key not in _WORKER_BENCH:
        _WORKER_BENCH[key] = Bench(common.data_stages(work_dir, **data), data)
    bench = _WORKER_BENCH[key]
    with tempfile.TemporaryDirectory() as tmp:
        summary, seconds = fit_family(bench.stages, family, hparams, seed, tmp)
        scores = served_scores(tmp, bench.rows, bench.spec.behaviors, bench.num_rows)
        users = {s: evaluate_users(scores, bench.views[s], bench.valid) for s in ("eval", "test")}
    metrics = {s: d.mean_user_metrics(u) for s, u in users.items()}
    info = {"seed": seed, "hparams": summary["hparams"], "epochs_run": summary["epochs_run"],
            "best_epoch": summary["best_epoch"], "train_seconds": round(seconds, 1),
            "trainer_" + summary["monitor"]: summary["best_value"],
            "eval": metrics["eval"], "test_" + TUNE_ON: metrics["test"][TUNE_ON],
            "test_users": goal_values(users["test"])}
    print(f"{family} seed {seed} {json.dumps(hparams)}: eval {TUNE_ON} {metrics['eval'][TUNE_ON]:.4f}, "
          f"best epoch {summary['best_epoch']} of {summary['epochs_run']}, {seconds:.0f} s", file=sys.stderr,
          flush=True)
    return info, (metrics["test"], seconds)


def tried_lines(tuning: Dict[str, Any], models: Sequence[str]) -> List[str]:
    """One line per model: the grid points and their eval full NDCG@10."""
    lines = []
    for model in models:
        t = tuning.get(model)
        if not t:
            continue
        if "seeds" in t:  # a family
            points = "; ".join(f"{json.dumps(p['grid_point']) if p['grid_point'] else 'defaults'} "
                               f"{p['eval'][TUNE_ON]:.4f} (best epoch {p['best_epoch']} of {p['epochs_run']}, "
                               f"{p['train_seconds']:.0f} s)" for p in t["grid"])
        else:
            points = f"{len(t['grid'])} points, eval {TUNE_ON} " + \
                f"{min(p[TUNE_ON] for p in t['grid']):.4f} .. {max(p[TUNE_ON] for p in t['grid']):.4f}"
        status = ("; knobs: " + "; ".join(f"{k} {v}" for k, v in t["status"].items())) if t.get("status") else ""
        lines.append(f"- `{model}`: {points}; chosen `{json.dumps(t['chosen'])}`{status}")
    return lines


def tuning_page(name: str, out: str = common.RESULTS_DIR) -> str:
    """Re-writes a run's eval-split searches as a tuning page, `<out>/tuning/<name>.{json,md}`:
    per trained model, every grid point's eval values at the first seed and the chosen
    point's eval values per seed, read from `<out>/<name>_tuning.json`; no test value. The
    page keeps the run's command, commit and machine (the footer of `<out>/<name>.md`).
    Returns the markdown.

    Args:
      name: the run's results name (e.g. a grid run whose test columns have no paired interval).
      out: the results directory.
    """
    with open(os.path.join(out, f"{name}_tuning.json")) as f:
        tuning = json.load(f)
    with open(os.path.join(out, f"{name}.md")) as f:
        footer = [line for line in f.read().splitlines()
                  if line.startswith(("Produced by: `", "Commit: ", "Machine: "))]
    if not any(line.startswith("Produced by: `") for line in footer):
        raise ValueError(f"{out}/{name}.md has no 'Produced by:' line: the tuning page would have no command")
    rows, lines = [], []
    goal_names = [g for g, _ in GOALS]
    for model, t in tuning.items():
        if "seeds" not in t:  # a peer: its search is on the run's own page
            continue
        for p in t["grid"]:
            rows.append({"model": model, "seed": p["seed"], "grid_point": p["grid_point"],
                         "chosen": p["grid_point"] == {k: v for k, v in t["chosen"].items() if k in p["grid_point"]},
                         "best_epoch": p["best_epoch"], "epochs_run": p["epochs_run"],
                         "train_seconds": p["train_seconds"], **{f"eval_{g}": p["eval"][g] for g in goal_names}})
        seeds = [s_ for s_ in t["seeds"] if s_["seed"] != t["grid"][0]["seed"]]
        rows += [{"model": model, "seed": s_["seed"], "grid_point": "chosen", "chosen": True,
                  "best_epoch": s_["best_epoch"], "epochs_run": s_["epochs_run"], "train_seconds": s_["train_seconds"],
                  **{f"eval_{g}": s_["eval"][g] for g in goal_names}} for s_ in seeds]
        lines.append(f"- `{model}`: chosen `{json.dumps(t['chosen'])}`")
    columns = ["model", "seed", "grid_point", "chosen", "best_epoch", "epochs_run", "train_seconds"] + \
        [f"eval_{g}" for g in goal_names]
    table_rows = [{**r, "grid_point": json.dumps(r["grid_point"]) if isinstance(r["grid_point"], dict)
                   else r["grid_point"]} for r in rows]
    markdown = "\n".join([
        f"# Tuning on the eval split (protocol S): {name}", "",
        f"Every grid point at the first seed, then the chosen point at the other seeds; {TUNE_ON} chooses. "
        "Eval values only: the run also scored the test split, and those columns are left out of this "
        f"page (a tuning record). Written from `{name}_tuning.json` by `python -m bench.sequential "
        f"--tuning_page {name}`.", "",
        common.md_table(table_rows, columns), "", *lines, "", *footer, ""])
    os.makedirs(os.path.join(out, "tuning"), exist_ok=True)
    common.atomic_write(os.path.join(out, "tuning", f"{name}.json"), json.dumps(rows, indent=2) + "\n")
    common.atomic_write(os.path.join(out, "tuning", f"{name}.md"), markdown)
    return markdown


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="sasrec,bert4rec,nextitnet", help="sequential families ('' for none)")
    parser.add_argument("--peer_families", default="two_tower", help="other retrieving families, as peers")
    parser.add_argument("--seeds", default="42,43,44")
    parser.add_argument("--family_seeds", default=None,
                        help="seeds of the family fits when fewer than --seeds fit the time (default: --seeds)")
    parser.add_argument("--hparam", action="append", default=[], metavar="FAMILY.NAME=VALUE",
                        help="a fixed setting of a family")
    parser.add_argument("--grid", action="append", default=[], metavar="FAMILY.NAME=V1,V2",
                        help="a family's knob to choose on the eval split (every combination, first seed)")
    parser.add_argument("--out", default=common.RESULTS_DIR)
    parser.add_argument("--name", default=NAME, help="result files <out>/<name>.json, .md, <name>_tuning.json")
    parser.add_argument("--work_dir", default=common.DEFAULT_WORK_DIR)
    parser.add_argument("--jobs", type=int, default=1, help="family fits at once (worker processes)")
    parser.add_argument("--skip_implicit", action="store_true", help="leave out ALS and BPR (no `implicit`)")
    parser.add_argument("--tuning_page", default="", metavar="NAME",
                        help="only re-write <out>/NAME_tuning.json's eval-split searches as <out>/tuning/NAME.*")
    parser.add_argument("--merge", default="", metavar="NAME1,NAME2",
                        help="no training: one page <out>/<name>.* from these runs of the same data (merge_parts)")
    parser.add_argument("--rerender", default="", metavar="NAME",
                        help="no training: <out>/NAME.md written again from NAME's files by today's page code")
    common.add_dataset_arguments(parser)
    args = parser.parse_args(argv)
    if args.tuning_page:
        print(tuning_page(args.tuning_page, args.out))
        return 0
    command = common.command_line("bench.sequential", argv)
    if args.rerender:
        print(rerender_main(args.rerender, args.out, command))
        return 0
    if args.merge:
        print(merge_main([p for p in args.merge.split(",") if p], args.name, args.out, command))
        return 0
    from models.hparams import parse_assignments
    from models.registry import get_family

    seeds = [int(s) for s in args.seeds.split(",")]
    family_seeds = [int(s) for s in (args.family_seeds or args.seeds).split(",")]
    families = [f for f in args.families.split(",") if f]
    peer_families = [f for f in args.peer_families.split(",") if f]
    fixed = parse_assignments(args.hparam)
    grids: Dict[str, Dict[str, List[str]]] = {}
    for item in args.grid:
        family, sep, rest = item.partition(".")
        if not sep:
            raise ValueError(f"--grid {item!r}: expected FAMILY.NAME=V1,V2")
        grids.setdefault(family, {}).update(parse_grid([rest]))
    for family in families + peer_families:  # a bad family or knob fails before anything runs
        spec = get_family(family)
        for point in grid_points(grids.get(family, {})):
            spec.hparams().override({**fixed.get(family, {}), **point})
    unknown = sorted((set(grids) | set(fixed)) - set(families + peer_families))
    if unknown:
        raise ValueError(f"--grid / --hparam name families {unknown} that this run does not train")

    started = time.monotonic()
    data = {**common.dataset_overrides(args), "split": SPLIT}
    bench = Bench(common.data_stages(args.work_dir, **data), data)
    specs = [(f, "peer", fixed.get(f, {}), grids.get(f, {})) for f in peer_families]
    specs += [(f, "family", fixed.get(f, {}), grids.get(f, {})) for f in families]
    def peers():
        try:
            bench.peers(seeds, with_implicit=not args.skip_implicit)
        except BaseException as e:  # re-raised in the main thread once the fits are done
            bench.peer_error = e

    bench.families(specs, family_seeds, args.jobs, peers)
    order = ["most_popular", "item_knn", "markov", "als", "bpr"] + peer_families + families
    bench.results.sort(key=lambda r: order.index(r["model"]))

    meta = {"command": command, "machine": json.dumps(common.machine())}
    views = bench.views
    markdown = page(bench.results, families, bench.per_user, bench.tuning, args.name,
                    header=RunHeader(common.data_label(bench.stages.config), len(views["test"]), len(views["eval"]),
                                     ",".join(map(str, seeds)), ",".join(map(str, family_seeds))),
                    footer=f"Wall time of the whole run: {time.monotonic() - started:.0f} s.")
    common.write_results(args.name, bench.results, markdown, meta, args.out)
    common.atomic_write(os.path.join(args.out, f"{args.name}_tuning.json"),
                        json.dumps(bench.tuning, indent=2, default=str) + "\n")
    common.atomic_write(os.path.join(args.out, f"{args.name}_runs.json"),
                        json.dumps(runs_record(bench.results, bench.per_user, views["test"].users)) + "\n")
    print(markdown)
    return 0


def rerender_main(name: str, out: str, command: str) -> str:
    """`--rerender`: a run's page written again from its own four files by today's page code
    (the goal rule, the paired lines), keeping the run's command, commit, machine and wall
    time and saying when it was re-rendered; the rows, runs and tuning files are unchanged."""
    merged = merge_parts([name], out)
    with open(os.path.join(out, f"{name}.md")) as f:
        md = f.read()
    meta = common.written_provenance(md, f"{out}/{name}.md")
    families = [r["model"] for r in merged.results if r["kind"] == "family"]
    wall = next((line.split(": ", 1)[1] for line in md.splitlines() if line.startswith("Wall time of the whole run: ")),
                None)
    footer = (f"Wall time of the whole run: {wall}\n" if wall else "") + \
        f"Page re-rendered from the run's files by `{command}` at {common.commit()}: the figures are the run's."
    markdown = page(merged.results, families, merged.per_user, merged.tuning, name, header=merged.header,
                    footer=footer)
    common.write_results(name, merged.results, markdown, meta, out)
    return markdown


def merge_main(parts: Sequence[str], name: str, out: str, command: str) -> str:
    """`--merge`: one page from runs of the same protocol S data (`merge_parts`), its goal and
    paired lines over every family of the parts; writes `<out>/<name>.*` like a run."""
    if name in parts:
        raise ValueError(f"--merge would overwrite its part {name} with the merged page: choose another --name")
    merged = merge_parts(parts, out)
    families = [r["model"] for r in merged.results if r["kind"] == "family"]
    markdown = page(merged.results, families, merged.per_user, merged.tuning, name, header=merged.header,
                    footer="Merged, without training, from the runs (each run's page has its own command, "
                           "commit and wall time):\n\n" + "\n".join(f"- `{p}`: {merged.produced[p]}" for p in parts))
    meta = {"command": command, "machine": json.dumps(common.machine())}
    common.write_results(name, merged.results, markdown, meta, out)
    common.atomic_write(os.path.join(out, f"{name}_tuning.json"), json.dumps(merged.tuning, indent=2, default=str) + "\n")
    common.atomic_write(os.path.join(out, f"{name}_runs.json"),
                        json.dumps(runs_record(merged.results, merged.per_user, merged.users)) + "\n")
    return markdown


if __name__ == "__main__":
    sys.exit(main())
