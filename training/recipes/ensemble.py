"""Ensemble: `members` k > 1 models of a family, each trained by the family's own recipe
one after the other, member m with seed + m (its own initial weights, data order and
early stopping), then put side by side in one model of the family (its `assemble`) whose
scores are the sum of theirs, measured on the eval split's top-K metrics. Members trained
together on the same batches agree too much to gain from each other
(bench/results/tuning/two_tower_members_joint.md)."""

from __future__ import annotations

import tensorflow_transform as tft
import tf_keras as keras

from training import topk
from training.recipes import Job, Setup
from training.recipes import common, get

STRATEGIES = common.ANY_STRATEGY  # each member trains under the strategy


def setup(job: Job) -> Setup:
    family, config, hparams = job.family, job.config, job.hparams
    members = hparams.training.members
    if not hasattr(family.model, "assemble"):
        raise ValueError(f"{family.name}: members={members} needs a model that assembles one-member models "
                         f"(`assemble`); {family.model.__name__} does not (use members=1)")
    recipe = get(family.recipe)
    runs = []
    for m in range(members):
        member = recipe.setup(job.member(m))
        runs.append((member.model, member.fit()))
    keras.utils.set_random_seed(config.seed)
    model = family.build(runs[0][0].context, hparams)
    model.assemble([r[0] for r in runs])
    model.compile(optimizer=common.make_optimizer(hparams))
    tft_output = tft.TFTransformOutput(job.transform_output)
    _, eval_view, _, valid = common.user_views(job, tft_output)

    def fit():
        monitor = runs[0][1]["monitor"]
        metrics = topk.evaluate(topk.model_scores(model), eval_view, config.max_history, valid, config.top_k)
        summaries = [{k: r[1][k] for k in ("best_epoch", "epochs_run", "best_value", "train_seconds")} for r in runs]
        for m, entry in enumerate(summaries):
            entry["seed"] = config.seed + m
        return {
            "family": family.name,
            "tasks": [t.name for t in model.context.tasks],
            "hparams": hparams.to_dict(),
            "epochs_run": max(s["epochs_run"] for s in summaries),
            "best_epoch": max(s["best_epoch"] for s in summaries),
            "monitor": monitor,
            "best_value": metrics[monitor[len("val_"):]],
            "train_seconds": round(sum(s["train_seconds"] for s in summaries), 2),
            "strategy": config.strategy,
            "replicas": runs[0][1]["replicas"],
            "members": summaries,
            "history": {},
        }

    return Setup(model, valid, fit)
