"""The Trainer's `run_fn`: builds the family named in the custom config, trains, exports.

One `run_fn` serves every family; the pipeline holds one Trainer per family. Families
on the interaction view read Transform's output; families on the user view read the
raw user view and map ids with Transform's vocabulary: leave-one-out retrieval batches,
or, for a sequential family (a `SequentialModel`), windows of each user's training
sequence with the family's objective, stopped on protocol S of the eval split. Training runs epochs until the
family's eval-split metric stops improving (`patience`), keeps the best epoch's
weights, and never trains longer than `max_epochs` or the Trainer's `train_steps`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras

from contract import protocol
from contract import datasets as D
from contract import features as F
from contract import tasks as T
from export.signatures import export_model
from models.base import RETRIEVE, RecModel
from models.context import ModelContext, feature_inputs, item_table_names
from models.registry import Family, get_family
from models.blocks import patches as P
from training import distribute, downstream, peterrec, topk
from training.inputs import item_feature_table, load_examples, make_dataset, num_batches, resolve_files
from models.families.sequential import SequentialModel
from training.views import (ItemRows, item_counts, load_user_view, retrieval_dataset, retrieval_pairs, sequence_dataset,
                            sequence_windows)

TRAINING_SUMMARY = protocol.TRAINING_SUMMARY


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """What the pipeline tells the Trainer besides the files (its custom_config).

    Attributes:
      family: registry name.
      description: the dataset description mapping (contract.datasets.DatasetSpec.to_dict()).
      hparams: overrides of the family's hyperparameters (name -> value).
      max_history: the pipeline's max_history (ExampleGen, Transform, queries).
      seed: initialisation and shuffling seed.
      top_k: K of `recommend`, `similar_items` and the top-K metrics.
      tasks: the task names to train (empty: the family's tasks on the dataset); the
        pipeline passes the list its Evaluator measures.
      strategy: the `tf.distribute` strategy (training.distribute.STRATEGIES). A family
        fine-tuned from a base model (PeterRec) trains in one process: `default` only.
      split: ExampleGen's split method of the files (which behaviors the eval split's
        retrieval targets have: `DatasetSpec.retrieval_targets`).
      warm_start: the Trainer's `base_model` is the family's last blessed model, and
        training starts from it (training/warm_start.py); no base model: from scratch.
    """

    family: str
    description: Dict[str, Any] = dataclasses.field(default_factory=dict)
    hparams: Dict[str, Any] = dataclasses.field(default_factory=dict)
    max_history: int = F.MAX_HISTORY
    seed: int = 42
    top_k: int = 10
    tasks: Tuple[str, ...] = ()
    strategy: str = distribute.DEFAULT
    split: str = D.HASH_SPLIT
    warm_start: bool = False

    def __post_init__(self):
        if not self.description:
            raise ValueError(f"TrainConfig of {self.family!r} needs the dataset description mapping "
                             "(description=contract.datasets.dataset_spec(...).to_dict())")
        if self.strategy not in distribute.STRATEGIES:
            raise ValueError(f"unknown training strategy {self.strategy!r}; expected one of "
                             f"{list(distribute.STRATEGIES)}")
        if self.strategy != distribute.DEFAULT and get_family(self.family).base:
            # fine_tune_pretrained's loop (training/peterrec.py) runs outside any strategy scope:
            # refuse rather than train on one device while the run says otherwise.
            raise ValueError(f"{self.family} is fine-tuned from {get_family(self.family).base} in one process; "
                             f"training strategy {self.strategy!r} is not supported for it (use "
                             f"{distribute.DEFAULT!r})")

    @classmethod
    def from_custom_config(cls, config: Dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"unknown Trainer custom_config keys {unknown}; expected some of {sorted(known)}")
        config = dict(config)
        config["tasks"] = tuple(config.get("tasks", ()))
        return cls(**config)

    @property
    def spec(self) -> D.DatasetSpec:
        """The dataset's spec (from `description`)."""
        return D.dataset_spec(self.description)

    def to_custom_config(self) -> Dict[str, Any]:
        out = dataclasses.asdict(self)
        out["tasks"] = list(self.tasks)
        return out


