"""Hyperparameter grid for the MF families, scored on the EVAL split only.

Trains each (family, setting) with `models.trainer.train` on an existing Transform
output and scores the eval split with the protocol R metrics
(`evaluation.recommendation_metrics`); the test split is never read. The
per-epoch eval curve (RMSE or AUC from Keras) is kept too, to judge the step budget.

    python -m bench.mf_tuning --transform_dir DIR --graph_dir DIR \
        --families mf --grid '{"l2": [0.05, 0.1], "learning_rate": [0.005]}' --out FILE
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
from typing import Any, Dict, Iterable, List, Optional, Sequence

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from bench.serving import atomic_write  # noqa: E402
from evaluation import definitions as M  # noqa: E402
from contract import features as F  # noqa: E402
from models import trainer  # noqa: E402
from models.inputs import load_examples, make_dataset  # noqa: E402
from models.registry import get_family  # noqa: E402

import tensorflow_transform as tft  # noqa: E402


def eval_scores(model, eval_files, transform_output: str, batch_size: int = 4096):
    """(user_idx, scores, ratings) of every eval example, scored by the in-memory model."""
    data = load_examples(eval_files, tft.TFTransformOutput(transform_output))
    users, scores, ratings = [], [], []
    for batch in make_dataset(data, batch_size, shuffle=False).as_numpy_iterator():
        scores.append(np.asarray(model(batch)).reshape(-1))
        users.append(batch[F.USER_IDX])
        ratings.append(batch[F.RATING])
    return np.concatenate(users), np.concatenate(scores), np.concatenate(ratings)


def expand_grid(grid: Dict[str, Sequence[Any]]) -> List[Dict[str, Any]]:
    """Every combination of a {knob: [values]} grid, in a stable order."""
    keys = sorted(grid)
    for key in keys:
        if not isinstance(grid[key], (list, tuple)) or not grid[key]:
            raise ValueError(f"grid[{key!r}] must be a non-empty list of values, got {grid[key]!r}")
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def evaluate_setting(
    family_name: str,
    setting: Dict[str, Any],
    train_files,
    eval_files,
    transform_output: str,
    train_steps: int,
    seed: int = 42,
) -> Dict[str, Any]:
    """Trains one family with `setting` overriding its defaults; returns eval metrics."""
    family = get_family(family_name)
    # Every knob as trained: the setting over the family's registry defaults.
    effective = {
        "learning_rate": family.learning_rate, "l2": family.l2, "dim": family.dim, "epochs": family.epochs,
        **setting,
    }
    config = {"seed": seed, **effective}
    model, summary, _ = trainer.train(
        family_name, train_files, eval_files, transform_output, train_steps, None, config
    )
    users, scores, ratings = eval_scores(model, eval_files, transform_output)
    classification = family.head.classification
    metrics = M.recommendation_metrics(users, scores, ratings, rating_errors=not classification)
    curve_key = "val_auc" if classification else "val_rmse"
    return {
        "family": family_name,
        **effective,
        "train_steps": summary["train_steps"],
        "train_seconds": summary["train_seconds"],
        "eval_rmse": metrics.get(M.RMSE_NAME),
        "eval_auc": metrics[M.LIKED_AUC_NAME],
        "eval_ndcg_at_10": metrics[M.ndcg_name(10)],
        "eval_precision_at_10": metrics[M.precision_name(10)],
        "train_rmse_last": (summary["history"].get("rmse") or [None])[-1],
        "eval_curve": [round(x, 4) for x in summary["history"].get(curve_key, [])],
    }


def run_grid(
    families: Iterable[str],
    grid: Dict[str, Sequence[Any]],
    transform_examples: str,
    transform_output: str,
    train_steps: int,
    out_path: Optional[str] = None,
) -> List[Dict[str, Any]]:
    """Evaluates every grid setting for every family; appends rows to `out_path` as they finish."""
    train_files = os.path.join(transform_examples, "Split-train", "*")
    eval_files = os.path.join(transform_examples, "Split-eval", "*")
    rows: List[Dict[str, Any]] = []
    if out_path and os.path.exists(out_path):
        with open(out_path) as f:
            rows = json.load(f)
    for family_name in families:
        for setting in expand_grid(grid):
            family = get_family(family_name)
            wanted = {"learning_rate": family.learning_rate, "l2": family.l2, "dim": family.dim,
                      "epochs": family.epochs, **setting}
            done = any(
                r["family"] == family_name and r["train_steps"] == train_steps
                and all(r.get(k) == v for k, v in wanted.items())
                for r in rows
            )
            if done:
                continue
            row = evaluate_setting(family_name, setting, train_files, eval_files, transform_output, train_steps)
            print(json.dumps(row), flush=True)
            rows.append(row)
            if out_path:
                _write_json(out_path, rows)
    return rows


def _write_json(path: str, value) -> None:
    atomic_write(path, json.dumps(value, indent=1) + "\n")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transform_dir", required=True, help="Transform transformed_examples/<n> directory")
    parser.add_argument("--graph_dir", required=True, help="Transform transform_graph/<n> directory")
    parser.add_argument("--families", default="mf,mf_history,mf_dnn,mf_dnn_liked")
    parser.add_argument("--grid", required=True, help='JSON {knob: [values]}, knobs: learning_rate, l2, dim, epochs')
    parser.add_argument("--train_steps", type=int, default=2000)
    parser.add_argument("--out", required=True, help="JSON file; rows already there are skipped")
    args = parser.parse_args(argv)
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    try:
        grid = json.loads(args.grid)
    except json.JSONDecodeError as e:
        raise SystemExit(f"error: --grid is not JSON: {e}") from None
    run_grid(families, grid, args.transform_dir, args.graph_dir, args.train_steps, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
