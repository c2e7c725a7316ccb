"""PeterRec (Yuan et al., SIGIR'20): pretrain NextItNet once, fine-tune per task and mode.

Data: a dataset description (`--dataset` / `--dataset_file`; MovieLens by default), the
pipeline's own data stages with the leave_last_two_out split (protocol S): ExampleGen's
user view (histories mapped with the Transform's item vocabulary) and interaction view
(labels). Downstream tasks and their split rules: the description's
(`training/downstream.py`; MovieLens: next_like, is the next interaction a like, AUC;
next_liked_genres, the genres of the next liked movie, user-level, accuracy).

Per seed: NextItNet is pretrained on the train histories (next item at every position,
full softmax), early-stopped on the eval split's protocol-S NDCG@10 (full). Then per
task, every mode of `models/blocks/patches.py` fine-tunes a fresh copy (scratch: fresh
random weights) with a new head, early-stopped on the task's eval metric; the test
split is scored once, with the best eval epoch's weights. Reported: test metric mean
and std over seeds, eval metric, trained parameters (and their share of FineAll's),
fine-tuning seconds; and per task, every mode against scratch and against the history
baseline, paired over the test rows (`bench.common.compare`: each side's seed mean ± std
and the paired bootstrap interval of the difference). Each fine-tune's and baseline's
test scores, with the test labels once per task, are kept in `<out>/<name>_runs.json`.

    python -m bench.peterrec [--seeds 42,43,44] [--tasks next_like,next_liked_genres] [--out bench/results]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from typing import Any, Dict, List, Sequence, Tuple

from bench import common  # noqa: E402  (sets the Keras switch first)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_transform as tft  # noqa: E402
import tf_keras as keras  # noqa: E402

from common.io_utils import atomic_path, atomic_write  # noqa: E402
from contract import datasets as D  # noqa: E402
from contract import features as F  # noqa: E402
from evaluation import definitions as d  # noqa: E402
from models.blocks import patches as P  # noqa: E402
from models.context import ModelContext, feature_inputs  # noqa: E402
from models.families.nextitnet import NextItNet, NextItNetParams  # noqa: E402
from models.families.sequential import NEXT_ITEM  # noqa: E402
from models.peterrec import LAST, PatchedClassifier  # noqa: E402
from models.hparams import TrainingParams  # noqa: E402
from training import downstream as DS  # noqa: E402
from training import topk  # noqa: E402
from training.peterrec import fine_tune, metric_name, predict, score  # noqa: E402
from training.trainer import vocabulary_rows  # noqa: E402
from training.views import ItemRows, item_counts, load_user_view, sequence_dataset, sequence_windows  # noqa: E402

LENGTH = 64  # inputs and training windows (MovieLens's max_history)
HISTORY = "history"  # the baseline every mode is compared with (the Evaluator's own peer)


def pretrain_params(args) -> NextItNetParams:
    return NextItNetParams(dim=args.dim, max_len=LENGTH, dropout=args.dropout,
                           training=TrainingParams(learning_rate=args.pretrain_lr, batch_size=args.pretrain_batch,
                                                   max_epochs=args.pretrain_epochs, patience=2))


def task_behavior(spec: D.DatasetSpec, task: str) -> str:
    """The behavior a downstream task asks about (MovieLens's next_like and next_liked_genres:
    liked): its next-behavior task's behavior."""
    feature = DS.class_feature(spec)
    for name, behavior in spec.next_behavior_tasks:
        if task == name or (feature is not None and task == DS.feature_task(behavior, feature)):
            return behavior
    raise ValueError(f"unknown downstream task {task!r} of dataset {spec.name!r}; expected one of {DS.tasks(spec)}")


def context_for(tft_output, views, seed: int, spec: D.DatasetSpec) -> ModelContext:
    num_items = vocabulary_rows(tft_output, F.ITEM_VOCAB)
    return ModelContext(
        dataset=spec, tasks=(spec.task(D.RETRIEVAL_TASK),),
        num_users=vocabulary_rows(tft_output, F.USER_VOCAB), num_items=num_items,
        features=feature_inputs(spec.description, lambda name: vocabulary_rows(tft_output, name)),
        num_behaviors=len(spec.behaviors) + 2,
        max_history=LENGTH, item_counts=item_counts(views[DS.TRAIN], num_items), seed=seed)


def build_network(context: ModelContext, params: NextItNetParams) -> NextItNet:
    """A NextItNet with every variable created (so weights can be copied in)."""
    net = NextItNet(context, params)
    dummy = tf.ones([1, 2], tf.int64)
    net.hidden(dummy, dummy)
    return net


