"""The Trainer's `tf.distribute` strategy, chosen by configuration.

- `default`: no strategy (one process, TensorFlow's default placement).
- `mirrored`: `MirroredStrategy`, one replica per local device (GPUs, or the CPU).
- `multi_worker`: `MultiWorkerMirroredStrategy`, one replica per worker process. Every
  worker runs the same Trainer with its own `TF_CONFIG` (`{"cluster": {"worker": [...]},
  "task": {"type": "worker", "index": i}}`), as Kubeflow's TFJob and Vertex AI custom
  training set it; worker 0 is the chief and the only one whose export is kept.

Under `multi_worker` the input's batches stay global (`batch_size` examples): every worker
generates the same batches (same seed) and keeps its share of each batch's rows (`shard`),
and the loss is divided by the number of replicas before their gradients are summed, so one
step is the gradient of the mean loss over `batch_size` examples, as in single-process
training, and an epoch has as many steps. Logged losses are averaged over the replicas and
metrics are the replicas' synchronised values (`distribute_reduction_method = "first"`).
"""

from __future__ import annotations

import json
import os
from typing import Optional

import tensorflow as tf

DEFAULT = "default"
MIRRORED = "mirrored"
MULTI_WORKER = "multi_worker"
STRATEGIES = (DEFAULT, MIRRORED, MULTI_WORKER)


def cluster_spec() -> Optional[dict]:
    """The parsed TF_CONFIG, or None when it is not set; a clear error when it is malformed."""
    raw = os.environ.get("TF_CONFIG", "")
    if not raw:
        return None
    try:
        config = json.loads(raw)
        workers = config["cluster"]["worker"]
        index = int(config["task"]["index"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"TF_CONFIG is not a cluster spec ({e}); expected "
                         '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": i}}, '
                         f"got {raw[:200]!r}") from None
    if not 0 <= index < len(workers):
        raise ValueError(f"TF_CONFIG task index {index} is outside its {len(workers)} workers")
    return config


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The strategy called `name` (see the module docstring)."""
    if name == DEFAULT:
        return tf.distribute.get_strategy()
    if name == MIRRORED:
        return tf.distribute.MirroredStrategy()
    if name == MULTI_WORKER:
        if cluster_spec() is None:
            raise ValueError("strategy multi_worker needs TF_CONFIG naming the cluster's workers and this "
                             "worker's index (set by TFJob / Vertex AI, or by hand for local workers)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown training strategy {name!r}; expected one of {list(STRATEGIES)}")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True unless this is a non-chief worker of a multi-worker strategy."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    return resolver.task_type in ("chief", None) or (resolver.task_type == "worker" and resolver.task_id == 0
                                                      and "chief" not in resolver.cluster_spec().as_dict())


def worker_index(strategy: tf.distribute.Strategy) -> int:
    """This worker's index in a multi-worker strategy (0 otherwise)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    return int(resolver.task_id or 0) if resolver is not None and resolver.cluster_spec().as_dict() else 0


def shard(dataset: tf.data.Dataset, strategy: tf.distribute.Strategy) -> tf.data.Dataset:
    """Worker i of N keeps rows i, i + N, ... of every global batch.

    The inputs are generated in Python, which tf.data cannot rewrite, so its automatic
    sharding would hand every worker the whole batch (each replica would repeat the same
    work); every worker generates the same batches (same seed) and keeps its own rows.
    """
    workers = strategy.num_replicas_in_sync
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    if workers == 1 or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return dataset
    return shard_rows(dataset, worker_index(strategy), workers).with_options(options)


def shard_rows(dataset: tf.data.Dataset, index: int, workers: int) -> tf.data.Dataset:
    """Rows index, index + workers, ... of every batch (every feature's first dimension)."""
    if not 0 <= index < workers:
        raise ValueError(f"worker index {index} is outside 0..{workers - 1}")
    return dataset.map(lambda batch: tf.nest.map_structure(lambda t: t[index::workers], batch))
