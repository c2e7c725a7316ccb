"""`make run` at several checkouts of this repository, in turn, on one machine.

A figure such as "`make run` took N s at commit X" holds for the machine and the day it was
measured on. To compare a later commit with it, both run here, alternating (A, B, A, B, ...),
each from a clean output directory, with `make run`'s command (`python -m
pipeline.local_runner` with its defaults, the checkout as working directory and first on the
path) under this interpreter: an older checkout runs on this environment, whose pins only
add packages to the older ones. Per run: the wall seconds, each component's seconds as the
runner prints them, and the test metrics of each pushed family.

Writes `<out>/<name>.json` (one row per run) and `<name>.md`: per checkout its commit, the
mean and std of the wall seconds and of each component's seconds, each run's test metrics,
and the goal line "the last checkout is no slower than the first" (its mean wall seconds at
most the first's mean plus the larger of the two stds).

    git worktree add --detach /tmp/base 0c3ec41
    python -m bench.run_ab --checkouts /tmp/base,. --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

from bench.common import command_line, RESULTS_DIR, machine, md_table, mean_std, write_results

# The runner's component lines ("  Transform    ok    44.5 s"), a family's header in its
# models block ("  mf    blessed, pushed version ..."), and its test lines ("    test:  rmse
# 0.87  mae 0.66", "    test liked:  auc 0.81 ...").
COMPONENT = re.compile(r"^  (\w+)\s+(\w+)\s+([0-9.]+) s$")
FAMILY = re.compile(r"^  (\w+)\s{2,}(?:blessed|not blessed)")
TEST = re.compile(r"^\s+test(?: (\w+))?:\s+(.*)$")


def parse_output(text: str) -> Dict[str, Any]:
    """{"components": {name: seconds}, "status": {name: status}, "test": {"family[/task]/metric":
    value}} from the runner's printed summary."""
    components: Dict[str, float] = {}
    status: Dict[str, str] = {}
    test: Dict[str, float] = {}
    family: Optional[str] = None
    for line in text.splitlines():
        found = COMPONENT.match(line)
        if found:
            components[found.group(1)] = float(found.group(3))
            status[found.group(1)] = found.group(2)
            continue
        found = FAMILY.match(line)
        if found:
            family = found.group(1)
            continue
        found = TEST.match(line)
        if found and family is not None:
            tokens = found.group(2).split()
            prefix = family + (f"/{found.group(1)}" if found.group(1) else "")
            for name, value in zip(tokens[0::2], tokens[1::2]):
                try:
                    test[f"{prefix}/{name}"] = float(value)
                except ValueError:
                    continue
    return {"components": components, "status": status, "test": test}


