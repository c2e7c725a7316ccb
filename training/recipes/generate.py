"""Generate: a family with a text generator (review_mt, nor_reviews) trained as `pointwise`
(its joint objective, early stopping on the rating), then, for `generator_epochs` > 0, a
second stage in which only the generator's own weights train on the text task, stopped on
the eval split's token perplexity (`patience` epochs, the best epoch's weights kept).

Why two stages: on the review benchmark's data the rating's eval RMSE is best after 2-3 epochs
while the generator's eval perplexity still falls for 15-20 more, and a generator stopped with the
rating writes one text for every row (bench/results/review_text_decoding_eval.md). The second
stage reads what the first learned (the encoders, ids and word vectors the rating reads are
frozen), so the served rating is the first stage's, unchanged.
"""

from __future__ import annotations

from typing import Any, Dict

import tf_keras as keras

from training.recipes import Job, Setup
from training.recipes import common, pointwise

STRATEGIES = common.ANY_STRATEGY


def setup(job: Job) -> Setup:
    common.begin(job)
    held: Dict[str, Any] = {}

    def build():
        model, fit_args, valid = pointwise.build(job, job.soft_labels)
        held["fit_args"] = fit_args  # the same dict keras_setup shards and keras_fit reads
        return model, fit_args, valid

    prepared = common.keras_setup(job, build)
    fit = prepared.fit

    def fit_then_generator():
        summary = fit()
        epochs = job.hparams.generator_epochs
        if epochs and getattr(prepared.model, "generator", None) is not None:
            summary["generator_stage"] = generator_stage(job, prepared.model, held["fit_args"], epochs)
        return summary

    prepared.fit = fit_then_generator
    return prepared


def generator_stage(job: Job, model, fit_args: Dict[str, Any], epochs: int) -> Dict[str, Any]:
    """Trains the generator's own weights alone (`model.text_only`), up to `epochs` epochs,
    early stopping on the eval perplexity of the generated column; its training summary."""
    monitor = f"val_{model.generation.perplexity.name}"
    model.text_only = True
    with model.distribute_strategy.scope():
        model.compile(optimizer=common.make_optimizer(job.hparams))
    stopping = keras.callbacks.EarlyStopping(monitor=monitor, mode="min", patience=job.hparams.training.patience,
                                             restore_best_weights=True)
    history = model.fit(x=fit_args["x"], steps_per_epoch=fit_args["steps_per_epoch"],
                        epochs=common.epochs(epochs, fit_args["steps_per_epoch"], job.train_steps),
                        validation_data=fit_args["validation_data"], callbacks=[stopping], verbose=2)
    model.text_only = False
    logs = {k: [float(x) for x in v] for k, v in history.history.items() if k.startswith("val_")}
    values = logs.get(monitor, [])
    best = min(range(len(values)), key=values.__getitem__) if values else None
    return {"monitor": monitor, "epochs_run": len(values), "best_epoch": None if best is None else best + 1,
            "best_value": None if best is None else values[best], "history": logs}
