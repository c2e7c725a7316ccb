"""What the recipes share: the model context, epochs within budgets, the optimizer, and the
Keras fit with early stopping on the eval split that every Keras recipe ends with."""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import tensorflow_transform as tft
import tf_keras as keras

from contract import features as F
from contract import tasks as T
from models.base import RETRIEVE, RecModel
from models.context import ModelContext, feature_inputs
from models.hparams import HParams
from training import distribute, topk
from training.inputs import resolve_files
from training.recipes import Job, Setup
from training.views import ItemRows, item_counts, load_user_view

ANY_STRATEGY = distribute.STRATEGIES


def begin(job: Job) -> None:
    """Seeds Python, NumPy and TensorFlow from the job's seed (each recipe's first step)."""
    keras.utils.set_random_seed(job.seed)


def vocabulary_rows(tf_transform_output: tft.TFTransformOutput, name: str) -> int:
    """Embedding rows for a shifted vocabulary: padding 0, the vocabulary, OOV buckets."""
    return tf_transform_output.vocabulary_size_by_name(name) + F.OOV_BUCKETS + 1


def row_counts(ids: np.ndarray, rows: int) -> np.ndarray:
    """[rows] float32 examples per id row of the training examples' ids [n] (ids beyond
    `rows` are not counted)."""
    ids = np.asarray(ids).reshape(-1)
    return np.bincount(ids[(ids >= 0) & (ids < rows)], minlength=rows).astype(np.float32)


def model_context(job: Job, tft_output: tft.TFTransformOutput, counts: np.ndarray, mean_rating: float,
                  table: Optional[Dict[str, np.ndarray]],
                  train_rows: Optional[Dict[str, np.ndarray]] = None) -> ModelContext:
    """The family's model context: tasks, sizes and the description's side-table features with
    the rows of their Transform vocabularies (`Feature.vocabulary_name`); with `train_rows`
    (the training examples a pointwise family trains on), their examples per user and item
    row (`ModelContext.user_row_counts`, `item_row_counts`)."""
    family, config, spec = job.family, job.config, job.config.spec
    tasks = family.task_specs(spec)
    if config.tasks:
        by_name = {t.name: t for t in tasks}
        unknown = [t for t in config.tasks if t not in by_name]
        if unknown:
            raise ValueError(f"{family.name} has no task {unknown}; its tasks: {sorted(by_name)}")
        tasks = tuple(by_name[t] for t in config.tasks)
    num_users, num_items = vocabulary_rows(tft_output, F.USER_VOCAB), vocabulary_rows(tft_output, F.ITEM_VOCAB)
    per_row = {}
    if train_rows is not None and F.USER_IDX in train_rows and F.ITEM_IDX in train_rows:
        per_row = dict(user_row_counts=row_counts(train_rows[F.USER_IDX], num_users),
                       item_row_counts=row_counts(train_rows[F.ITEM_IDX], num_items))
    return ModelContext(
        dataset=spec,
        tasks=tasks,
        num_users=num_users,
        num_items=num_items,
        num_behaviors=len(spec.behaviors) + 2,
        features=feature_inputs(spec.description, lambda name: vocabulary_rows(tft_output, name)),
        max_history=config.max_history,
        mean_rating=mean_rating,
        item_counts=counts,
        item_table=table,
        **per_row,
        text_rows={c.name: vocabulary_rows(tft_output, c.vocabulary_name) for c in spec.description.text_columns},
        seed=config.seed,
    )


def user_views(job: Job, tft_output: tft.TFTransformOutput):
    """The train and eval user views in rows, the family's context on them, and the
    candidate rows (bool [N]: the training vocabulary's items)."""
    rows = ItemRows(tft_output.vocabulary_by_name(F.ITEM_VOCAB), job.config.spec.behaviors)
    train_view = load_user_view(resolve_files(job.train_files), rows)
    eval_view = load_user_view(resolve_files(job.eval_files), rows)
    num_items = vocabulary_rows(tft_output, F.ITEM_VOCAB)
    context = model_context(job, tft_output, item_counts(train_view, num_items), 0.0, None)
    valid = np.zeros(num_items, dtype=bool)
    valid[1: len(rows.ids) + 1] = True
    return train_view, eval_view, context, valid


def epochs(max_epochs: int, steps_per_epoch: int, train_steps: Optional[int]) -> int:
    """Epochs within both budgets (the Trainer's train_steps, when given, caps total steps)."""
    if not train_steps:
        return max_epochs
    return max(1, min(max_epochs, math.ceil(train_steps / max(steps_per_epoch, 1))))


def steps_cap(train_steps: Optional[int], steps_per_epoch: int) -> int:
    return min(steps_per_epoch, train_steps) if train_steps else steps_per_epoch


def make_optimizer(hparams: HParams, warm: bool = False) -> keras.optimizers.Optimizer:
    """The Keras optimizer a family's record names (`TrainingParams.optimizer`), at its learning
    rate; `warm`: a warm-started fit's, at the rate times `warm_learning_rate_scale`."""
    training = hparams.training
    rate = training.learning_rate * (training.warm_learning_rate_scale if warm else 1.0)
    if training.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(rate)
    return keras.optimizers.Adam(rate)


