"""Retrieval: a family retrieving over the whole catalogue, trained on leave-one-out batches
of the user view (each training interaction a target, the user's other training items
the query), early stopping on the eval split's NDCG@K (protocol K). The family's record
is a `models.hparams.RetrievalParams`."""

from __future__ import annotations

import math
from typing import List

import tensorflow_transform as tft

from contract import datasets as D
from models.hparams import HParams, RetrievalParams
from training import topk
from training.recipes import Job, Setup
from training.recipes import common
from training.views import retrieval_dataset, retrieval_pairs

STRATEGIES = common.ANY_STRATEGY


def setup(job: Job) -> Setup:
    common.begin(job)
    return common.keras_setup(job, lambda: build(job))


def build(job: Job):
    family, config, hparams = job.family, job.config, job.hparams
    if not isinstance(hparams, RetrievalParams):
        raise ValueError(f"{family.name}: the retrieval recipe trains a family whose record is a RetrievalParams; "
                         f"got {type(hparams).__name__}")
    tft_output = tft.TFTransformOutput(job.transform_output)
    train_view, eval_view, context, valid = common.user_views(job, tft_output)
    model = family.build(context, hparams)
    pairs = retrieval_pairs(train_view, target_behavior_ids(family.name, config.spec, hparams, config.split))
    if not len(pairs):
        raise ValueError(f"{family.name}: the user view's train split has no target interactions")
    batch_size = hparams.training.batch_size
    train_ds = retrieval_dataset(train_view, pairs, batch_size, config.max_history, config.seed,
                                 exclude_own=hparams.exclude_own, user_balance=hparams.user_balance)
    steps = math.ceil(len(pairs) / batch_size)
    return model, common.user_view_fit_args(job, model, train_ds, steps, eval_view, valid, topk.PROTOCOL_K), valid


def target_behavior_ids(family: str, spec: D.DatasetSpec, hparams: HParams, split: str) -> List[int]:
    """Behavior ids (1..n) of a retrieval family's training targets (empty: every interaction).

    The family's `target_behaviors`, or else the ones `split` evaluates (the description's
    retrieval target behaviors on the hash split), so that the family learns to retrieve
    what it is measured on.
    """
    names = tuple(hparams.target_behaviors) or spec.retrieval_targets(split)
    unknown = [b for b in names if b not in spec.behaviors]
    if unknown:
        raise ValueError(f"{family}: target_behaviors {unknown} are not behaviors of dataset {spec.name!r}; "
                         f"expected some of {list(spec.behaviors)}")
    return [spec.behaviors.index(b) + 1 for b in names]
