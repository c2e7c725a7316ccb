"""TAKD on small synthetic data: Multi-AUC, the augmented BPR pairs, calibration, error
correction and the student's distillation loss."""

import collections

import numpy as np
import pytest

from contract import features as F
from contract import tasks as T
from contract import datasets as D
from evaluation import definitions as d


# -- Multi-AUC ------------------------------------------------------------------------
def test_multi_auc_equals_the_hand_computed_value():
    scores = [0.9, 0.4, 0.5, 0.1, 0.6]
    classes = [3, 3, 1, 0, 0]
    # AUC(1>0) = 1/2, p = 3/5; AUC(3>0) = 3/4, p = 4/5; AUC(3>1) = 1/2, p = 3/5 (class 2 is empty)
    expected = (0.6 * 0.5 + 0.8 * 0.75 + 0.6 * 0.5) / (0.6 + 0.8 + 0.6)
    assert d.multi_auc(scores, classes) == pytest.approx(expected)
    assert d.multi_auc([4, 3, 2, 1], [3, 2, 1, 0]) == 1.0
    assert d.multi_auc([1, 2, 3, 4], [3, 2, 1, 0]) == 0.0
    assert np.isnan(d.multi_auc([1.0, 2.0], [2, 2]))
    with pytest.raises(ValueError, match="classes must be in"):
        d.multi_auc([1.0], [4])


def test_pair_classes_order_the_label_pairs_and_drop_rows_without_a_condition():
    a = [1, 1, 0, 0, 1, 0]
    b = [1, 0, 1, 0, 1, 1]
    classes, keep = d.pair_classes(a, b)
    assert classes.tolist() == [3, 2, 1, 0, 3, 1] and keep.all()
    # liked (A) is conditioned on watched (B): an unwatched row is --, never dropped
    classes, keep = d.pair_classes([0, 1, 0], [0, 1, 1], weights_a=[0, 1, 1])
    assert classes.tolist() == [0, 3, 1] and keep.all()
    # loved / liked share the condition watched: unwatched rows are left out
    _, keep = d.pair_classes([0, 1], [0, 1], weights_a=[0, 1], weights_b=[0, 1])
    assert keep.tolist() == [False, True]


def test_tfma_multi_auc_combiner_equals_the_definition():
    from evaluation import tfma_metrics as m

    Element = collections.namedtuple("Element", "prediction label example_weight")
    rng = np.random.default_rng(0)
    n = 60
    watched = (rng.random(n) < 0.7).astype(float)
    liked = ((rng.random(n) < 0.5) & (watched > 0)).astype(float)
    p_liked, p_watched = rng.random(n), rng.random(n)
    computation = m.MultiAUC(pair=[F.LIKED, F.WATCHED]).computations(output_names=[F.LIKED, F.WATCHED])[0]
    combiner = computation.combiner
    parts = []
    for rows in (slice(0, 25), slice(25, n)):  # two bundles, merged
        acc = combiner.create_accumulator()
        for i in range(n)[rows]:
            acc = combiner.add_input(acc, Element(
                prediction={F.LIKED: np.array([p_liked[i]]), F.WATCHED: np.array([p_watched[i]])},
                label={F.LIKED: np.array([liked[i]]), F.WATCHED: np.array([watched[i]])},
                example_weight={F.LIKED: np.array([watched[i]])}))
        parts.append(acc)
    out = combiner.extract_output(combiner.compact(combiner.merge_accumulators(parts)))
    classes, keep = d.pair_classes(liked, watched, watched, None)
    values = {k.name: v for k, v in out.items()}
    assert values[d.multi_auc_name(F.LIKED)] == pytest.approx(d.multi_auc(p_liked[keep], classes[keep]))
    assert values[d.multi_auc_name(F.WATCHED)] == pytest.approx(d.multi_auc(p_watched[keep], classes[keep]))


def test_eval_config_gates_both_multi_aucs_of_the_pair():
    from evaluation.eval_config import eval_config

    tasks = [D.MOVIELENS.task(F.LOVED), D.MOVIELENS.task(F.LIKED)]
    config = eval_config(tasks, pair=(F.LOVED, F.LIKED), pair_gate=T.Gate("", True, 0.7))
    spec = [s for s in config.metrics_specs if s.metrics[0].class_name == "MultiAUC"][0]
    assert set(spec.per_slice_thresholds) == {d.multi_auc_name(F.LOVED), d.multi_auc_name(F.LIKED)}
    bound = spec.per_slice_thresholds[d.multi_auc_name(F.LOVED)].thresholds[0].threshold
    assert bound.value_threshold.lower_bound.value == 0.7
    with pytest.raises(ValueError, match="Multi-AUC pair"):
        eval_config(tasks, pair=(F.LOVED, F.RATING))
