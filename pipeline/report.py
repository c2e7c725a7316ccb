"""What a finished run produced: output directories, and per family the gate's verdict.

Read after a run from the newest output of each component under the pipeline root, or
from a run's own artifacts (the pipeline's report step, pipeline/report_step.py), local
or URIs: each Evaluator's overall metrics and validation result (which threshold failed,
with the value), and each Pusher's push result.
"""

from __future__ import annotations

import glob
import json
import os
from typing import Dict, List, Optional, Tuple

import numpy as np
from google.protobuf import text_format

from contract import protocol
from contract import run
from contract import tasks as T

def key_metrics(top_k: int) -> Tuple[str, ...]:
    """The metrics a run's summary shows: the top-K ones at the run's K, and protocol S's
    at its own K (contract.tasks.NEXT_ITEM_NDCG_K)."""
    ranked = []
    for k in dict.fromkeys((top_k, T.NEXT_ITEM_NDCG_K)):
        ranked += [f"hit_rate@{k}", f"recall@{k}", T.ndcg_at(k), f"mrr@{k}", f"popularity_{T.ndcg_at(k)}",
                   T.ndcg_lift_at(k)]
    s = T.NEXT_ITEM_NDCG_K
    return tuple(dict.fromkeys(("rmse", "mae", "auc", "pr_auc", "log_loss", "calibration", "peer_auc", "auc_lift",
                                *ranked, f"sampled_hit_rate@{s}", f"sampled_{T.ndcg_at(s)}", "mean_auc")))


KEY_METRICS = key_metrics(run.TOP_K)  # at the default K (readers without a run's config)
SPLITS = ("eval", "test")


def output_dirs(pipeline_root: str) -> Dict[str, Dict[str, str]]:
    """{component: {output key: newest execution directory}} under the pipeline root."""
    found: Dict[str, Dict[str, str]] = {}
    for component_dir in sorted(glob.glob(os.path.join(pipeline_root, "*"))):
        if not os.path.isdir(component_dir) or os.path.basename(component_dir).startswith("."):
            continue
        for output_dir in sorted(glob.glob(os.path.join(component_dir, "*"))):
            runs = [d for d in glob.glob(os.path.join(output_dir, "*")) if os.path.basename(d).isdigit()]
            if runs:
                newest = max(runs, key=lambda d: int(os.path.basename(d)))
                found.setdefault(os.path.basename(component_dir), {})[os.path.basename(output_dir)] = newest
    return found


def of_candidate(key) -> bool:
    """Whether a TFMA MetricKey is the evaluated model's: an Evaluator with a baseline (the
    last blessed model) writes every metric twice, once per model name."""
    import tensorflow_model_analysis as tfma

    return key.model_name != tfma.BASELINE_KEY


def split_metrics(evaluation_dir: str) -> Dict[str, Dict[str, Dict[str, float]]]:
    """{split: {output name ('' for a single output): {metric: value}}} of the split slices,
    the candidate's (not the baseline's)."""
    import tensorflow_model_analysis as tfma

    out: Dict[str, Dict[str, Dict[str, float]]] = {}
    for slice_metrics in tfma.load_metrics(evaluation_dir):
        keys = slice_metrics.slice_key.single_slice_keys
        if len(keys) != 1 or keys[0].column != "split":
            continue
        split = keys[0].bytes_value.decode()
        for kv in slice_metrics.metric_keys_and_values:
            if kv.value.HasField("double_value") and not kv.key.is_diff and of_candidate(kv.key):
                out.setdefault(split, {}).setdefault(kv.key.output_name, {})[kv.key.name] = kv.value.double_value.value
    return out


def _array(value) -> np.ndarray:
    """A TFMA ArrayValue as a numpy array of its shape."""
    array = value.array_value
    data = array.float64_values or array.float32_values or array.int64_values or array.int32_values
    return np.asarray(list(data), dtype=np.float64).reshape(tuple(array.shape))


def split_arrays(evaluation_dir: str, name: str) -> Dict[str, Dict[str, np.ndarray]]:
    """{split: {output name: array}} of the array metric `name` (e.g. calibration_bins) on the
    split slices."""
    import tensorflow_model_analysis as tfma

    out: Dict[str, Dict[str, np.ndarray]] = {}
    for slice_metrics in tfma.load_metrics(evaluation_dir):
        keys = slice_metrics.slice_key.single_slice_keys
        if len(keys) != 1 or keys[0].column != "split":
            continue
        for kv in slice_metrics.metric_keys_and_values:
            if kv.key.name == name and not kv.key.is_diff and of_candidate(kv.key) and kv.value.HasField("array_value"):
                out.setdefault(keys[0].bytes_value.decode(), {})[kv.key.output_name] = _array(kv.value)
    return out