def _skip_autograph_for_tf_keras() -> None:
    """Stops autograph from converting tf_keras internals on the first `fit`.

    TF 2.16's do-not-convert list names `keras` but not `tf_keras`, so the first fit
    spent 25-40 s converting tf_keras code that needs no conversion (measured: Trainer
    fit ~40 s -> 3-6 s). This is a private TensorFlow setting; it lives here only, and
    without it training is slower but identical.
    """
    try:
        from tensorflow.python.autograph.core import config  # private: see docstring

        rule = config.DoNotConvert("tf_keras")
        if all(getattr(r, "module_prefix", None) != "tf_keras" for r in config.CONVERSION_RULES):
            config.CONVERSION_RULES = (rule,) + tuple(config.CONVERSION_RULES)
    except (ImportError, AttributeError):  # a TF without that setting: just slower
        logging.info("autograph do-not-convert rule for tf_keras not available")


def vocabulary_rows(tf_transform_output: tft.TFTransformOutput, name: str) -> int:
    """Embedding rows for a shifted vocabulary: padding 0, the vocabulary, OOV buckets."""
    return tf_transform_output.vocabulary_size_by_name(name) + F.OOV_BUCKETS + 1


def _context(family: Family, spec: D.DatasetSpec, tft_output: tft.TFTransformOutput, config: TrainConfig,
             counts: np.ndarray, mean_rating: float, table: Optional[Dict[str, np.ndarray]]) -> ModelContext:
    """The family's model context: tasks, sizes and the description's side-table features with
    the rows of their Transform vocabularies (`Feature.vocabulary_name`)."""
    tasks = family.task_specs(spec)
    if config.tasks:
        by_name = {t.name: t for t in tasks}
        unknown = [t for t in config.tasks if t not in by_name]
        if unknown:
            raise ValueError(f"{family.name} has no task {unknown}; its tasks: {sorted(by_name)}")
        tasks = tuple(by_name[t] for t in config.tasks)
    return ModelContext(
        dataset=spec,
        tasks=tasks,
        num_users=vocabulary_rows(tft_output, F.USER_VOCAB),
        num_items=vocabulary_rows(tft_output, F.ITEM_VOCAB),
        num_behaviors=len(spec.behaviors) + 2,
        features=feature_inputs(spec.description, lambda name: vocabulary_rows(tft_output, name)),
        max_history=config.max_history,
        mean_rating=mean_rating,
        item_counts=counts,
        item_table=table,
        text_rows={c.name: vocabulary_rows(tft_output, c.vocabulary_name) for c in spec.description.text_columns},
        seed=config.seed,
    )


def _epochs(max_epochs: int, steps_per_epoch: int, train_steps: Optional[int]) -> int:
    """Epochs within both budgets (the Trainer's train_steps, when given, caps total steps)."""
    if not train_steps:
        return max_epochs
    return max(1, min(max_epochs, math.ceil(train_steps / max(steps_per_epoch, 1))))


def _steps_cap(train_steps: Optional[int], steps_per_epoch: int) -> int:
    return min(steps_per_epoch, train_steps) if train_steps else steps_per_epoch


