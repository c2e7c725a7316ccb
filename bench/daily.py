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
import html
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from bench.common import (command_line, RESULTS_DIR, commit, machine, md_table, mean_std, percentile_interval,
                          resample_weights, write_results)
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
    from pipeline import html_report, local_runner, report

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
    html_report.write(config, timings)  # as `python -m pipeline.local_runner` does after a run
    outputs = report.output_dirs(config.pipeline_root)
    w = window.read_window(outputs.get("SpanWindow", {}).get("window_examples", ""))
    row.update(new_spans=w.get("new_spans"), window={k: w.get(k) for k in ("train", "eval", "test")},
               rows_ingested=sum(int(w["rows"][str(s)]) for s in w.get("new_spans", [])),
               ingest_seconds=w.get("ingest_seconds"),
               window_rows=[int(w["rows"][str(s)]) for s in w.get("new_spans", [])],
               history_spans=len(w.get("rows", {})) - len(w.get("new_spans", [])))
    row["families"] = {}
    for family in config.families:
        outcome = report.family_outcome(None, family, outputs) or {}
        training = outcome.get("training", {})
        row["families"][family] = {
            "train_seconds": training.get("train_seconds"),
            "train_cpu_seconds": training.get("train_cpu_seconds"),
            "trainer_seconds": row["stage_seconds"].get(f"Trainer_{family}"),
            "epochs_run": training.get("epochs_run"),
            "best_epoch": training.get("best_epoch"),
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
        for key in ("train_seconds", "train_cpu_seconds", "trainer_seconds", "epochs_run"):
            warm_t = sum(w.get(key) or 0 for w, _ in paired)
            cold_t = sum(c.get(key) or 0 for _, c in paired)
            entry[key] = {"warm": round(warm_t, 1), "cold": round(cold_t, 1),
                          "ratio": round(warm_t / cold_t, 3) if cold_t else None,
                          "ratio_interval": ratio_interval([(w.get(key) or 0, c.get(key) or 0) for w, c in paired])}
        out[family] = entry
    return out


def ratio_interval(pairs: List[Tuple[float, float]]) -> Optional[List[float]]:
    """The 95% percentile interval of sum(warm) / sum(cold) when the days are resampled with
    replacement (`bench.common.resample_weights`; pairs: each day's (warm, cold)); None for
    fewer than two days or no cold time."""
    import numpy as np

    values = np.asarray(pairs, dtype=np.float64)
    if len(values) < 2 or not values[:, 1].any():
        return None
    weights = np.concatenate(list(resample_weights(len(values))))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = (weights @ values[:, 0]) / (weights @ values[:, 1])
    return [round(v, 3) for v in percentile_interval(ratios)]


def delivered_spans(span_rows: List[int], first_spans: int, rows: List[Dict[str, Any]]) -> Dict[str, Dict[int, List[int]]]:
    """Per arm and day, the rows of each span delivered since the arm's last accepted run:
    what that day's run should ingest. Day 0 finds `first_spans` spans, day d the span
    `first_spans + d - 1`; a run that stopped leaves its spans to the next.

    Args:
      span_rows: the rows of each replayed span, in order.
      first_spans: spans in place for the first run.
      rows: run_day's rows, days in order.
    """
    pending: Dict[str, List[int]] = {}
    out: Dict[str, Dict[int, List[int]]] = {}
    for row in sorted(rows, key=lambda x: x["day"]):
        arm, day = row["arm"], row["day"]
        pending.setdefault(arm, [])
        pending[arm] += span_rows[:first_spans] if day == 0 else [span_rows[first_spans + day - 1]]
        out.setdefault(arm, {})[day] = list(pending[arm])
        if row["status"] == "ok":
            pending[arm] = []
    return out


def _verdict(met: bool) -> str:
    return "met" if met else "not met"


def goal_lines(rows: List[Dict[str, Any]], summary: Dict[str, Any], delivered: Dict[str, Dict[int, List[int]]],
               reports: Dict[str, str]) -> List[str]:
    """The issue's three goals, each `met` / `not met` with the numbers behind it.

    Args:
      rows: run_day's rows.
      summary: summarize's output.
      delivered: per arm and day, the rows of each span delivered since the arm's last accepted
        run (what that day's run should ingest, and nothing else).
      reports: per arm, the text of its last run report (report.html; '' when none).
    """
    lines = []
    for family, entry in summary.items():
        metrics = entry["metrics"]
        within = bool(metrics) and all(m["within_one_std"] for m in metrics.values())
        cpu, wall, trainer = entry["train_cpu_seconds"], entry["train_seconds"], entry.get("trainer_seconds")
        interval = cpu.get("ratio_interval")
        # Met when the whole 95% interval over resampled days is at most half, not only its centre
        half = cpu["ratio"] is not None and (interval[1] if interval else cpu["ratio"]) <= 0.5
        shown = "; ".join(f"{m} warm {v['warm']['mean']:.4f} vs cold {v['cold']['mean']:.4f} "
                          f"(cold std {v['cold']['std'] if v['cold']['std'] is None else round(v['cold']['std'], 4)})"
                          for m, v in metrics.items())
        lines.append(f"- {family}, {entry['days']} warm-started days: eval metrics within one cold std: {shown} "
                     f"— {_verdict(within)}")
        whole = (f"; the whole Trainer component, with its set-up and export: wall {trainer['warm']} / "
                 f"{trainer['cold']} = {trainer['ratio']}" if trainer else "")
        lines.append(f"- {family} Trainer time warm / cold <= 0.5 (the interval's upper end): CPU seconds in Model.fit {cpu['warm']} / "
                     f"{cpu['cold']} = {cpu['ratio']}"
                     + (f" (95% interval over resampled days {interval})" if interval else "")
                     + f" (wall {wall['warm']} / {wall['cold']} = {wall['ratio']}, shared machine; epochs "
                     f"{entry['epochs_run']['warm']:.0f} / {entry['epochs_run']['cold']:.0f}{whole})"
                     f" — {_verdict(half)}")
    ingested = [r for r in rows if r["status"] == "ok" and r["day"] > 0]
    expected = {(r["arm"], r["day"]): sorted(delivered.get(r["arm"], {}).get(r["day"], [])) for r in ingested}
    exact = [r for r in ingested if sorted(r["window_rows"]) == expected[(r["arm"], r["day"])]
             and len(r["new_spans"]) == len(expected[(r["arm"], r["day"])])]
    single = sorted((r for r in ingested if len(r["new_spans"]) == 1 and r["stage_seconds"].get("SpanExampleGen")),
                    key=lambda r: (r["day"], r["arm"]))
    half_point = len(single) // 2
    early = [r["stage_seconds"]["SpanExampleGen"] for r in single[:half_point]]
    late = [r["stage_seconds"]["SpanExampleGen"] for r in single[half_point:]]
    flat = False
    if early and late:
        before = mean_std(early)
        flat = mean_std(late)["mean"] <= before["mean"] + (before["std"] or 0)
    first = [r for r in rows if r["status"] == "ok" and r["day"] == 0]
    lines.append(
        f"- A run on new spans ingests only them: {len(exact)} of {len(ingested)} later runs ingested exactly the "
        f"spans delivered since their last accepted run (spans and rows); SpanExampleGen seconds on one-span days, "
        f"earlier half {_mean_text(early)} vs later half {_mean_text(late)}, met when the later mean is at most the "
        f"earlier mean plus its std (days "
        f"{_days(single[:half_point])} against days {_days(single[half_point:])}: each day one span more ingested "
        f"before; "
        f"first run, {first[0]['rows_ingested'] if first else '?'} rows: "
        f"{first[0]['stage_seconds'].get('SpanExampleGen') if first else '?'} s) — "
        f"{_verdict(bool(ingested) and len(exact) == len(ingested) and flat)}")
    failed = [r for r in rows if r["status"] != "ok"
              or any(not f["pushed"] for f in r.get("families", {}).values())]
    kept = [r for r in failed if not r["served_changed"]]
    shown_in_report = [r for r in failed if r["record"] and all(e.get("reason") for e in r["record"])
                       and all(html.escape(e["reason"]) in reports.get(r["arm"], "") for e in r["record"])]
    reasons = sorted({f"day {r['day']} {r['arm']}: {e['stage']} {e['status']}" for r in failed for e in r["record"]})
    lines.append(
        f"- No failure changes what is served: {len(kept)} of {len(failed)} runs that stopped or did not push left "
        f"the served models as they were; {len(shown_in_report)} of {len(failed)} are in the last run report's "
        f"Daily data with their reason ({', '.join(reasons) or 'no failing day'}) — "
        f"{_verdict(len(kept) == len(failed) and len(shown_in_report) == len(failed))}")
    return lines


def _text(path: str) -> str:
    """A file's text, '' when it does not exist."""
    if not os.path.exists(path):
        return ""
    with open(path) as f:
        return f.read()


def _days(rows: List[Dict[str, Any]]) -> str:
    return f"{rows[0]['day']}-{rows[-1]['day']}" if rows else "none"


def _mean_text(values: List[float]) -> str:
    if not values:
        return "n/a"
    m = mean_std(values)
    return f"{m['mean']:.1f}" + (f" ± {m['std']:.1f}" if m["std"] is not None else "") + f" s ({len(values)} days)"


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
    parser.add_argument("--rescore", action="store_true",
                        help="run nothing: re-check the goals of <name>.json against the arms' output directories "
                             "(writing the last run's report where the run did not)")
    args = parser.parse_args(argv)
    from pipeline import html_report, replay

    total = args.first_spans + args.days
    r = replay.prepare(args.dataset, mode=replay.SLICES, spans=total, rows=args.rows)
    data = os.path.abspath(os.path.join(args.work_dir, "data"))
    path = replay.write_description(r, data)
    gates = {t: float(v) for t, _, v in (g.partition("=") for g in args.gate)}
    configs = {arm: dataclasses.replace(
        PipelineConfig(), dataset=path, output_dir=os.path.abspath(os.path.join(args.work_dir, arm)),
        families=tuple(args.families.split(",")), train_spans=args.train_spans, warm_start=arm == "warm",
        train_steps=args.train_steps or None, gate_thresholds=gates) for arm in ARMS}
    span_rows = [len(day_rows) for _, day_rows in r.days]
    note = ""
    if args.rescore:
        with open(os.path.join(RESULTS_DIR, f"{args.name}.json")) as f:
            written = json.load(f)
        meta, rows = written[0]["meta"], written[1:]
        for arm in ARMS:  # the last run's report, when the run did not write it
            if not os.path.exists(os.path.join(configs[arm].output_dir, html_report.REPORT_NAME)):
                html_report.write(configs[arm])
        note = (f"Goals re-checked from these rows and the arms' output directories by `python -m bench.daily "
                f"{' '.join(argv if argv is not None else sys.argv[1:])}` ({machine()['date']}).")
    else:
        rows = []
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
        meta = {"command": command_line("bench.daily", argv),
                "commit": commit(), "machine": machine()}
    summary = summarize(rows, configs["warm"].families)
    reports = {arm: _text(os.path.join(configs[arm].output_dir, html_report.REPORT_NAME)) for arm in ARMS}
    goals = goal_lines(rows, summary, delivered_spans(span_rows, args.first_spans, rows), reports)
    table = [{"day": x["day"], "arm": x["arm"], "status": x["status"], "new spans": x.get("new_spans"),
              "rows": x.get("rows_ingested"), "ExampleGen s": x["stage_seconds"].get("SpanExampleGen"),
              "wall s": x["wall_seconds"], "served changed": x["served_changed"],
              **{f"{f} epochs": v["epochs_run"] for f, v in x.get("families", {}).items()},
              **{f"{f} train s": v["train_seconds"] for f, v in x.get("families", {}).items()},
              **{f"{f} train CPU s": v["train_cpu_seconds"] for f, v in x.get("families", {}).items()},
              **{f"{f} pushed": v["pushed"] for f, v in x.get("families", {}).items()}} for x in rows]
    columns = list(dict.fromkeys(c for t in table for c in t))
    markdown = "\n".join([f"# Simulated days ({args.dataset}, {sum(span_rows)} ratings in {total} spans)", "",
                          "## Goals", "", *goals, "", "## Method", "", *([note, ""] if note else []),
                          "Warm and cold run the same pipeline on the same days and seed; warm Trainers start from "
                          "their family's last blessed model. Trainer CPU seconds are the process's CPU time in "
                          "Model.fit (wall seconds were taken on a shared machine).", "",
                          md_table(table, columns), "", "## Warm against cold", "", "```",
                          json.dumps(summary, indent=2), "```"])
    write_results(args.name, [{"summary": summary, "goals": goals, "meta": meta}] + rows, markdown, meta, RESULTS_DIR)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