def split_diffs(evaluation_dir: str, split: str = "eval") -> Dict[str, Dict[str, float]]:
    """{output name: {metric: candidate - last blessed}} on one split ({} on a first run)."""
    import tensorflow_model_analysis as tfma

    out: Dict[str, Dict[str, float]] = {}
    for slice_metrics in tfma.load_metrics(evaluation_dir):
        keys = slice_metrics.slice_key.single_slice_keys
        if len(keys) != 1 or keys[0].column != "split" or keys[0].bytes_value.decode() != split:
            continue
        for kv in slice_metrics.metric_keys_and_values:
            if kv.key.is_diff and kv.value.HasField("double_value") and kv.key.name in KEY_METRICS:
                out.setdefault(kv.key.output_name, {})[kv.key.name] = kv.value.double_value.value
    return out


def _failures(evaluation_dir: str) -> List[str]:
    import tensorflow_model_analysis as tfma

    result = tfma.load_validation_result(evaluation_dir)
    lines = []
    for per_slice in result.metric_validations_per_slice:
        where = ", ".join(
            f"{key.column}={key.bytes_value.decode() or key.int64_value or key.float_value}"
            for key in per_slice.slice_key.single_slice_keys
        ) or "overall"
        for failure in per_slice.failures:
            value = failure.metric_value.double_value.value
            threshold = failure.metric_threshold
            if failure.metric_key.is_diff:
                kind, bound = "change vs baseline", threshold.change_threshold
            else:
                kind, bound = "value", threshold.value_threshold
            bound_text = text_format.MessageToString(bound, as_one_line=True)
            lines.append(f"{failure.metric_key.name} {kind} {value:.4f} fails {{{bound_text}}} on {where}")
    if not result.validation_ok and not lines:
        lines.append(str(result.missing_thresholds or result).strip())
    return lines


def _read_json(path: str) -> Optional[Dict]:
    """The JSON file at `path` (local or a URI), or None when there is none."""
    import tensorflow as tf

    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def family_outcome(pipeline_root: Optional[str], family: str,
                   outputs: Optional[Dict[str, Dict[str, str]]] = None) -> Optional[Dict]:
    """Metrics, gate failures and push result of one family's newest run.

    Args:
      pipeline_root: read the newest outputs under it (output_dirs), unless `outputs` is given.
      family: the model family.
      outputs: {component: {output key: directory or URI}} to read instead, as output_dirs
        returns them (a scheduled run's own artifacts).
    """
    outputs = output_dirs(pipeline_root) if outputs is None else outputs
    evaluation = outputs.get(f"Evaluator_{family}", {}).get("evaluation")
    pushed = outputs.get(f"Pusher_{family}", {}).get("pushed_model")
    if evaluation is None:
        return None
    outcome = {"family": family, "metrics": split_metrics(evaluation), "failures": _failures(evaluation)}
    run_dir = outputs.get(f"Trainer_{family}", {}).get("model_run")
    training = _read_json(os.path.join(run_dir, protocol.TRAINING_SUMMARY)) if run_dir else None
    if training is not None:
        outcome["training"] = training
    push = _read_json(os.path.join(pushed, protocol.PUSH_RESULT)) if pushed else None
    if push is not None:
        outcome["push"] = push
    return outcome


def format_outcome(outcome: Dict, top_k: int = run.TOP_K) -> List[str]:
    """The lines the runner prints for one family: verdict, key metrics at the run's K
    (`top_k`), training, gates and failed thresholds."""
    push = outcome.get("push", {})
    if push.get("pushed"):
        verdict = f"blessed, pushed version {push['version']} -> {push['path']}"
    else:
        verdict = "NOT blessed, not pushed"
    lines = [f"  {outcome['family']:<14} {verdict}"]
    for split in SPLITS:
        for output, metrics in sorted(outcome["metrics"].get(split, {}).items()):
            shown = "  ".join(f"{name} {metrics[name]:.4f}" for name in key_metrics(top_k) if name in metrics)
            if not shown:
                continue
            label = f"{split}{' ' + output if output else ''}:"
            lines.append(f"  {'':<14} {label:<12} {shown}")
    training = outcome.get("training", {})
    if training.get("best_epoch") is not None and training.get("monitor"):
        lines.append(f"  {'':<14} {'trained:':<12} best epoch {training['best_epoch']} of "
                     f"{training.get('epochs_run', '?')}, {training['monitor']} {training['best_value']:.4f}")
    for task, weights in sorted(training.get("gates", {}).items()):  # a collapsed gate shows here
        lines.append(f"  {'':<14} {'gates ' + task + ':':<12} " + " ".join(f"{w:.2f}" for w in weights))
    lines += [f"  {'':<14} failed threshold: {failure}" for failure in outcome["failures"]]
    return lines