def train(
    config: TrainConfig,
    train_files,
    eval_files,
    transform_output: str,
    train_steps: Optional[int] = None,
    soft_labels: Optional[Callable[[Dict[str, np.ndarray]], Dict[str, np.ndarray]]] = None,
    rows: Optional[Callable[[Dict[str, np.ndarray]], np.ndarray]] = None,
    warm_from: Optional[str] = None,
) -> Tuple[RecModel, Dict[str, Any], np.ndarray]:
    """Trains one family; returns the model, a summary and the candidate rows (bool [N]).

    `warm_from`, a model of the same family (its last blessed one), gives the starting
    weights (training/warm_start.py); the summary's `warm_start` says what was carried.

    `soft_labels`, for a distilled student (training/distillation.py), maps the training
    rows to extra columns (a teacher's soft labels) added to those rows only. `rows` maps
    a split's rows to the bool [n] rows to train and early-stop on (e.g. the rows where
    the model's tasks are defined; item statistics still come from every training row).
    """
    _skip_autograph_for_tf_keras()
    keras.utils.set_random_seed(config.seed)
    family = get_family(config.family)
    spec = config.spec
    hparams = family.hparams().override(config.hparams)
    if getattr(hparams, "members", 1) > 1:
        return _train_members(config, family, spec, hparams, train_files, eval_files, transform_output, train_steps)
    tft_output = tft.TFTransformOutput(transform_output)
    strategy = distribute.make_strategy(config.strategy)
    replicas = strategy.num_replicas_in_sync
    with strategy.scope():  # batches stay global: fit splits each across the replicas
        if family.view == F.USER_VIEW:
            model, fit_args, valid = _user_view_setup(family, spec, tft_output, config, hparams, train_files,
                                                      eval_files, train_steps)
        else:
            model, fit_args, valid = _interaction_setup(family, spec, tft_output, config, hparams, train_files,
                                                        eval_files, train_steps, soft_labels, rows)
        model.compile(optimizer=make_optimizer(hparams))
        warm = None
        if warm_from:
            from training import warm_start

            if "eval_batches" in fit_args:  # build the lazily created layers with one forward pass
                model(next(iter(fit_args["eval_batches"])), training=False)
            warm = warm_start.warm_start(model, warm_from, {
                name: [t.decode("utf-8", "replace") if isinstance(t, bytes) else str(t)
                       for t in tft_output.vocabulary_by_name(name)] for name in warm_start.vocabulary_names(spec)})
    if replicas > 1:
        model.distribute_reduction_method = "first"  # metrics are synchronised; losses averaged in the steps
        for key in ("x", "validation_data"):
            if key in fit_args:
                fit_args[key] = distribute.shard(fit_args[key], strategy)
    monitor, mode = model.monitor(config.top_k)
    stopping = keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=hparams.patience,
                                             restore_best_weights=True)
    started = time.monotonic()
    eval_batches = fit_args.pop("eval_batches", None)
    callbacks = fit_args.pop("callbacks", []) + [MeanAUC(model), stopping]
    history = model.fit(callbacks=callbacks, verbose=2, **fit_args)
    seconds = time.monotonic() - started
    logs = {k: [float(x) for x in v] for k, v in history.history.items()}
    best = int(np.nanargmin(logs[monitor]) if mode == "min" else np.nanargmax(logs[monitor])) if monitor in logs else None
    summary = {
        "family": family.name,
        "tasks": [t.name for t in model.context.tasks],
        "hparams": hparams.to_dict(),
        "epochs_run": len(next(iter(logs.values()), [])),
        "best_epoch": None if best is None else best + 1,
        "monitor": monitor,
        "best_value": None if best is None else logs[monitor][best],
        "train_seconds": round(seconds, 2),
        "strategy": config.strategy,
        "replicas": replicas,
        "history": logs,
    }
    if warm is not None:
        summary["warm_start"] = warm
    if hasattr(model, "task_weights"):
        summary["task_weights"] = model.task_weights()
    if eval_batches is not None and hasattr(model, "gate_weights"):
        gates = mean_gate_weights(model, eval_batches)
        if gates:
            summary["gates"] = gates
    return model, summary, valid


def _train_members(config: TrainConfig, family: Family, spec: D.DatasetSpec, hparams, train_files, eval_files,
                   transform_output: str, train_steps: Optional[int]) -> Tuple[RecModel, Dict[str, Any], np.ndarray]:
    """An ensemble (`members` k > 1, two_tower): k one-member models trained one after the
    other, member m with seed + m (its own initial weights, data order and early stopping),
    then put side by side in one model whose scores are the sum of theirs. Members trained
    together on the same batches agree too much to gain from each other
    (bench/results/tuning/two_tower_members_joint.md)."""
    runs = []
    for m in range(hparams.members):
        member = dataclasses.replace(config, seed=config.seed + m, hparams={**config.hparams, "members": "1"})
        runs.append(train(member, train_files, eval_files, transform_output, train_steps))
    keras.utils.set_random_seed(config.seed)
    model = family.build(runs[0][0].context, hparams)
    model.assemble([r[0] for r in runs])
    model.compile(optimizer=make_optimizer(hparams))
    tft_output = tft.TFTransformOutput(transform_output)
    _, eval_view, _, valid = _user_views(family, spec, tft_output, config, train_files, eval_files)
    monitor = runs[0][1]["monitor"]
    metrics = topk.evaluate(topk.model_scores(model), eval_view, config.max_history, valid, config.top_k)
    members = [{k: r[1][k] for k in ("best_epoch", "epochs_run", "best_value", "train_seconds")} for r in runs]
    for m, entry in enumerate(members):
        entry["seed"] = config.seed + m
    summary = {
        "family": family.name,
        "tasks": [t.name for t in model.context.tasks],
        "hparams": hparams.to_dict(),
        "epochs_run": max(m["epochs_run"] for m in members),
        "best_epoch": max(m["best_epoch"] for m in members),
        "monitor": monitor,
        "best_value": metrics[monitor[len("val_"):]],
        "train_seconds": round(sum(m["train_seconds"] for m in members), 2),
        "strategy": config.strategy,
        "replicas": runs[0][1]["replicas"],  # each member trains under the strategy
        "members": members,
        "history": {},
    }
    return model, summary, valid


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


