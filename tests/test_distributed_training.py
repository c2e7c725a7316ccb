"""The Trainer under tf.distribute: MultiWorkerMirroredStrategy with two worker processes on
localhost (TF_CONFIG over loopback) against single-process training on the same data.

Each run is `python -m training.worker` (what every worker of a TFJob runs). The two workers
must end with the same weights (same eval metric to float precision) and match one process
within a stated tolerance: the step is the gradient of the mean loss over the same global
batch, split in two, so only the per-half normalisation of masked losses and float order
differ. Only the chief's export is kept.
"""

import json
import os
import subprocess

import numpy as np
import pytest
import tensorflow as tf

from contract import datasets as D
from pipeline import report
from training import distribute
from training import worker
from training.trainer import TrainConfig

MOVIELENS = D.dataset_spec("movielens").to_dict()

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOLERANCE = 0.05  # eval RMSE, two workers vs one process, after the same steps


def _worker_command(files, config, out, summary):
    return worker.command(config, files["train"], files["eval"], files["graph"], out, train_steps=30,
                          summary_out=summary)


@pytest.fixture(scope="module")
def files(trained_run):
    found = report.output_dirs(trained_run[0].pipeline_root)
    examples = found["Transform"]["transformed_examples"]
    return {"graph": found["Transform"]["transform_graph"],
            **{s: [os.path.join(examples, f"Split-{s}", "*")] for s in ("train", "eval")}}


@pytest.fixture(scope="module")
def runs(files, tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    env = dict(os.environ, PYTHONPATH=REPO, TF_USE_LEGACY_KERAS="1", PYTHONHASHSEED="0")
    env.pop("TF_CONFIG", None)
    hparams = {"max_epochs": 1, "batch_size": 64}
    single = subprocess.run(
        _worker_command(files, {"family": "mf", "description": MOVIELENS, "hparams": hparams}, str(root / "single"),
                        str(root / "single.json")),
        env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]

    config = {"family": "mf", "description": MOVIELENS, "hparams": hparams, "strategy": distribute.MULTI_WORKER}
    workers = []
    for index, tf_config in enumerate(worker.local_cluster(2)):
        workers.append(subprocess.Popen(
            _worker_command(files, config, str(root / f"worker{index}"), str(root / "worker{worker}.json")),
            env=dict(env, TF_CONFIG=tf_config), cwd=REPO, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True))
    for w in workers:
        _, err = w.communicate(timeout=600)
        assert w.returncode == 0, err[-3000:]
    load = lambda name: json.loads((root / name).read_text())  # noqa: E731
    return root, load("single.json"), [load(f"worker{i}.json") for i in range(2)]


def test_two_workers_train_one_model_that_matches_single_process_training(runs):
    root, single, workers = runs
    assert single["replicas"] == 1 and [w["replicas"] for w in workers] == [2, 2]
    assert single["monitor"] == workers[0]["monitor"] == "val_rating_rmse"
    # One model: both workers hold the same weights, so they measure the same eval RMSE.
    assert workers[0]["best_value"] == pytest.approx(workers[1]["best_value"], abs=1e-5)
    assert workers[0]["history"]["loss"] == pytest.approx(workers[1]["history"]["loss"], abs=1e-5)
    # And it is the model one process trains, within the stated tolerance.
    assert abs(workers[0]["best_value"] - single["best_value"]) < TOLERANCE, (workers[0]["best_value"],
                                                                            single["best_value"])
    # Only the chief's export is kept, and it serves.
    assert not (root / "worker1").exists()
    loaded = tf.saved_model.load(str(root / "worker0"))
    assert "serving_default" in loaded.signatures


def test_each_worker_keeps_its_own_rows_of_every_batch():
    batch = {"x": tf.reshape(tf.range(10), [10, 1]), "y": tf.range(10)}
    ds = tf.data.Dataset.from_tensors(batch)
    halves = [next(iter(distribute.shard_rows(ds, i, 2)))["y"].numpy() for i in range(2)]
    np.testing.assert_array_equal(halves[0], [0, 2, 4, 6, 8])
    np.testing.assert_array_equal(halves[1], [1, 3, 5, 7, 9])
    with pytest.raises(ValueError, match="outside 0..1"):
        distribute.shard_rows(ds, 2, 2)


def test_strategy_configuration_errors_name_what_is_expected(monkeypatch):
    with pytest.raises(ValueError, match="unknown training strategy 'tpu'"):
        TrainConfig(family="mf", description=MOVIELENS, strategy="tpu")
    # the fine-tuning loop of a family with a base model runs in one process: said, not ignored
    with pytest.raises(ValueError, match="peterrec is fine-tuned from nextitnet in one process; training "
                                         "strategy 'mirrored' is not supported"):
        TrainConfig(family="peterrec", description=MOVIELENS, strategy="mirrored")
    assert TrainConfig(family="peterrec", description=MOVIELENS).strategy == "default"
    with pytest.raises(ValueError, match="needs the dataset description mapping"):
        TrainConfig(family="mf")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="needs TF_CONFIG"):
        distribute.make_strategy(distribute.MULTI_WORKER)
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {}}')
    with pytest.raises(ValueError, match="TF_CONFIG is not a cluster spec"):
        distribute.cluster_spec()
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}')
    with pytest.raises(ValueError, match="index 3 is outside its 1 workers"):
        distribute.cluster_spec()
