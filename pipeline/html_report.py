"""One self-contained HTML report per run: data, per family the gate's verdict, metrics per
split, task and slice, the comparison with the last blessed model, calibration plots, the
training curve and the expert gates.

Self-contained: no script, no stylesheet or font from elsewhere, plots as inline SVG, so
the file opens anywhere, offline. TFMA's own results stay where the Evaluator wrote them
(`tfma.load_eval_result(<Evaluator_family>/evaluation/<id>)` in a notebook).
"""

from __future__ import annotations

import datetime
import html
import os
from typing import TYPE_CHECKING, Dict, Iterable, List, Optional, Sequence

from common.io_utils import atomic_write
from contract import protocol
from pipeline import report
from pipeline.configs import PipelineConfig

if TYPE_CHECKING:  # annotations only
    import numpy as np

REPORT_NAME = "report.html"
SECTIONS = ("Run", "Data", "Models")
_STYLE = """
body{font-family:sans-serif;margin:2em;max-width:80em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:0.2em 0.6em;text-align:right}
th:first-child,td:first-child{text-align:left}
.ok{color:#176f2c}.bad{color:#a11}
h2{border-bottom:2px solid #ddd}
"""


def _e(value) -> str:
    return html.escape(str(value))


def _num(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return _e(value)


def _table(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_num(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def line_chart(series: Dict[str, Sequence[float]], title: str, width: int = 480, height: int = 200) -> str:
    """An inline SVG line chart of per-epoch values (one polyline per series)."""
    values = [v for vs in series.values() for v in vs if v == v]  # drop NaN
    if not values:
        return ""
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    n = max(len(vs) for vs in series.values())
    colors = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 40}" role="img">',
             f"<title>{_e(title)}</title>",
             f'<text x="4" y="14" font-size="12">{_e(title)} (min {lo:.4f}, max {hi:.4f})</text>']
    for k, (name, vs) in enumerate(series.items()):
        points = " ".join(
            f"{10 + i * (width - 20) / max(n - 1, 1):.1f},{30 + (height - 20) * (1 - (v - lo) / span):.1f}"
            for i, v in enumerate(vs) if v == v)
        color = colors[k % len(colors)]
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{points}"/>')
        parts.append(f'<text x="{10 + 150 * k}" y="{height + 32}" font-size="11" fill="{color}">{_e(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def reliability_chart(curves: Dict[str, "np.ndarray"], title: str, size: int = 240) -> str:
    """An inline SVG reliability diagram: per split, mean label against mean prediction of each
    non-empty bin (rows of `definitions.calibration_bins`), over the diagonal a calibrated
    model follows. Both axes span the bins' range."""
    points = {split: bins[bins[:, 2] > 0] for split, bins in curves.items()}
    values = [v for bins in points.values() for v in bins[:, :2].ravel().tolist()]
    if not values:
        return ""
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    pad = 30

    def xy(p, y):
        return pad + (size - pad - 10) * (p - lo) / span, size - pad - (size - pad - 10) * (y - lo) / span

    colors = ("#1f77b4", "#d62728")
    (x0, y0), (x1, y1) = xy(lo, lo), xy(hi, hi)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{size + 120}" height="{size + 20}" role="img">',
             f"<title>{_e(title)}</title>",
             f'<text x="4" y="14" font-size="12">{_e(title)}</text>',
             f'<line x1="{x0:.1f}" y1="{y0:.1f}" x2="{x1:.1f}" y2="{y1:.1f}" stroke="#999" stroke-dasharray="4"/>',
             f'<text x="{pad}" y="{size - 8}" font-size="11">predicted {lo:.2f} .. {hi:.2f}; up: observed</text>']
    for k, (split, bins) in enumerate(sorted(points.items())):
        color = colors[k % len(colors)]
        coords = [xy(p, y) for p, y in bins[:, :2].tolist()]
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="'
                     + " ".join(f"{x:.1f},{y:.1f}" for x, y in coords) + '"/>')
        parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>' for x, y in coords]
        parts.append(f'<text x="{size}" y="{40 + 16 * k}" font-size="11" fill="{color}">{_e(split)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _data_section(outputs: Dict[str, Dict[str, str]]) -> str:
    stats_dir = outputs.get("StatisticsGen", {}).get("statistics")
    if not stats_dir:
        return "<p>No StatisticsGen output.</p>"
    import tensorflow as tf
    import tensorflow_data_validation as tfdv
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    per_split = {}
    for path in sorted(tf.io.gfile.glob(os.path.join(stats_dir, "Split-*", "FeatureStats.pb"))):
        split = os.path.basename(os.path.dirname(path))[len("Split-"):]
        per_split[split] = tfdv.load_stats_binary(path).datasets[0]
    parts = []
    splits = [s for s in ("train", "eval", "test") if s in per_split] + sorted(set(per_split) - {"train", "eval", "test"})
    parts.append(_table(["split", "examples"], [(s, per_split[s].num_examples) for s in splits]))
    # Drift of the numeric features: mean (std) per split, side by side.
    rows = {}
    for split in splits:
        for feature in per_split[split].features:
            name = feature.path.step[-1] if feature.path.step else feature.name
            if feature.HasField("num_stats"):
                s = feature.num_stats
                missing = s.common_stats.num_missing
                rows.setdefault(name, {})[split] = f"{s.mean:.4g} ({s.std_dev:.3g}), missing {missing}"
            elif feature.HasField("string_stats"):
                s = feature.string_stats
                rows.setdefault(name, {})[split] = f"{s.unique} unique, missing {s.common_stats.num_missing}"
    parts.append("<h3>Features per split: mean (std) or unique values</h3>")
    parts.append(_table(["feature"] + splits, [[name] + [values.get(s, "") for s in splits]
                                                for name, values in sorted(rows.items())]))
    anomalies_dir = outputs.get("ExampleValidator", {}).get("anomalies")
    if anomalies_dir:
        found = []
        for path in sorted(tf.io.gfile.glob(os.path.join(anomalies_dir, "Split-*", "SchemaDiff.pb"))):
            split = os.path.basename(os.path.dirname(path))[len("Split-"):]
            anomalies = anomalies_pb2.Anomalies()
            with tf.io.gfile.GFile(path, "rb") as f:
                anomalies.ParseFromString(f.read())
            for feature, info in anomalies.anomaly_info.items():
                found.append((split, feature, info.short_description))
        parts.append("<h3>Anomalies against the schema</h3>")
        parts.append(_table(["split", "feature", "anomaly"], found) if found else "<p>None.</p>")
    return "".join(parts)


def daily_section(config: PipelineConfig, outputs: Dict[str, Dict[str, str]]) -> str:
    """A run on spans: its window (spans per role, rows, the new spans' ingest time), the
    drift of the newest span from the training window, and the run record of every scheduled
    run so far (stopped ones with their reason; components/span_runs.py)."""
    from components import drift, span_runs, window

    parts = []
    w = window.read_window(outputs.get("SpanWindow", {}).get("window_examples", ""))
    if w:
        parts.append(_table(["", ""], [("train spans", ", ".join(map(str, w["train"]))), ("eval span", w["eval"]),
                                       ("test span", w["test"]), ("new spans", ", ".join(map(str, w["new_spans"])))]))
        parts.append(_table(["span", "rows", "ingest seconds"],
                            [(span, rows, w.get("ingest_seconds", {}).get(span, "")) for span, rows in
                             sorted(w.get("rows", {}).items(), key=lambda kv: int(kv[0]))]))
    measured = drift.read_drift(outputs.get("DriftGate", {}).get("accepted", ""))
    if measured:
        parts.append("<h3>Drift: newest span against the training window</h3>")
        parts.append(_table(["feature", "measure", "value", "threshold", "exceeded"],
                            [(r["feature"], r["measure"], _num(r["value"]) if r["value"] is not None else "n/a",
                              r["threshold"], "yes" if r["exceeded"] else "no") for r in measured["drift"]]))
    entries = span_runs.read(config.output_dir)
    parts.append("<h3>Scheduled runs</h3>")
    parts.append(_table(["time", "new spans", "stage", "status", "reason"],
                        [(e["time"], ", ".join(map(str, e["spans"])), e["stage"], e["status"], e["reason"])
                         for e in entries]) if entries else "<p>None recorded yet.</p>")
    return "".join(parts)


def slice_metrics(evaluation_dir: str) -> List[List]:
    """Rows [slice, output, metric, value] of every slice within a split (besides the split itself)."""
    import tensorflow_model_analysis as tfma

    rows = []
    for per_slice in tfma.load_metrics(evaluation_dir):
        keys = per_slice.slice_key.single_slice_keys
        if len(keys) < 2:
            continue
        where = " x ".join(f"{k.column}={k.bytes_value.decode()}" for k in keys)
        for kv in per_slice.metric_keys_and_values:
            if kv.value.HasField("double_value") and not kv.key.is_diff and kv.key.name in report.KEY_METRICS:
                rows.append([where, kv.key.output_name or "-", kv.key.name, kv.value.double_value.value])
    return sorted(rows, key=lambda r: (r[0], r[1], r[2]))


def _family_section(outputs: Dict[str, Dict[str, str]], family: str) -> str:
    outcome = report.family_outcome(None, family, outputs)
    if outcome is None:
        return f"<h3>{_e(family)}</h3><p>No evaluation.</p>"
    push = outcome.get("push", {})
    verdict = (f'<span class="ok">blessed, pushed version {_e(push["version"])}</span>' if push.get("pushed")
               else '<span class="bad">not blessed, not pushed</span>')
    parts = [f'<h3 id="family-{_e(family)}">{_e(family)}</h3><p>{verdict}</p>']
    if outcome["failures"]:
        parts.append("<p>Failed thresholds:</p><ul>" + "".join(f"<li>{_e(f)}</li>" for f in outcome["failures"])
                     + "</ul>")
    rows = []
    for split in report.SPLITS:
        for output, metrics in sorted(outcome["metrics"].get(split, {}).items()):
            for name, value in sorted(metrics.items()):
                rows.append([split, output or "-", name, value])
    parts.append("<h4>Metrics per split and task (the gate reads eval; test is reported)</h4>")
    parts.append(_table(["split", "task", "metric", "value"], rows))
    evaluation = outputs.get(f"Evaluator_{family}", {}).get("evaluation")
    if evaluation:
        diffs = report.split_diffs(evaluation)
        parts.append("<h4>Against the last blessed model (eval split: candidate minus blessed)</h4>")
        parts.append(_table(["task", "metric", "difference"],
                            [[output or "-", name, value] for output, metrics in sorted(diffs.items())
                             for name, value in sorted(metrics.items())])
                     if diffs else "<p>No blessed model before this run: nothing to compare with.</p>")
        curves = report.split_arrays(evaluation, "calibration_bins")
        by_output: Dict[str, Dict] = {}
        for split, outputs_bins in curves.items():
            for output, bins in outputs_bins.items():
                by_output.setdefault(output, {})[split] = bins
        if by_output:
            parts.append('<h4 class="calibration">Calibration: observed against predicted, by bins of the '
                         'prediction</h4>')
            parts += [reliability_chart(bins, f"{family} {output or 'prediction'}: calibration")
                      for output, bins in sorted(by_output.items())]
        parts.append("<h4>Slices</h4>")
        parts.append(_table(["slice", "task", "metric", "value"], slice_metrics(evaluation)))
    training = outcome.get("training", {})
    history = training.get("history", {})
    monitor = training.get("monitor")
    if history:
        parts.append("<h4>Training</h4>")
        parts.append(f"<p>Kept epoch {_e(training.get('best_epoch'))} of {_e(training.get('epochs_run'))} "
                     f"by {_e(monitor)} = {_num(training.get('best_value'))}.</p>")
        if monitor in history:
            parts.append(line_chart({monitor: history[monitor]}, f"{family}: {monitor} per epoch"))
        losses = {k: v for k, v in history.items() if k in ("loss", "val_loss")}
        if losses:
            parts.append(line_chart(losses, f"{family}: loss per epoch"))
    gates = training.get("gates", {})
    if gates:
        parts.append("<h4>Expert gates: mean weight per expert on the eval split</h4>")
        width = max(len(w) for w in gates.values())
        parts.append(_table(["task"] + [f"expert {i}" for i in range(width)],
                            [[task] + list(weights) for task, weights in sorted(gates.items())]))
    return "".join(parts)


def render(config: PipelineConfig, timings: Optional[Sequence] = None,
           outputs: Optional[Dict[str, Dict[str, str]]] = None) -> str:
    """The report's HTML.

    Args:
      config: the run's configuration.
      timings: per component name, status and seconds (the local runner's), if known.
      outputs: {component: {output key: directory or URI}} to report on; default: the
        newest outputs under the pipeline root (report.output_dirs).
    """
    config = config.resolved()
    outputs = report.output_dirs(config.pipeline_root) if outputs is None else outputs
    parts = ["<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
             f"<title>Run report: {_e(config.dataset_name)}</title><style>{_STYLE}</style></head><body>",
             f"<h1>Run report: {_e(config.dataset_name)} ({_e(config.split)} split)</h1>",
             '<h2 id="run">Run</h2>',
             _table(["", ""], [("description", config.describe_dataset()), ("data", config.data_dir),
                               ("output", config.output_dir),
                               ("families", ", ".join(config.families) or "none"), ("seed", config.seed),
                               ("written", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))])]
    if timings:
        parts.append(_table(["component", "status", "seconds"],
                            [(t.name, t.status, round(t.seconds, 1)) for t in timings]))
    parts.append('<h2 id="data">Data</h2>')
    parts.append(_data_section(outputs))
    if config.spanned:
        parts.append('<h2 id="daily">Daily data</h2>')
        parts.append(daily_section(config, outputs))
    parts.append('<h2 id="models">Models</h2>')
    if not config.families:
        parts.append("<p>No model families in this run.</p>")
    for family in config.families:
        parts.append(_family_section(outputs, family))
    parts.append(f"<p>TFMA results in a notebook: <code>tfma.load_eval_result(path)</code> with the "
                 f"Evaluator's evaluation directory; training summaries: "
                 f"<code>{_e(protocol.TRAINING_SUMMARY)}</code> beside each model run.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write(config: PipelineConfig, timings: Optional[Sequence] = None) -> str:
    """Writes `<output_dir>/report.html` (temporary file, then rename); returns its path."""
    path = os.path.join(config.output_dir, REPORT_NAME)
    atomic_write(path, render(config, timings))
    return path
