"""Custom TFMA metrics: every metric of one task in one combiner.

TFMA calls a combiner once per example per slice, so its cost grows with the number
of combiners (where an Evaluator's time goes: bench/profile_evaluator.py). Here a
task output has one combiner that keeps the (prediction, label) pairs of its slice and
computes all of the task's metrics at the end with the numpy definitions of
`evaluation.definitions` (which the benchmarks call too), so results do not depend on
how Beam splits and merges bundles.

- `TaskMetrics`: a REGRESSION or BINARY task output. The task's condition arrives as
  the example weight (ModelSpec example_weight_keys): rows with weight 0 are left out.
  A next-behavior task (user-view examples) also gets its history peer's AUC and the
  model's `auc_lift` over it, which gates the task.
- `TopKMetrics`: the `rank_queries` outputs of a retrieving model on user-view examples:
  HR, Recall, NDCG and MRR at K, the same for the training-popularity ranking, and
  `ndcg@K_lift` (the model's NDCG minus popularity's), which gates `recommend`.
- `NextItemMetrics`: protocol S from the `score_queries` outputs (one next item per
  example): full and sampled HR / NDCG / MRR, and the lift of full NDCG@10 over the
  training-popularity ranking, which gates the sequential families.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import apache_beam as beam
import numpy as np
import tensorflow_model_analysis as tfma

from contract import features as F
from contract import protocol

# The metrics' keys carry example_weighted=None: that is the key a MetricsSpec's
# per-metric-name thresholds (which the gates use) are matched against.
from contract import tasks as T
from evaluation import definitions as d

POPULARITY_PREFIX = "popularity_"
LIFT_SUFFIX = "_lift"



def _select(value: Any, model_name: str, output_name: str, optional: bool = False) -> Any:
    """One model's, one output's value from possibly per-model and per-output dicts (with a
    baseline model, TFMA keys every value by model name first). `optional`: None when the
    output is absent (example weights exist only for tasks with a condition)."""
    if isinstance(value, dict) and model_name and model_name in value:
        value = value[model_name]
    if isinstance(value, dict):
        if output_name in value:
            return value[output_name]
        if len(value) == 1 and not output_name:
            return next(iter(value.values()))
        if optional:
            return None
        raise ValueError(f"no output {output_name!r} among {sorted(value)}")
    return value


def _flat(value: Any) -> np.ndarray:
    return np.asarray(value, dtype=np.float64).reshape(-1)


class _PairsAccumulator:
    __slots__ = ("predictions", "labels", "peers")

    def __init__(self):
        self.predictions: List[np.ndarray] = []
        self.labels: List[np.ndarray] = []
        self.peers: List[np.ndarray] = []  # the history peer's scores, with a peer behavior


class _TaskCombiner(beam.CombineFn):
    """Collects (prediction, label) of one task output where its weight is positive, and
    with `peer_behavior` the history peer's score of the same example."""

    def __init__(self, keys: Dict[str, tfma.metrics.MetricKey], model_name: str, output_name: str, kind: str,
                 auc_threshold: Optional[float], value_range: Optional[Sequence[float]] = None,
                 peer_behavior: Optional[str] = None, peer_window: int = 0):
        self._keys = keys
        self._model_name = model_name
        self._output_name = output_name
        self._kind = kind
        self._auc_threshold = auc_threshold
        self._value_range = tuple(value_range) if value_range else None
        self._peer_behavior = peer_behavior
        self._peer_window = peer_window

    def create_accumulator(self) -> _PairsAccumulator:
        return _PairsAccumulator()

    def add_input(self, accumulator: _PairsAccumulator, element) -> _PairsAccumulator:
        prediction = _flat(_select(element.prediction, self._model_name, self._output_name))
        label = _flat(_select(element.label, self._model_name, self._output_name))
        if element.example_weight is not None:
            weight = _select(element.example_weight, self._model_name, self._output_name, optional=True)
            weight = None if weight is None else _flat(weight)
            if weight is not None and weight.size == prediction.size:
                keep = weight > 0
                prediction, label = prediction[keep], label[keep]
        if prediction.size and self._peer_behavior is not None:
            if prediction.size != 1:
                raise ValueError(f"the history peer scores one example at a time, got {prediction.size} predictions")
            history = element.features.get(F.HISTORY_BEHAVIORS) if element.features else None
            if history is None:
                raise ValueError(f"the history peer of {self._output_name or 'the task'} needs the raw feature "
                                 f"{F.HISTORY_BEHAVIORS!r} (user-view examples)")
            accumulator.peers.append(np.array([d.history_share(history, self._peer_behavior, self._peer_window)]))
        if prediction.size:
            accumulator.predictions.append(prediction)
            accumulator.labels.append(label)
        return accumulator

    def merge_accumulators(self, accumulators) -> _PairsAccumulator:
        merged = _PairsAccumulator()
        for acc in accumulators:
            merged.predictions.extend(acc.predictions)
            merged.labels.extend(acc.labels)
            merged.peers.extend(acc.peers)
        return merged

    def compact(self, accumulator: _PairsAccumulator) -> _PairsAccumulator:
        if len(accumulator.predictions) > 1:
            accumulator.predictions = [np.concatenate(accumulator.predictions)]
            accumulator.labels = [np.concatenate(accumulator.labels)]
        if len(accumulator.peers) > 1:
            accumulator.peers = [np.concatenate(accumulator.peers)]
        return accumulator

    def extract_output(self, accumulator: _PairsAccumulator) -> Dict[tfma.metrics.MetricKey, float]:
        p = np.concatenate(accumulator.predictions) if accumulator.predictions else np.zeros(0)
        y = np.concatenate(accumulator.labels) if accumulator.labels else np.zeros(0)
        if self._kind == T.REGRESSION:
            values = d.regression_task_metrics(p, y, self._auc_threshold) if p.size else {}
            low, high = self._value_range or _label_range(y)
        else:
            values = d.binary_task_metrics(p, y) if p.size else {}
            low, high = 0.0, 1.0
        out = {key: float(values.get(name, float("nan"))) for name, key in self._keys.items()
               if name != d.CALIBRATION_BINS}
        if d.CALIBRATION_BINS in self._keys:  # an array metric: TFMA stores it as an ArrayValue
            out[self._keys[d.CALIBRATION_BINS]] = d.calibration_bins(p, y, low, high)
        if self._peer_behavior is not None:
            peer = np.concatenate(accumulator.peers) if accumulator.peers else np.zeros(0)
            peer_auc = d.binary_auc(peer, y > 0.5) if peer.size else float("nan")
            out[self._keys[PEER_AUC]] = float(peer_auc)
            out[self._keys[T.AUC_LIFT]] = float(values.get(T.AUC, float("nan")) - peer_auc)
        return out


