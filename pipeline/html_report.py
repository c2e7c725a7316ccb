"""One self-contained HTML report per run, to read top-down: a summary with one row per
family (headline metrics on eval and test, the gate's decision, the change against the last
blessed model and against the previous run of the same output directory), then per family
one table per task with the slices as rows, the calibration and training plots, then the
data and the run's timings.

Self-contained: no script, no stylesheet or font from elsewhere, plots as inline SVG, so
the file opens anywhere, offline. Beside it, `report_summary.json` keeps the summary's
numbers for the next run's comparison. TFMA's own results stay where the Evaluator wrote
them (`tfma.load_eval_result(<Evaluator_family>/evaluation/<id>)` in a notebook).
"""

from __future__ import annotations

import datetime
import html
import json
import os
from typing import TYPE_CHECKING, Dict, Iterable, List, Optional, Sequence, Tuple

from common.io_utils import atomic_write
from contract import protocol
from contract import tasks as T
from pipeline import report
from pipeline.configs import PipelineConfig

if TYPE_CHECKING:  # annotations only
    import numpy as np

REPORT_NAME = "report.html"
SUMMARY_NAME = "report_summary.json"
LOWER_IS_BETTER = ("rmse", "mae", "log_loss")
_STYLE = """
body{font-family:sans-serif;margin:2em;max-width:80em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:0.2em 0.6em;text-align:right}
th:first-child,td:first-child,td.l{text-align:left}
.ok{color:#176f2c}.bad{color:#a11}.note{color:#555;font-size:90%}
h2{border-bottom:2px solid #ddd}
td.m{position:relative;min-width:6em}
td.m .bar{position:absolute;left:0;top:15%;height:70%;background:#d5e3f3}
td.m .v{position:relative}
"""


def headline(kind: str, top_k: int) -> str:
    """The metric a task of `kind` is judged by first (its gate's own metric follows when it
    differs): RMSE, AUC, or NDCG at the run's K."""
    return {T.REGRESSION: T.RMSE, T.BINARY: T.AUC}.get(kind) or T.ndcg_at(top_k)


def _e(value) -> str:
    return html.escape(str(value))


def _num(value) -> str:
    """Integers as integers, other numbers to four decimals."""
    if isinstance(value, bool) or value is None:
        return _e("n/a" if value is None else value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4f}"
    return _e(value)


def _signed(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:+.4f}"