def commit_of(checkout: str) -> str:
    return subprocess.run(["git", "-C", checkout, "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()


def run_once(checkout: str, log_path: str) -> Dict[str, Any]:
    """One `make run` in `checkout` from a clean output directory: wall seconds, exit code and the
    parsed summary (the runner's output kept in `log_path`)."""
    checkout = os.path.abspath(checkout)
    shutil.rmtree(os.path.join(checkout, "outputs"), ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": checkout, "TF_USE_LEGACY_KERAS": "1", "PYTHONHASHSEED": "0"}
    env.pop("RECSYS_OUTPUT_DIR", None)
    started = time.monotonic()
    with open(log_path, "w") as log:
        code = subprocess.run([sys.executable, "-m", "pipeline.local_runner"], cwd=checkout, env=env,
                              stdout=log, stderr=subprocess.STDOUT).returncode
    seconds = time.monotonic() - started
    with open(log_path, errors="replace") as log:
        parsed = parse_output(log.read())
    return {"seconds": round(seconds, 1), "returncode": code, **parsed}


def summarize(rows: Sequence[Dict[str, Any]], checkouts: Sequence[str]) -> List[Dict[str, Any]]:
    """Per checkout: its commit, runs, and the mean / std of the wall and component seconds."""
    out = []
    for checkout in checkouts:
        mine = [r for r in rows if r["checkout"] == checkout]
        entry = {"checkout": checkout, "commit": mine[0]["commit"], "runs": len(mine),
                 "failed": sum(r["returncode"] != 0 for r in mine)}
        wall = mean_std([r["seconds"] for r in mine])
        entry["seconds"], entry["seconds_std"] = wall["mean"], wall["std"]
        names = list(dict.fromkeys(n for r in mine for n in r["components"]))
        entry["components"] = {n: mean_std([r["components"][n] for r in mine if n in r["components"]])
                               for n in names}
        out.append(entry)
    return out


def goal_line(summary: Sequence[Dict[str, Any]]) -> str:
    first, last = summary[0], summary[-1]
    spread = max(s for s in (first["seconds_std"], last["seconds_std"], 0.0) if s is not None)
    met = last["failed"] == 0 and last["seconds"] <= first["seconds"] + spread
    return (f"- `make run` at {last['commit']} no slower than at {first['commit']} on this machine "
            f"(mean wall seconds at most the first's plus the larger std): {last['seconds']:.0f} s "
            f"against {first['seconds']:.0f} s (stds {_std(last)} / {_std(first)}, {last['runs']} and "
            f"{first['runs']} runs) — {'met' if met else 'not met'}")


def _std(entry: Dict[str, Any]) -> str:
    return "n/a" if entry["seconds_std"] is None else f"{entry['seconds_std']:.0f} s"


def markdown(rows: Sequence[Dict[str, Any]], summary: Sequence[Dict[str, Any]]) -> str:
    commits = [s["commit"] for s in summary]
    runs = [{"round": r["round"], "commit": r["commit"], "seconds": r["seconds"], "returncode": r["returncode"]}
            for r in rows]
    names = list(dict.fromkeys(n for s in summary for n in s["components"]))
    components = [{"component": n, **{c: _mean_std_text(s["components"].get(n)) for c, s in zip(commits, summary)}}
                  for n in names]
    metrics = list(dict.fromkeys(m for r in rows for m in r["test"]))
    tests = [{"test metric": m, **{c: ", ".join(f"{r['test'][m]:.4f}" for r in rows
                                                if r["commit"] == c and m in r["test"]) or "n/a"
                                   for c in commits}} for m in metrics]
    return "\n".join([
        f"# `make run` at {', '.join(commits)}, in turn on one machine", "",
        "## Goals", "", goal_line(summary), "",
        "## Method", "",
        "Each run: `python -m pipeline.local_runner` (make run's command, its defaults) in the checkout, from a "
        "clean output directory, the checkouts alternating. Seconds are wall seconds on this machine; every "
        "component's seconds as the runner printed them.", "",
        "## Runs", "", md_table(runs, ["round", "commit", "seconds", "returncode"]), "",
        "## Components (mean ± std over the runs)", "", md_table(components, ["component", *commits]), "",
        "## Test metrics of each run (the runner's summary)", "", md_table(tests, ["test metric", *commits]), "",
    ])


def _mean_std_text(value: Optional[Dict[str, Any]]) -> str:
    if not value:
        return "n/a"
    return f"{value['mean']:.1f}" + ("" if value["std"] is None else f" ± {value['std']:.1f}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkouts", required=True, help="comma-separated checkout directories, the baseline first")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--logs", default=os.path.join("outputs", "bench", "run_ab"))
    parser.add_argument("--out", default=RESULTS_DIR)
    parser.add_argument("--name", default="run_ab")
    parser.add_argument("--rerender", action="store_true",
                        help="run nothing: write <name>.md again from the runs in <name>.json")
    args = parser.parse_args(argv)
    checkouts = [c for c in args.checkouts.split(",") if c]
    if args.rerender:
        with open(os.path.join(args.out, f"{args.name}.json")) as f:
            written = json.load(f)
        meta, rows = written[0]["meta"], written[1:]
        summary = summarize(rows, checkouts)
        write_results(args.name, [{"summary": summary, "goals": [goal_line(summary)], "meta": meta}] + rows,
                      markdown(rows, summary), meta, args.out)
        return 0
    missing = [c for c in checkouts if not os.path.isfile(os.path.join(c, "pipeline", "local_runner.py"))]
    if missing:
        raise SystemExit(f"--checkouts: {missing} hold no pipeline/local_runner.py (a checkout of this repository)")
    os.makedirs(args.logs, exist_ok=True)
    started = machine()
    rows = []
    for round_ in range(1, args.rounds + 1):
        for index, checkout in enumerate(checkouts):
            commit = commit_of(checkout)
            row = run_once(checkout, os.path.join(args.logs, f"{index}_{commit}_{round_}.log"))
            rows.append({"checkout": checkout, "commit": commit, "round": round_, **row})
            print(f"round {round_} {commit}: {row['seconds']} s, exit {row['returncode']}", flush=True)
    summary = summarize(rows, checkouts)
    command = command_line("bench.run_ab", argv)
    meta = {"command": command, "machine": started, "commit": ", ".join(s["commit"] for s in summary)}
    write_results(args.name, [{"summary": summary, "goals": [goal_line(summary)], "meta": meta}] + rows,
                  markdown(rows, summary), meta, args.out)
    print(goal_line(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
