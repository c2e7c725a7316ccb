"""The Trainer's `run_fn`: resolves the family's training recipe, sets up, fits, exports.

One `run_fn` serves every family; the pipeline holds one Trainer per family. How a
family is trained is its recipe (training/recipes/, named by its registry entry; an
ensemble when its record asks for `members` k > 1): the recipe builds the model on its
view of the data and fits it, with early stopping on the family's eval-split metric
(`patience`), keeping the best epoch's weights, never longer than `max_epochs` or the
Trainer's `train_steps`. The Trainer then exports the model with its signatures.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras

from contract import protocol
from export.signatures import export_model
from models.base import RecModel
from models.context import ModelContext
from models.registry import get_family
from training import distribute, recipes
from training.config import TrainConfig
from training.recipes import Job, Rows, SoftLabels
from training.recipes.common import MeanAUC, make_optimizer, mean_gate_weights, vocabulary_rows  # noqa: F401
from training.recipes.retrieval import target_behavior_ids  # noqa: F401

TRAINING_SUMMARY = protocol.TRAINING_SUMMARY


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


def fit(job: Job) -> Tuple[RecModel, Dict[str, Any], np.ndarray]:
    """Resolves the job's recipe, sets it up and fits; returns the model, the training
    summary and the candidate rows (bool [N])."""
    _skip_autograph_for_tf_keras()
    setup = recipes.resolve(job.family, job.hparams).setup(job)
    summary = setup.fit()
    return setup.model, summary, setup.valid


def train(
    config: TrainConfig,
    train_files,
    eval_files,
    transform_output: str,
    train_steps: Optional[int] = None,
    soft_labels: Optional[SoftLabels] = None,
    rows: Optional[Rows] = None,
    warm_from: Optional[str] = None,
) -> Tuple[RecModel, Dict[str, Any], np.ndarray]:
    """Trains one family in this process; returns the model, a summary and the candidate rows.

    `warm_from`, a model of the same family (its last blessed one), gives the starting
    weights (training/warm_start.py); the summary's `warm_start` says what was carried.

    `soft_labels`, for a distilled student (training/distillation.py), maps the training
    rows to extra columns (a teacher's soft labels) added to those rows only; without them
    a student trains alone. `rows` maps a split's rows to the bool [n] rows to train and
    early-stop on (e.g. the rows where the model's tasks are defined; item statistics
    still come from every training row).
    """
    return fit(Job(config, config.family_entry, config.params, train_files, eval_files, transform_output,
                   train_steps, soft_labels=soft_labels, rows=rows, alone=True, warm_from=warm_from))


def train_and_export(config: TrainConfig, train_files, eval_files, transform_output: str, serving_model_dir: str,
                     train_steps: Optional[int] = None, base_model: Optional[str] = None) -> Dict[str, Any]:
    """Trains one family and exports it with its signatures; returns the training summary.

    `base_model` is the upstream Trainer's exported model of a family that has one (the
    teacher a student distils from, the base a family fine-tunes), or, with
    `config.warm_start` (a family without upstream), the family's last blessed model that
    training starts from.
    """
    family = config.family_entry
    upstream = bool(family.teacher or family.base)
    # A family whose record turns warm starts off (TrainingParams.warm_start) trains from scratch
    warm = config.warm_start and config.params.training.warm_start and not upstream
    job = Job(config, family, config.params, train_files, eval_files, transform_output, train_steps,
              base_model=base_model if upstream else None, warm_from=base_model if warm else None)
    model, summary, valid = fit(job)
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
                               base_model=fn_args.base_model)
    if fn_args.model_run_dir:
        tf.io.gfile.makedirs(fn_args.model_run_dir)
        with tf.io.gfile.GFile(f"{fn_args.model_run_dir}/{TRAINING_SUMMARY}", "w") as f:
            f.write(json.dumps(summary, indent=2))
    logging.info("trained %s: %s", config.family, {k: v for k, v in summary.items() if k != "history"})


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