def _interaction_setup(family, spec, tft_output, config, hparams, train_files, eval_files, train_steps,
                       soft_labels=None, rows=None):
    data = load_examples(train_files, tft_output, config.max_history)
    eval_data = load_examples(eval_files, tft_output, config.max_history)
    num_items = vocabulary_rows(tft_output, F.ITEM_VOCAB)
    table = item_feature_table(data, num_items, [n for n in item_table_names(spec.description) if n in data])
    positive = data[spec.implicit_label].astype(bool)
    counts = np.bincount(data[F.ITEM_IDX][positive], minlength=num_items).astype(np.float32)[:num_items]
    rating = spec.description.rating_label  # the training mean rating starts a regression output
    rated = positive if rating and rating in data else np.zeros_like(positive)
    mean_rating = float(np.mean(data[rating][rated])) if rated.any() else 0.0
    present = table.pop("present")
    context = _context(family, spec, tft_output, config, counts, mean_rating, table)
    model = family.build(context, hparams)
    if rows is not None:
        keep = rows(data), rows(eval_data)
        data, eval_data = ({k: v[m] for k, v in part.items()} for part, m in zip((data, eval_data), keep))
    if soft_labels is not None:
        data = {**data, **soft_labels(data)}
    train_ds = make_dataset(data, hparams.batch_size, shuffle=True, seed=config.seed, repeat=True)
    steps = num_batches(data, hparams.batch_size)
    fit_args = dict(
        x=train_ds, steps_per_epoch=_steps_cap(train_steps, steps),
        epochs=_epochs(hparams.max_epochs, steps, train_steps),
        validation_data=make_dataset(eval_data, 1024, shuffle=False),
        eval_batches=make_dataset(eval_data, 1024, shuffle=False),
    )
    valid = present.copy()
    valid[0] = False
    return model, fit_args, valid


def target_behavior_ids(family: str, spec: D.DatasetSpec, hparams, split: str) -> List[int]:
    """Behavior ids (1..n) of a retrieval family's training targets (empty: every interaction).

    The family's `target_behaviors`, or else the ones `split` evaluates (the description's
    retrieval target behaviors on the hash split), so that the family learns to retrieve
    what it is measured on.
    """
    names = tuple(getattr(hparams, "target_behaviors", ())) or spec.retrieval_targets(split)
    unknown = [b for b in names if b not in spec.behaviors]
    if unknown:
        raise ValueError(f"{family}: target_behaviors {unknown} are not behaviors of dataset {spec.name!r}; "
                         f"expected some of {list(spec.behaviors)}")
    return [spec.behaviors.index(b) + 1 for b in names]


def _user_views(family, spec, tft_output, config, train_files, eval_files):
    """The train and eval user views in rows, the family's context on them, and the
    candidate rows (bool [N]: the training vocabulary's items)."""
    rows = ItemRows(tft_output.vocabulary_by_name(F.ITEM_VOCAB), spec.behaviors)
    train_view = load_user_view(resolve_files(train_files), rows)
    eval_view = load_user_view(resolve_files(eval_files), rows)
    num_items = vocabulary_rows(tft_output, F.ITEM_VOCAB)
    context = _context(family, spec, tft_output, config, item_counts(train_view, num_items), 0.0, None)
    valid = np.zeros(num_items, dtype=bool)
    valid[1: len(rows.ids) + 1] = True
    return train_view, eval_view, context, valid