PEER_AUC = "peer_auc"  # the history peer's AUC on the task's examples


def _label_range(labels: np.ndarray) -> Sequence[float]:
    """A regression output's calibration range without a declared one: its labels' range."""
    if not labels.size or labels.min() == labels.max():
        center = float(labels[0]) if labels.size else 0.0
        return center - 0.5, center + 0.5
    return float(labels.min()), float(labels.max())


def task_metric_names(kind: str, auc_threshold: Optional[float] = None, peer: bool = False) -> List[str]:
    """The metric names of one task output; `peer`: with the history peer's AUC and the lift over it."""
    if kind == T.REGRESSION:
        return ([d.RMSE_NAME, d.MAE_NAME, "calibration", d.CALIBRATION_BINS, "examples"]
                + (["auc"] if auc_threshold is not None else []))
    return (["auc", "pr_auc", "log_loss", "calibration", d.CALIBRATION_BINS, "positive_rate", "examples"]
            + ([PEER_AUC, T.AUC_LIFT] if peer else []))


def _task_computations(kind: str = T.BINARY, auc_threshold: Optional[float] = None,
                       value_range: Optional[Sequence[float]] = None,
                       peer_behavior: Optional[str] = None, peer_window: int = 0, name: str = "task",
                       eval_config=None, model_names=None, output_names=None, example_weighted: bool = False,
                       query_key: str = "") -> tfma.metrics.MetricComputations:
    if peer_behavior is not None and kind != T.BINARY:
        raise ValueError(f"a history peer is a binary task's, got a {kind} task")
    # The peer reads the raw history behaviors; the default inputs come along.
    preprocessors = [tfma.metrics.FeaturePreprocessor([F.HISTORY_BEHAVIORS])] if peer_behavior is not None else None
    computations = []
    for model_name in model_names or [""]:
        for output_name in output_names or [""]:
            keys = {
                metric: tfma.metrics.MetricKey(name=metric, model_name=model_name, output_name=output_name,
                                               example_weighted=None)
                for metric in task_metric_names(kind, auc_threshold, peer=peer_behavior is not None)
            }
            computations.append(tfma.metrics.MetricComputation(
                keys=list(keys.values()),
                preprocessors=preprocessors,
                combiner=_TaskCombiner(keys, model_name, output_name, kind, auc_threshold, value_range,
                                       peer_behavior, peer_window),
            ))
    return computations


