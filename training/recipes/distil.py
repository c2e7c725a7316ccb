"""Distil: a student trained as `pointwise` on its training rows plus its teacher's soft
labels (the teacher Trainer's exported model, `Job.base_model`, read through its
`soft_labels` signature; training/distillation.py)."""

from __future__ import annotations

from training.recipes import Job, Setup
from training.recipes import common, pointwise

STRATEGIES = common.ANY_STRATEGY


def setup(job: Job) -> Setup:
    soft_labels = job.soft_labels
    if soft_labels is None and job.base_model:
        from training.distillation import saved_teacher_soft_labels

        soft_labels = saved_teacher_soft_labels(job.base_model, job.train_files)
    elif soft_labels is None and not job.alone:
        raise ValueError(f"{job.family.name} distils from {job.family.teacher}: its Trainer needs the teacher's "
                         "model as base_model")
    common.begin(job)
    prepared = common.keras_setup(job, lambda: pointwise.build(job, soft_labels))
    fit = prepared.fit

    def fit_and_name_teacher():
        summary = fit()
        if job.base_model:
            summary["teacher_model"] = job.base_model
        return summary

    prepared.fit = fit_and_name_teacher
    return prepared
