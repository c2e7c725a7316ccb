"""MF-family benchmark under protocol R (hash split) on MovieLens, with reference peers.

One run, in a fresh output directory:
  1. the pipeline's data stages (ExampleGen .. Transform) on `data/movielens-small`;
  2. every family of `models.registry.FAMILIES` trained with `train_and_export` on the
     Transform output (train split; the eval split only for monitoring), timed;
  3. the raw TEST split scored through each exported model's `serving_default` and
     measured with `evaluation.recommendation_metrics`;
  4. the peers (global mean, surprise BaselineOnly and SVD) trained on the same raw
     training rows and measured on the same test rows with the same function.
With `--make_run`, a whole `make run` equivalent (`python -m pipeline.local_runner`,
default families) is timed in a temporary output directory as well.

Writes `<out>/mf_family.json` (one row per model) and `<out>/mf_family.md` atomically.

    python -m bench.mf_family [--make_run] [--out bench/results]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench import peers  # noqa: E402
from bench.serving import atomic_write, cpu_model  # noqa: E402
from evaluation import definitions as M  # noqa: E402
from models.registry import FAMILIES, get_family  # noqa: E402
from pipeline.configs import REPO_ROOT, PipelineConfig  # noqa: E402

RESULTS_DIR = os.path.join(str(REPO_ROOT), "bench", "results")
JSON_NAME = "mf_family.json"
MD_NAME = "mf_family.md"
TUNING_NAME = "mf_tuning.json"
TOP_K = 10

# Component ids and output keys of the data stages (pipeline/pipeline.py).
EXAMPLE_GEN, RAW_EXAMPLES = "InteractionExampleGen", "examples"
TRANSFORM, TRANSFORMED, GRAPH = "Transform", "transformed_examples", "transform_graph"

# Goals (README): RMSE/AUC thresholds, and the make-run budget in seconds.
GOAL_MF_RMSE = 0.880
GOAL_MF_DNN_RMSE = 0.860
GOAL_MF_DNN_AUC = 0.80
GOAL_MAKE_RUN_SECONDS = 360.0

ROW_KEYS = (
    "model", "rmse", "mae", "auc", "ndcg_at_10", "precision_at_10",
    "train_seconds", "examples_per_second", "make_run_seconds",
)


# --------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------
@dataclasses.dataclass
class DataStage:
    """Where the data stages wrote their outputs, and how long they took."""

    raw_examples: str
    transformed_examples: str
    transform_graph: str
    seconds: float
    component_seconds: Dict[str, float]


def run_data_stages(config: PipelineConfig) -> DataStage:
    """Runs ExampleGen .. Transform (no families) into `config.output_dir`."""
    from pipeline import local_runner, report

    started = time.monotonic()
    timings = local_runner.run(dataclasses.replace(config, families=()), progress_out=sys.stdout)
    seconds = time.monotonic() - started
    found = report.output_dirs(config.pipeline_root)
    try:
        return DataStage(
            raw_examples=found[EXAMPLE_GEN][RAW_EXAMPLES],
            transformed_examples=found[TRANSFORM][TRANSFORMED],
            transform_graph=found[TRANSFORM][GRAPH],
            seconds=seconds,
            component_seconds={t.name: round(t.seconds, 1) for t in timings},
        )
    except KeyError as e:
        raise RuntimeError(f"the data stages wrote no {e} output under {config.pipeline_root}") from None


def serve_scores(saved_model_dir: str, examples: Sequence[bytes], head: str, batch_size: int = 1024) -> np.ndarray:
    """Scores serialized raw tf.Examples through the model's `serving_default` signature."""
    fn = tf.saved_model.load(saved_model_dir).signatures["serving_default"]
    out = []
    for start in range(0, len(examples), batch_size):
        result = fn(examples=tf.constant(list(examples[start : start + batch_size])))
        if head not in result:
            raise KeyError(f"{saved_model_dir}: serving_default returned {sorted(result)}, expected {head!r}")
        out.append(result[head].numpy().reshape(-1))
    scores = np.concatenate(out)
    if scores.shape[0] != len(examples):
        raise ValueError(f"{saved_model_dir}: {scores.shape[0]} scores for {len(examples)} examples")
    return scores


def metric_row(model: str, test: peers.RatedRows, scores: np.ndarray, rating_errors: bool) -> Dict[str, Any]:
    """The protocol R metrics of one model's test scores, as a result row."""
    m = M.recommendation_metrics(test.users, scores, test.ratings, top_k=TOP_K, rating_errors=rating_errors)
    return {
        "model": model,
        "rmse": m.get(M.RMSE_NAME),
        "mae": m.get(M.MAE_NAME),
        "auc": m[M.LIKED_AUC_NAME],
        "ndcg_at_10": m[M.ndcg_name(TOP_K)],
        "precision_at_10": m[M.precision_name(TOP_K)],
    }