class TaskMetrics(tfma.metrics.Metric):
    """All metrics of one REGRESSION or BINARY task output (see module docstring).

    Regression: `rmse`, `mae`, `calibration` (mean prediction / mean label), `calibration_bins`
    (the reliability diagram over `value_range`, the rating scale of the dataset's description,
    or without one the labels' range; see `definitions.calibration_bins`), `examples`, and with
    `auc_threshold` the `auc` of the prediction against label >= threshold.
    Binary: `auc`, `pr_auc`, `log_loss`, `calibration`, `calibration_bins` (over [0, 1]),
    `positive_rate`, `examples`; with `peer_behavior` also `peer_auc`, the AUC of the history
    peer (`definitions.history_share` of the example's raw `history_behaviors`, its
    `peer_window` most recent ones; 0: all), and
    `auc_lift` (`auc` minus `peer_auc`), which gates next-behavior tasks.

    Args:
      kind: contract.tasks.REGRESSION or BINARY.
      auc_threshold: see above (regression only).
      value_range: [low, high] of a regression output's calibration bins (see above).
      peer_behavior: see above (binary tasks on user-view examples only).
    """

    def __init__(self, kind: str = T.BINARY, auc_threshold: Optional[float] = None,
                 value_range: Optional[Sequence[float]] = None, peer_behavior: Optional[str] = None,
                 peer_window: int = 0, name: str = "task"):
        super().__init__(_task_computations, kind=kind, auc_threshold=auc_threshold, value_range=value_range,
                         peer_behavior=peer_behavior, peer_window=peer_window, name=name)


def _mean_auc_computations(name: str = "mean_auc", eval_config=None, model_names=None, output_names=None,
                           example_weighted: bool = False, query_key: str = "") -> tfma.metrics.MetricComputations:
    """Derived from the `auc` and `examples` of each output's TaskMetrics (their MetricsSpecs
    sit next to this one), so that no example is read a second time."""
    computations = []
    for model_name in model_names or [""]:
        key = tfma.metrics.MetricKey(name=name, model_name=model_name, example_weighted=None)
        outputs = list(output_names or [])

        def result(metrics, key=key, model_name=model_name, outputs=outputs):
            aucs = []
            for output in outputs:
                auc, examples = (tfma.metrics.MetricKey(name=n, model_name=model_name, output_name=output,
                                                        example_weighted=None) for n in ("auc", "examples"))
                if auc not in metrics or examples not in metrics:
                    raise ValueError(f"{name} averages the TaskMetrics auc of each output; output {output!r} "
                                     f"has no TaskMetrics in the EvalConfig")
                if metrics[examples] > 0:  # an output with no rows in the slice has no AUC to average
                    aucs.append(metrics[auc])
            return {key: float(np.mean(aucs)) if aucs else float("nan")}

        computations.append(tfma.metrics.DerivedMetricComputation(keys=[key], result=result))
    return computations