def _table(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_num(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _unit(metric: str) -> str:
    if metric.endswith(("rmse", "mae")):
        return "label units"
    if metric.endswith("loss"):
        return "training objective"
    return "0 to 1"


def line_chart(series: Dict[str, Sequence[float]], title: str, y_label: str, x_label: str = "epoch",
               width: int = 480, height: int = 200) -> str:
    """An inline SVG line chart of per-epoch values (one polyline per series) with labelled
    axes: epochs 1..n along x, `y_label` (with its unit) up, the range's ends as ticks."""
    values = [v for vs in series.values() for v in vs if v == v]  # drop NaN
    if not values:
        return ""
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    n = max(len(vs) for vs in series.values())
    left, top, bottom = 70, 24, 40
    plot_w, plot_h = width - left - 10, height - top - bottom

    def xy(i, v):
        return left + i * plot_w / max(n - 1, 1), top + plot_h * (1 - (v - lo) / span)

    colors = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 16}" role="img">',
             f"<title>{_e(title)}</title>",
             f'<text x="4" y="14" font-size="12">{_e(title)}</text>',
             f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#444"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#444"/>',
             f'<text x="{left - 4}" y="{top + 4}" font-size="10" text-anchor="end">{hi:.4f}</text>',
             f'<text x="{left - 4}" y="{top + plot_h}" font-size="10" text-anchor="end">{lo:.4f}</text>',
             f'<text x="{left}" y="{top + plot_h + 14}" font-size="10" text-anchor="middle">1</text>',
             f'<text x="{left + plot_w}" y="{top + plot_h + 14}" font-size="10" text-anchor="middle">{n}</text>',
             f'<text class="x-label" x="{left + plot_w / 2:.0f}" y="{top + plot_h + 28}" font-size="11" '
             f'text-anchor="middle">{_e(x_label)}</text>',
             f'<text class="y-label" x="12" y="{top + plot_h / 2:.0f}" font-size="11" text-anchor="middle" '
             f'transform="rotate(-90 12 {top + plot_h / 2:.0f})">{_e(y_label)}</text>']
    for k, (name, vs) in enumerate(series.items()):
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(i, v) for i, v in enumerate(vs) if v == v))
        color = colors[k % len(colors)]
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{points}"/>')
        parts.append(f'<text x="{left + 10 + 150 * k}" y="{height + 12}" font-size="11" fill="{color}">{_e(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def reliability_chart(curves: Dict[str, "np.ndarray"], title: str, unit: str, size: int = 260) -> str:
    """An inline SVG reliability diagram: per split, mean label against mean prediction of each
    non-empty bin (rows of `definitions.calibration_bins`), over the diagonal a calibrated
    model follows; both axes labelled in the label's `unit` and spanning the bins' range."""
    points = {split: bins[bins[:, 2] > 0] for split, bins in curves.items()}
    values = [v for bins in points.values() for v in bins[:, :2].ravel().tolist()]
    if not values:
        return ""
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    left, bottom, top = 60, 40, 24
    plot = size - left - 10

    def xy(p, y):
        return left + plot * (p - lo) / span, top + plot * (1 - (y - lo) / span)

    colors = ("#1f77b4", "#d62728")
    (x0, y0), (x1, y1) = xy(lo, lo), xy(hi, hi)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{size + 90}" height="{top + plot + bottom}" role="img">',
             f"<title>{_e(title)}</title>",
             f'<text x="4" y="14" font-size="12">{_e(title)}</text>',
             f'<line x1="{left}" y1="{top + plot}" x2="{left + plot}" y2="{top + plot}" stroke="#444"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot}" stroke="#444"/>',
             f'<line x1="{x0:.1f}" y1="{y0:.1f}" x2="{x1:.1f}" y2="{y1:.1f}" stroke="#999" stroke-dasharray="4"/>',
             f'<text x="{left}" y="{top + plot + 12}" font-size="10" text-anchor="middle">{lo:.2f}</text>',
             f'<text x="{left + plot}" y="{top + plot + 12}" font-size="10" text-anchor="middle">{hi:.2f}</text>',
             f'<text x="{left - 4}" y="{top + 4}" font-size="10" text-anchor="end">{hi:.2f}</text>',
             f'<text x="{left - 4}" y="{top + plot}" font-size="10" text-anchor="end">{lo:.2f}</text>',
             f'<text class="x-label" x="{left + plot / 2:.0f}" y="{top + plot + 28}" font-size="11" '
             f'text-anchor="middle">mean prediction per bin ({_e(unit)})</text>',
             f'<text class="y-label" x="12" y="{top + plot / 2:.0f}" font-size="11" text-anchor="middle" '
             f'transform="rotate(-90 12 {top + plot / 2:.0f})">observed mean label ({_e(unit)})</text>']
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


def _family_tasks(config: PipelineConfig, family: str) -> Tuple[T.TaskSpec, ...]:
    from pipeline.model_stages import family_tasks

    return tuple(family_tasks(config, family))


def _output_of(task: str, metrics: Dict[str, Dict[str, float]]) -> str:
    """The TFMA output name of a task: its name, or '' for a model with one unnamed output."""
    return task if task in metrics else ""


def _decision(outcome: Optional[Dict]) -> Tuple[bool, str]:
    if outcome is None:
        return False, "no evaluation"
    push = outcome.get("push", {})
    if push.get("pushed"):
        return True, f"blessed, pushed version {push['version']}"
    failed = len(outcome["failures"])
    return False, "not blessed, not pushed" + (f" ({failed} threshold{'s' if failed > 1 else ''} failed)"
                                               if failed else "")


