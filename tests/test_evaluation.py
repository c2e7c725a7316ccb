"""The Evaluator's metrics and gates: TFMA reports the numpy definitions per split slice,
and a gate reads the eval split only."""

import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_model_analysis as tfma

from contract import datasets as D
from contract import features as F
from contract import protocol
from contract import tasks as T
from evaluation import definitions as d
from evaluation import tfma_metrics
from evaluation.eval_config import PROTOCOL_S, eval_config, with_thresholds

LIKED, NEXT_LIKE, RATING, WATCHED = "liked", "next_like", "rating", "watched"  # the shipped descriptions' tasks
MOVIELENS = D.dataset_spec("movielens")

PRED = {RATING: "rating_prediction", LIKED: "liked_prediction", WATCHED: "watched_prediction"}


def _feature(values):
    values = list(values)
    if values and isinstance(values[0], bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
    if values and isinstance(values[0], (int, np.integer)):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def _write(rows, path):
    with tf.io.TFRecordWriter(str(path)) as w:
        for row in rows:
            w.write(tf.train.Example(features=tf.train.Features(
                feature={k: _feature(v) for k, v in row.items()})).SerializeToString())


def _interaction_rows(seed=3, n=600):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        watched = int(rng.random() < 0.8)
        rating = float(rng.choice(np.arange(0.5, 5.5, 0.5))) if watched else 0.0
        rows.append({
            F.SPLIT: [b"eval" if i % 2 else b"test"],
            F.USER_ACTIVITY: [b"light" if i % 3 else b"heavy"],
            F.ITEM_POPULARITY_LEVEL: [b"head"],
            RATING: [rating], WATCHED: [watched], LIKED: [int(rating >= 4)],
            PRED[RATING]: [float(np.float32(rating + rng.normal(0, 0.9)))],
            PRED[LIKED]: [float(np.float32(1 / (1 + np.exp(-(rating - 3.5 + rng.normal(0, 1))))))],
            PRED[WATCHED]: [float(np.float32(np.clip(0.5 * watched + rng.normal(0.25, 0.3), 0, 1)))],
        })
    return rows


def _without_change_thresholds(config):
    """No baseline model here: keep the value thresholds only."""
    for spec in config.metrics_specs:
        for name in list(spec.per_slice_thresholds):
            kept = [t for t in spec.per_slice_thresholds[name].thresholds if t.threshold.HasField("value_threshold")]
            del spec.per_slice_thresholds[name].thresholds[:]
            spec.per_slice_thresholds[name].thresholds.extend(kept)
            if not kept:
                del spec.per_slice_thresholds[name]
    return config


def _run(rows, config, tmp_path):
    config = _without_change_thresholds(config)
    data = tmp_path / "data.tfrecord"
    _write(rows, data)
    out = tmp_path / "out"
    tfma.run_model_analysis(eval_config=config, data_location=str(data), output_path=str(out))
    metrics = {}
    for slice_metrics in tfma.load_metrics(str(out)):
        key = tuple((k.column, k.bytes_value.decode()) for k in slice_metrics.slice_key.single_slice_keys)
        for kv in slice_metrics.metric_keys_and_values:
            metrics[(key, kv.key.output_name, kv.key.name)] = kv.value.double_value.value
    return metrics, tfma.load_validation_result(str(out))


def _model_agnostic(config, **fields):
    spec = config.model_specs[0]
    agnostic = tfma.ModelSpec(**fields)
    if spec.label_key:
        agnostic.label_key = spec.label_key
    agnostic.label_keys.update(spec.label_keys)
    if spec.example_weight_key:
        agnostic.example_weight_key = spec.example_weight_key
    agnostic.example_weight_keys.update(spec.example_weight_keys)
    del config.model_specs[:]
    config.model_specs.append(agnostic)
    return config


def test_task_metrics_equal_the_numpy_definitions_per_split_and_condition(tmp_path):
    tasks = [MOVIELENS.task(RATING), MOVIELENS.task(LIKED), MOVIELENS.task(WATCHED)]
    config = _model_agnostic(eval_config(tasks, dataset=MOVIELENS.to_dict()), prediction_keys=PRED)
    rows = _interaction_rows()
    metrics, _ = _run(rows, config, tmp_path)
    for split in ("eval", "test"):
        chosen = [r for r in rows if r[F.SPLIT][0].decode() == split and r[WATCHED][0]]
        rating = np.array([r[RATING][0] for r in chosen], np.float32)
        pred = np.array([r[PRED[RATING]][0] for r in chosen], np.float32)
        prob = np.array([r[PRED[LIKED]][0] for r in chosen], np.float32)
        want = {RATING: d.regression_task_metrics(pred, rating, 4.0),  # MovieLens's liked: rating >= 4
                LIKED: d.binary_task_metrics(prob, rating >= 4)}
        everything = [r for r in rows if r[F.SPLIT][0].decode() == split]  # watched has no condition
        want[WATCHED] = d.binary_task_metrics(np.array([r[PRED[WATCHED]][0] for r in everything], np.float32),
                                              np.array([r[WATCHED][0] for r in everything]))
        for output, values in want.items():
            for name, value in values.items():
                assert metrics[((F.SPLIT, split),), output, name] == pytest.approx(value, rel=1e-9), (split, output, name)
        mean_auc = (want[LIKED]["auc"] + want[WATCHED]["auc"]) / 2
        assert metrics[((F.SPLIT, split),), "", "mean_auc"] == pytest.approx(mean_auc, rel=1e-9)
    # no slice mixes the two splits
    assert not any(key == () for key, _, _ in metrics)
    assert (((F.SPLIT, "eval"), (F.USER_ACTIVITY, "heavy")), RATING, "rmse") in metrics


def test_a_rating_task_reports_on_the_descriptions_rating_scale_and_liked_threshold():
    import json

    def task_config(dataset):
        config = eval_config([MOVIELENS.task(RATING)], dataset=dataset)
        return json.loads(config.metrics_specs[0].metrics[0].config)

    assert task_config(MOVIELENS.to_dict()) == {"kind": "regression", "value_range": [0.5, 5.0], "auc_threshold": 4.0}
    assert task_config(None) == {"kind": "regression"}  # without a description: no AUC, the labels' range
    from evaluation.eval_config import rating_settings

    assert rating_settings("taobao") == {}


def test_mean_auc_averages_the_outputs_with_rows_and_needs_their_task_metrics():
    from evaluation.tfma_metrics import MeanTaskAUC

    (computation,) = MeanTaskAUC().computations(model_names=[""], output_names=["a", "b", "c"])
    key = lambda name, output: tfma.metrics.MetricKey(name=name, output_name=output, example_weighted=None)
    metrics = {key("auc", "a"): 0.7, key("examples", "a"): 10, key("auc", "b"): 0.9, key("examples", "b"): 3,
               key("auc", "c"): float("nan"), key("examples", "c"): 0}  # c: no rows in this slice
    (value,) = computation.result(metrics).values()
    assert value == pytest.approx(0.8)
    del metrics[key("auc", "b")]
    with pytest.raises(ValueError, match="output 'b' has no TaskMetrics"):
        computation.result(metrics)


@pytest.mark.parametrize("threshold,ok", [(5.0, True), (0.5, False)])
def test_the_gate_reads_the_eval_split_only(tmp_path, threshold, ok):
    tasks = with_thresholds([MOVIELENS.task(RATING)], {RATING: threshold}, {})
    config = _model_agnostic(eval_config(tasks), prediction_key=PRED[RATING])
    rows = _interaction_rows()
    _, validation = _run(rows, config, tmp_path)
    assert validation.validation_ok is ok
    if not ok:
        slices = {tuple((k.column, k.bytes_value.decode()) for k in v.slice_key.single_slice_keys)
                  for v in validation.metric_validations_per_slice}
        assert slices == {((F.SPLIT, "eval"),)}


def _query_rows(seed=5, users=80, k=10, catalogue=30):
    rng = np.random.default_rng(seed)
    rows, truth = [], []
    for u in range(users):
        targets = list(rng.choice(np.arange(1, catalogue), size=int(rng.integers(1, 4)), replace=False))
        ranked = list(rng.permutation(np.arange(1, catalogue))[:k])
        popular = list(rng.permutation(np.arange(1, catalogue))[:k])
        if u % 4 == 0:
            ranked[0] = targets[0]
        split = b"eval" if u % 2 else b"test"
        rows.append({F.SPLIT: [split], F.USER_ACTIVITY_LEVEL: [b"light"],
                     protocol.RANKED_ROWS: ranked, protocol.POPULAR_ROWS: popular,
                     protocol.TARGET_ROWS: [int(t) for t in targets]})
        truth.append((split.decode(), ranked, popular, targets))
    return rows, truth


def test_topk_metrics_equal_the_numpy_definitions_and_gate_on_lift(tmp_path):
    task = MOVIELENS.task(D.RETRIEVAL_TASK)
    config = _model_agnostic(eval_config([task], top_k=10), prediction_keys={
        protocol.RANKED_ROWS: protocol.RANKED_ROWS, protocol.POPULAR_ROWS: protocol.POPULAR_ROWS,
        protocol.TARGET_ROWS: protocol.TARGET_ROWS})
    rows, truth = _query_rows()
    metrics, validation = _run(rows, config, tmp_path)
    for split in ("eval", "test"):
        chosen = [t for t in truth if t[0] == split]
        model = d.topk_metrics([t[1] for t in chosen], [t[3] for t in chosen], 10)
        popular = d.topk_metrics([t[2] for t in chosen], [t[3] for t in chosen], 10)
        got = lambda name: metrics[(((F.SPLIT, split),), "", name)]  # noqa: E731
        for name in ("hit_rate@10", "recall@10", "ndcg@10", "mrr@10"):
            assert got(name) == pytest.approx(model[name], rel=1e-12)
            assert got("popularity_" + name) == pytest.approx(popular[name], rel=1e-12)
        assert got("ndcg@10_lift") == pytest.approx(model["ndcg@10"] - popular["ndcg@10"], rel=1e-9)
        assert got("users") == len(chosen)
    lift = metrics[(((F.SPLIT, "eval"),), "", "ndcg@10_lift")]
    assert validation.validation_ok is (lift >= 0)


def test_gate_overrides_and_default_gates():
    rating = MOVIELENS.task(RATING)
    changed = with_thresholds([rating], {RATING: 0.9}, {RATING: 0.0})[0]
    assert (changed.gate.threshold, changed.gate.max_worsening) == (0.9, 0.0)
    assert rating.gate == T.Gate("rmse", higher_is_better=False, threshold=1.0)
    assert MOVIELENS.task(D.RETRIEVAL_TASK).gate.metric == "ndcg@10_lift"
    with pytest.raises(ValueError, match="max_worsening must be >= 0"):
        dataclasses.replace(rating.gate, max_worsening=-1)


@pytest.mark.parametrize("top_k", [5, 10, 20])
def test_a_configured_top_k_gates_retrieval_on_a_metric_the_evaluator_computes(top_k):
    """The run's K reaches the retrieval gate: with top_k 5 the gate reads ndcg@5_lift (value)
    and ndcg@5 (change), which TopKMetrics at K = 5 computes; protocol S keeps its own K."""
    config = eval_config([MOVIELENS.task(D.RETRIEVAL_TASK)], top_k=top_k, dataset=MOVIELENS)
    (spec,) = config.metrics_specs
    (metric,) = spec.metrics
    assert json.loads(metric.config)["top_k"] == top_k
    gated = set(spec.per_slice_thresholds)
    assert gated == {f"ndcg@{top_k}_lift", f"ndcg@{top_k}"}
    assert gated <= set(tfma_metrics.topk_metric_names(top_k))
    sequential = eval_config([MOVIELENS.task(D.RETRIEVAL_TASK)], top_k=top_k, dataset=MOVIELENS,
                             protocol_name=PROTOCOL_S)
    assert set(sequential.metrics_specs[0].per_slice_thresholds) == {"ndcg@10_lift", "ndcg@10"}


def _next_like_rows(strong: bool, seed=7, users=300):
    """User-view rows: a history of behaviors, the next_like label, a model's probability
    (`strong`: close to the label; otherwise noise)."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        history = list(rng.choice([b"liked", b"neutral", b"disliked"], size=int(rng.integers(1, 12))))
        share = d.history_share(history, "liked")
        label = int(rng.random() < 0.1 + 0.8 * share)
        prob = float(np.float32(np.clip(label * 0.6 + rng.normal(0.2, 0.15), 0, 1) if strong else rng.random()))
        rows.append({F.SPLIT: [b"eval" if u % 2 else b"test"], F.HISTORY_BEHAVIORS: history,
                     NEXT_LIKE: [label], "p": [prob]})
    return rows


def test_history_share_is_the_share_of_the_behavior_in_the_input():
    assert d.history_share([b"liked", b"neutral", "liked", b"disliked"], "liked") == 0.5
    assert d.history_share([3, 1, 3], 3) == pytest.approx(2 / 3)
    assert d.history_share([], "liked") == 0.0
    assert d.history_share([b"liked", b"liked", b"neutral"], "liked", window=2) == 0.5  # the most recent 2


@pytest.mark.parametrize("strong", [True, False])
def test_next_behavior_task_is_gated_on_its_lift_over_the_history_peer(tmp_path, strong):
    task = MOVIELENS.task(NEXT_LIKE)
    assert (task.gate.metric, task.gate.change_metric, task.gate.threshold) == (T.AUC_LIFT, T.AUC, 0.0)
    config = _model_agnostic(eval_config([task], history_peers=dict(MOVIELENS.next_behavior_tasks),
                                         peer_window=5), prediction_key="p")
    rows = _next_like_rows(strong)
    metrics, validation = _run(rows, config, tmp_path)
    for split in ("eval", "test"):
        chosen = [r for r in rows if r[F.SPLIT][0].decode() == split]
        labels = np.array([r[NEXT_LIKE][0] for r in chosen]) > 0
        auc = d.binary_auc(np.array([r["p"][0] for r in chosen], np.float32), labels)
        peer = d.binary_auc(np.array([d.history_share(r[F.HISTORY_BEHAVIORS][-5:], "liked") for r in chosen]),
                            labels)
        got = lambda name: metrics[(((F.SPLIT, split),), "", name)]  # noqa: E731
        assert got("auc") == pytest.approx(auc, rel=1e-9)
        assert got("peer_auc") == pytest.approx(peer, rel=1e-9)
        assert got(T.AUC_LIFT) == pytest.approx(auc - peer, rel=1e-9)
    lift = metrics[(((F.SPLIT, "eval"),), "", T.AUC_LIFT)]
    assert (lift > 0) is strong  # the fixtures put the strong model above the peer, the noise below
    assert validation.validation_ok is strong


def test_a_task_gated_on_auc_lift_needs_its_history_peer():
    with pytest.raises(ValueError, match="history peer"):
        eval_config([MOVIELENS.task(NEXT_LIKE)])