def pretrain(context: ModelContext, params: NextItNetParams, views, valid: np.ndarray, seed: int):
    """NextItNet trained on the train histories; early stopping on eval NDCG@10 (protocol S)."""
    keras.utils.set_random_seed(seed)
    net = build_network(context, params)
    windows = sequence_windows(views[DS.TRAIN], net.max_len, NEXT_ITEM)
    training = params.training
    data = sequence_dataset(views[DS.TRAIN], windows, training.batch_size, seed, NEXT_ITEM)
    net.compile(optimizer=keras.optimizers.Adam(training.learning_rate))
    evaluation = topk.TopKCallback(views[DS.EVAL], LENGTH, valid, 10, protocol=topk.PROTOCOL_S)
    stopping = keras.callbacks.EarlyStopping(monitor="val_ndcg@10", mode="max", patience=training.patience,
                                             restore_best_weights=True)
    started = time.monotonic()
    history = net.fit(data.repeat(), steps_per_epoch=int(np.ceil(len(windows) / training.batch_size)),
                      epochs=training.max_epochs, callbacks=[evaluation, stopping], verbose=2)
    values = history.history["val_ndcg@10"]
    best = int(np.argmax(values))
    return net, {
        "windows": int(len(windows)),
        "epochs_run": len(values),
        "best_epoch": best + 1,
        "eval_ndcg@10": float(values[best]),
        "eval_sampled_hit_rate@10": float(history.history.get("val_sampled_hit_rate@10", [np.nan] * len(values))[best]),
        "seconds": round(time.monotonic() - started, 1),
    }


def cached_pretrain(context, params, views, valid, seed: int, cache_dir: str):
    """`pretrain`, or its weights and summary from an earlier run with the same data,
    hyperparameters and seed (`cache_dir`/<key>.npz and .json)."""
    key = hashlib.md5(json.dumps([params.to_dict(), seed, int(context.num_items), LENGTH],
                                 sort_keys=True).encode()).hexdigest()[:12]
    weights_path, summary_path = (os.path.join(cache_dir, f"{key}.{ext}") for ext in ("npz", "json"))
    if os.path.exists(weights_path) and os.path.exists(summary_path):
        with np.load(weights_path) as saved:
            weights = [saved[f"w{i}"] for i in range(len(saved.files))]
        with open(summary_path) as f:
            return weights, dict(json.load(f), cached=True)
    net, summary = pretrain(context, params, views, valid, seed)
    weights = net.get_weights()
    os.makedirs(cache_dir, exist_ok=True)
    with atomic_path(weights_path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **{f"w{i}": w for i, w in enumerate(weights)})
    atomic_write(summary_path, json.dumps(summary))
    return weights, summary


def baselines(data: DS.DownstreamData, interactions, item_ids,
              behavior_row: int) -> Tuple[List[Dict[str, Any]], Dict[str, np.ndarray]]:
    """Peers without a network, each split's labelled positions scored from the input alone:
    `prior` (the training labels' mean: one constant score) and `history` (next_like: the
    share of liked items in the input; a next-item-feature task: the class feature's values
    of the input's items of the task's behavior, counted as the targets are, plus the prior
    to break ties). Returns the result rows and each baseline's test scores."""
    train = data.splits[DS.TRAIN]
    prior = train.labelled_targets().mean(axis=0)
    values_of = {}
    if data.kind != DS.BINARY:
        index = {g: k for k, g in enumerate(data.classes)}
        for i in interactions:
            if i.split == DS.TRAIN and i.item not in values_of:
                known = [index[g] for g in i.values if g in index]
                values_of[i.item] = np.bincount(known, minlength=len(index)) / max(len(known), 1)
    out, test_scores = [], {}
    for split in (DS.EVAL, DS.TEST):
        examples = data.splits[split]
        last = examples.mask > 0
        history = []
        for k in range(len(examples)):
            n = int(np.flatnonzero(last[k])[0]) + 1
            items, behaviors = examples.items[k, :n], examples.behaviors[k, :n]
            if data.kind == DS.BINARY:
                history.append(d.history_share(behaviors, behavior_row))  # the Evaluator's peer
            else:
                mass = np.zeros(len(data.classes))
                for row in items[behaviors == behavior_row]:
                    if 0 < row <= len(item_ids):
                        mass += values_of.get(item_ids[row - 1].decode(), 0.0)
                history.append(mass + 1e-6 * prior)
        constant = np.broadcast_to(prior, (len(examples),) + np.shape(prior))
        for name, scores in (("prior", constant), ("history", np.asarray(history))):
            out.append({"task": data.task, "mode": name, "split": split, "metric": metric_name(data.kind),
                        "value": float(score(data.kind, scores, examples))})
            if split == DS.TEST:
                test_scores[name] = np.asarray(scores, dtype=np.float64)
    return out, test_scores