class MeanTaskAUC(tfma.metrics.Metric):
    """`mean_auc`: the mean AUC over a multi-task model's binary outputs (its MetricsSpec's
    output names), each on the rows where its condition holds: derived from the outputs'
    TaskMetrics, which the same EvalConfig must compute."""

    def __init__(self, name: str = "mean_auc"):
        super().__init__(_mean_auc_computations, name=name)


class _PairCombiner(beam.CombineFn):
    """Predictions, labels and conditions of a task pair's two outputs; the Multi-AUC of each."""

    def __init__(self, keys: Dict[str, tfma.metrics.MetricKey], model_name: str, pair: List[str]):
        self._keys = keys
        self._model_name = model_name
        self._pair = list(pair)

    def create_accumulator(self) -> List[List[np.ndarray]]:
        return []  # rows of [prediction A, prediction B, label A, label B, weight A, weight B]

    def add_input(self, accumulator, element):
        columns = []
        for field in ("prediction", "label"):
            columns += [_flat(_select(getattr(element, field), self._model_name, t)) for t in self._pair]
        for t in self._pair:
            weight = None
            if element.example_weight is not None:
                weight = _select(element.example_weight, self._model_name, t, optional=True)
            columns.append(np.ones_like(columns[0]) if weight is None else _flat(weight) * np.ones_like(columns[0]))
        accumulator.append(np.stack(columns, axis=1))
        return accumulator

    def merge_accumulators(self, accumulators):
        return [rows for acc in accumulators for rows in acc]

    def compact(self, accumulator):
        return [np.concatenate(accumulator)] if len(accumulator) > 1 else accumulator

    def extract_output(self, accumulator) -> Dict[tfma.metrics.MetricKey, float]:
        rows = np.concatenate(accumulator) if accumulator else np.zeros((0, 6))
        classes, keep = d.pair_classes(rows[:, 2], rows[:, 3], rows[:, 4], rows[:, 5])
        out = {}
        for i, task in enumerate(self._pair):
            value = d.multi_auc(rows[keep, i], classes[keep]) if keep.any() else float("nan")
            out[self._keys[d.multi_auc_name(task)]] = float(value)
        return out


def _multi_auc_computations(pair=(), name: str = "multi_auc", eval_config=None, model_names=None, output_names=None,
                            example_weighted: bool = False, query_key: str = "") -> tfma.metrics.MetricComputations:
    if len(pair) != 2:
        raise ValueError(f"MultiAUC needs a pair of binary task outputs, got {list(pair)}")
    computations = []
    for model_name in model_names or [""]:
        keys = {d.multi_auc_name(t): tfma.metrics.MetricKey(name=d.multi_auc_name(t), model_name=model_name,
                                                              example_weighted=None) for t in pair}
        computations.append(tfma.metrics.MetricComputation(
            keys=list(keys.values()), preprocessors=None, combiner=_PairCombiner(keys, model_name, list(pair))))
    return computations


class MultiAUC(tfma.metrics.Metric):
    """`multi_auc_<A>` and `multi_auc_<B>`: the Multi-AUC (`definitions.multi_auc`) of each
    output of a task pair (A, B) over the label pairs ++ > +- > -+ > -- (`pair_classes`;
    the outputs' example weights are the tasks' conditions).

    Args:
      pair: the two task output names, A first.
    """

    def __init__(self, pair=(), name: str = "multi_auc"):
        super().__init__(_multi_auc_computations, pair=list(pair), name=name)


class _TopKAccumulator:
    __slots__ = ("model", "popular")

    def __init__(self):
        self.model: Dict[str, d.ExactSum] = {}
        self.popular: Dict[str, d.ExactSum] = {}


