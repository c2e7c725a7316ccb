"""The TAKD benchmark: a distilled student against its teacher, itself trained alone, and ablations.

Data: the multi-task benchmark's (`bench.multitask.load_dataset`: MovieLens hash split
with sampled negatives, Taobao by-day split), on one binary task pair per dataset
(`contract.datasets.DatasetSpec.task_pair`, or `--pair DATASET=A,B`).

Per seed, trained with the pipeline's Trainer code (`training.trainer.train`, early stopping
on the eval split's mean AUC of the pair, best epoch kept):
- teachers (`--teacher`: `takd_teacher`, PLE, or `takd_teacher_dtrn`, DTRN; by default
  takd_student's teacher in the registry): `teacher` (augmented BPR + Platt heads),
  `teacher_no_aux` (coarse BPR only + Platt heads), `teacher_ce` (pointwise cross-entropy);
- students (`takd_student`) on the training rows plus the soft labels of a teacher:
  `student` (teacher, calibrated, error-corrected), `no_aux` (teacher_no_aux), `no_calibration`
  (sigmoid of the teacher's raw BPR scores, corrected), `no_error_correction`, `vanilla_kd`
  (teacher_ce's probabilities, no correction), and `student_alone` (hard labels only).
The teachers see training labels only (soft labels are computed on the training rows).

Reported on the test split: per task AUC (rows where its condition holds) and Multi-AUC
(`evaluation.definitions.multi_auc` of the task's scores over the pair's label classes),
mean and standard deviation over seeds, and per seed their bootstrap draws over the test
rows (kept in the runs file, so merged runs compare too); the goal lines show both seed
stds and the paired bootstrap interval of each difference (`bench.common.compare`), the
AUC goal being non-inferiority (the whole interval of student - teacher at or above
-0.005); parameters; in-process serving time (median ms
of the model's compiled call, a fixed signature taking the transformed features it reads,
on test rows, batch 1 and 100, teacher and student timed in alternation so both see the
same machine load).

    python -m bench.takd [--datasets movielens] [--seeds 42,43,44,45,46]

`--grid takd_student.NAME=V1,V2` tunes instead (eval split only, the test split is never
read): at the first seed the teacher is trained once, then `student` (distilled) and
`student_alone` are trained at every grid point, each keeping the point with its best
eval mean AUC of the pair (the Trainer's early-stopping value). Writes
`bench/results/tuning/takd_student.{json,md}` and prints the options that run the chosen
settings: `--hparam` for every student variant (the ablations share `student`'s setting,
so each differs from it by one part) and `--variant_hparam student_alone.NAME=VALUE`
where the student trained alone chose differently.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

from bench import common  # noqa: E402  (sets the Keras switch first)

import numpy as np  # noqa: E402

from bench import multitask as mt  # noqa: E402
from bench import tune  # noqa: E402
from contract import datasets as D  # noqa: E402
from contract import features as F  # noqa: E402
from evaluation import definitions as d  # noqa: E402

RESULTS_NAME = "takd"
STUDENT = "takd_student"
TEACHER_FAMILIES = ("takd_teacher", "takd_teacher_dtrn")  # --teacher: PLE or DTRN under the ranking losses
TEACHERS = {
    "teacher": {},
    "teacher_no_aux": {"aux": "false"},
    "teacher_ce": {"ranking": "ce"},
}
# student variant -> (teacher variant or None, calibrated soft labels, student hparams)
STUDENTS = {
    "student": ("teacher", True, {}),
    "student_alone": (None, True, {"alpha": "0"}),
    "no_aux": ("teacher_no_aux", True, {}),
    "no_calibration": ("teacher", False, {}),
    "no_error_correction": ("teacher", True, {"correct": "false"}),
    "vanilla_kd": ("teacher_ce", False, {"correct": "false"}),
}
COLUMNS = ("dataset", "model", "variant", "task", "metric", "value", "std", "seeds", "params", "serve_ms_b1",
           "serve_ms_b100")


def pair_metrics(pair: Sequence[str], specs, predictions: Dict[str, np.ndarray], data) -> Dict[str, float]:
    """{"<task>/auc", "<task>/multi_auc"} of one model's predictions on one split."""
    masks = [mt.task_mask(data, t) for t in specs]
    labels = [mt.labels_full(data, t) for t in specs]
    classes, keep = d.pair_classes(labels[0], labels[1], masks[0], masks[1])
    out = {}
    for task, mask, label in zip(specs, masks, labels):
        p = predictions[task.name]
        out[f"{task.name}/auc"] = d.binary_auc(p[mask], label[mask] > 0.5)
        out[f"{task.name}/multi_auc"] = d.multi_auc(p[keep], classes[keep])
    return out


