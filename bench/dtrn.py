"""The DTRN benchmark: task-specific bottoms against MMoE and PLE, and DTRN's ablations.

Data: the multi-task benchmark's (`bench.multitask.load_dataset`): MovieLens hash split
with sampled negatives (tasks watched, liked, loved, rating; the conditional ones on
watched rows), Taobao by-day split (cart, fav, buy on every first page view).

Models, per seed, each trained with the pipeline's Trainer code (`training.trainer.train`,
early stopping on the eval split's mean AUC over the binary tasks, best epoch kept):
- `mmoe`, `ple`: the multi-task families (registry defaults);
- `dtrn` (task towers on the refined task-specific representations), `dtrn_mmoe` and
  `dtrn_ple` (the same bottom under MMoE's / PLE's experts);
- ablations of `dtrn`: `no_hyper` (plain layer norms: one interest for every task),
  `no_refine` (no refinement), `untyped` (one sequence of every behavior instead of one
  per type).
`--hparam DATASET.NAME=VALUE` sets a hyperparameter for every model on that dataset whose
family has it (e.g. the learning rate the multi-task benchmark's grid chose on Taobao for
both MMoE and PLE, or DTRN's `refine_gate` for the DTRN variants only); a name that no
chosen model has is an error.

Reported on the test split (tuning and early stopping on eval only): AUC per binary task
and RMSE of the rating, mean and standard deviation over seeds, and per seed their
bootstrap draws over the test rows (kept in the runs file, so merged runs compare too);
each goal line sets a DTRN variant against the better of MMoE and PLE by eval (or an
ablation against `dtrn`) with both seed stds and the paired bootstrap interval of the
difference (`bench.common.compare`); trainable parameters;
in-process serving time (median ms of the model's compiled call on transformed test rows
at batch 1 and 100, every model of a seed timed in alternation). Written to
`bench/results/dtrn.{json,md}`.

    python -m bench.dtrn [--datasets taobao,movielens] [--seeds 42,43,44,45,46]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from bench import common  # noqa: E402  (sets the Keras switch first)

import numpy as np  # noqa: E402

from bench import multitask as mt  # noqa: E402
from bench import takd  # noqa: E402
from contract import features as F  # noqa: E402
from contract import tasks as T  # noqa: E402

RESULTS_NAME = "dtrn"
# variant -> (family, hyperparameters)
MODELS = {
    "mmoe": ("mmoe", {}),
    "ple": ("ple", {}),
    "dtrn": ("dtrn", {}),
    "dtrn_mmoe": ("dtrn", {"sharing": "mmoe"}),
    "dtrn_ple": ("dtrn", {"sharing": "ple"}),
    "no_hyper": ("dtrn", {"hyper": "false"}),
    "no_refine": ("dtrn", {"refine": "false"}),
    "untyped": ("dtrn", {"typed": "false"}),
}
BASELINES = ("mmoe", "ple")
DTRN_VARIANTS = ("dtrn", "dtrn_mmoe", "dtrn_ple")
ABLATIONS = ("no_hyper", "no_refine", "untyped")


def family_fields(family: str) -> set:
    from models.registry import get_family

    return set(get_family(family).hparams().to_dict())  # flat names, the training knobs included


def overrides_for(family: str, overrides: Dict[str, str]) -> Dict[str, str]:
    """The --hparam values that `family` has (e.g. refine_gate for DTRN, not for MMoE)."""
    fields = family_fields(family)
    return {k: v for k, v in overrides.items() if k in fields}


def check_overrides(overrides: Dict[str, Dict[str, str]], variants: Sequence[str]) -> None:
    """Before any training: every variant's hyperparameters with the --hparam values it takes
    pass its family's `HParams.override` (names and values), and every --hparam name is
    taken by at least one chosen variant."""
    from models.registry import get_family

    for dataset, values in overrides.items():
        taken = set()
        for variant in variants:
            family, fixed = MODELS[variant]
            chosen = overrides_for(family, values)
            get_family(family).hparams().override({**fixed, **chosen})
            taken |= set(chosen)
        unknown = sorted(set(values) - taken)
        if unknown:
            raise ValueError(f"--hparam {dataset}.{unknown[0]}: no model of --variants {list(variants)} "
                             f"has a hyperparameter {unknown[0]!r}")


def metric_of(task: T.TaskSpec) -> str:
    return "rmse" if task.kind == T.REGRESSION else "auc"


def statistic_of(task: T.TaskSpec, predictions: np.ndarray, labels: np.ndarray) -> common.Statistic:
    """The task's metric (`metric_of`) under bootstrap weights of its test rows."""
    if task.kind == T.REGRESSION:
        return common.rmse_statistic(predictions, labels)
    return common.auc_statistic(predictions, labels > 0.5)


