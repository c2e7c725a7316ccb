"""Fine-tune: a family with a base (PeterRec) takes its base Trainer's network (`Job.base_model`),
patched, and fine-tunes it on the family's next-behavior task of the user view
(training/downstream.py's split rules: training windows of the train histories, early
stopping on the eval split's AUC). The loop (training/peterrec.py) runs in one process."""

from __future__ import annotations

import math

import tensorflow_transform as tft

from models.blocks import patches as P
from training import distribute, downstream, peterrec
from training.recipes import Job, Setup
from training.recipes import common

STRATEGIES = (distribute.DEFAULT,)
ONE_PROCESS = "is fine-tuned from {family.base} in one process"


def setup(job: Job) -> Setup:
    common.begin(job)
    family, config, hparams = job.family, job.config, job.hparams
    if not job.base_model:
        raise ValueError(f"{family.name} fine-tunes {family.base}: its Trainer needs {family.base}'s model as "
                         "base_model")
    spec = config.spec
    tft_output = tft.TFTransformOutput(job.transform_output)
    train_view, eval_view, context, valid = common.user_views(job, tft_output)
    views = {downstream.TRAIN: train_view, downstream.EVAL: eval_view}
    # scratch: the base's architecture, freshly initialised.
    network = peterrec.pretrained_network(job.base_model, context, load=P.loads_pretrained(hparams.mode))
    model = family.model(context, hparams, network=network)
    task = context.pointwise_tasks[0].name
    data = downstream.next_behavior(views, model.max_len, task, spec, hparams.windows_per_user)

    def fit():
        training = hparams.training
        steps = math.ceil(len(data.splits[downstream.TRAIN]) / training.batch_size)
        result = peterrec.fine_tune(model.classifier, data, training.learning_rate, training.batch_size,
                                    common.epochs(training.max_epochs, steps, job.train_steps), training.patience,
                                    config.seed, verbose=2, steps_per_epoch=common.steps_cap(job.train_steps, steps),
                                    optimizer=common.make_optimizer(hparams))
        metric = f"val_{task}_{result['metric']}"
        return {
            "family": family.name,
            "tasks": [task],
            "hparams": hparams.to_dict(),
            "epochs_run": result["epochs_run"],
            "best_epoch": result["best_epoch"],
            "monitor": metric,
            "best_value": result["eval"],
            "train_seconds": result["train_seconds"],
            "trained_parameters": result["trained_parameters"],
            "examples": data.counts(),
            "base_model": job.base_model,
            "history": {metric: result["eval_history"]},
        }

    return Setup(model, valid, fit)