def _user_view_setup(family, spec, tft_output, config, hparams, train_files, eval_files, train_steps):
    train_view, eval_view, context, valid = _user_views(family, spec, tft_output, config, train_files, eval_files)
    model = family.build(context, hparams)
    if isinstance(model, SequentialModel):
        train_ds, steps = _sequence_training(family, model, hparams, train_view, config.seed)
        protocol = topk.PROTOCOL_S
    else:
        pairs = retrieval_pairs(train_view, target_behavior_ids(family.name, spec, hparams, config.split))
        if not len(pairs):
            raise ValueError(f"{family.name}: the user view's train split has no target interactions")
        train_ds = retrieval_dataset(train_view, pairs, hparams.batch_size, config.max_history, config.seed,
                                     exclude_own=getattr(hparams, "exclude_own", True),
                                     user_balance=getattr(hparams, "user_balance", 0.0))
        steps = math.ceil(len(pairs) / hparams.batch_size)
        protocol = topk.PROTOCOL_K
    callbacks = []
    if RETRIEVE in model.capabilities:
        callbacks.append(topk.TopKCallback(eval_view, config.max_history, valid, config.top_k, protocol))
    fit_args = dict(
        x=train_ds.repeat(), steps_per_epoch=_steps_cap(train_steps, steps),
        epochs=_epochs(hparams.max_epochs, steps, train_steps), callbacks=callbacks,
    )
    return model, fit_args, valid


def _sequence_training(family, model: SequentialModel, hparams, train_view, seed: int):
    """The training windows of a sequential family (objective from the model): (dataset, steps)."""
    windows = sequence_windows(train_view, model.max_len, model.objective,
                               stride=min(hparams.window_stride, model.max_len))
    if not len(windows):
        raise ValueError(f"{family.name}: no user of the user view's train split has a sequence to train on "
                         f"(at least two items)")
    dataset = sequence_dataset(train_view, windows, hparams.batch_size, seed, model.objective,
                               mask_row=getattr(model, "mask_row", 0), mask_prob=getattr(hparams, "mask_prob", 0.0),
                               last_mask_prob=getattr(hparams, "last_mask_prob", 0.0))
    return dataset, math.ceil(len(windows) / hparams.batch_size)


def fine_tune_pretrained(config: TrainConfig, train_files, eval_files, transform_output: str,
                         base_model: Optional[str], train_steps: Optional[int] = None
                         ) -> Tuple[RecModel, Dict[str, Any], np.ndarray]:
    """A family with a base (PeterRec): its base Trainer's network, patched, fine-tuned on the
    family's next-behavior task of the user view (training/downstream.py's split rules:
    training windows of the train histories, early stopping on the eval split's AUC).
    Returns the model, a summary and the candidate rows, as `train`."""
    _skip_autograph_for_tf_keras()
    keras.utils.set_random_seed(config.seed)
    family = get_family(config.family)
    if not base_model:
        raise ValueError(f"{config.family} fine-tunes {family.base}: its Trainer needs {family.base}'s model as "
                         "base_model")
    spec = config.spec
    hparams = family.hparams().override(config.hparams)
    tft_output = tft.TFTransformOutput(transform_output)
    train_view, eval_view, context, valid = _user_views(family, spec, tft_output, config, train_files, eval_files)
    views = {downstream.TRAIN: train_view, downstream.EVAL: eval_view}
    # scratch: the base's architecture, freshly initialised.
    network = peterrec.pretrained_network(base_model, context, load=P.loads_pretrained(hparams.mode))
    model = family.model(context, hparams, network=network)
    task = context.pointwise_tasks[0].name
    data = downstream.next_behavior(views, model.max_len, task, spec, hparams.windows_per_user)
    steps = math.ceil(len(data.splits[downstream.TRAIN]) / hparams.batch_size)
    result = peterrec.fine_tune(model.classifier, data, hparams.learning_rate, hparams.batch_size,
                                _epochs(hparams.max_epochs, steps, train_steps), hparams.patience, config.seed,
                                verbose=2, steps_per_epoch=_steps_cap(train_steps, steps),
                                optimizer=make_optimizer(hparams))
    summary = {
        "family": family.name,
        "tasks": [task],
        "hparams": hparams.to_dict(),
        "epochs_run": result["epochs_run"],
        "best_epoch": result["best_epoch"],
        "monitor": f"val_{task}_{result['metric']}",
        "best_value": result["eval"],
        "train_seconds": result["train_seconds"],
        "trained_parameters": result["trained_parameters"],
        "examples": data.counts(),
        "base_model": base_model,
        "history": {f"val_{task}_{result['metric']}": result["eval_history"]},
    }
    return model, summary, valid