class _TopKCombiner(beam.CombineFn):
    def __init__(self, keys: Dict[str, tfma.metrics.MetricKey], model_name: str, k: int):
        self._keys = keys
        self._model_name = model_name
        self._k = k

    def create_accumulator(self) -> _TopKAccumulator:
        return _TopKAccumulator()

    @staticmethod
    def _add(sums: Dict[str, d.ExactSum], values: Dict[str, float]) -> None:
        for name, value in values.items():
            sums.setdefault(name, d.ExactSum()).add(value)
        sums.setdefault("users", d.ExactSum()).add(1.0)

    def _outputs_and_targets(self, element):
        """This model's outputs of one example and its target rows (padding dropped)."""
        outputs = element.prediction
        if self._model_name and self._model_name in outputs:
            outputs = outputs[self._model_name]
        targets = np.asarray(outputs[protocol.TARGET_ROWS]).reshape(-1)
        return outputs, targets[targets != protocol.TARGET_PAD]

    def add_input(self, accumulator: _TopKAccumulator, element) -> _TopKAccumulator:
        outputs, targets = self._outputs_and_targets(element)
        if targets.size == 0:
            return accumulator  # a user without targets has no value
        self._add(accumulator.model, d.topk_user_metrics(np.asarray(outputs[protocol.RANKED_ROWS]).reshape(-1), targets, self._k))
        self._add(accumulator.popular,
                  d.topk_user_metrics(np.asarray(outputs[protocol.POPULAR_ROWS]).reshape(-1), targets, self._k))
        return accumulator

    def merge_accumulators(self, accumulators) -> _TopKAccumulator:
        merged = _TopKAccumulator()
        for acc in accumulators:
            for mine, theirs in ((merged.model, acc.model), (merged.popular, acc.popular)):
                for name, total in theirs.items():
                    mine.setdefault(name, d.ExactSum()).merge(total)
        return merged

    def extract_output(self, accumulator: _TopKAccumulator) -> Dict[tfma.metrics.MetricKey, float]:
        users = accumulator.model.get("users", d.ExactSum()).value()
        out = {}
        for prefix, sums in (("", accumulator.model), (POPULARITY_PREFIX, accumulator.popular)):
            for name in (d.HIT_RATE_PREFIX, d.RECALL_PREFIX, d.NDCG_PREFIX, d.MRR_PREFIX):
                key = f"{prefix}{name}@{self._k}"
                out[key] = sums[name].value() / users if users else float("nan")
        ndcg = f"{d.NDCG_PREFIX}@{self._k}"
        out[ndcg + LIFT_SUFFIX] = out[ndcg] - out[POPULARITY_PREFIX + ndcg]
        out["users"] = users
        return {self._keys[name]: float(value) for name, value in out.items()}


def topk_metric_names(k: int) -> List[str]:
    names = [f"{p}{n}@{k}" for p in ("", POPULARITY_PREFIX)
             for n in (d.HIT_RATE_PREFIX, d.RECALL_PREFIX, d.NDCG_PREFIX, d.MRR_PREFIX)]
    return names + [f"{d.NDCG_PREFIX}@{k}{LIFT_SUFFIX}", "users"]


def _topk_computations(top_k: int = 10, name: str = "topk", eval_config=None, model_names=None,
                       output_names=None, example_weighted: bool = False,
                       query_key: str = "") -> tfma.metrics.MetricComputations:
    return _per_model_computations(model_names, topk_metric_names(top_k),
                                   lambda keys, model_name: _TopKCombiner(keys, model_name, top_k))


def _per_model_computations(model_names, metric_names: Sequence[str], combiner) -> tfma.metrics.MetricComputations:
    """One computation per model over `metric_names`, by `combiner(keys, model_name)`."""
    computations = []
    for model_name in model_names or [""]:
        keys = {metric: tfma.metrics.MetricKey(name=metric, model_name=model_name, example_weighted=None)
                for metric in metric_names}
        computations.append(tfma.metrics.MetricComputation(
            keys=list(keys.values()), preprocessors=None, combiner=combiner(keys, model_name)))
    return computations