def summary_rows(config: PipelineConfig, outcomes: Dict[str, Optional[Dict]],
                 diffs: Dict[str, Dict[str, Dict[str, float]]]) -> List[Dict]:
    """One row per family, task and headline metric: its eval and test values and its change
    against the last blessed model on eval (None on a first run). A task's headline metrics
    are the one its kind is judged by (RMSE, AUC, NDCG at the run's K) and its gate's metric."""
    rows = []
    for family in config.families:
        outcome = outcomes.get(family)
        if outcome is None:
            continue
        per_split = outcome["metrics"]
        evaluated = {**per_split.get("test", {}), **per_split.get("eval", {})}
        tasks = _family_tasks(config, family)
        for task in tasks:
            output = _output_of(task.name, evaluated)
            first = headline(task.kind, config.top_k)
            gate = task.gate.at_k(config.top_k).metric if task.gate else first
            names = [first] + ([gate] if gate != first else [])
            for name in names:
                values = {split: per_split.get(split, {}).get(output, {}).get(name) for split in report.SPLITS}
                if all(v is None for v in values.values()):
                    continue
                rows.append({"family": family, "task": task.name, "output": output, "metric": name, **values,
                             "blessed_change": diffs.get(family, {}).get(output, {}).get(name)})
        if len(tasks) > 1 and "mean_auc" in evaluated.get("", {}):
            rows.append({"family": family, "task": "all tasks", "output": "", "metric": "mean_auc",
                         **{split: per_split.get(split, {}).get("", {}).get("mean_auc") for split in report.SPLITS},
                         "blessed_change": diffs.get(family, {}).get("", {}).get("mean_auc")})
    return rows


def read_summary(output_dir: str) -> Optional[Dict]:
    """The summary an earlier report wrote into `output_dir` (local or a URI), or None."""
    try:
        return report._read_json(os.path.join(output_dir, SUMMARY_NAME))
    except ValueError:  # a damaged file compares with nothing rather than failing the report
        return None


def _previous_value(previous: Optional[Dict], row: Dict, split: str = "eval") -> Optional[float]:
    for old in (previous or {}).get("rows", []):
        if (old["family"], old["task"], old["metric"]) == (row["family"], row["task"], row["metric"]):
            return old.get(split)
    return None


def _change(now: Optional[float], before: Optional[float]) -> Optional[float]:
    return None if now is None or before is None else now - before


def _summary_section(rows: List[Dict], outcomes: Dict[str, Optional[Dict]], previous: Optional[Dict]) -> str:
    since = f" (written {_e(previous['written'])})" if previous else ""
    header = ["family", "gate", "task", "metric", "eval", "test", "vs last blessed (eval)",
              f"vs previous run{since} (eval)"]
    parts = ['<h2 id="summary">Summary</h2>',
             '<p class="note">The gate reads eval; test is only reported. "vs last blessed": this model minus the '
             "latest blessed model of its family on the same eval data (TFMA's change); \"vs previous run\": this "
             "report's eval value minus the previous report's in this output directory.</p>",
             "<table><tr>" + "".join(f"<th>{h}</th>" for h in header) + "</tr>"]
    by_family: Dict[str, List[Dict]] = {}
    for row in rows:
        by_family.setdefault(row["family"], []).append(row)
    for family, family_rows in by_family.items():
        pushed, decision = _decision(outcomes.get(family))
        for i, row in enumerate(family_rows):
            cells = ""
            if i == 0:
                span = len(family_rows)
                cells += (f'<td rowspan="{span}" class="l"><a href="#family-{_e(family)}">{_e(family)}</a></td>'
                          f'<td rowspan="{span}" class="l {"ok" if pushed else "bad"}">{_e(decision)}</td>')
            cells += f'<td class="l">{_e(row["task"])}</td><td class="l">{_e(row["metric"])}</td>'
            for split in report.SPLITS:
                cells += (f'<td data-family="{_e(family)}" data-output="{_e(row["output"])}" '
                          f'data-metric="{_e(row["metric"])}" data-split="{split}">{_num(row[split])}</td>')
            cells += f"<td>{_signed(row['blessed_change'])}</td>"
            cells += f"<td>{_signed(_change(row['eval'], _previous_value(previous, row)))}</td>"
            parts.append(f"<tr>{cells}</tr>")
    parts.append("</table>")
    if not rows:
        parts.append("<p>No family was evaluated.</p>")
    return "".join(parts)