def float32_list(values) -> List[Any]:
    """float32 scores as JSON-ready nested lists, each value by its shortest decimal (which
    reads back to the same float32, so every order and tie between scores is kept)."""
    return np.asarray(np.asarray(values, np.float32).astype(str), np.float64).tolist()


def held_out_labels(data: DS.DownstreamData) -> np.ndarray:
    """The task's test labels at the labelled positions: [m] 0/1 or [m, classes] weights."""
    test = data.splits.get(DS.TEST)
    return test.labelled_targets() if test is not None else np.zeros((0,))


def statistic(kind: str, scores, labels) -> common.Statistic:
    """The task's metric of one output's test scores under resampling of the test rows: AUC
    for a binary task, the mean of per-row hits (`evaluation.definitions.set_hits`, whose
    mean is the accuracy) for a multi-class one."""
    if kind == DS.BINARY:
        return common.auc_statistic(scores, np.asarray(labels) > 0.5)
    return common.mean_statistic(d.set_hits(scores, labels))


def baseline_name(name: str) -> str:
    return f"{name} baseline"


def measured(runs: Dict[str, Any]) -> Dict[Tuple[str, str], common.Measured]:
    """(task, mode or baseline) -> its `bench.common.Measured` on the task's test rows: one
    statistic per seed (a baseline is deterministic: one value), from a runs file's scores."""
    out = {}
    for task, info in runs["tasks"].items():
        labels = np.asarray(info["labels"], dtype=np.float64)
        if not len(labels):
            continue
        entries = [r for r in runs["runs"] if r["task"] == task]
        for name in dict.fromkeys(r["mode"] for r in entries):
            mine = sorted((r for r in entries if r["mode"] == name), key=lambda r: r["seed"] or 0)
            label = baseline_name(name) if mine[0]["kind"] == "baseline" else name
            out[(task, name)] = common.Measured.of(
                label, [statistic(info["kind"], r["scores"], labels) for r in mine], len(labels))
    return out


def comparisons(runs: Dict[str, Any], modes: Sequence[str]) -> List[Dict[str, Any]]:
    """Per task, every mode against scratch and against the history baseline
    (`bench.common.compare` over the test rows), as result rows with the comparison's text."""
    found = measured(runs)
    out = []
    for task in runs["tasks"]:
        for reference in (P.SCRATCH, HISTORY):
            for mode in modes:
                if mode != reference and (task, mode) in found and (task, reference) in found:
                    c = common.compare(found[(task, mode)], found[(task, reference)], "test rows")
                    out.append({"kind": "comparison", "task": task, "metric": runs["tasks"][task]["metric"],
                                "mode": mode, "against": reference, **c.to_dict(), "text": c.text()})
    return out


PAIRED_TEXT = (
    "Per task, each mode against scratch and against the history baseline on the same test rows: each "
    "side's test metric as mean ± std over seeds (a baseline has no seed: one value), the difference of "
    "the means and its paired 95% bootstrap interval over the test rows (the same resamples for every "
    "model and seed). \"better\" or \"worse\" only where the interval excludes 0 and the difference exceeds "
    "the larger seed std (bench.common.PairedVerdict), otherwise \"no difference\"; where the table's means "
    "read otherwise, these lines hold.")


def paired_lines(comparison_rows: Sequence[Dict[str, Any]]) -> List[str]:
    """The page's "Paired comparisons" section from `comparisons` rows."""
    lines = ["## Paired comparisons", "", PAIRED_TEXT]
    for task in dict.fromkeys(r["task"] for r in comparison_rows):
        rows = [r for r in comparison_rows if r["task"] == task]
        lines += ["", f"{task} ({rows[0]['metric']}, {rows[0]['units']} test rows):", ""]
        lines += [f"- {r['text']}" for r in rows]
    return lines


