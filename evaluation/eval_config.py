"""The Evaluator's config, derived from a family's tasks and capabilities.

One Evaluator pass reads the eval and test splits together and slices on the raw
`split` feature: the gates look at the eval split (overall and per user activity /
item popularity slices are reported for both), so repeated runs never select a model
on the test split, which is only reported. There is deliberately no overall slice:
it would mix the two splits.

- Pointwise tasks (interaction view): `serving_default`, one `TaskMetrics` per task
  output; the task's condition is the example weight (rows where it is 0 are left out).
- Retrieval (user view): `rank_queries`, one `TopKMetrics` (protocol K), or for the
  sequential families `score_queries`, one `NextItemMetrics` (protocol S, full and
  sampled); the gate is the (full) NDCG@K's lift over the training-popularity ranking
  on the same queries, plus no drop in NDCG@K against the last blessed model.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Dict, List, Mapping, Optional, Sequence

import tensorflow_model_analysis as tfma
from google.protobuf import wrappers_pb2

from contract import datasets as D
from contract import description as desc
from contract import features as F
from contract import protocol
from contract import tasks as T
from contract import run
from evaluation.definitions import NEXT_ITEM_NDCG_KS, multi_auc_name

MODULE = "evaluation.tfma_metrics"
GATE_SPLIT = "eval"
REPORT_SPLIT = "test"


def split_slice(split: str = GATE_SPLIT) -> tfma.SlicingSpec:
    return tfma.SlicingSpec(feature_values={F.SPLIT: split})


def slicing_specs(view: str) -> List[tfma.SlicingSpec]:
    """Per split, and per split x user activity (x item popularity on the interaction view)."""
    if view == F.USER_VIEW:
        crosses = [F.USER_ACTIVITY_LEVEL]
    else:
        crosses = [F.USER_ACTIVITY, F.ITEM_POPULARITY_LEVEL]
    return [tfma.SlicingSpec(feature_keys=[F.SPLIT])] + [
        tfma.SlicingSpec(feature_keys=[F.SPLIT, key]) for key in crosses]


def _threshold(gate: T.Gate) -> tfma.MetricThreshold:
    if gate.higher_is_better:
        value = tfma.GenericValueThreshold(lower_bound={"value": gate.threshold})
        change = tfma.GenericChangeThreshold(direction=tfma.MetricDirection.HIGHER_IS_BETTER,
                                             absolute={"value": -gate.max_worsening})
    else:
        value = tfma.GenericValueThreshold(upper_bound={"value": gate.threshold})
        change = tfma.GenericChangeThreshold(direction=tfma.MetricDirection.LOWER_IS_BETTER,
                                             absolute={"value": gate.max_worsening})
    return tfma.MetricThreshold(value_threshold=value, change_threshold=change)


def _gate(spec: tfma.MetricsSpec, gate: Optional[T.Gate], change_metric: Optional[str] = None) -> None:
    """Puts the gate on the eval-split slice; the change threshold may watch another metric."""
    if gate is None:
        return
    threshold = _threshold(gate)
    value_only = tfma.MetricThreshold(value_threshold=threshold.value_threshold)
    change_only = tfma.MetricThreshold(change_threshold=threshold.change_threshold)
    targets = [(gate.metric, value_only), (change_metric or gate.change_metric or gate.metric, change_only)]
    for metric, part in targets:
        spec.per_slice_thresholds[metric].thresholds.append(
            tfma.PerSliceMetricThreshold(slicing_specs=[split_slice()], threshold=part))


def metric_config(class_name: str, **config) -> tfma.MetricConfig:
    return tfma.MetricConfig(class_name=class_name, module=MODULE,
                             config=json.dumps(config, sort_keys=True) if config else "")


PROTOCOL_K = "K"  # top-K lists against held-out item sets (rank_queries)
PROTOCOL_S = "S"  # one next item against all items and 100 sampled ones (score_queries)


def rating_settings(dataset: Optional[D.DatasetRef]) -> Dict[str, object]:
    """What a regression task on the rating reports with, from the dataset's description:
    `value_range`, its declared rating scale [rating_min, rating_max] (the calibration
    bins), and `auc_threshold`, the x of its first binary label defined as `rating >= x`
    (the AUC of the predicted rating against it); each only when declared."""
    if dataset is None:
        return {}
    d = D.dataset_spec(dataset).description
    out: Dict[str, object] = {}
    if d.rating_min is not None and d.rating_max is not None and d.rating_max > d.rating_min:
        out["value_range"] = [float(d.rating_min), float(d.rating_max)]
    for label in d.labels:
        c = label.condition
        if label.source == desc.EXPR and c is not None and c.field == desc.RATING and c.op == ">=":
            out["auc_threshold"] = float(c.value)
            break
    return out


def eval_config(tasks: Sequence[T.TaskSpec], top_k: int = run.TOP_K,
                dataset: Optional[D.DatasetRef] = None, pair: Sequence[str] = (),
                pair_gate: Optional[T.Gate] = None, protocol_name: str = PROTOCOL_K,
                history_peers: Mapping[str, str] = None, peer_window: int = 0,
                view: str = F.INTERACTION_VIEW) -> tfma.EvalConfig:
    """TFMA config for a model trained on `tasks` (all pointwise, or one retrieval task).

    Args:
      tasks: the model's tasks, gates included (thresholds already from the pipeline config).
      top_k: K of the top-K metrics.
      dataset: the dataset's description (a mapping as `DatasetSpec.to_dict()` gives, a
        name, a file or a spec): a regression task on its rating label reports its
        calibration over the declared rating scale and the AUC of its prediction against
        the first `rating >= x` label (`rating_settings`); None: neither.
      pair: two binary task names (A, B): also report the Multi-AUC of each over their
        label pairs (`tfma_metrics.MultiAUC`).
      pair_gate: with `pair`, the gate each of the two Multi-AUCs must pass (its `metric`
        is ignored: the gate is put on `multi_auc_<A>` and `multi_auc_<B>`).
      protocol_name: a retrieval task's protocol: PROTOCOL_K, or PROTOCOL_S (sequential
        families: full and sampled next-item metrics; the gate reads the full NDCG@K
        and its lift over popularity, the same metric names as protocol K).
      history_peers: task name -> behavior, for binary tasks on user-view examples (the
        dataset's next-behavior tasks): the task also reports its history peer's AUC and
        `auc_lift` (`TaskMetrics`), which a task gated on `auc_lift` needs.
      peer_window: the history peer reads the most recent `peer_window` interactions (the
        most a model reads: the pipeline's max_history); 0: the whole history.
      view: the examples pointwise tasks are evaluated on (F.INTERACTION_VIEW, or
        F.USER_VIEW for a model scoring histories), which decides the slices.
    """
    history_peers = dict(history_peers or {})
    options = tfma.Options(include_default_metrics=wrappers_pb2.BoolValue(value=False))
    retrieval = [t for t in tasks if t.kind == T.RETRIEVAL]
    if protocol_name not in (PROTOCOL_K, PROTOCOL_S):
        raise ValueError(f"protocol_name must be {PROTOCOL_K!r} or {PROTOCOL_S!r}, got {protocol_name!r}")
    if retrieval:
        if len(tasks) != 1:
            raise ValueError(f"a retrieval model is evaluated on its one retrieval task, got {[t.name for t in tasks]}")
        metric, signature = (("TopKMetrics", protocol.RANK_QUERIES) if protocol_name == PROTOCOL_K
                             else ("NextItemMetrics", protocol.SCORE_QUERIES))
        if protocol_name == PROTOCOL_S:
            top_k = NEXT_ITEM_NDCG_KS[0]  # protocol S's NDCG is at its own K whatever the K of recommend
        spec = tfma.MetricsSpec(metrics=[metric_config(metric, top_k=top_k)],
                                example_weights=tfma.ExampleWeightOptions(unweighted=True))
        gate = retrieval[0].gate.at_k(top_k) if retrieval[0].gate is not None else None
        _gate(spec, gate, change_metric=T.ndcg_at(top_k) if gate is not None else None)
        return tfma.EvalConfig(
            model_specs=[tfma.ModelSpec(signature_name=signature)],
            slicing_specs=slicing_specs(F.USER_VIEW), metrics_specs=[spec], options=options)

    single = len(tasks) == 1
    model_spec = tfma.ModelSpec(signature_name=protocol.SERVING_DEFAULT,
                                preprocessing_function_names=[protocol.TRANSFORM_FEATURES])
    if single:
        model_spec.label_key = tasks[0].label
        if tasks[0].condition:
            model_spec.example_weight_key = tasks[0].condition
    else:
        for task in tasks:
            model_spec.label_keys[task.name] = task.label
            if task.condition:
                model_spec.example_weight_keys[task.name] = task.condition
    specs = []
    rating = D.dataset_spec(dataset).description.rating_label if dataset is not None else ""
    for task in tasks:
        config: Dict = {"kind": task.kind}
        if task.kind == T.REGRESSION and rating and task.label == rating:
            config.update(rating_settings(dataset))
        if task.name in history_peers:
            config["peer_behavior"] = history_peers[task.name]
            if peer_window > 0:
                config["peer_window"] = int(peer_window)
        elif task.gate is not None and T.AUC_LIFT in (task.gate.metric, task.gate.change_metric):
            raise ValueError(f"task {task.name!r} is gated on {T.AUC_LIFT}, which needs its history peer's "
                             f"behavior (history_peers)")
        spec = tfma.MetricsSpec(metrics=[metric_config("TaskMetrics", **config)],
                                output_names=[] if single else [task.name],
                                example_weights=tfma.ExampleWeightOptions(unweighted=True))
        _gate(spec, task.gate)
        specs.append(spec)
    binary = [t.name for t in tasks if t.kind == T.BINARY]
    if len(binary) > 1:  # multi-AUC: reported, not gated (every task has its own gate)
        specs.append(tfma.MetricsSpec(metrics=[metric_config("MeanTaskAUC")], output_names=binary,
                                      example_weights=tfma.ExampleWeightOptions(unweighted=True)))
    if pair:
        specs.append(multi_auc_spec(tasks, pair, pair_gate))
    return tfma.EvalConfig(model_specs=[model_spec], slicing_specs=slicing_specs(view),
                           metrics_specs=specs, options=options)


def multi_auc_spec(tasks: Sequence[T.TaskSpec], pair: Sequence[str], gate: Optional[T.Gate] = None) -> tfma.MetricsSpec:
    """The MetricsSpec of a task pair's Multi-AUCs, each gated by `gate` when given."""
    binary = {t.name for t in tasks if t.kind == T.BINARY}
    if len(pair) != 2 or pair[0] == pair[1] or not set(pair) <= binary:
        raise ValueError(f"a Multi-AUC pair is two different binary tasks of the model ({sorted(binary)}), "
                         f"got {list(pair)}")
    spec = tfma.MetricsSpec(metrics=[metric_config("MultiAUC", pair=list(pair))], output_names=list(pair),
                            example_weights=tfma.ExampleWeightOptions(unweighted=True))
    for task in pair:
        if gate is not None:
            _gate(spec, dataclasses.replace(gate, metric=multi_auc_name(task)))
    return spec


def with_thresholds(tasks: Sequence[T.TaskSpec], thresholds: Mapping[str, float],
                    max_worsening: Mapping[str, float]) -> List[T.TaskSpec]:
    """Tasks whose gate threshold / tolerated worsening is overridden by name (pipeline config)."""
    out = []
    for task in tasks:
        changes = {}
        if task.name in thresholds:
            changes["threshold"] = float(thresholds[task.name])
        if task.name in max_worsening:
            changes["max_worsening"] = float(max_worsening[task.name])
        out.append(task.with_gate(**changes) if changes and task.gate else task)
    return out