def slice_tables(evaluation_dir: str) -> Dict[str, Dict[str, Dict[str, float]]]:
    """{output: {slice: {metric: value}}} of every slice: the split itself (`eval`) and its
    crosses (`eval · user_activity=heavy`), eval first."""
    import tensorflow_model_analysis as tfma

    out: Dict[str, Dict[str, Dict[str, float]]] = {}
    for per_slice in tfma.load_metrics(evaluation_dir):
        keys = per_slice.slice_key.single_slice_keys
        if not keys or keys[0].column != "split":
            continue
        label = " · ".join([keys[0].bytes_value.decode()] + [
            f"{k.column}={k.bytes_value.decode() or k.int64_value or k.float_value}" for k in keys[1:]])
        for kv in per_slice.metric_keys_and_values:
            if kv.value.HasField("double_value") and not kv.key.is_diff and report.of_candidate(kv.key) and (
                    kv.key.name in report.KEY_METRICS or kv.key.name == "example_count"):
                out.setdefault(kv.key.output_name, {}).setdefault(label, {})[kv.key.name] = kv.value.double_value.value
    order = {split: i for i, split in enumerate(report.SPLITS)}
    return {output: dict(sorted(slices.items(), key=lambda kv: (order.get(kv[0].split(" · ")[0], 9), kv[0])))
            for output, slices in out.items()}


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
    """Rows [slice, output, metric, value] of every slice within a split (besides the split
    itself), for the model card."""
    rows = []
    for output, slices in slice_tables(evaluation_dir).items():
        for label, metrics in slices.items():
            if " · " not in label:
                continue
            where = " x ".join(("split=" + part) if i == 0 else part for i, part in enumerate(label.split(" · ")))
            rows += [[where, output or "-", name, value] for name, value in metrics.items() if name in report.KEY_METRICS]
    return sorted(rows, key=lambda r: (r[0], r[1], r[2]))


def _bar_table(slices: Dict[str, Dict[str, float]]) -> str:
    """Slices as rows, metrics as columns, each value over a bar as long as its share of the
    column's largest magnitude; example counts as integers."""
    metrics = [m for m in ("example_count",) + report.KEY_METRICS if any(m in v for v in slices.values())]
    top = {m: max((abs(v[m]) for v in slices.values() if m in v), default=0.0) or 1.0 for m in metrics}
    head = "".join(f"<th>{_e(m)}</th>" for m in ["slice"] + metrics)
    body = []
    for label, values in slices.items():
        cells = f'<td class="l">{_e(label)}</td>'
        for m in metrics:
            if m not in values:
                cells += "<td></td>"
                continue
            value = values[m]
            shown = str(int(round(value))) if m == "example_count" else f"{value:.4f}"
            width = 100.0 * abs(value) / top[m]
            cells += f'<td class="m"><div class="bar" style="width:{width:.0f}%"></div><span class="v">{shown}</span></td>'
        body.append(f"<tr>{cells}</tr>")
    return f'<table class="slices"><tr>{head}</tr>{"".join(body)}</table>'


