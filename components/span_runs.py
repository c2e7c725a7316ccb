"""The record of scheduled runs on spans: one entry per run, whatever stopped it.

A scheduled run can end in four ways: its ExampleGen stops (unreadable rows, a missing
column, no new span), a data gate stops it (anomalies against the schema, drift of the
newest span from the training window), its candidates are not blessed (worse than the
served model, or below a threshold), or it pushes. A failed component publishes nothing, so
the run report of a stopped run would never be written; instead every stage that decides a
run's fate appends one entry here, at `<output_dir>/span_runs.jsonl`, and the run report
(pipeline/html_report.py) and bench/daily.py show them all, with the reason.

An entry: `time` (UTC), `spans` (the run's new spans), `window` (the spans it trained and was
judged on, when known), `stage` (the component), `status` (`stopped`, `not_pushed`,
`pushed`), `reason` (one line), and stage-specific details.
"""

from __future__ import annotations

import datetime
import json
import os
from typing import Any, Dict, List, Mapping, Optional

from common.io_utils import atomic_write

LEDGER_FILE = "span_runs.jsonl"
STOPPED = "stopped"
NOT_PUSHED = "not_pushed"
PUSHED = "pushed"


def ledger_path(output_dir: str) -> str:
    """Where the run record of an output directory is."""
    return os.path.join(output_dir, LEDGER_FILE)


def read(output_dir: str) -> List[Dict[str, Any]]:
    """Every entry, oldest first ([] when there is none yet)."""
    import tensorflow as tf

    path = ledger_path(output_dir)
    if not output_dir or not tf.io.gfile.exists(path):
        return []
    with tf.io.gfile.GFile(path) as f:
        return [json.loads(line) for line in f.read().splitlines() if line.strip()]


def record(output_dir: str, stage: str, status: str, reason: str, spans=(), window=(),
           details: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Appends one entry (the whole file is rewritten atomically: a reader never sees half a line).

    Args:
      output_dir: the run's output directory ('' records nothing).
      stage: the component that decided (e.g. DriftGate).
      status: STOPPED, NOT_PUSHED or PUSHED.
      reason: one line saying why.
      spans: the run's new spans.
      window: the spans it trained (train) and was judged on (eval, test).
      details: more, JSON-able.
    """
    entry = {"time": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
             "stage": stage, "status": status, "reason": reason, "spans": list(spans), "window": list(window)}
    if details:
        entry["details"] = dict(details)
    if output_dir:
        lines = [json.dumps(e, sort_keys=True) for e in read(output_dir)] + [json.dumps(entry, sort_keys=True)]
        atomic_write(ledger_path(output_dir), "\n".join(lines) + "\n")
    return entry