def train_families(
    data: DataStage, config: PipelineConfig, families: Sequence[str], model_dir: str, test: peers.RatedRows
) -> List[Dict[str, Any]]:
    """Trains, exports and test-scores every family; one row each."""
    from models.trainer import train_and_export

    rows = []
    for name in families:
        family = get_family(name)
        export_dir = os.path.join(model_dir, name)
        print(f"training {name} ...", flush=True)
        summary = train_and_export(
            name,
            os.path.join(data.transformed_examples, "Split-train", "*"),
            os.path.join(data.transformed_examples, "Split-eval", "*"),
            data.transform_graph,
            export_dir,
            train_steps=config.train_steps,
            eval_steps=config.eval_steps,
            config={  # the Trainer's custom_config (pipeline/model_stages.py)
                "family": name,
                "dataset": config.dataset,
                "seed": config.seed,
                "batch_size": config.batch_size,
                "top_k": config.top_k,
            },
        )
        scores = serve_scores(export_dir, test.examples, family.head.name)
        row = metric_row(name, test, scores, rating_errors=not family.head.classification)
        row["train_seconds"] = summary["train_seconds"]
        row["examples_per_second"] = summary["examples_per_second"]
        print(f"  {json.dumps(row)}", flush=True)
        rows.append(row)
    return rows


# Training passes over the rows, for examples_per_second (surprise's defaults / settings).
PEER_PASSES = {peers.GLOBAL_MEAN: 1, peers.BASELINE_ONLY: 10, peers.SVD: peers.SVD_PARAMS["n_epochs"]}


def train_peers(train: peers.RatedRows, test: peers.RatedRows) -> List[Dict[str, Any]]:
    """Fits and test-scores every peer; one row each (training time includes scoring)."""
    rows = []
    for name, fn in peers.PEER_FUNCTIONS.items():
        started = time.monotonic()
        scores = fn(train, test)
        seconds = time.monotonic() - started
        row = metric_row(name, test, scores, rating_errors=True)
        row["train_seconds"] = round(seconds, 2)
        row["examples_per_second"] = round(len(train) * PEER_PASSES[name] / max(seconds, 1e-9), 1)
        print(f"  {json.dumps(row)}", flush=True)
        rows.append(row)
    return rows


_COMPONENT = re.compile(r"^\s+(\S+)\s+(ok|FAILED|skipped)\s+([\d.]+)?")