class TopKMetrics(tfma.metrics.Metric):
    """Top-K retrieval metrics of `rank_queries` outputs (see module docstring).

    Args:
      top_k: the rank cut-off K (the exported signature's K must be at least K).
    """

    def __init__(self, top_k: int = 10, name: str = "topk"):
        super().__init__(_topk_computations, top_k=top_k, name=name)


class _NextItemCombiner(_TopKCombiner):
    """Protocol S of `score_queries` outputs: per example the definitions' full and sampled
    metrics of its one target, and the popularity ranking's, summed exactly."""

    def add_input(self, accumulator: _TopKAccumulator, element) -> _TopKAccumulator:
        outputs, targets = self._outputs_and_targets(element)
        if targets.size == 0:
            return accumulator  # a user without targets has no value
        if targets.size != 1:
            raise ValueError(f"protocol S ranks one next item per example, got {targets.size} targets "
                             f"(evaluate sequential families on the leave_last_two_out split)")
        scores = np.asarray(outputs[protocol.CATALOGUE_SCORES], dtype=np.float32).reshape(-1)
        user = np.asarray(outputs[protocol.QUERY_USER]).reshape(-1)[0]
        values = d.protocol_s_user_metrics(scores, int(targets[0]), np.asarray(outputs[protocol.HISTORY_ROWS]),
                                           np.isfinite(scores), user)
        self._add(accumulator.model, values)
        popular = d.topk_user_metrics(np.asarray(outputs[protocol.POPULAR_ROWS]).reshape(-1), targets, self._k)
        self._add(accumulator.popular, {d.NDCG_PREFIX: popular[d.NDCG_PREFIX]})
        return accumulator

    def extract_output(self, accumulator: _TopKAccumulator) -> Dict[tfma.metrics.MetricKey, float]:
        users = accumulator.model.get("users", d.ExactSum()).value()
        out = {name: (accumulator.model[name].value() / users if users else float("nan"))
               for name in d.next_item_metric_names() + d.next_item_metric_names(d.SAMPLED_PREFIX)}
        ndcg = d.ndcg_name(self._k)
        popular = accumulator.popular.get(d.NDCG_PREFIX, d.ExactSum()).value()
        out[POPULARITY_PREFIX + ndcg] = popular / users if users else float("nan")
        out[ndcg + LIFT_SUFFIX] = out[ndcg] - out[POPULARITY_PREFIX + ndcg]
        out["users"] = users
        return {self._keys[name]: float(value) for name, value in out.items()}


def next_item_metric_names(k: int = 10) -> List[str]:
    """Protocol S result names: full and `sampled_` metrics, popularity's full NDCG@k, the lift, users."""
    ndcg = d.ndcg_name(k)
    return (d.next_item_metric_names() + d.next_item_metric_names(d.SAMPLED_PREFIX)
            + [POPULARITY_PREFIX + ndcg, ndcg + LIFT_SUFFIX, "users"])


def _next_item_computations(top_k: int = 10, name: str = "next_item", eval_config=None, model_names=None,
                            output_names=None, example_weighted: bool = False,
                            query_key: str = "") -> tfma.metrics.MetricComputations:
    if d.ndcg_name(top_k) not in d.next_item_metric_names():
        raise ValueError(f"protocol S reports NDCG at {d.NEXT_ITEM_NDCG_KS}, not at {top_k}")
    return _per_model_computations(model_names, next_item_metric_names(top_k),
                                   lambda keys, model_name: _NextItemCombiner(keys, model_name, top_k))


class NextItemMetrics(tfma.metrics.Metric):
    """Protocol S metrics of `score_queries` outputs: HR@5/10, NDCG@10, MRR@5/10 against
    all items minus the input's (full) and against 100 sampled never-interacted items
    (`sampled_*`), popularity's full NDCG@K on the same queries and the model's lift over it.

    Args:
      top_k: the K of the popularity comparison and the gate's NDCG (10).
    """

    def __init__(self, top_k: int = 10, name: str = "next_item"):
        super().__init__(_next_item_computations, top_k=top_k, name=name)