def record_draws(entry: Dict[str, Any], name: str, statistic: common.Statistic, units: int) -> None:
    """Adds one seed's bootstrap draws of a test metric to a runs-file entry (`draws/<name>`,
    with `units/<name>` the test rows resampled)."""
    entry[f"units/{name}"] = units
    entry.setdefault(f"draws/{name}", []).append([round(float(x), 6) for x in common.seed_draws(statistic, units)])


def measured(entry: Dict[str, Any], name: str, label: str) -> Optional[common.Measured]:
    """A runs-file entry's test values and draws of one metric, or None when some seed has
    no draws (a run recorded before they were kept)."""
    draws = entry.get(f"draws/{name}") or []
    if not draws or len(draws) != len(entry[f"test/{name}"]):
        return None
    return common.Measured(label, tuple(entry[f"test/{name}"]), tuple(np.asarray(d, np.float64) for d in draws),
                           int(entry[f"units/{name}"]))


def verdict_line(a: Optional[common.Measured], b: Optional[common.Measured], ra: Dict[str, Any],
                 rb: Dict[str, Any], higher_is_better: bool) -> Tuple[str, str]:
    """(the comparison's text, its verdict) of A against B, or both means ± std and
    "undecided" when the runs kept no bootstrap draws."""
    if a is None or b is None:
        return (f"{ra['variant']} {ra['value']:.4f} ± {ra['std'] or 0:.4f} vs {rb['variant']} {rb['value']:.4f} ± "
                f"{rb['std'] or 0:.4f} (diff {ra['value'] - rb['value']:+.4f}; no paired interval: these runs kept "
                "no bootstrap draws)", "undecided")
    c = common.compare(a, b, "test rows", higher_is_better=higher_is_better)
    return c.text(), c.verdict()