def time_make_run(output_dir: str) -> Dict[str, Any]:
    """Times `python -m pipeline.local_runner` (default families) into `output_dir`."""
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", PYTHONHASHSEED="0")
    command = [sys.executable, "-m", "pipeline.local_runner", "--output_dir", output_dir]
    print(f"timing {shlex.join(command)} ...", flush=True)
    started = time.monotonic()
    proc = subprocess.run(command, cwd=str(REPO_ROOT), env=env, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(
            f"make run equivalent failed (exit {proc.returncode}) after {seconds:.0f} s:\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    components = {}
    for line in proc.stdout.splitlines():
        match = _COMPONENT.match(line.replace("\r", ""))
        if match and match.group(3):
            components[match.group(1)] = float(match.group(3))
    return {"seconds": round(seconds, 1), "components": components}


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------
def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def goals(rows: List[Dict[str, Any]], make_run_seconds: Optional[float]) -> List[str]:
    """One line per goal: what was required, what was reached, met / not met."""
    by = {r["model"]: r for r in rows}
    lines = []

    def check(label: str, value, ok) -> None:
        if value is None:
            lines.append(f"- {label}: not measured in this run")
        else:
            lines.append(f"- {label}: {_fmt(value)} — **{'met' if ok(value) else 'not met'}**")

    if "mf" in by:
        check(f"MF RMSE <= {GOAL_MF_RMSE}", by["mf"]["rmse"], lambda v: v <= GOAL_MF_RMSE)
    if "mf_dnn" in by:
        check(f"MF-DNN RMSE <= {GOAL_MF_DNN_RMSE}", by["mf_dnn"]["rmse"], lambda v: v <= GOAL_MF_DNN_RMSE)
        check(f"MF-DNN AUC >= {GOAL_MF_DNN_AUC} (mf_dnn, rating head)", by["mf_dnn"]["auc"],
              lambda v: v >= GOAL_MF_DNN_AUC)
    if "mf_dnn_liked" in by:
        check(f"MF-DNN AUC >= {GOAL_MF_DNN_AUC} (mf_dnn_liked, liked head)", by["mf_dnn_liked"]["auc"],
              lambda v: v >= GOAL_MF_DNN_AUC)
    svd = by.get(peers.SVD)
    if svd is not None:
        for name in FAMILIES:
            if name in by:
                check(f"{name} NDCG@10 >= SVD's {_fmt(svd['ndcg_at_10'])}", by[name]["ndcg_at_10"],
                      lambda v: v >= svd["ndcg_at_10"])
    check(f"`make run` (4 families) under {GOAL_MAKE_RUN_SECONDS:.0f} s", make_run_seconds,
          lambda v: v < GOAL_MAKE_RUN_SECONDS)
    return lines


# The registry defaults before tuning (the baseline row of each family's table).
PRE_TUNING = {"learning_rate": 0.005, "l2": 0.1, "dim": 32}
TUNING_KNOBS = ("learning_rate", "l2", "dim")


def tuning_section(tuning: Optional[List[Dict[str, Any]]], best: int = 5) -> List[str]:
    """Per family: the grid searched, the pre-tuning default, the chosen setting and the best eval rows.

    Args:
      tuning: rows of bench/results/mf_tuning.json (one per trained setting).
      best: how many of the best settings (eval RMSE; AUC for the liked head) to list.
    """
    if not tuning:
        return ["No tuning results found (bench/results/mf_tuning.json)."]
    lines = []
    for family in [f for f in FAMILIES if any(r["family"] == f for r in tuning)]:
        fam = get_family(family)
        chosen = {k: getattr(fam, k) for k in TUNING_KNOBS}
        rows = [r for r in tuning if r["family"] == family]
        key = (lambda r: -r["eval_auc"]) if fam.head.classification else (lambda r: r["eval_rmse"])
        ranked = sorted(rows, key=key)
        same = lambda r, knobs: all(r.get(k) == v for k, v in knobs.items())  # noqa: E731
        shown = ranked[:best]
        for marker in (PRE_TUNING, chosen):
            shown += [r for r in rows if same(r, marker) and r not in shown]
        searched = ", ".join(f"{k} {{{', '.join(str(v) for v in sorted({r[k] for r in rows}))}}}" for k in TUNING_KNOBS)
        lines += [
            "",
            f"**{family}**: {len(rows)} settings over {searched} "
            f"(ranked by eval {'AUC' if fam.head.classification else 'RMSE'}). "
            f"Chosen: learning_rate {chosen['learning_rate']}, l2 {chosen['l2']}, dim {chosen['dim']}.",
            "",
            "| learning_rate | l2 | dim | eval RMSE | eval AUC | eval NDCG@10 | eval P@10 | eval curve (per epoch) | |",
            "|---:|---:|---:|---:|---:|---:|---:|---|---|",
        ]
        for r in shown:
            note = " ".join(n for n, m in (("chosen", chosen), ("old default", PRE_TUNING)) if same(r, m))
            lines.append(
                f"| {r['learning_rate']} | {r['l2']} | {r['dim']} | {_fmt(r['eval_rmse'])} | {_fmt(r['eval_auc'])}"
                f" | {_fmt(r['eval_ndcg_at_10'])} | {_fmt(r['eval_precision_at_10'])}"
                f" | {' '.join(_fmt(x, 3) for x in r['eval_curve'])} | {note} |"
            )
    return lines


def render_markdown(rows: List[Dict[str, Any]], meta: Dict[str, Any], tuning) -> str:
    lines = [
        "# MF-family benchmark (protocol R)",
        "",
        f"Command: `{meta['command']}`  ",
        f"Date: {meta['date']}  ",
        f"Data: {meta['data']} ({meta['rows']})  ",
        "Split: protocol R, hash of (user, item): md5 % 10, buckets 0-7 train, 8 eval, 9 test. "
        "Models train on train (eval only for monitoring); every number below is on the test split.  ",
        f"Seed: {meta['seed']} (pipeline config); surprise peers random_state 0.  ",
        f"Training budget: {meta['budget']}  ",
        f"Machine: {meta['nproc']} CPUs (nproc), {meta['cpu']}; shared with other jobs, so seconds are indicative.",
        "",
        "Families are scored through the exported `serving_default` signature on serialized raw test "
        "examples; every row uses `evaluation.recommendation_metrics` (the Evaluator's definitions): "
        "AUC is liked (rating >= 4) vs. the score, NDCG@10 (gain = rating) and Precision@10 are per user over "
        "the user's test items. RMSE/MAE are not defined for the liked head. `train_seconds` is the Keras fit "
        "(with per-epoch eval monitoring) for the families, and fit + scoring for the peers; "
        "`examples_per_second` counts training examples processed (steps x batch, or rows x passes).",
        "",
        "| model | RMSE | MAE | AUC | NDCG@10 | P@10 | train s | examples/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {_fmt(r['rmse'])} | {_fmt(r['mae'])} | {_fmt(r['auc'])} | "
            f"{_fmt(r['ndcg_at_10'])} | {_fmt(r['precision_at_10'])} | {_fmt(r['train_seconds'], 1)} | "
            f"{_fmt(r['examples_per_second'], 0)} |"
        )
    lines += ["", f"Data stages (ExampleGen .. Transform): {meta['data_seconds']:.1f} s "
              f"({', '.join(f'{k} {v}' for k, v in meta['data_components'].items())})."]
    make_run = meta.get("make_run")
    if make_run:
        lines += ["", f"`make run` equivalent (`python -m pipeline.local_runner`, families "
                  f"{', '.join(PipelineConfig().families)}): **{make_run['seconds']:.1f} s**; per component: "
                  + ", ".join(f"{k} {v:.1f}" for k, v in make_run["components"].items()) + "."]
    lines += ["", "## Goals", ""] + goals(rows, make_run["seconds"] if make_run else None)
    lines += ["", "## Tuning (eval split only)", ""] + meta.get("tuning_notes", []) + tuning_section(tuning)
    return "\n".join(lines) + "\n"


TUNING_NOTES = [
    "Chosen on the EVAL split with `python -m bench.mf_tuning` (grid rows below, from "
    "`bench/results/mf_tuning.json`); the test split was not looked at while choosing. Each row trains with "
    "the pipeline's budget unless its train_steps says otherwise (batch 256, seed 42); the curve is Keras' "
    "eval RMSE (AUC for the liked head) after each of the family's epochs.",
]


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------
def main(argv: Optional[Sequence[str]] = None) -> int:
    defaults = PipelineConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=RESULTS_DIR, help="directory for mf_family.json / .md")
    parser.add_argument("--data_dir", default=defaults.data_dir)
    parser.add_argument("--work_dir", default=None, help="fresh output directory (default: a temporary one, removed)")
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--train_steps", type=int, default=defaults.train_steps)
    parser.add_argument("--make_run", action="store_true", help="also time a whole `make run` equivalent")
    args = parser.parse_args(argv)

    families = [f.strip() for f in args.families.split(",") if f.strip()]
    for name in families:
        get_family(name)
    if not os.path.isfile(os.path.join(args.data_dir, "ratings.csv")):
        raise SystemExit(f"error: {args.data_dir} has no ratings.csv")
    if args.work_dir and os.path.exists(args.work_dir) and os.listdir(args.work_dir):
        raise SystemExit(f"error: --work_dir {args.work_dir} is not empty (the benchmark needs a fresh directory)")

    work = args.work_dir or tempfile.mkdtemp(prefix="bench-mf-")
    try:
        config = dataclasses.replace(
            defaults, data_dir=args.data_dir, output_dir=os.path.join(work, "pipeline"), train_steps=args.train_steps
        )
        print(f"data stages into {config.output_dir} ...", flush=True)
        data = run_data_stages(config)
        train = peers.read_rated_rows(os.path.join(data.raw_examples, "Split-train"))
        test = peers.read_rated_rows(os.path.join(data.raw_examples, "Split-test"))
        rows = train_families(data, config, families, os.path.join(work, "models"), test)
        print("peers ...", flush=True)
        rows += train_peers(train, test)
        make_run = time_make_run(os.path.join(work, "make_run")) if args.make_run else None
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)

    for row in rows:
        row["make_run_seconds"] = make_run["seconds"] if make_run else None
    rows = [{k: row.get(k) for k in ROW_KEYS} for row in rows]

    tuning_path = os.path.join(RESULTS_DIR, TUNING_NAME)
    tuning = json.load(open(tuning_path)) if os.path.exists(tuning_path) else None
    epochs = {name: get_family(name).epochs for name in families}
    meta = {
        "command": "python -m bench.mf_family" + (" " + shlex.join(argv if argv is not None else sys.argv[1:])).rstrip(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "data": os.path.relpath(args.data_dir, str(REPO_ROOT)) if args.data_dir.startswith(str(REPO_ROOT)) else args.data_dir,
        "rows": f"{len(train)} train / {len(test)} test rated rows",
        "seed": config.seed,
        "budget": f"{config.train_steps} steps of batch {config.batch_size} per family "
                  f"(epochs: {', '.join(f'{k} {v}' for k, v in epochs.items())}); "
                  "per-family learning_rate / l2 / dim from models/registry.py",
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu": cpu_model(),
        "data_seconds": data.seconds,
        "data_components": data.component_seconds,
        "make_run": make_run,
        "tuning_notes": TUNING_NOTES,
    }
    os.makedirs(args.out, exist_ok=True)
    atomic_write(os.path.join(args.out, JSON_NAME), json.dumps(rows, indent=2) + "\n")
    atomic_write(os.path.join(args.out, MD_NAME), render_markdown(rows, meta, tuning))
    print(f"wrote {os.path.join(args.out, JSON_NAME)} and {MD_NAME}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