def _previous_section(rows: List[Dict], previous: Optional[Dict]) -> str:
    if not previous:
        return "<p>No earlier report in this output directory: nothing to compare with.</p>"
    table = []
    for row in rows:
        for split in report.SPLITS:
            before = _previous_value(previous, row, split)
            table.append([row["task"], row["metric"], split, before, row[split], _signed(_change(row[split], before))])
    return (f"<p>Previous report written {_e(previous.get('written', '?'))}.</p>"
            + _table(["task", "metric", "split", "previous run", "this run", "change"], table))


def _family_section(config: PipelineConfig, outputs: Dict[str, Dict[str, str]], family: str,
                    outcome: Optional[Dict], rows: List[Dict], previous: Optional[Dict]) -> str:
    if outcome is None:
        return f'<h3 id="family-{_e(family)}">{_e(family)}</h3><p>No evaluation.</p>'
    pushed, decision = _decision(outcome)
    parts = [f'<h3 id="family-{_e(family)}">{_e(family)}</h3><p class="{"ok" if pushed else "bad"}">{_e(decision)}</p>']
    if outcome["failures"]:
        parts.append("<p>Failed thresholds:</p><ul>" + "".join(f"<li>{_e(f)}</li>" for f in outcome["failures"])
                     + "</ul>")
    tasks = {t.name: t for t in _family_tasks(config, family)}
    evaluation = outputs.get(f"Evaluator_{family}", {}).get("evaluation")
    if evaluation:
        for output, slices in sorted(slice_tables(evaluation).items()):
            task = output or (next(iter(tasks)) if len(tasks) == 1 else "all tasks")
            parts.append(f"<h4>Task {_e(task)}: metrics per slice</h4>" + _bar_table(slices))
        diffs = report.split_diffs(evaluation)
        parts.append("<h4>Against the last blessed model (eval split: this model minus the blessed one)</h4>")
        parts.append(_table(["task", "metric", "difference"],
                            [[output or "-", name, value] for output, metrics in sorted(diffs.items())
                             for name, value in sorted(metrics.items())])
                     if diffs else "<p>No blessed model before this run: nothing to compare with.</p>")
        parts.append("<h4>Against the previous run of this output directory</h4>")
        parts.append(_previous_section([r for r in rows if r["family"] == family], previous))
        curves = report.split_arrays(evaluation, "calibration_bins")
        by_output: Dict[str, Dict] = {}
        for split, outputs_bins in curves.items():
            for output, bins in outputs_bins.items():
                by_output.setdefault(output, {})[split] = bins
        if by_output:
            parts.append('<h4 class="calibration">Calibration: observed against predicted, by bins of the '
                         'prediction</h4>')
            for output, bins in sorted(by_output.items()):
                task = tasks.get(output) or (next(iter(tasks.values())) if len(tasks) == 1 else None)
                unit = "probability" if task is not None and task.kind == T.BINARY else "label units"
                parts.append(reliability_chart(bins, f"{family} {output or 'prediction'}: calibration", unit))
    training = outcome.get("training", {})
    history = training.get("history", {})
    monitor = training.get("monitor")
    if history:
        parts.append("<h4>Training</h4>")
        parts.append(f"<p>Kept epoch {_num(training.get('best_epoch'))} of {_num(training.get('epochs_run'))} "
                     f"by {_e(monitor)} = {_num(training.get('best_value'))}.</p>")
        if monitor in history:
            parts.append(line_chart({monitor: history[monitor]}, f"{family}: {monitor} per epoch",
                                    f"{monitor} ({_unit(monitor)})"))
        losses = {k: v for k, v in history.items() if k in ("loss", "val_loss")}
        if losses:
            parts.append(line_chart(losses, f"{family}: loss per epoch", "loss (training objective)"))
    gates = training.get("gates", {})
    if gates:
        parts.append("<h4>Expert gates: mean weight per expert on the eval split</h4>")
        width = max(len(w) for w in gates.values())
        parts.append(_table(["task"] + [f"expert {i}" for i in range(width)],
                            [[task] + list(weights) for task, weights in sorted(gates.items())]))
    return "".join(parts)


