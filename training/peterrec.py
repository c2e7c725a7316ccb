"""Fine-tuning a PeterRec downstream model: batches, early stopping on eval, the test metric.

`fine_tune` trains a `models.peterrec.PatchedClassifier` on a task's train split
(`training.downstream`), measures the task's metric on the eval split after every
epoch, keeps the best epoch's weights (`patience` epochs without improvement end
training) and only then scores the test split once. Metrics are the project's own
definitions: AUC (`evaluation.definitions.binary_auc`) for a binary task, top-1
accuracy against the target set (`set_accuracy`) for a multi-class one.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Dict, Optional

import numpy as np
import tensorflow as tf
import tf_keras as keras

from evaluation import definitions as d
from export.signatures import read_model_record
from models.context import ModelContext
from models.registry import get_family
from training.downstream import BINARY, EVAL, TEST, TRAIN, DownstreamData, LabeledSequences

AUC = "auc"
ACCURACY = "accuracy"


def load_pretrained(network: keras.Model, saved_model_dir: str) -> None:
    """Copies the weights of a pretrained network exported as a SavedModel (the Trainer's
    `Format-Serving` directory, which a fine-tuning Trainer receives as `fn_args.base_model`)
    into `network`, a model of the same family and hyperparameters.

    The export saves the Keras model as the SavedModel's root object, so its variables
    checkpoint is read by the model's own object graph; the serving-only objects of the
    export (the Transform layer, the catalogue) are not part of `network` and are skipped,
    but every variable of `network` must be found there.
    """
    path = os.path.join(saved_model_dir, "variables", "variables")
    if not tf.io.gfile.exists(path + ".index"):
        raise FileNotFoundError(f"no SavedModel variables at {path}.index: is {saved_model_dir} a Trainer's "
                                "serving model directory?")
    status = network.load_weights(path)
    status.expect_partial()
    status.assert_existing_objects_matched()


def pretrained_network(saved_model_dir: str, context: ModelContext, load: bool = True) -> keras.Model:
    """The network an exported model was trained as (family and hyperparameters from its
    model record, `export.signatures.read_model_record`), with its weights loaded.

    Args:
      saved_model_dir: the base model's serving directory (`fn_args.base_model`).
      context: the fine-tuning model's context (same Transform output, so the same item
        rows); the network gets its own family's tasks and the base's max_history.
      load: False keeps the fresh initialisation (training from scratch).
    """
    record = read_model_record(saved_model_dir)
    family = get_family(record["family"])
    if record.get("dataset", context.dataset.name) != context.dataset.name:
        raise ValueError(f"the base model at {saved_model_dir} was trained on {record['dataset']!r}, "
                         f"not {context.dataset.name!r}")
    base_context = dataclasses.replace(context, tasks=family.task_specs(context.dataset),
                                       max_history=int(record["max_history"]))
    network = family.build(base_context, family.hparams.from_dict(record["hparams"]))
    dummy = tf.ones([1, 2], tf.int64)
    network.hidden(dummy, dummy)  # creates every variable, so that all of them must load
    network.candidates()
    if load:
        load_pretrained(network, saved_model_dir)
    return network


def metric_name(kind: str) -> str:
    return AUC if kind == BINARY else ACCURACY


def dataset(split: LabeledSequences, batch_size: int, shuffle: bool = False, seed: int = 0) -> tf.data.Dataset:
    """Batches of {items, behaviors, labels, mask}; with `shuffle`, a new seeded order each epoch."""
    tensors = {"items": split.items, "behaviors": split.behaviors, "labels": split.labels, "mask": split.mask}
    ds = tf.data.Dataset.from_tensor_slices(tensors)
    if shuffle:
        ds = ds.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size)


def predict(model: keras.Model, split: LabeledSequences, batch_size: int = 512) -> np.ndarray:
    """The model's logits at the split's labelled positions: [m] or [m, classes]."""
    parts = []
    for start in range(0, len(split), batch_size):
        stop = start + batch_size
        logits = model({"items": split.items[start:stop], "behaviors": split.behaviors[start:stop]},
                       training=False).numpy()
        parts.append(logits[split.mask[start:stop] > 0])
    return np.concatenate(parts) if parts else np.zeros((0,))


def score(kind: str, logits: np.ndarray, split: LabeledSequences) -> float:
    """The task's metric of logits at the labelled positions."""
    targets = split.labelled_targets()
    if kind == BINARY:
        return d.binary_auc(logits, targets > 0.5)
    return d.set_accuracy(logits, targets)


def fine_tune(model: keras.Model, data: DownstreamData, learning_rate: float, batch_size: int, max_epochs: int,
              patience: int, seed: int, verbose: int = 0, steps_per_epoch: Optional[int] = None,
              optimizer: Optional[keras.optimizers.Optimizer] = None) -> Dict[str, Any]:
    """Trains `model` on data's train split with early stopping on eval; returns the summary
    (eval and test metric of the best epoch, epochs, trained parameters, seconds). Without
    a test split the test metric is NaN; `steps_per_epoch` caps each epoch's batches;
    `optimizer` defaults to Adam at `learning_rate`."""
    if len(data.splits[TRAIN]) == 0 or len(data.splits[EVAL]) == 0:
        raise ValueError(f"task {data.task}: the train and eval splits need examples, got {data.counts()}")
    keras.utils.set_random_seed(seed)
    model.compile(optimizer=optimizer or keras.optimizers.Adam(learning_rate))
    train = dataset(data.splits[TRAIN], batch_size, shuffle=True, seed=seed)
    best, best_epoch, best_weights, history = -np.inf, 0, None, []
    started = time.monotonic()
    for epoch in range(1, max_epochs + 1):
        model.fit(train, epochs=1, verbose=verbose, steps_per_epoch=steps_per_epoch)
        value = score(data.kind, predict(model, data.splits[EVAL]), data.splits[EVAL])
        history.append(float(value))
        if value > best:
            best, best_epoch, best_weights = value, epoch, model.get_weights()
        elif epoch - best_epoch >= patience:
            break
    seconds = time.monotonic() - started
    if best_weights is not None:
        model.set_weights(best_weights)
    test = data.splits.get(TEST)
    return {
        "metric": metric_name(data.kind),
        "eval": float(best),
        "test": float(score(data.kind, predict(model, test), test)) if test is not None and len(test) else float("nan"),
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "eval_history": history,
        "trained_parameters": model.trained_parameters(),
        "train_seconds": round(seconds, 2),
    }
