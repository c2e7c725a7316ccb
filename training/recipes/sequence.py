"""Sequence: a sequential family (`models.families.sequential.SequentialModel`) trained on
windows of each user's training sequence with the model's objective (next item, or cloze
with the model's masking), early stopping on the eval split's full NDCG@10 (protocol S)."""

from __future__ import annotations

import math

import tensorflow_transform as tft

from models.families.sequential import SequentialModel
from training import topk
from training.recipes import Job, Setup
from training.recipes import common
from training.views import sequence_dataset, sequence_windows

STRATEGIES = common.ANY_STRATEGY


def setup(job: Job) -> Setup:
    common.begin(job)
    return common.keras_setup(job, lambda: build(job))


def build(job: Job):
    family, hparams = job.family, job.hparams
    tft_output = tft.TFTransformOutput(job.transform_output)
    train_view, eval_view, context, valid = common.user_views(job, tft_output)
    model = family.build(context, hparams)
    if not isinstance(model, SequentialModel):
        raise ValueError(f"{family.name}: the sequence recipe trains a SequentialModel; got {type(model).__name__}")
    windows = sequence_windows(train_view, model.max_len, model.objective,
                               stride=min(hparams.window_stride, model.max_len))
    if not len(windows):
        raise ValueError(f"{family.name}: no user of the user view's train split has a sequence to train on "
                         f"(at least two items)")
    batch_size = hparams.training.batch_size
    mask_row, mask_prob, last_mask_prob = model.cloze_masking()
    train_ds = sequence_dataset(train_view, windows, batch_size, job.seed, model.objective, mask_row=mask_row,
                                mask_prob=mask_prob, last_mask_prob=last_mask_prob)
    steps = math.ceil(len(windows) / batch_size)
    return model, common.user_view_fit_args(job, model, train_ds, steps, eval_view, valid, topk.PROTOCOL_S), valid