def render_report(config: PipelineConfig, timings: Optional[Sequence] = None,
                  outputs: Optional[Dict[str, Dict[str, str]]] = None,
                  previous: Optional[Dict] = None) -> Tuple[str, Dict]:
    """The report's HTML and its summary (for the next run's comparison).

    Args:
      config: the run's configuration.
      timings: per component name, status and seconds (the local runner's), if known.
      outputs: {component: {output key: directory or URI}} to report on; default: the
        newest outputs under the pipeline root (report.output_dirs).
      previous: the summary an earlier report of this output directory wrote (read_summary).
    """
    config = config.resolved()
    outputs = report.output_dirs(config.pipeline_root) if outputs is None else outputs
    written = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    outcomes = {family: report.family_outcome(None, family, outputs) for family in config.families}
    diffs = {}
    for family in config.families:
        evaluation = outputs.get(f"Evaluator_{family}", {}).get("evaluation")
        diffs[family] = report.split_diffs(evaluation) if evaluation and outcomes[family] else {}
    rows = summary_rows(config, outcomes, diffs)
    parts = ["<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
             f"<title>Run report: {_e(config.dataset_name)}</title><style>{_STYLE}</style></head><body>",
             f"<h1>Run report: {_e(config.dataset_name)} ({_e(config.split)} split)</h1>",
             f'<p class="note">{_e(config.describe_dataset())}; output {_e(config.output_dir)}; written {written}.</p>',
             _summary_section(rows, outcomes, previous),
             '<h2 id="models">Families</h2>']
    if not config.families:
        parts.append("<p>No model families in this run.</p>")
    for family in config.families:
        parts.append(_family_section(config, outputs, family, outcomes[family], rows, previous))
    parts.append('<h2 id="data">Data</h2>')
    parts.append(_data_section(outputs))
    if config.spanned:
        parts.append('<h2 id="daily">Daily data</h2>')
        parts.append(daily_section(config, outputs))
    parts.append('<h2 id="run">Run</h2>')
    parts.append(_table(["", ""], [("description", config.describe_dataset()), ("data", config.data_dir),
                                   ("output", config.output_dir),
                                   ("families", ", ".join(config.families) or "none"), ("seed", config.seed),
                                   ("written", written)]))
    if timings:
        parts.append("<h3>Components (seconds of wall time)</h3>")
        parts.append(_table(["component", "status", "seconds"],
                            [(t.name, t.status, f"{t.seconds:.1f}") for t in timings]
                            + [("total", "", f"{sum(t.seconds for t in timings):.1f}")]))
    parts.append(f"<p>TFMA results in a notebook: <code>tfma.load_eval_result(path)</code> with the "
                 f"Evaluator's evaluation directory; training summaries: "
                 f"<code>{_e(protocol.TRAINING_SUMMARY)}</code> beside each model run.</p>")
    parts.append("</body></html>")
    summary = {"written": written, "rows": [{k: r[k] for k in ("family", "task", "metric", "eval", "test")}
                                            for r in rows]}
    return "\n".join(parts), summary


def render(config: PipelineConfig, timings: Optional[Sequence] = None,
           outputs: Optional[Dict[str, Dict[str, str]]] = None, previous: Optional[Dict] = None) -> str:
    """The report's HTML (render_report without the summary)."""
    return render_report(config, timings, outputs, previous)[0]


def write(config: PipelineConfig, timings: Optional[Sequence] = None,
          outputs: Optional[Dict[str, Dict[str, str]]] = None) -> str:
    """Writes `<output_dir>/report.html`, compared with the previous report of that directory,
    and `<output_dir>/report_summary.json` for the next one (temporary files, then rename);
    returns the report's path."""
    text, summary = render_report(config, timings, outputs, read_summary(config.output_dir))
    path = atomic_write(os.path.join(config.output_dir, REPORT_NAME), text)
    atomic_write(os.path.join(config.output_dir, SUMMARY_NAME), json.dumps(summary, indent=2) + "\n")
    return path
