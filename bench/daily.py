"""Simulated days of a scheduled pipeline: per day, what was ingested, each stage's wall time,
warm-started against from-scratch Trainers, and the gate's decision.

The log is replayed as daily spans (pipeline/replay.py, MovieLens by equal slices of its last
`--rows` ratings). The first run finds `--first_spans` days in place (a window needs three);
each later run finds one new day. Every day runs the local pipeline twice on the same data
and the same seed, in two output directories: warm (each Trainer starts from its family's
last blessed model) and cold (from scratch). With `--drift_day K`, day K's ratings are all
set to 0.5 (valid rows, a drifted distribution): its runs must stop at the DriftGate and
leave the served models as they were.

`python -m bench.daily --days 10 --rows 20000 --families mf` writes bench/results/daily.json
(one row per simulated day and arm) and daily.md (the table and the goals: warm within one
standard deviation of cold on the eval metrics at no more than half the Trainer time; the
ExampleGen time per span against the rows ingested).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional

from bench.common import RESULTS_DIR, commit, machine, md_table, mean_std, write_results
from pipeline.configs import PipelineConfig

ARMS = ("warm", "cold")
KEY_METRICS = ("rmse", "auc", "liked_auc", "watched_auc", "mean_auc")


def _served(config: PipelineConfig) -> Dict[str, List[str]]:
    return {family: sorted(os.listdir(os.path.join(config.serving_model_dir, family)))
            if os.path.isdir(os.path.join(config.serving_model_dir, family)) else []
            for family in config.families}


def _eval_metrics(outcome: Dict[str, Any]) -> Dict[str, float]:
    """The eval split's gate-relevant metrics of one family, flattened `output/metric`."""
    out = {}
    for output, metrics in outcome.get("metrics", {}).get("eval", {}).items():
        for name, value in metrics.items():
            if any(name.endswith(k) for k in KEY_METRICS) and isinstance(value, (int, float)):
                out[f"{output + '/' if output else ''}{name}"] = float(value)
    return out


def run_day(config: PipelineConfig, day: int, arm: str) -> Dict[str, Any]:
    """One scheduled run: its timings, window, per-family training time, eval metrics and
    decision, or the stage that stopped it and why."""
    from components import span_runs, window
    from pipeline import local_runner, report

    before = _served(config)
    recorded = len(span_runs.read(config.output_dir))
    started = time.monotonic()
    row: Dict[str, Any] = {"day": day, "arm": arm}
    try:
        timings = local_runner.run(config)
        row["status"] = "ok"
    except local_runner.PipelineFailed as e:
        timings = []
        row["status"] = f"stopped in {e.component}"
    row["wall_seconds"] = round(time.monotonic() - started, 1)
    row["stage_seconds"] = {t.name: round(t.seconds, 1) for t in timings}
    row["served_changed"] = _served(config) != before
    row["record"] = span_runs.read(config.output_dir)[recorded:]
    if row["status"] != "ok":
        return row
    outputs = report.output_dirs(config.pipeline_root)
    w = window.read_window(outputs.get("SpanWindow", {}).get("window_examples", ""))
    row.update(new_spans=w.get("new_spans"), window={k: w.get(k) for k in ("train", "eval", "test")},
               rows_ingested=sum(int(w["rows"][str(s)]) for s in w.get("new_spans", [])),
               ingest_seconds=w.get("ingest_seconds"))
    row["families"] = {}
    for family in config.families:
        outcome = report.family_outcome(None, family, outputs) or {}
        training = outcome.get("training", {})
        row["families"][family] = {
            "train_seconds": training.get("train_seconds"),
            "trainer_seconds": row["stage_seconds"].get(f"Trainer_{family}"),
            "epochs_run": training.get("epochs_run"),
            "warm_start": bool(training.get("warm_start")),
            "eval": _eval_metrics(outcome),
            "pushed": bool(outcome.get("push", {}).get("pushed")),
            "failures": outcome.get("failures", []),
        }
    return row


