"""Hyperparameter search for one family on the eval split (the test split is never read).

Each trial trains the family with the pipeline's Trainer code on the data stages'
outputs, with early stopping on the family's eval metric, and records the best eval
value. Results: `bench/results/tuning/<family>.json` (every trial) and `.md`. The chosen
setting becomes the family's default in its hyperparameter record (models/families/),
citing this file.

    python -m bench.tune --family mf --grid dim=16,32,64 --grid l2=0.01,0.05 [--seeds 42]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional

from bench import common  # noqa: E402  (sets the Keras switch first)

from bench.machine import commit as machine_commit  # noqa: E402
from models.registry import get_family  # noqa: E402
from training.trainer import train  # noqa: E402


def parse_grid(items) -> Dict[str, List[str]]:
    grid: Dict[str, List[str]] = {}
    for item in items:
        name, sep, values = item.partition("=")
        if not sep or not values:
            raise ValueError(f"--grid {item!r}: expected NAME=V1,V2,...  (tuples: V1;V2 with ';' between choices)")
        sep_choice = ";" if ";" in values else ","
        grid[name.strip()] = [v.strip() for v in values.split(sep_choice)]
    return grid


def choose(trials: List[Dict[str, Any]], lower: bool) -> Dict[str, Any]:
    """The best eval mean; with several seeds, the fastest trial within one standard deviation
    of it (differences below run-to-run noise are no difference, and training time is not free)."""
    top = min(trials, key=lambda t: t["eval_mean"]) if lower else max(trials, key=lambda t: t["eval_mean"])
    if top["eval_std"] is None:
        return top
    tied = [t for t in trials if abs(t["eval_mean"] - top["eval_mean"]) <= top["eval_std"]]
    return min(tied, key=lambda t: t["train_seconds"])


def selected_value(summary: Dict[str, Any], select: str) -> float:
    """A trial's value of the eval metric `select` (e.g. `val_rating_rmse`) at its best
    (early-stopped) epoch; the monitored value when `select` is empty."""
    if not select:
        return summary["best_value"]
    history = summary.get("history", {})
    if select not in history:
        raise ValueError(f"--select {select!r} is not an eval metric of {summary['family']}; "
                         f"known: {', '.join(sorted(k for k in history if k.startswith('val_')))}")
    return history[select][summary["best_epoch"] - 1]


def run_trials(family: str, grid: Dict[str, List[str]], seeds: List[int], fixed: Dict[str, str],
               work_dir: str = common.DEFAULT_WORK_DIR, data: Optional[Dict[str, Any]] = None,
               select: str = "") -> Dict[str, Any]:
    """Trains `family` once per grid point and seed; returns every trial and the chosen one.

    Args:
      family: a registry name.
      grid: hyperparameter name -> values to try (every combination).
      seeds: the seeds of each grid point.
      fixed: hyperparameters set in every trial.
      work_dir: where the data stages are written (and reused).
      data: PipelineConfig fields naming the data (dataset, data_dir, split, ...); default:
        the default dataset with its description's settings.
      select: the eval metric the trials are compared on, read at each trial's early-stopped
        epoch (e.g. a multi-task family's `val_rating_rmse`; it still stops on its own
        monitor); empty: the monitored metric.
    """
    spec = get_family(family)
    stages = common.data_stages(work_dir, **(data or {}))
    trials = []
    combos = [dict(zip(grid, values)) for values in itertools.product(*grid.values())] or [{}]
    chosen = stages.config.hparams.get(family, {})  # the description's, if it sets this family's
    for combo in combos:
        hparams = {**chosen, **fixed, **combo}
        spec.hparams().override(hparams)  # fails before training on a bad name or value
        values, epochs, seconds = [], [], []
        for seed in seeds:
            config = common.train_config(stages, family, hparams=hparams, seed=seed,
                                         tasks=common.task_names(stages.config, family))
            started = time.monotonic()
            _, summary, _ = train(config, stages.files(spec.view, "train"), stages.files(spec.view, "eval"),
                                  stages.transform_graph)
            seconds.append(time.monotonic() - started)
            values.append(selected_value(summary, select))
            epochs.append(summary["best_epoch"])
            monitor = select or summary["monitor"]
        stats = common.mean_std(values)
        trials.append({"hparams": hparams, "eval_mean": stats["mean"], "eval_std": stats["std"], "values": values,
                       "best_epochs": epochs, "train_seconds": round(sum(seconds) / len(seconds), 1)})
        spread = "" if stats["std"] is None else f" +- {stats['std']:.4f}"
        print(f"{family} {hparams}: {monitor} {stats['mean']:.4f}{spread}", file=sys.stderr, flush=True)
    lower = "rmse" in monitor
    best = choose(trials, lower)
    return {"family": family, "monitor": monitor, "direction": "min" if lower else "max", "seeds": seeds,
            "split": "eval", "trials": trials, "best": best}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", required=True)
    parser.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2")
    parser.add_argument("--fixed", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--seeds", default="42")
    parser.add_argument("--select", default="", metavar="VAL_METRIC",
                        help="compare trials on this eval metric at the early-stopped epoch (default: the monitor)")
    parser.add_argument("--out", default=os.path.join(common.RESULTS_DIR, "tuning"))
    parser.add_argument("--work_dir", default=common.DEFAULT_WORK_DIR)
    common.add_dataset_arguments(parser)  # --split leave_last_two_out: protocol S
    args = parser.parse_args(argv)
    fixed = dict(item.split("=", 1) for item in args.fixed)
    result = run_trials(args.family, parse_grid(args.grid), [int(s) for s in args.seeds.split(",")], fixed,
                        args.work_dir, common.dataset_overrides(args), args.select)
    command = common.command_line("bench.tune", argv)
    result["command"] = command
    result["machine"] = common.machine()
    result["commit"] = machine_commit()
    common.atomic_write(os.path.join(args.out, f"{args.family}.json"), json.dumps(result, indent=2) + "\n")
    rows = [{"hparams": json.dumps(t["hparams"]), "eval": t["eval_mean"], "std": t["eval_std"],
             "best epochs": ",".join(map(str, t["best_epochs"])), "seconds": t["train_seconds"]}
            for t in result["trials"]]
    markdown = "\n".join([f"# Tuning {args.family} on the eval split ({result['monitor']}, {result['direction']})",
                          "", common.md_table(rows, ["hparams", "eval", "std", "best epochs", "seconds"]), "",
                          f"Chosen: `{json.dumps(result['best']['hparams'])}` (the best eval mean; with several seeds, "
                          "the fastest setting within one standard deviation of it)",
                          "", f"Produced by: `{result['command']}`", f"Commit: {result['commit']}",
                          f"Machine: {json.dumps(result['machine'])}"])
    common.atomic_write(os.path.join(args.out, f"{args.family}.md"), markdown + "\n")
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