def pair_draws(pair: Sequence[str], specs, predictions: Dict[str, np.ndarray], data) -> Dict[str, tuple]:
    """{"<task>/auc", "<task>/multi_auc"}: (test units, one seed's bootstrap draws) of
    `pair_metrics`' values, on the resamples every model of the pair shares."""
    masks = [mt.task_mask(data, t) for t in specs]
    labels = [mt.labels_full(data, t) for t in specs]
    classes, keep = d.pair_classes(labels[0], labels[1], masks[0], masks[1])
    out = {}
    for task, mask, label in zip(specs, masks, labels):
        p = np.asarray(predictions[task.name])
        out[f"{task.name}/auc"] = (int(mask.sum()), common.auc_statistic(p[mask], label[mask] > 0.5))
        out[f"{task.name}/multi_auc"] = (int(keep.sum()), common.multi_auc_statistic(p[keep], classes[keep]))
    return {name: (units, [round(float(x), 6) for x in common.seed_draws(statistic, units)])
            for name, (units, statistic) in out.items()}


def count_params(model) -> int:
    return int(sum(np.prod(v.shape) for v in model.trainable_variables))


FLOOR = "floor"  # in serve_ms: a compiled call that takes a model's features and only returns one of them


def _model_call(model):
    return lambda x: model(x, training=False)


def _floor_call(x):
    import tensorflow as tf

    return {F.ITEM_IDX: tf.identity(x[F.ITEM_IDX])}


def signature_call(fn, features):
    """`fn` compiled once for `features`' names and dtypes, every dimension unknown: a fixed
    signature, as a server calls it (a SavedModel's signatures are such functions), so a
    call does no matching of Python arguments against traced ones."""
    import tensorflow as tf

    specs = {n: tf.TensorSpec([None] * len(v.shape), v.dtype) for n, v in features.items()}
    return tf.function(fn, autograph=False).get_concrete_function(specs)


def read_features(model, features) -> List[str]:
    """The names of the features that `model`'s call reads, found by tracing it on
    `features`: what a serving request to it carries (labels and unread features are not
    sent)."""
    names = sorted(features)
    traced = signature_call(_model_call(model), {n: features[n] for n in names})
    placeholders = traced.inputs[:len(names)]  # the flattened dict: sorted keys, then captured variables
    return [n for n, t in zip(names, placeholders) if t.consumers()]


def serve_ms(models: Dict[str, Any], data, batch: int, repeats: int, floor_of: str = "",
             reads: Optional[Dict[str, List[str]]] = None) -> Dict[str, float]:
    """Median ms of each model's compiled call on `batch` test rows, the models timed in turn.

    Each call is a fixed signature (signature_call) that takes only the features its model
    reads (`reads[name]` when the caller has found them, else read_features), as its
    serving request would. With `floor_of` (a name in `models`), FLOOR is timed too: the
    cost of the call itself, that model's inputs in and out of a compiled function with no
    arithmetic, which no model reading those features can go below.
    """
    import tensorflow as tf

    from training.inputs import HISTORY_SEQUENCES

    n = len(data[F.ITEM_IDX])
    rows = np.arange(batch) % n
    size = int(np.max(np.asarray(data[F.HISTORY_BUCKET])[rows]))
    features = {name: tf.constant(v[rows, :size] if name in HISTORY_SEQUENCES else v[rows]) for name, v in data.items()
                if v.dtype != object}
    reads = reads or {}
    inputs = {name: {f: features[f] for f in (reads[name] if name in reads else read_features(m, features))}
              for name, m in models.items()}
    calls = {name: signature_call(_model_call(m), inputs[name]) for name, m in models.items()}
    if floor_of:
        inputs[FLOOR] = inputs[floor_of]
        calls[FLOOR] = signature_call(_floor_call, inputs[FLOOR])
    times: Dict[str, List[float]] = {name: [] for name in calls}
    for name, call in calls.items():
        for _ in range(5):
            call(inputs[name])
    for _ in range(repeats):
        for name, call in calls.items():
            started = time.perf_counter()
            out = call(inputs[name])
            _ = [np.asarray(v) for v in out.values()]
            times[name].append((time.perf_counter() - started) * 1000.0)
    return {name: float(np.median(v)) for name, v in times.items()}


def pair_rows(specs):
    """The rows where the pair is defined (either task's condition holds): the only rows
    whose labels reach a TAKD model's loss, so the only ones trained on."""

    def rows(data):
        return d.pair_classes(*(mt.labels_full(data, t) for t in specs), *(mt.task_mask(data, t) for t in specs))[1]

    return rows


def train_one(family: str, stages, specs, seed: int, hparams: Dict[str, str], soft_labels=None,
              train_steps: Optional[int] = None):
    from training.trainer import train

    config = common.train_config(stages, family, hparams=dict(hparams), seed=seed,
                                 tasks=tuple(t.name for t in specs))
    model, summary, _ = train(config, stages.files(F.INTERACTION_VIEW, "train"),
                              stages.files(F.INTERACTION_VIEW, "eval"), stages.transform_graph,
                              train_steps=train_steps, soft_labels=soft_labels, rows=pair_rows(specs))
    return model, summary


def variant_hparams(family: str, variant: str, fixed: Dict[str, str], overrides) -> Dict[str, str]:
    """A variant's hyperparameters: the family's overrides (--hparam), then what defines the
    variant (e.g. student_alone's alpha 0, teacher_ce's ranking; an override cannot undo
    it), then the variant's own overrides (--variant_hparam VARIANT.NAME=VALUE)."""
    hp = {**overrides.get(family, {}), **fixed}
    own = overrides.get(f"variant:{variant}", {})
    clash = sorted(set(own) & set(fixed))
    if clash:
        raise ValueError(f"--variant_hparam {variant}.{clash[0]}: {clash} define the variant {variant!r} "
                         f"({json.dumps(fixed)}) and cannot be overridden")
    return {**hp, **own}


