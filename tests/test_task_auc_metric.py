"""The Keras AUC of a binary task (what early stopping watches) against the exact AUC of
evaluation.definitions, for a rare task whose predictions are all far below 0.5."""
import numpy as np
import tf_keras as keras

from contract import datasets as D
from evaluation import definitions as d
from models.tasks import PointwiseTask


def _rare_task_logits(n=5000, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.01
    logits = -6.0 + rng.normal(scale=1.5, size=n) + 1.0 * y  # probabilities mostly < 0.01
    return logits.astype(np.float32), y


def test_binary_task_auc_matches_the_exact_auc_on_small_probabilities():
    logits, y = _rare_task_logits()
    task = PointwiseTask(D.dataset_spec("taobao").task("fav"))
    task(y.astype(np.float32), logits)
    exact = d.binary_auc(logits, y)
    assert abs(float(task.metric.result()) - exact) < 0.003


def test_keras_default_thresholds_were_off_on_the_same_data():
    # The reason for the task's thresholds: 200 thresholds evenly spaced in probability.
    logits, y = _rare_task_logits()
    default = keras.metrics.AUC(from_logits=True)
    default.update_state(y, logits)
    assert abs(float(default.result()) - d.binary_auc(logits, y)) > 0.01