def user_view_fit_args(job: Job, model: RecModel, train_ds, steps: int, eval_view, valid: np.ndarray,
                       protocol: str) -> Dict[str, Any]:
    """Fit arguments of a user-view recipe: repeated batches within the budgets and, for a
    model that retrieves, the top-K metrics of the eval split after every epoch (`protocol`)."""
    config = job.config
    callbacks = []
    if RETRIEVE in model.capabilities:
        callbacks.append(topk.TopKCallback(eval_view, config.max_history, valid, config.top_k, protocol))
    return dict(
        x=train_ds.repeat(), steps_per_epoch=steps_cap(job.train_steps, steps),
        epochs=epochs(job.hparams.training.max_epochs, steps, job.train_steps), callbacks=callbacks,
    )


def keras_setup(job: Job, build: Callable[[], Tuple[RecModel, Dict[str, Any], np.ndarray]]) -> Setup:
    """A Keras recipe's setup: `build()` (the model, Model.fit arguments and candidate rows)
    under the job's `tf.distribute` strategy; for a job with `warm_from`, started from that
    model's weights (training/warm_start.py; the summary's `warm_start` says what was
    carried); compiled with the family's optimizer, at the warm learning rate when every
    weight was carried; `fit` runs Model.fit with early stopping on the model's eval metric."""
    strategy = distribute.make_strategy(job.config.strategy)
    replicas = strategy.num_replicas_in_sync
    with strategy.scope():  # batches stay global: fit splits each across the replicas
        model, fit_args, valid = build()
        first = next(iter(fit_args["eval_batches"]), None) if "eval_batches" in fit_args else None
        if first is not None:  # build the lazily created layers with one forward pass (an eval batch)
            model(first, training=False)
        warm = _warm_start(job, model, fit_args) if job.warm_from else None
        # A weight left initialised (another shape, or another architecture) is trained from scratch
        model.compile(optimizer=make_optimizer(job.hparams, warm=warm is not None and not warm["initialised"]))
        build_optimizer(model)
    if replicas > 1:
        model.distribute_reduction_method = "first"  # metrics are synchronised; losses averaged in the steps
        for key in ("x", "validation_data"):
            if key in fit_args:
                fit_args[key] = distribute.shard(fit_args[key], strategy)
    return Setup(model, valid, fit=lambda: {**keras_fit(job, model, fit_args, replicas),
                                            **({"warm_start": warm} if warm is not None else {})})


def build_optimizer(model: RecModel) -> bool:
    """Creates the compiled optimizer's slots for every trainable weight before Model.fit;
    returns whether it did.

    A train step whose first call creates the slots is traced twice by `tf.function` (once
    creating them, once without); built beforehand, it is traced once, which saves a trace's
    CPU time on every fit and trains to the same weights. Left to Keras: a model not yet built
    (slots for part of its weights could not update the rest), and a model whose hyperparameters
    draw dropout, whose masks' seeds follow the traces: it keeps drawing the masks it was
    measured with.
    """
    if not model.built or not model.trainable_variables or _draws_dropout(model.hparams):
        return False
    model.optimizer.build(model.trainable_variables)
    return True


def _draws_dropout(hparams: HParams) -> bool:
    return any("dropout" in field.name and getattr(hparams, field.name) for field in dataclasses.fields(hparams))


def _warm_start(job: Job, model: RecModel, fit_args: Dict[str, Any]) -> Dict[str, Any]:
    """Copies the weights of `job.warm_from` into the built model; returns what was carried. A
    model that retrieves first answers a query of empty histories, which builds the layers its
    query creates on their first call (a pointwise model was built by a forward pass)."""
    import tensorflow as tf

    from training import warm_start

    if "eval_batches" not in fit_args and RETRIEVE in model.capabilities:
        empty = tf.zeros([1, max(1, job.config.max_history)], tf.int64)
        model.query(empty, empty)
    tft_output = tft.TFTransformOutput(job.transform_output)
    return warm_start.warm_start(model, job.warm_from, {
        name: [t.decode("utf-8", "replace") if isinstance(t, bytes) else str(t)
               for t in tft_output.vocabulary_by_name(name)] for name in warm_start.vocabulary_names(job.config.spec)})