def run_dataset(dataset: str, args, seeds: List[int], variants: Sequence[str], overrides: Dict[str, str],
                results: Dict[str, Any], log: List[str]):
    from training.trainer import train

    stages, parts = mt.load_dataset(dataset, args.work_dir, **mt.data_options(args, dataset))
    tasks = mt.dataset_tasks(dataset, stages.config.negatives_per_positive)
    names = tuple(t.name for t in tasks)
    per = results.setdefault(dataset, {})
    log.append(f"- {dataset}: tasks {list(names)}; rows train/eval/test "
               f"{[len(p[F.ITEM_IDX]) for p in parts.values()]}; every model: {json.dumps(overrides)}")
    for seed in seeds:
        models = {}
        for variant in variants:
            family, hparams = MODELS[variant]
            config = common.train_config(stages, family, hparams={**hparams, **overrides_for(family, overrides)},
                                         seed=seed, tasks=names)
            model, summary, _ = train(config, stages.files(F.INTERACTION_VIEW, "train"),
                                      stages.files(F.INTERACTION_VIEW, "eval"), stages.transform_graph)
            models[variant] = model
            entry = per.setdefault(variant, {})
            for split in ("eval", "test"):
                predictions = mt.predict_rows(model, parts[split])
                for task in tasks:
                    mask = mt.task_mask(parts[split], task)
                    p, y = np.asarray(predictions[task.name])[mask], mt.labels_full(parts[split], task)[mask]
                    entry.setdefault(f"{split}/{task.name}", []).append(mt.task_metrics(task, p, y)[metric_of(task)])
                    if split == "test":
                        record_draws(entry, task.name, statistic_of(task, p, y), len(y))
            entry["params"] = takd.count_params(model)
            entry.setdefault("seeds", []).append(seed)
            entry.setdefault("epochs", []).append(summary["best_epoch"])
            entry.setdefault("train_seconds", []).append(summary["train_seconds"])
            log.append(f"  {variant} seed {seed}: best epoch {summary['best_epoch']} of {summary['epochs_run']}, "
                       f"{summary['train_seconds']:.0f} s, eval mean AUC {summary['best_value']:.4f}")
            print(log[-1], flush=True)
        for batch, repeats in ((1, args.repeats), (100, max(args.repeats // 4, 10))):
            for variant, ms in takd.serve_ms(models, parts["test"], batch, repeats).items():
                per[variant].setdefault(f"serve_ms_b{batch}", []).append(ms)
        yield seed, {t.name: metric_of(t) for t in tasks}


def rows_of(results: Dict[str, Any], metrics: Dict[str, Dict[str, str]]) -> List[Dict[str, Any]]:
    rows = []
    for dataset, per in results.items():
        for variant, entry in per.items():
            serve = {f"serve_ms_b{b}": float(np.mean(entry[f"serve_ms_b{b}"])) if f"serve_ms_b{b}" in entry else None
                     for b in (1, 100)}
            for task, metric in metrics[dataset].items():
                stats = common.mean_std(entry[f"test/{task}"])
                rows.append({"dataset": dataset, "model": MODELS[variant][0], "variant": variant, "task": task,
                             "metric": metric, "value": stats["mean"], "std": stats["std"],
                             "seeds": len(entry["seeds"]), "params": entry["params"], **serve,
                             "eval_value": float(np.mean(entry[f"eval/{task}"]))})
    return rows


def goals(rows: Sequence[Dict[str, Any]], results: Optional[Dict[str, Any]] = None) -> List[str]:
    """Per dataset and task: each DTRN variant against the better of MMoE and PLE by eval,
    and each ablation against `dtrn`, with both seed stds and the paired bootstrap interval
    (`results`: the runs' per-seed values and draws); a verdict needs the interval to
    exclude 0 and the difference to exceed both stds, else it is "no difference"."""
    results = results or {}
    get = {(r["dataset"], r["variant"], r["task"]): r for r in rows}

    def of(dataset, variant, task):
        entry = results.get(dataset, {}).get(variant)
        return measured(entry, task, variant) if entry else None

    lines = []
    for dataset in sorted({r["dataset"] for r in rows}):
        tasks = [r["task"] for r in rows if r["dataset"] == dataset and r["variant"] == "dtrn"]
        for task in tasks:
            base = {v: get[(dataset, v, task)] for v in BASELINES if (dataset, v, task) in get}
            if not base:
                continue
            metric = next(iter(base.values()))["metric"]
            higher = metric != "rmse"
            best = common.best_by_eval({v: r.get("eval_value") for v, r in base.items()}, higher_is_better=higher)
            for variant in DTRN_VARIANTS:
                r = get.get((dataset, variant, task))
                if r is None:
                    continue
                text, verdict = verdict_line(of(dataset, variant, task), of(dataset, best, task), r, base[best],
                                             higher)
                lines.append(f"- {dataset} {task} {metric}, against the better of mmoe/ple by eval ({best}): {text}"
                             f" — {'met' if verdict == 'better' else 'not met: ' + verdict}")
    lines.append("")
    for dataset in sorted({r["dataset"] for r in rows}):
        for r in rows:
            if r["dataset"] != dataset or r["variant"] not in ABLATIONS:
                continue
            full = get[(dataset, "dtrn", r["task"])]
            text, verdict = verdict_line(of(dataset, r["variant"], r["task"]), of(dataset, "dtrn", r["task"]), r,
                                         full, r["metric"] != "rmse")
            meaning = {"worse": "the part earns its place", "better": "the model is better without it"}
            lines.append(f"- {dataset} {r['task']} {r['metric']}: {text} — {meaning.get(verdict, verdict)}")
    return lines


COLUMNS = ("dataset", "model", "variant", "task", "metric", "value", "std", "seeds", "params", "serve_ms_b1",
           "serve_ms_b100", "eval_value")


def markdown(rows, seeds, log, args_line, results=None) -> str:
    parts = ["# DTRN: task-specific bottom representations against MMoE and PLE, with ablations", "",
             "Test split; mean ± std over seeds (sample std). `auc` per binary task on the rows where its condition "
             "holds; `rmse` of the rating on watched rows. `eval_value`: the same metric on the eval split (where "
             "everything is tuned and early-stopped). Serving: median in-process ms of the model's compiled call on "
             "transformed features, every model of a seed timed in alternation; mean over seeds.", "",
             f"Seeds: {seeds}. {args_line}", ""]
    for dataset in sorted({r["dataset"] for r in rows}):
        parts += [f"## {dataset}", "", common.md_table([r for r in rows if r["dataset"] == dataset], COLUMNS), ""]
    parts += ["## Goal and ablations", ""] + goals(rows, results) + ["", "## Runs", ""] + list(log)
    return "\n".join(parts)


def write(name: str, out: str, command: str, results, metrics, log, args_line) -> None:
    rows = rows_of(results, metrics)
    seeds = sorted({s for per in results.values() for e in per.values() for s in e.get("seeds", [])})
    common.write_results(name, rows, markdown(rows, seeds, log, args_line, results),
                         {"command": command, "machine": json.dumps(common.machine())}, out)
    common.atomic_write(os.path.join(out, f"{name}_runs.json"),
                        json.dumps({"command": command, "metrics": metrics, "results": results, "log": log,
                                    "args_line": args_line}, indent=2) + "\n")


def runs_source(item: str) -> Tuple[str, Optional[List[str]]]:
    """A --merge item: `PATH`, or `PATH:V1+V2` to take only those variants of that runs file
    (e.g. MMoE and PLE from a run whose DTRN variants had other settings)."""
    path, sep, only = item.rpartition(":")
    if not sep or "/" in only or not path:
        return item, None
    return path, [v for v in only.split("+") if v]


def merge(items: Sequence[str], name: str, out: str, command: str) -> None:
    """One result file from several invocations' runs files (datasets or seeds split over
    processes; each item a runs_source): the raw per-seed values are concatenated and the
    rows recomputed."""
    sources = [runs_source(item) for item in items]
    common.merged_runs_path([path for path, _ in sources], out, name)
    results: Dict[str, Any] = {}
    metrics: Dict[str, Any] = {}
    log: List[str] = []
    lines = []
    for path, only in sources:
        with open(path) as f:
            run = json.load(f)
        taken = run["results"]
        if only is not None:
            found = {v for per in taken.values() for v in per}
            missing = sorted(set(only) - found)
            if missing:
                raise ValueError(f"--merge {path}:{'+'.join(only)}: no variant {missing} in that runs file "
                                 f"(it has {sorted(found)})")
            taken = {dataset: {v: e for v, e in per.items() if v in only} for dataset, per in taken.items()}
        metrics.update(run["metrics"])
        log += run["log"]
        lines.append(f"`{run['command']}`" + (f" (variants {', '.join(only)} only)" if only else "") +
                     f": {run['args_line']}")
        common.extend_results(results, taken)
    write(name, out, command, results, metrics, log, "Merged from: " + "; ".join(lines))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="taobao,movielens")
    parser.add_argument("--seeds", default="42,43,44,45,46")
    parser.add_argument("--variants", default=",".join(MODELS))
    parser.add_argument("--hparam", action="append", default=[], metavar="DATASET.NAME=VALUE",
                        help="a hyperparameter of every model on a dataset whose family has it")
    parser.add_argument("--repeats", type=int, default=100, help="timed calls per model at batch 1")
    mt.add_data_arguments(parser)
    parser.add_argument("--name", default=RESULTS_NAME)
    parser.add_argument("--merge", default="", help="comma-separated *_runs.json files to merge instead of training; "
                                                    "PATH:V1+V2 takes only those variants of a file")
    args = parser.parse_args(argv)
    mt.parse_data_arguments(args)
    from models.hparams import parse_assignments

    command = common.command_line("bench.dtrn", argv)
    if args.merge:
        merge(args.merge.split(","), args.name, args.out, command)
        return 0
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(MODELS))
    if unknown:
        raise ValueError(f"--variants {unknown}: expected some of {list(MODELS)}")
    if any(a in variants for a in ABLATIONS) and "dtrn" not in variants:
        raise ValueError("the ablations are measured against dtrn: add it to --variants")
    seeds = [int(s) for s in args.seeds.split(",")]
    datasets = [x for x in args.datasets.split(",") if x]
    overrides = parse_assignments(args.hparam)
    unknown = sorted(set(overrides) - set(datasets))
    if unknown:
        raise ValueError(f"--hparam datasets {unknown} are not in --datasets {datasets}")
    check_overrides(overrides, variants)
    results: Dict[str, Any] = {}
    metrics: Dict[str, Dict[str, str]] = {}
    log: List[str] = []
    started = time.monotonic()
    args_line = (f"MovieLens: hash split, {args.negatives} sampled negative(s) per positive; Taobao: by-day split. "
                 "Hyperparameters: registry defaults" + (f", with {json.dumps(overrides)}" if overrides else "") + ".")
    for dataset in datasets:
        for seed, names in run_dataset(dataset, args, seeds, variants, overrides.get(dataset, {}), results, log):
            metrics[dataset] = names
            log.append(f"  seed {seed} done on {dataset}; wall time so far {(time.monotonic() - started) / 60:.1f} min")
            write(args.name, args.out, command, results, metrics, log, args_line)
            print(log[-1], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
