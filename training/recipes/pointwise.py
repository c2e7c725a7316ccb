"""Pointwise: a family scoring interaction-view examples (Transform's output), one loss per
task, early stopping on the eval split's task metric (RMSE, AUC or the mean AUC)."""

from __future__ import annotations

from typing import Optional

import numpy as np
import tensorflow_transform as tft

from contract import features as F
from models.context import item_table_names
from training.inputs import item_feature_table, load_examples, make_dataset, num_batches
from training.recipes import Job, Setup, SoftLabels
from training.recipes import common

STRATEGIES = common.ANY_STRATEGY
EVAL_BATCH = 1024  # examples per eval batch


def setup(job: Job) -> Setup:
    common.begin(job)
    return common.keras_setup(job, lambda: build(job, job.soft_labels))


def build(job: Job, soft_labels: Optional[SoftLabels]):
    """The model on the training examples' statistics, its Model.fit arguments and candidate
    rows; `soft_labels` adds a teacher's columns to the training rows."""
    config, spec, hparams = job.config, job.config.spec, job.hparams
    tft_output = tft.TFTransformOutput(job.transform_output)
    data = load_examples(job.train_files, tft_output, config.max_history)
    eval_data = load_examples(job.eval_files, tft_output, config.max_history)
    num_items = common.vocabulary_rows(tft_output, F.ITEM_VOCAB)
    table = item_feature_table(data, num_items, [n for n in item_table_names(spec.description) if n in data])
    positive = data[spec.implicit_label].astype(bool)
    counts = np.bincount(data[F.ITEM_IDX][positive], minlength=num_items).astype(np.float32)[:num_items]
    rating = spec.description.rating_label  # the training mean rating starts a regression output
    rated = positive if rating and rating in data else np.zeros_like(positive)
    mean_rating = float(np.mean(data[rating][rated])) if rated.any() else 0.0
    present = table.pop("present")
    if job.rows is not None:
        keep = job.rows(data), job.rows(eval_data)
        data, eval_data = ({k: v[m] for k, v in part.items()} for part, m in zip((data, eval_data), keep))
    context = common.model_context(job, tft_output, counts, mean_rating, table, train_rows=data)
    model = job.family.build(context, hparams)
    if soft_labels is not None:
        data = {**data, **soft_labels(data)}
    batch_size = hparams.training.batch_size
    train_ds = make_dataset(data, batch_size, shuffle=True, seed=config.seed, repeat=True)
    steps = num_batches(data, batch_size)
    fit_args = dict(
        x=train_ds, steps_per_epoch=common.steps_cap(job.train_steps, steps),
        epochs=common.epochs(hparams.training.max_epochs, steps, job.train_steps),
        validation_data=make_dataset(eval_data, EVAL_BATCH, shuffle=False),
        eval_batches=make_dataset(eval_data, EVAL_BATCH, shuffle=False),
    )
    valid = present.copy()
    valid[0] = False
    return model, fit_args, valid