def summarize(rows: List[Dict[str, Any]], families) -> Dict[str, Any]:
    """Per family: warm vs cold eval metrics (mean, std over the days both arms trained) and
    the Trainer seconds, and whether the goals hold."""
    out: Dict[str, Any] = {}
    by = {(r["day"], r["arm"]): r for r in rows}
    days = sorted({r["day"] for r in rows})
    for family in families:
        paired = [(by[(d, "warm")]["families"][family], by[(d, "cold")]["families"][family]) for d in days
                  if (d, "warm") in by and (d, "cold") in by and by[(d, "warm")]["status"] == "ok"
                  and by[(d, "cold")]["status"] == "ok" and by[(d, "warm")]["families"][family]["warm_start"]]
        if not paired:
            continue
        metrics = sorted(set(paired[0][0]["eval"]) & set(paired[0][1]["eval"]))
        entry: Dict[str, Any] = {"days": len(paired), "metrics": {}}
        for m in metrics:
            warm = mean_std([w["eval"][m] for w, _ in paired])
            cold = mean_std([c["eval"][m] for _, c in paired])
            within = None if cold["std"] is None else abs(warm["mean"] - cold["mean"]) <= cold["std"]
            entry["metrics"][m] = {"warm": warm, "cold": cold, "within_one_std": within}
        warm_t = sum(w["train_seconds"] or 0 for w, _ in paired)
        cold_t = sum(c["train_seconds"] or 0 for _, c in paired)
        entry["train_seconds"] = {"warm": round(warm_t, 1), "cold": round(cold_t, 1),
                                  "ratio": round(warm_t / cold_t, 3) if cold_t else None}
        out[family] = entry
    return out


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="movielens")
    parser.add_argument("--days", type=int, default=10, help="simulated days after the first run")
    parser.add_argument("--first_spans", type=int, default=3)
    parser.add_argument("--rows", type=int, default=20000, help="the last N ratings are replayed")
    parser.add_argument("--families", default="mf")
    parser.add_argument("--train_spans", type=int, default=PipelineConfig.train_spans)
    parser.add_argument("--train_steps", type=int, default=0, help="cap on Trainer steps (0: early stopping)")
    parser.add_argument("--drift_day", type=int, default=-1, help="this day's ratings are all set to 0.5")
    parser.add_argument("--work_dir", default=os.path.join("outputs", "bench", "daily"))
    parser.add_argument("--gate", action="append", default=[], metavar="TASK=THRESHOLD")
    parser.add_argument("--name", default="daily")
    args = parser.parse_args(argv)
    from pipeline import replay

    total = args.first_spans + args.days
    r = replay.prepare(args.dataset, mode=replay.SLICES, spans=total, rows=args.rows)
    data = os.path.abspath(os.path.join(args.work_dir, "data"))
    path = replay.write_description(r, data)
    gates = {t: float(v) for t, _, v in (g.partition("=") for g in args.gate)}
    configs = {arm: dataclasses.replace(
        PipelineConfig(), dataset=path, output_dir=os.path.abspath(os.path.join(args.work_dir, arm)),
        families=tuple(args.families.split(",")), train_spans=args.train_spans, warm_start=arm == "warm",
        train_steps=args.train_steps or None, gate_thresholds=gates) for arm in ARMS}
    rows: List[Dict[str, Any]] = []
    for index in range(args.first_spans):
        replay.write_day(r, data, index)
    for day in range(args.days + 1):
        if day:
            index = args.first_spans + day - 1
            replay.write_day(r, data, index, replay.shifted_ratings(r, index) if day == args.drift_day else None)
        for arm in ARMS:
            row = run_day(configs[arm], day, arm)
            rows.append(row)
            print(json.dumps({k: row.get(k) for k in ("day", "arm", "status", "new_spans", "rows_ingested",
                                                        "wall_seconds", "families")}), flush=True)
        if day == args.drift_day:  # the next day delivers the day again, fixed: its runs ingest both
            replay.write_day(r, data, args.first_spans + day - 1)
    summary = summarize(rows, configs["warm"].families)
    meta = {"command": "python -m bench.daily " + " ".join(argv if argv is not None else sys.argv[1:]),
            "commit": commit(), "machine": machine()}
    table = [{"day": x["day"], "arm": x["arm"], "status": x["status"], "new spans": x.get("new_spans"),
              "rows": x.get("rows_ingested"), "ExampleGen s": x["stage_seconds"].get("SpanExampleGen"),
              "wall s": x["wall_seconds"], "served changed": x["served_changed"],
              **{f"{f} train s": v["train_seconds"] for f, v in x.get("families", {}).items()},
              **{f"{f} pushed": v["pushed"] for f, v in x.get("families", {}).items()}} for x in rows]
    markdown = "\n".join([f"# Simulated days ({args.dataset}, {args.rows} ratings in {total} spans)", "",
                          md_table(table, list(table[0])), "", "## Warm against cold", "", "```",
                          json.dumps(summary, indent=2), "```"])
    write_results(args.name, [{"summary": summary, "meta": meta}] + rows, markdown, meta, RESULTS_DIR)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