def keras_fit(job: Job, model: RecModel, fit_args: Dict[str, Any], replicas: int) -> Dict[str, Any]:
    """Model.fit until the model's eval metric (`RecModel.monitor`) stops improving for
    `patience` epochs, keeping the best epoch's weights; returns the training summary."""
    monitor, mode = model.monitor(job.config.top_k)
    stopping = keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=job.hparams.training.patience,
                                             restore_best_weights=True)
    started, cpu_started = time.monotonic(), time.process_time()
    eval_batches = fit_args.pop("eval_batches", None)
    callbacks = fit_args.pop("callbacks", []) + [MeanAUC(model), stopping]
    if job.hparams.training.weight_average:  # first: every other callback sees the averaged weights
        callbacks.insert(0, WeightAverage(job.hparams.training.weight_average))
    history = model.fit(callbacks=callbacks, verbose=2, **fit_args)
    seconds, cpu_seconds = time.monotonic() - started, time.process_time() - cpu_started
    logs = {k: [float(x) for x in v] for k, v in history.history.items()}
    best = int(np.nanargmin(logs[monitor]) if mode == "min" else np.nanargmax(logs[monitor])) if monitor in logs else None
    summary = {
        "family": job.family.name,
        "tasks": [t.name for t in model.context.tasks],
        "hparams": job.hparams.to_dict(),
        "epochs_run": len(next(iter(logs.values()), [])),
        "best_epoch": None if best is None else best + 1,
        "monitor": monitor,
        "best_value": None if best is None else logs[monitor][best],
        "train_seconds": round(seconds, 2),
        # The process's CPU time (all its threads) in Model.fit: unlike the wall time, it
        # does not grow when other work shares the machine.
        "train_cpu_seconds": round(cpu_seconds, 2),
        "learning_rate": float(keras.backend.get_value(model.optimizer.learning_rate)),
        "strategy": job.config.strategy,
        "replicas": replicas,
        "history": logs,
    }
    if hasattr(model, "task_weights"):
        summary["task_weights"] = model.task_weights()
    if eval_batches is not None and hasattr(model, "gate_weights"):
        gates = mean_gate_weights(model, eval_batches)
        if gates:
            summary["gates"] = gates
    return summary


class WeightAverage(keras.callbacks.Callback):
    """An exponential moving average of the trainable weights (momentum per step, started at
    the weights after the first step, when a model has created all of them). From the
    end of each epoch's training steps (before validation) to the start of the next epoch, the
    model holds the averaged weights, so validation, the epoch-end metrics (top-K), early
    stopping and the kept weights are the average's; training resumes on its own weights.
    A model held after fit holds the last epoch's average (or the best epoch's, restored by
    early stopping)."""

    def __init__(self, momentum: float):
        super().__init__()
        if not 0.0 < momentum < 1.0:
            raise ValueError(f"weight_average must be in (0, 1), got {momentum}")
        self.momentum = momentum
        self.average = self.trained = None
        self.holding = False

    def on_train_begin(self, logs=None):
        self.average = self.variables = None
        self.holding = False

    def on_train_batch_end(self, batch, logs=None):
        if self.average is None:  # after the first step: a model may create weights on its first call
            self._start()
        self.update()

    def _start(self):
        import tensorflow as tf

        variables = self.variables = list(self.model.trainable_variables)
        self.average = [tf.Variable(v, trainable=False) for v in variables]
        momentum = self.momentum

        @tf.function
        def update():
            for a, v in zip(self.average, variables):
                a.assign(momentum * a + (1.0 - momentum) * v)

        self.update = update

    def _hold_average(self):
        if not self.holding and self.average is not None:
            self.trained = [v.numpy() for v in self.variables]
            for v, a in zip(self.variables, self.average):
                v.assign(a)
            self.holding = True

    def on_test_begin(self, logs=None):
        if self.average is not None:  # validation inside fit (not a later evaluate)
            self._hold_average()

    def on_epoch_end(self, epoch, logs=None):
        self._hold_average()

    def on_epoch_begin(self, epoch, logs=None):
        if self.holding:
            for v, w in zip(self.variables, self.trained):
                v.assign(w)
            self.holding = False

    def on_train_end(self, logs=None):
        self.average = None


class MeanAUC(keras.callbacks.Callback):
    """Adds `val_mean_auc`, the mean eval AUC over the model's binary tasks, to each epoch's logs."""

    def __init__(self, model: RecModel):
        super().__init__()
        self.names = [f"val_{t.name}_auc" for t in model.context.pointwise_tasks if t.kind == T.BINARY]

    def on_epoch_end(self, epoch: int, logs: Optional[Dict] = None) -> None:
        if logs is not None and self.names and all(n in logs for n in self.names):
            logs["val_mean_auc"] = float(np.mean([logs[n] for n in self.names]))


def mean_gate_weights(model: RecModel, batches, max_batches: int = 50) -> Dict[str, Any]:
    """{task: [mean weight of each expert]} over eval batches; {} when the model has no gates.

    A collapsed gate (one expert near 1.0 for every task) is visible here.
    """
    sums: Dict[str, np.ndarray] = {}
    count = 0
    for i, batch in enumerate(batches):
        if i >= max_batches:
            break
        gates = model.gate_weights(batch)
        if not gates:
            return {}
        for task, weights in gates.items():
            sums[task] = sums.get(task, 0) + weights.numpy().sum(axis=0)
        count += int(next(iter(gates.values())).shape[0])
    return {task: [round(float(v), 4) for v in total / max(count, 1)] for task, total in sums.items()}