def run(args) -> Tuple[List[Dict[str, Any]], Dict[str, Any], Dict[str, Any]]:
    stages = common.stages_of_args(args, split=D.LEAVE_LAST_TWO_OUT_SPLIT)
    args.data = common.data_label(stages.config)
    spec = stages.config.spec
    tft_output = tft.TFTransformOutput(stages.transform_graph)
    rows = ItemRows(tft_output.vocabulary_by_name(F.ITEM_VOCAB), spec.behaviors)
    views = {s: load_user_view(stages.raw_files(F.USER_VIEW, s), rows) for s in DS.SPLITS}
    interactions = DS.load_interactions([f for s in DS.SPLITS for f in stages.raw_files(F.INTERACTION_VIEW, s)],
                                        spec)
    known = DS.tasks(spec)
    unknown = [t for t in args.tasks if t not in known]
    if unknown:
        raise ValueError(f"unknown downstream tasks {unknown} of dataset {spec.name!r}; expected some of {known}")
    args.tasks = list(args.tasks or known)
    tasks = {t: DS.build(t, views, interactions, rows.ids, LENGTH, spec, per_user=args.train_windows)
             for t in args.tasks}
    for name, data in tasks.items():
        print(f"task {name}: {json.dumps(data.counts())}", file=sys.stderr)
    num_items = vocabulary_rows(tft_output, F.ITEM_VOCAB)
    valid = np.zeros(num_items, dtype=bool)
    valid[1: len(rows.ids) + 1] = True
    params = pretrain_params(args)
    results: List[Dict[str, Any]] = []
    runs: Dict[str, Any] = {"tasks": {}, "runs": []}
    for name, data in tasks.items():
        labels = held_out_labels(data)
        runs["tasks"][name] = {"kind": data.kind, "metric": metric_name(data.kind), "classes": list(data.classes),
                               "labels": labels.tolist()}
        behavior_row = spec.behaviors.index(task_behavior(spec, name)) + 1
        found, test_scores = baselines(data, interactions, rows.ids, behavior_row)
        for row in found:
            print(json.dumps(row), file=sys.stderr)
            results.append({"kind": "baseline", **row})
        for mode, scores in test_scores.items():
            runs["runs"].append({"kind": "baseline", "task": name, "mode": mode, "seed": None,
                                 "scores": scores.tolist()})
    for seed in (args.seeds if args.modes else []):
        context = context_for(tft_output, views, seed, spec)
        weights, pre = cached_pretrain(context, params, views, valid, seed,
                                       os.path.join(stages.config.output_dir, "peterrec_pretrained"))
        print(f"seed {seed} pretrained: {pre}", file=sys.stderr)
        results.append({"kind": "pretrain", "seed": seed, **{k: v for k, v in pre.items() if k != "cached"}})
        for name, data in tasks.items():
            for mode in args.modes:
                keras.utils.set_random_seed(seed)
                fresh = build_network(context, params)
                if P.loads_pretrained(mode):
                    fresh.set_weights(weights)
                model = PatchedClassifier.from_network(fresh, mode, data.kind, data.num_outputs,
                                                       bottleneck=args.bottleneck, pooling=args.pooling, seed=seed)
                summary = fine_tune(model, data, args.lr, args.batch, args.epochs, args.patience, seed)
                row = {"kind": "fine_tune", "task": name, "mode": mode, "seed": seed, **summary}
                print(json.dumps({k: v for k, v in row.items() if k != "eval_history"}), file=sys.stderr)
                results.append(row)
                runs["runs"].append({"kind": "fine_tune", "task": name, "mode": mode, "seed": seed,
                                     "scores": float32_list(kept_test_scores(model, data, summary))})
    return results, {n: data.counts() for n, data in tasks.items()}, runs


def kept_test_scores(model, data: DS.DownstreamData, summary: Dict[str, Any]) -> np.ndarray:
    """The test scores `fine_tune` scored (the model holds its best eval epoch's weights),
    checked against its test metric; empty without test rows."""
    test = data.splits.get(DS.TEST)
    if test is None or not len(test):
        return np.zeros((0,), np.float32)
    logits = predict(model, test)
    again = float(score(data.kind, logits, test))
    if not np.isclose(again, summary["test"], rtol=0, atol=1e-9):
        raise RuntimeError(f"task {data.task}: the kept test scores give {data.kind} {summary['metric']} {again}, "
                           f"fine_tune scored {summary['test']}")
    return logits