def run_dataset(dataset: str, args, seeds: List[int], pair: Sequence[str], overrides, results: Dict[str, Any],
                log: List[str]) -> None:
    """Trains every variant per seed (the teachers are args.teacher's family), recording into
    `results[dataset]`; yields each finished seed."""
    from training.distillation import teacher_soft_labels

    stages, parts = mt.load_dataset(dataset, args.work_dir, **mt.data_options(args, dataset))
    spec = D.dataset_spec(dataset)
    specs = [spec.task(t) for t in pair]
    classes, keep = d.pair_classes(*(mt.labels_full(parts["test"], t) for t in specs),
                                   *(mt.task_mask(parts["test"], t) for t in specs))
    log.append(f"- {dataset}: pair {list(pair)}; rows train/eval/test {[len(p[F.ITEM_IDX]) for p in parts.values()]}; "
               f"test rows per class --, -+, +-, ++: {np.bincount(classes[keep], minlength=4).tolist()}")
    per = results.setdefault(dataset, {})
    for seed in seeds:
        teachers = {}
        for variant, hparams in TEACHERS.items():
            hp = variant_hparams(args.teacher, variant, hparams, overrides)
            model, summary = train_one(args.teacher, stages, specs, seed, hp)
            teachers[variant] = model
            record(per, args.teacher, variant, seed, model, summary, pair, specs, parts, log)
        students = {}
        for variant, (teacher, calibrated, hparams) in STUDENTS.items():
            hp = variant_hparams(STUDENT, variant, hparams, overrides)
            soft = teacher_soft_labels(teachers[teacher], calibrated) if teacher else None
            model, summary = train_one(STUDENT, stages, specs, seed, hp, soft_labels=soft)
            students[variant] = model
            record(per, STUDENT, variant, seed, model, summary, pair, specs, parts, log)
        for batch, repeats in ((1, args.repeats), (100, max(args.repeats // 4, 10))):
            timed = serve_ms({"teacher": teachers["teacher"], "student": students["student"]}, parts["test"],
                             batch, repeats)
            per.setdefault(f"{args.teacher}/teacher", {}).setdefault(f"serve_ms_b{batch}", []).append(timed["teacher"])
            per.setdefault(f"{STUDENT}/student", {}).setdefault(f"serve_ms_b{batch}", []).append(timed["student"])
        served = {n: per[k] for n, k in (("teacher", f"{args.teacher}/teacher"), ("student", f"{STUDENT}/student"))}
        log.append(f"  seed {seed} done; serve ms teacher/student b1 {served['teacher']['serve_ms_b1'][-1]:.3f}/"
                   f"{served['student']['serve_ms_b1'][-1]:.3f}, b100 {served['teacher']['serve_ms_b100'][-1]:.3f}/"
                   f"{served['student']['serve_ms_b100'][-1]:.3f}")
        yield seed


def record(per, family, variant, seed, model, summary, pair, specs, parts, log) -> None:
    entry = per.setdefault(f"{family}/{variant}", {})
    for split in ("eval", "test"):
        predictions = mt.predict_rows(model, parts[split])
        for name, value in pair_metrics(pair, specs, predictions, parts[split]).items():
            entry.setdefault(f"{split}/{name}", []).append(value)
        if split == "test":
            for name, (units, draws) in pair_draws(pair, specs, predictions, parts[split]).items():
                entry[f"units/{name}"] = units
                entry.setdefault(f"draws/{name}", []).append(draws)
    entry["params"] = count_params(model)
    entry.setdefault("seeds", []).append(seed)
    entry.setdefault("epochs", []).append(summary["best_epoch"])
    entry.setdefault("train_seconds", []).append(summary["train_seconds"])
    log.append(f"  {family}/{variant} seed {seed}: best epoch {summary['best_epoch']} of {summary['epochs_run']}, "
               f"{summary['train_seconds']:.0f} s, eval mean AUC {summary['best_value']:.4f}")
    print(log[-1], flush=True)


def rows_of(results: Dict[str, Any], pairs: Dict[str, Sequence[str]]) -> List[Dict[str, Any]]:
    rows = []
    for dataset, per in results.items():
        for key, entry in per.items():
            if "seeds" not in entry:
                continue
            family, variant = key.split("/")
            serve = {f"serve_ms_b{b}": float(np.mean(entry[f"serve_ms_b{b}"])) if f"serve_ms_b{b}" in entry else None
                     for b in (1, 100)}
            for task in pairs[dataset]:
                for metric in ("auc", "multi_auc"):
                    stats = common.mean_std(entry[f"test/{task}/{metric}"])
                    rows.append({"dataset": dataset, "model": family, "variant": variant, "task": task,
                                 "metric": metric, "value": stats["mean"], "std": stats["std"],
                                 "seeds": len(entry["seeds"]), "params": entry["params"], **serve,
                                 "eval_value": float(np.mean(entry[f"eval/{task}/{metric}"]))})
    return rows


AUC_MARGIN = 0.005  # the student's AUC may be at most this much below the teacher's


def _measured(results: Dict[str, Any], dataset: str, variant: str, name: str) -> Optional[common.Measured]:
    """A variant's per-seed test values and draws of `name` (e.g. `loved/auc`) from the runs,
    or None when a seed has no draws (a run recorded before they were kept)."""
    entry = next((e for key, e in results.get(dataset, {}).items() if key.split("/")[-1] == variant), None)
    draws = (entry or {}).get(f"draws/{name}") or []
    if not draws or len(draws) != len(entry[f"test/{name}"]):
        return None
    return common.Measured(variant, tuple(entry[f"test/{name}"]), tuple(np.asarray(x, np.float64) for x in draws),
                           int(entry[f"units/{name}"]))


def goals(rows: Sequence[Dict[str, Any]], pairs, results: Optional[Dict[str, Any]] = None) -> List[str]:
    """The goals per dataset and task, each with both seed stds and the paired bootstrap
    interval (`results`: the runs' per-seed values and draws): the student's Multi-AUC
    beats student_alone's (interval above 0 and beyond both stds), and its AUC is within
    AUC_MARGIN of the teacher's (the whole interval of the difference at or above -margin);
    then the serving speed-up."""
    results = results or {}
    lines = []
    get = {(r["dataset"], r["variant"], r["task"], r["metric"]): r for r in rows}
    for dataset, pair in pairs.items():
        if not any(r["dataset"] == dataset for r in rows):
            continue
        for task in pair:
            a, b = (_measured(results, dataset, v, f"{task}/multi_auc") for v in ("student", "student_alone"))
            s, alone = get[(dataset, "student", task, "multi_auc")], get[(dataset, "student_alone", task, "multi_auc")]
            if a is None or b is None:
                lines.append(f"- {dataset} {task} Multi-AUC: student {s['value']:.4f} ± {s['std'] or 0:.4f} vs alone "
                             f"{alone['value']:.4f} ± {alone['std'] or 0:.4f}: undecided (no paired interval: these "
                             "runs kept no bootstrap draws)")
            else:
                c = common.compare(a, b, "test rows")
                lines.append(f"- {dataset} {task} Multi-AUC: {c.text()} — "
                             + ("met" if c.verdict() == "better" else "not met: " + c.verdict()))
            a, b = (_measured(results, dataset, v, f"{task}/auc") for v in ("student", "teacher"))
            s, t = get[(dataset, "student", task, "auc")], get[(dataset, "teacher", task, "auc")]
            if a is None or b is None:
                lines.append(f"- {dataset} {task} AUC: student {s['value']:.4f} vs teacher {t['value']:.4f} "
                             f"(diff {s['value'] - t['value']:+.4f}; goal >= -{AUC_MARGIN}): undecided (no paired "
                             "interval: these runs kept no bootstrap draws)")
            else:
                c = common.compare(a, b, "test rows")
                met = c.low >= -AUC_MARGIN
                lines.append(f"- {dataset} {task} AUC, goal student - teacher >= -{AUC_MARGIN} over the whole "
                             f"interval: {c.text()} — " + ("met" if met else f"not met: the interval reaches below "
                                                                              f"-{AUC_MARGIN}"))
        lines += serving_goal_lines(dataset, results.get(dataset, {}), get, pair[0])
    return lines


SPEEDUP_GOAL = 3.0  # the student serves at least this many times faster than its teacher


def serving_goal_lines(dataset: str, entries: Dict[str, Any], get, task: str) -> List[str]:
    """Per batch: the student's speed-up over the teacher, met only when the whole paired t
    interval of the per-seed speed-up (log teacher / student ms, the two timed in alternation
    within a seed) is at or above SPEEDUP_GOAL; undecided when fewer than two seeds were timed."""
    by_variant = {key.split("/")[-1]: e for key, e in entries.items()}
    lines = []
    for b in (1, 100):
        s, t = get[(dataset, "student", task, "auc")], get[(dataset, "teacher", task, "auc")]
        ts, ss = t[f"serve_ms_b{b}"], s[f"serve_ms_b{b}"]
        if not (ts and ss):
            continue
        times = [dict(zip(by_variant.get(v, {}).get("seeds", []), by_variant.get(v, {}).get(f"serve_ms_b{b}", [])))
                 for v in ("teacher", "student")]
        if min(len(x) for x in times) < 2:
            lines.append(f"- {dataset} serving batch {b}: teacher {ts:.3f} ms, student {ss:.3f} ms ({ts / ss:.1f}x; "
                         f"goal >= {SPEEDUP_GOAL:g}x): undecided (fewer than two seeds timed, no paired interval)")
            continue
        ratio = common.seed_paired("teacher", {k: float(np.log(v)) for k, v in times[0].items()},
                                   "student", {k: float(np.log(v)) for k, v in times[1].items()},
                                   higher_is_better=False)
        low, high = float(np.exp(ratio.low)), float(np.exp(ratio.high))
        lines.append(f"- {dataset} serving batch {b}: teacher {ts:.3f} ms, student {ss:.3f} ms; per-seed speed-up "
                     f"{np.exp(ratio.diff):.2f}x (geometric mean over seeds {list(ratio.seeds)}), paired "
                     f"{ratio.level:.0%} t interval [{low:.2f}x, {high:.2f}x]; goal >= {SPEEDUP_GOAL:g}x: "
                     + common.goal_verdict(low, high, SPEEDUP_GOAL, at_least=True, unit="x"))
    return lines


def markdown(rows, pairs, seeds, log, args_line, results=None) -> str:
    parts = ["# TAKD: task-augmented knowledge distillation on a task pair", "",
             "Test split; mean ± std over seeds (sample std). `multi_auc`: Multi-AUC of the task's scores over the "
             "pair's label classes ++ > +- > -+ > -- (evaluation.definitions.multi_auc). Serving: median in-process "
             "ms of the model's compiled call (a fixed signature taking the transformed features the model reads; no "
             "Transform graph, no server), teacher and student timed in alternation; mean over seeds. `eval_value`: "
             "the same metric on the eval split.", "",
             f"Seeds: {seeds}. {args_line}", ""]
    for dataset in sorted({r["dataset"] for r in rows}):
        parts += [f"## {dataset} (pair {', '.join(pairs[dataset])})", ""]
        ds_rows = [r for r in rows if r["dataset"] == dataset]
        parts.append(common.md_table(ds_rows, COLUMNS + ("eval_value",)))
        parts.append("")
    parts += ["## Goals", ""] + goals(rows, pairs, results) + ["", "## Runs", ""] + list(log)
    return "\n".join(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="movielens")
    parser.add_argument("--seeds", default="42,43,44,45,46")
    parser.add_argument("--pair", action="append", default=[], metavar="DATASET=A,B")
    parser.add_argument("--teacher", default="", choices=("",) + TEACHER_FAMILIES,
                        help="the teachers' family (default: takd_student's teacher in the registry)")
    parser.add_argument("--hparam", action="append", default=[], metavar="FAMILY.NAME=VALUE",
                        help="overrides for the teacher's family / takd_student (every variant)")
    parser.add_argument("--variant_hparam", action="append", default=[], metavar="VARIANT.NAME=VALUE",
                        help="overrides for one variant (e.g. student_alone.learning_rate=0.01), after --hparam")
    parser.add_argument("--grid", action="append", default=[], metavar="takd_student.NAME=V1,V2",
                        help="tune student and student_alone on the eval split at the first seed instead of "
                             "running the benchmark (tuning/takd_student.md)")
    parser.add_argument("--repeats", type=int, default=200, help="timed calls per model at batch 1")
    mt.add_data_arguments(parser)
    parser.add_argument("--name", default=RESULTS_NAME)
    parser.add_argument("--merge", default="", help="comma-separated *_runs.json files to merge instead of training")
    parser.add_argument("--rerender", default="", metavar="NAME",
                        help="no training: <out>/NAME.md written again from NAME_runs.json by today's page code")
    parser.add_argument("--serve_only", action="store_true",
                        help="time every teacher family, the student and the floor of a compiled call "
                             "(takd_serving.md); no training")
    args = parser.parse_args(argv)
    mt.parse_data_arguments(args)
    from models.hparams import parse_assignments

    command = common.command_line("bench.takd", argv)
    if args.merge:
        merge(args.merge.split(","), args.name, args.out, command)
        return 0
    if args.rerender:
        print(rerender(args.rerender, args.out, command))
        return 0

    from models.registry import get_family

    args.teacher = args.teacher or get_family(STUDENT).teacher
    overrides = parse_assignments(args.hparam)
    unknown = sorted(set(overrides) - ({*TEACHER_FAMILIES, STUDENT} if args.serve_only else {args.teacher, STUDENT}))
    if unknown:
        raise ValueError(f"--hparam families {unknown}: only {args.teacher} and {STUDENT} are trained here "
                         "(--teacher chooses the teacher's family)")
    for variant, values in parse_assignments(args.variant_hparam).items():
        if variant not in STUDENTS and variant not in TEACHERS:
            raise ValueError(f"--variant_hparam {variant}: not a variant; one of {sorted({*STUDENTS, *TEACHERS})}")
        overrides[f"variant:{variant}"] = values
    seeds = [int(s) for s in args.seeds.split(",")]
    datasets = [x for x in args.datasets.split(",") if x]
    pairs = {x: tuple(D.dataset_spec(x).task_pair) for x in datasets}
    for item in args.pair:
        name, _, values = item.partition("=")
        pairs[name.strip()] = tuple(v.strip() for v in values.split(","))
    if args.serve_only:
        serving_only(args, pairs, overrides, command)
        return 0
    if args.grid:
        tune_students(args, pairs, overrides, tune.parse_grid(args.grid), seeds[0], command)
        return 0
    results: Dict[str, Any] = {}
    log: List[str] = []
    started = time.monotonic()
    args_line = (f"MovieLens: hash split, {args.negatives} sampled negative(s) per positive; Taobao: by-day split. "
                 "Hyperparameters: registry defaults" + (f" with {json.dumps(overrides)}" if overrides else "") + ".")
    for dataset in datasets:
        done = []
        for seed in run_dataset(dataset, args, seeds, pairs[dataset], overrides, results, log):
            done.append(seed)
            rows = rows_of(results, pairs)
            wall = f"Wall time so far {(time.monotonic() - started) / 60:.1f} min; seeds finished on {dataset}: {done}."
            md = markdown(rows, pairs, done, log + [wall], args_line, results)
            meta = {"command": command, "machine": json.dumps(common.machine())}
            common.write_results(args.name, rows, md, meta, args.out)
            common.atomic_write(os.path.join(args.out, f"{args.name}_runs.json"),
                                json.dumps({"command": command, "pairs": pairs, "results": results,
                                            "log": log}, indent=2) + "\n")
            print(wall, flush=True)
    return 0


SERVING_NAME = "takd_serving"
TUNED = ("student", "student_alone")


def tune_students(args, pairs: Dict[str, Sequence[str]], overrides, grid: Dict[str, List[str]], seed: int,
                  command: str) -> Dict[str, Any]:
    """The eval-split grid of `student` and `student_alone` (module docstring); the test split
    is not read. Writes tuning/takd_student.{json,md}; returns the result."""
    from training.distillation import teacher_soft_labels

    from models.registry import get_family

    unknown = sorted(g for g in grid if not g.startswith("takd_student."))
    if unknown:
        raise ValueError(f"--grid {unknown}: tunes takd_student's hyperparameters (takd_student.NAME=V1,V2)")
    names = [g.split(".", 1)[1] for g in grid]
    points = [dict(zip(names, values)) for values in itertools.product(*grid.values())]
    for point in points:  # a bad name or value fails here, before any training
        get_family(STUDENT).hparams().override(point)
    result: Dict[str, Any] = {"command": command, "machine": common.machine(), "split": "eval", "seed": seed,
                              "monitor": "eval mean AUC of the pair (best epoch)", "grid": grid, "datasets": {}}
    lines = ["# Tuning the TAKD student on the eval split", "",
             f"Seed {seed}. Teacher: `{args.teacher}` (variant `teacher`) trained once; then `student` (distilled from "
             "its calibrated, error-corrected soft labels) and `student_alone` (hard labels) at every grid point. "
             "Chosen per variant: the best eval mean AUC of the pair (the Trainer's early-stopping value, best "
             "epoch). The test split is not read.", ""]
    for dataset, pair in pairs.items():
        stages, parts = mt.load_dataset(dataset, args.work_dir, **mt.data_options(args, dataset))
        specs = [D.dataset_spec(dataset).task(t) for t in pair]
        teacher, summary = train_one(args.teacher, stages, specs, seed,
                                     variant_hparams(args.teacher, "teacher", TEACHERS["teacher"], overrides))
        teacher_eval = pair_metrics(pair, specs, mt.predict_rows(teacher, parts["eval"]), parts["eval"])
        soft = teacher_soft_labels(teacher, True)
        per: Dict[str, Any] = {"pair": list(pair), "teacher_eval": teacher_eval,
                               "teacher_best_value": summary["best_value"]}
        table = [{"variant": "teacher", "point": "", "eval mean AUC": summary["best_value"],
                  **teacher_eval}]
        for variant in TUNED:
            teacher_name, _, fixed = STUDENTS[variant]
            trials, seen = [], set()
            for point in points:
                family_overrides = {**overrides, STUDENT: {**overrides.get(STUDENT, {}), **point}}
                hp = variant_hparams(STUDENT, variant, fixed, family_overrides)
                effective = {n: hp[n] for n in names}
                key = json.dumps(effective, sort_keys=True)
                if key in seen:  # a grid name the variant fixes (alpha when trained alone)
                    continue
                seen.add(key)
                model, run = train_one(STUDENT, stages, specs, seed, hp,
                                       soft_labels=soft if teacher_name else None)
                metrics = pair_metrics(pair, specs, mt.predict_rows(model, parts["eval"]), parts["eval"])
                trials.append({"hparams": effective, "eval_mean": run["best_value"], "eval_std": None,
                               "best_epochs": [run["best_epoch"]], "train_seconds": run["train_seconds"],
                               "eval": metrics})
                table.append({"variant": variant, "point": json.dumps(effective), "eval mean AUC": run["best_value"],
                              **metrics})
                print(f"{dataset} {variant} {effective}: eval mean AUC {run['best_value']:.4f} "
                      f"(epoch {run['best_epoch']}, {run['train_seconds']:.0f} s)", flush=True)
            per[variant] = {"trials": trials, "chosen": tune.choose(trials, lower=False)["hparams"]}
        result["datasets"][dataset] = per
        chosen, alone = per["student"]["chosen"], per["student_alone"]["chosen"]
        options = [f"--hparam takd_student.{n}={v}" for n, v in chosen.items()]
        options += [f"--variant_hparam student_alone.{n}={v}" for n, v in alone.items()
                    if v != chosen[n] and n not in STUDENTS["student_alone"][2]]
        per["options"] = " ".join(options)
        metric_columns = [f"{t}/{m}" for t in pair for m in ("auc", "multi_auc")]
        lines += [f"## {dataset} (pair {', '.join(pair)})", "",
                  common.md_table(table, ["variant", "point", "eval mean AUC"] + metric_columns), "",
                  f"Chosen: student `{json.dumps(chosen)}`, student_alone `{json.dumps(alone)}`; the bench runs "
                  f"them with `{per['options']}`.", ""]
    lines += [f"Produced by: `{command}`", f"Machine: {json.dumps(result['machine'])}"]
    out = os.path.join(args.out, "tuning")
    common.atomic_write(os.path.join(out, "takd_student.json"), json.dumps(result, indent=2) + "\n")
    common.atomic_write(os.path.join(out, "takd_student.md"), "\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)
    return result


def serving_rows(dataset: str, timed: Dict[tuple, List[float]], params: Dict[str, int],
                 reads: Dict[str, List[str]]) -> List[Dict[str, Any]]:
    """The rows of one dataset's serving times, batch by batch: each model's mean ± std over
    the timing rounds, every round's value (`rounds_ms`, in round order) and the mean above
    the floor.

    Args:
      dataset: the dataset's name.
      timed: (model, batch) -> its serve_ms per round, FLOOR included.
      params: model -> trainable parameters (FLOOR: none).
      reads: model -> the features its call reads.
    """
    rows = []
    for (name, batch), values in sorted(timed.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        stats = common.mean_std(values)
        floor = float(np.mean(timed[(FLOOR, batch)]))
        rows.append({"dataset": dataset, "model": name, "batch": batch, "ms": stats["mean"], "std": stats["std"],
                     "rounds": len(values), "above_floor_ms": stats["mean"] - floor, "params": params.get(name, 0),
                     "features": len(reads[name]), "rounds_ms": [float(v) for v in values]})
    return rows


def speedup(teacher: Dict[str, Any], student: Dict[str, Any]) -> Dict[str, common.SeedPaired]:
    """Teacher against student over the timing rounds, round r's two times a pair (serve_ms
    times the models in alternation within a round): `ms`, the paired t interval of teacher -
    student in ms, whose verdict is `PairedVerdict`'s (lower is better); `log_ratio`, that of
    log(teacher / student), whose bounds exponentiated are the speed-up's."""
    rounds = [dict(enumerate(r["rounds_ms"])) for r in (teacher, student)]
    logs = [{k: float(np.log(v)) for k, v in r.items()} for r in rounds]
    return {"ms": common.seed_paired(teacher["model"], rounds[0], student["model"], rounds[1], higher_is_better=False),
            "log_ratio": common.seed_paired(teacher["model"], logs[0], student["model"], logs[1],
                                            higher_is_better=False)}


def speedup_lines(dataset: str, rows: Sequence[Dict[str, Any]]) -> List[str]:
    """Per batch and teacher family: teacher against student with the paired interval over
    rounds (`speedup`) and its verdict, then the floor and the largest speed-up it allows."""
    lines = []
    for batch in sorted({r["batch"] for r in rows if r["dataset"] == dataset}):
        get = {r["model"]: r for r in rows if r["dataset"] == dataset and r["batch"] == batch}
        s_, f = get[STUDENT], get[FLOOR]
        for teacher in TEACHER_FAMILIES:
            t = get[teacher]
            paired = speedup(t, s_)
            ms, ratio = paired["ms"], paired["log_ratio"]
            verdict = ms.verdict().replace("seed std", "round std")  # the spread here is over timing rounds
            lines.append(
                f"- {dataset} batch {batch}, {teacher}: teacher {t['ms']:.3f} ± {t['std']:.3f} ms, student "
                f"{s_['ms']:.3f} ± {s_['std']:.3f} ms ({t['ms'] / s_['ms']:.2f}x); teacher - student "
                f"{ms.diff:+.3f} ms, paired {ms.level:.0%} t interval [{ms.low:+.3f}, {ms.high:+.3f}] ms over the "
                f"{len(ms.seeds)} rounds; per-round speed-up {np.exp(ratio.diff):.2f}x (geometric mean), "
                f"{ratio.level:.0%} t interval [{np.exp(ratio.low):.2f}x, {np.exp(ratio.high):.2f}x]: {verdict}; "
                f"floor {f['ms']:.3f} ms; above the floor teacher {t['above_floor_ms']:.3f} ms, student "
                f"{s_['above_floor_ms']:.3f} ms; the largest speed-up a student reading these features could reach "
                f"is {t['ms'] / f['ms']:.2f}x")
    return lines


def serving_only(args, pairs: Dict[str, Sequence[str]], overrides, command: str, rounds: int = 5) -> None:
    """Every teacher family's and the student's serving cost against the floor of a compiled
    call, without training.

    Serving cost does not depend on the weights, so each model is built by one training step
    (registry defaults and --hparam); every round times the teachers (TEACHER_FAMILIES), the
    student and the floor of the student's inputs (serve_ms's FLOOR) in alternation at batch
    1 and 100, each call a fixed signature taking the features its model reads. Writes
    takd_serving.{json,md}, every round's time in the rows and each speed-up with its paired
    interval over rounds.
    """
    rows: List[Dict[str, Any]] = []
    lines: List[str] = []
    for dataset, pair in pairs.items():
        stages, parts = mt.load_dataset(dataset, args.work_dir, **mt.data_options(args, dataset))
        specs = [D.dataset_spec(dataset).task(t) for t in pair]
        models = {family: train_one(family, stages, specs, 42, overrides.get(family, {}), train_steps=1)[0]
                  for family in TEACHER_FAMILIES + (STUDENT,)}
        sample = {k: v[:2] for k, v in parts["test"].items() if v.dtype != object}
        read = {name: read_features(m, sample) for name, m in models.items()}
        read[FLOOR] = read[STUDENT]
        timed: Dict[tuple, List[float]] = {}
        for _ in range(rounds):
            for batch, repeats in ((1, args.repeats), (100, max(args.repeats // 4, 10))):
                for name, ms in serve_ms(models, parts["test"], batch, repeats, floor_of=STUDENT, reads=read).items():
                    timed.setdefault((name, batch), []).append(ms)
        mine = serving_rows(dataset, timed, {name: count_params(m) for name, m in models.items()}, read)
        rows += mine
        for name in models:
            lines.append(f"- {dataset}: {name} reads {len(read[name])} features: {', '.join(read[name])}")
        lines += speedup_lines(dataset, mine)
    md = serving_markdown(rows, lines, rounds)
    common.write_results(SERVING_NAME, rows, md, {"command": command, "machine": json.dumps(common.machine())},
                         args.out)
    print(md, flush=True)


def serving_markdown(rows: Sequence[Dict[str, Any]], lines: Sequence[str], rounds: int) -> str:
    """takd_serving.md's page (without the footer `write_results` adds)."""
    return "\n".join([
        "# TAKD serving: teachers and student against the floor of a compiled call", "",
        "Median in-process ms of each model's compiled call on transformed test features (serve_ms), mean ± std "
        f"over {rounds} rounds, the models timed in alternation. Each call is a fixed signature (every dimension "
        "unknown, as a SavedModel signature) taking the features its model reads (found by tracing it), as its "
        "serving request would. `floor`: such a call that takes the student's features and returns one of them, "
        "no arithmetic. Models built by one training step (the cost of a call does not depend on the weights). "
        "Every round's value: `rounds_ms` in the JSON rows.", "",
        common.md_table(rows, ("dataset", "model", "batch", "ms", "std", "rounds", "above_floor_ms", "params",
                               "features")), "",
        "## Speed-ups", "",
        "A round times every model in alternation, so a round's teacher and student are a pair: teacher - student "
        f"has a paired t interval over the {rounds} rounds ({common.LEVEL:.0%}), and so has the log of the "
        "per-round speed-up (its bounds exponentiated). The student beats a teacher only when the interval of "
        "the difference excludes 0 and the difference exceeds the larger of the two stds over rounds "
        "(`bench.common.PairedVerdict`); otherwise no difference is shown.", ""] + list(lines) + [""])


def rerender(name: str, out: str, command: str) -> str:
    """`--rerender NAME`: `<out>/NAME.md` and `.json` written again from `NAME_runs.json` by
    today's page code (goal rules), keeping the run's command, commit, machine, settings
    line and wall time, and saying when it was re-rendered; the runs file is unchanged."""
    with open(os.path.join(out, f"{name}_runs.json")) as f:
        run = json.load(f)
    with open(os.path.join(out, f"{name}.md")) as f:
        md = f.read()

    def kept(pattern: str) -> Optional[str]:
        found = re.findall(pattern, md, flags=re.M)
        return found[-1].strip() if found else None

    meta = common.written_provenance(md, f"{out}/{name}.md")
    args_line = kept(r"^Seeds: \[[^\]]*\]\. ?(.*)$") or ""
    wall = [w for w in (kept(r"^(Wall time so far .+)$"),) if w]
    results, pairs = run["results"], run["pairs"]
    rows = rows_of(results, pairs)
    seeds = sorted({s for per in results.values() for e in per.values() for s in e.get("seeds", [])})
    note = f"Page re-rendered from `{name}_runs.json` by `{command}` at {common.commit()}: the figures are the run's."
    page = markdown(rows, pairs, seeds, list(run["log"]) + wall + ["", note], args_line, results)
    common.write_results(name, rows, page, meta, out)
    return page


def merge(paths: Sequence[str], name: str, out: str, command: str) -> None:
    """One result file from the per-seed runs of several invocations (e.g. seeds split over
    processes): the raw values are concatenated and the rows recomputed."""
    target = common.merged_runs_path(paths, out, name)
    results: Dict[str, Any] = {}
    pairs: Dict[str, Any] = {}
    log: List[str] = []
    sources = []
    for path in paths:
        with open(path) as f:
            run = json.load(f)
        sources.append(run["command"])
        pairs.update(run["pairs"])
        log += run["log"]
        common.extend_results(results, run["results"])
    rows = rows_of(results, pairs)
    seeds = sorted({s for per in results.values() for e in per.values() for s in e.get("seeds", [])})
    md = markdown(rows, pairs, seeds, log + ["", "Merged from: " + "; ".join(f"`{c}`" for c in sources)], "",
                  results)
    common.write_results(name, rows, md, {"command": command, "machine": json.dumps(common.machine())}, out)
    common.atomic_write(target, json.dumps({"command": command, "pairs": pairs, "results": results, "log": log},
                                           indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
