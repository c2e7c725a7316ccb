"""A model card next to each pushed version: `<version>/assets.extra/model_card.md`.

Written after a run from what the run measured (the Evaluator's metrics per split, task
and slice, the gate's verdict, the Trainer's summary), in the spirit of Model Card
Toolkit's sections (model details, intended use, data, metrics by slice, caveats) as a
plain Markdown template: TF Serving ignores the file, people read it beside the model.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

from common.io_utils import atomic_write
from contract import features as F
from contract import protocol
from models.base import EXPLAIN, RETRIEVE, SCORE, SIMILAR, TEACH
from models.registry import get_family
from pipeline import report
from pipeline.configs import PipelineConfig

CARD_NAME = "model_card.md"

_USE = {
    SCORE: "scores given (user, item) examples through `serving_default`, one output per task",
    RETRIEVE: "recommends the top K of the catalogue for a history of items and behaviors (`recommend`)",
    SIMILAR: "finds items with close learned vectors (`similar_items`)",
    TEACH: "gives a student's Trainer soft labels of transformed examples (`soft_labels`)",
    EXPLAIN: "generates an explanation (a text of the user on the item, greedy) with each task's output for the "
             "inputs `serving_default` takes (`explain`)",
}

_CAVEATS = [
    "Items absent from the training split cannot be recommended or scored with a learned vector; "
    "unknown ids in a history are ignored.",
    "Metrics are offline, on one split of logged data; they say nothing about position bias or "
    "feedback loops once the model serves.",
    "The gate read the eval split; the test split is reported only.",
]


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _metric_lines(metrics: Dict[str, Dict[str, Dict[str, float]]], top_k: int) -> List[str]:
    lines = ["| split | task | " + " | ".join(("metric", "value")) + " |", "|---|---|---|---:|"]
    for split in report.SPLITS:
        for output, values in sorted(metrics.get(split, {}).items()):
            for name in report.key_metrics(top_k):
                if name in values:
                    lines.append(f"| {split} | {output or '-'} | {name} | {values[name]:.4f} |")
    return lines


def daily_lines(outputs: Dict[str, Dict[str, str]], training: Dict) -> List[str]:
    """A model trained on spans: its window, its warm start and the drift of the newest span
    (the card's "Daily data" section; [] when the run had no window)."""
    from components import drift, window

    w = window.read_window(outputs.get("SpanWindow", {}).get("window_examples", ""))
    if not w:
        return []
    warm = training.get("warm_start")
    lines = ["", "## Daily data", "",
             f"- Trained on spans {', '.join(map(str, w['train']))}; gated on span {w['eval']}, reported on span "
             f"{w['test']} (new this run: {', '.join(map(str, w['new_spans']))}).",
             f"- Warm start: from {warm['base_model']}, {warm['copied']} weights copied, id tables "
             + ", ".join(f"{t['vocabulary']} {t['known_ids']} known / {t['new_ids']} new"
                         for t in warm.get("id_tables", {}).values()) + "." if warm
             else "- Trained from scratch (no blessed model of this family yet, or warm start off)."]
    measured = drift.read_drift(outputs.get("DriftGate", {}).get("accepted", ""))
    if measured:
        lines += ["", "| feature | drift measure | value | threshold |", "|---|---|---:|---:|"]
        lines += [f"| {r['feature']} | {r['measure']} | {r['value']} | {r['threshold']} |" for r in measured["drift"]]
    return lines


def render(config: PipelineConfig, family: str, outcome: Dict, slices: Optional[List[List]] = None,
           daily: Sequence[str] = ()) -> str:
    config = config.resolved()
    spec = get_family(family)
    dataset = config.spec
    training = outcome.get("training", {})
    push = outcome.get("push", {})
    tasks = training.get("tasks") or [t.name for t in spec.task_specs(dataset)]
    lines = [
        f"# Model card: {family} (version {push.get('version', 'not pushed')})",
        "",
        "## Model details",
        f"- Family: `{family}`: {spec.summary}.",
        f"- Tasks: {', '.join(tasks)}.",
        f"- Hyperparameters: `{training.get('hparams', {})}`; seed {config.seed}.",
        f"- Trained until early stopping: kept epoch {training.get('best_epoch')} of "
        f"{training.get('epochs_run')} by {training.get('monitor')} = {_fmt(training.get('best_value'))}.",
        "",
        "## Intended use",
    ]
    uses = dict(_USE)
    if spec.model.score_view == F.USER_VIEW:
        uses[SCORE] = ("scores a user's history (item ids and behaviors, as `recommend` takes them) through "
                       "`serving_default`: each task's probability after the history's last item")
    lines += [f"- It {uses[c]}." for c in sorted(spec.capabilities)]
    lines += [
        "- Out of scope: users or items of another catalogue; decisions about people.",
        "",
        "## Data",
        f"- Dataset `{config.dataset_name}`, described by `{config.description_source}`, "
        f"data from `{config.data_dir}`, split `{config.split}` "
        f"(train / eval / test), sampled negatives per positive: {config.negatives_per_positive}.",
        "- Vocabularies and item statistics come from the training split only.",
        "",
        "## Metrics (eval gates the push; test is reported)",
        "",
    ]
    lines += _metric_lines(outcome["metrics"], config.top_k)
    if slices:
        lines += ["", "## Metrics by slice", "", "| slice | task | metric | value |", "|---|---|---|---:|"]
        lines += [f"| {where} | {task} | {name} | {value:.4f} |" for where, task, name, value in slices]
    lines += ["", "## Gate", ""]
    lines += ([f"- Failed: {f}" for f in outcome["failures"]] if outcome["failures"]
              else ["- Every threshold passed (value on the eval split, change against the last blessed model)."])
    gates = training.get("gates", {})
    if gates:
        lines += ["", "## Expert gates (mean weight per expert on the eval split)", ""]
        lines += [f"- {task}: " + " ".join(f"{w:.2f}" for w in weights) for task, weights in sorted(gates.items())]
    lines += list(daily)
    lines += ["", "## Caveats", ""] + [f"- {c}" for c in _CAVEATS] + [""]
    return "\n".join(lines)


def write_cards(config: PipelineConfig, outputs: Optional[Dict[str, Dict[str, str]]] = None) -> List[str]:
    """Writes a card into each pushed version of this run's families; returns the paths.

    Args:
      config: the run's configuration.
      outputs: {component: {output key: directory or URI}} of the run; default: the newest
        outputs under the pipeline root (report.output_dirs).
    """
    import tensorflow as tf

    from pipeline.html_report import slice_metrics

    outputs = report.output_dirs(config.pipeline_root) if outputs is None else outputs
    written = []
    for family in config.families:
        outcome = report.family_outcome(None, family, outputs)
        push = (outcome or {}).get("push", {})
        if not push.get("pushed") or not tf.io.gfile.isdir(push.get("path", "")):
            continue
        evaluation = outputs.get(f"Evaluator_{family}", {}).get("evaluation")
        slices = slice_metrics(evaluation) if evaluation else None
        path = os.path.join(push["path"], protocol.ASSETS_EXTRA, CARD_NAME)
        daily = daily_lines(outputs, outcome.get("training", {})) if config.spanned else []
        written.append(atomic_write(path, render(config, family, outcome, slices, daily)))
    return written