def aggregate(results: Sequence[Dict[str, Any]], tasks: Sequence[str], modes: Sequence[str]) -> List[Dict[str, Any]]:
    out = []
    for task in tasks:
        for name in ("prior", "history"):
            found = [r for r in results if r["kind"] == "baseline" and r["task"] == task and r["mode"] == name]
            values = {r["split"]: r["value"] for r in found}
            if values:
                out.append({"task": task, "mode": f"baseline: {name}", "metric": found[0]["metric"],
                            "test": values.get(DS.TEST),
                            "eval": values.get(DS.EVAL), "trained_parameters": 0, "seeds": None})
        runs = [r for r in results if r.get("kind") == "fine_tune" and r.get("task") == task]
        full = [r["trained_parameters"] for r in runs if r["mode"] == P.FINE_ALL]
        for mode in modes:
            mine = [r for r in runs if r["mode"] == mode]
            if not mine:
                continue
            test = common.mean_std([r["test"] for r in mine])
            evals = common.mean_std([r["eval"] for r in mine])
            params = mine[0]["trained_parameters"]
            out.append({
                "task": task, "mode": mode, "metric": mine[0]["metric"],
                "test": test["mean"], "test_std": test["std"], "eval": evals["mean"], "eval_std": evals["std"],
                "trained_parameters": params,
                "share_of_fine_all": params / full[0] if full else None,
                "best_epoch": float(np.mean([r["best_epoch"] for r in mine])),
                "train_seconds": float(np.mean([r["train_seconds"] for r in mine])),
                "seeds": len(mine),
            })
    return out


def markdown(table, pretrain_rows, counts, args, comparison_rows=()) -> str:
    lines = [
        f"# PeterRec model patches ({args.data}, protocol S)",
        "",
        "NextItNet pretrained on the train histories (next item), then per task and mode a new head "
        f"({args.pooling}-position pooling) and what the mode trains (models/blocks/patches.py); "
        "early stopping on the task's eval metric, test scored once. "
        f"dim {args.dim}, dilations {list(NextItNetParams().dilations)}, bottleneck {args.bottleneck}, "
        f"fine-tuning on {args.train_windows or 'all'} most recent window(s) of {LENGTH} per user, "
        f"lr {args.lr}, batch {args.batch}, at most {args.epochs} epochs, patience {args.patience}; "
        f"seeds {','.join(map(str, args.seeds))}.",
        "",
        "Examples per split (labelled positions): " + "; ".join(
            f"{t}: " + ", ".join(f"{s} {c['examples']} ({c['labelled_positions']})" for s, c in v.items())
            for t, v in counts.items()),
        "",
        common.md_table(table, ["task", "mode", "metric", "test", "test_std", "eval", "trained_parameters",
                                "share_of_fine_all", "best_epoch", "train_seconds", "seeds"]),
        "",
        "Pretraining per seed:",
        "",
        common.md_table(pretrain_rows, ["seed", "windows", "epochs_run", "best_epoch", "eval_ndcg@10",
                                        "eval_sampled_hit_rate@10", "seconds"]),
    ]
    if comparison_rows:
        lines += [""] + paired_lines(comparison_rows)
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="42,43,44")
    parser.add_argument("--tasks", default="", help="downstream tasks (default: every task of the description)")
    parser.add_argument("--modes", default=",".join(P.MODES))
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--bottleneck", type=int, default=8)
    parser.add_argument("--pooling", default=LAST)
    parser.add_argument("--pretrain_lr", type=float, default=0.003)
    parser.add_argument("--pretrain_batch", type=int, default=32)
    parser.add_argument("--pretrain_epochs", type=int, default=8)
    parser.add_argument("--train_windows", type=int, default=1,
                        help="fine-tuning windows per user, most recent first (0: all)")
    parser.add_argument("--lr", type=float, default=0.005)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--patience", type=int, default=2)
    parser.add_argument("--out", default=common.RESULTS_DIR)
    parser.add_argument("--name", default="peterrec")
    parser.add_argument("--work_dir", default=common.DEFAULT_WORK_DIR)
    common.add_dataset_arguments(parser)
    args = parser.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    args.tasks = [t for t in args.tasks.split(",") if t]
    # --modes none: only the data and the baselines (no pretraining).
    args.modes = [P.check_mode(m) for m in args.modes.split(",") if m and m != "none"]
    started = time.monotonic()
    results, counts, runs = run(args)
    table = aggregate(results, args.tasks, args.modes)
    pretrain_rows = [r for r in results if r["kind"] == "pretrain"]
    atomic_write(os.path.join(args.out, f"{args.name}_runs.json"), json.dumps(runs) + "\n")
    paired = comparisons(runs, args.modes)
    command = common.command_line("bench.peterrec", argv)
    meta = {"command": command, "machine": common.machine(), "data": args.data,
            "split": "leave_last_two_out (protocol S)", "seeds": args.seeds,
            "seconds": round(time.monotonic() - started, 1)}
    rows = ([dict(r, kind="summary") for r in table] + list(results) + paired
            + [{"kind": "meta", **meta, "counts": counts}])
    page = markdown(table, pretrain_rows, counts, args, paired)
    common.write_results(args.name, rows, page, meta, args.out)
    print(page)


if __name__ == "__main__":
    main()