def train_and_export(config: TrainConfig, train_files, eval_files, transform_output: str, serving_model_dir: str,
                     train_steps: Optional[int] = None, base_model: Optional[str] = None) -> Dict[str, Any]:
    """Trains one family and exports it with its signatures; returns the training summary.

    A family with a teacher (registry) distils from `base_model`, the teacher Trainer's
    exported model (its `soft_labels` on the training rows).
    """
    family = get_family(config.family)
    if family.base:
        model, summary, valid = fine_tune_pretrained(config, train_files, eval_files, transform_output, base_model,
                                                     train_steps)
        export_model(model, tft.TFTransformOutput(transform_output), valid, serving_model_dir, top_k=config.top_k,
                     family=config.family)
        return summary
    soft_labels = None
    teacher = family.teacher
    if teacher:
        if not base_model:
            raise ValueError(f"{config.family} distils from {teacher}: its Trainer needs the teacher's model as "
                             "base_model")
        from training.distillation import saved_teacher_soft_labels

        soft_labels = saved_teacher_soft_labels(base_model, train_files)
    model, summary, valid = train(config, train_files, eval_files, transform_output, train_steps,
                                  soft_labels=soft_labels,
                                  warm_from=base_model if config.warm_start and not teacher else None)
    if teacher:
        summary["teacher_model"] = base_model
    if distribute.is_chief(model.distribute_strategy):
        export_model(model, tft.TFTransformOutput(transform_output), valid, serving_model_dir, top_k=config.top_k,
                     family=config.family)
    else:  # every worker saves (saving may need all of them); only the chief's export is kept
        scratch = tempfile.mkdtemp(prefix="worker-export-")
        try:
            export_model(model, tft.TFTransformOutput(transform_output), valid, scratch, top_k=config.top_k)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return summary


def run_fn(fn_args) -> None:
    """TFX Trainer entry point (GenericExecutor)."""
    config = TrainConfig.from_custom_config(dict(fn_args.custom_config or {}))
    summary = train_and_export(config, fn_args.train_files, fn_args.eval_files, fn_args.transform_output,
                               fn_args.serving_model_dir, train_steps=fn_args.train_steps,
                               base_model=getattr(fn_args, "base_model", None))
    if fn_args.model_run_dir:
        tf.io.gfile.makedirs(fn_args.model_run_dir)
        with tf.io.gfile.GFile(f"{fn_args.model_run_dir}/{TRAINING_SUMMARY}", "w") as f:
            f.write(json.dumps(summary, indent=2))
    logging.info("trained %s: %s", config.family, {k: v for k, v in summary.items() if k != "history"})


def make_optimizer(hparams) -> keras.optimizers.Optimizer:
    """The Keras optimizer a family's record names (`HParams.optimizer`), at its learning rate."""
    if hparams.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(hparams.learning_rate)
    return keras.optimizers.Adam(hparams.learning_rate)


def fit_on_arrays(family_name: str, context: ModelContext, hparams_overrides: Dict[str, Any],
                  batches: Sequence[Dict[str, np.ndarray]], epochs: int = 1) -> RecModel:
    """Builds a family on `context` and fits it on in-memory batches (for unit tests).

    Seeds Python, NumPy and TensorFlow from `context.seed` first, as `train` does, so that a
    test's result does not depend on which tests ran before it.
    """
    _skip_autograph_for_tf_keras()
    keras.utils.set_random_seed(context.seed)
    family = get_family(family_name)
    model = family.build(context, family.hparams().override(hparams_overrides))
    model.compile(optimizer=make_optimizer(model.hparams))
    first = batches[0]
    signature = {k: tf.TensorSpec((None,) + np.shape(v)[1:], tf.as_dtype(np.asarray(v).dtype)) for k, v in first.items()}
    ds = tf.data.Dataset.from_generator(lambda: iter(batches), output_signature=signature)
    model.fit(ds, epochs=epochs, verbose=0)
    return model
