"""Distillation inputs: a teacher's soft labels as columns of the student's training rows.

The student's Trainer adds these columns to its training split only (eval batches keep
hard labels alone, so early stopping watches the same metric as for a student trained
alone); the student family reads them by name (`models.families.takd.soft_label`).
"""

from __future__ import annotations

from typing import Callable, Dict

import numpy as np

from models.families.takd import soft_labels_of
from training.inputs import predict_rows

SoftLabels = Callable[[Dict[str, np.ndarray]], Dict[str, np.ndarray]]


def teacher_soft_labels(teacher, calibrated: bool = True, batch_size: int = 2048) -> SoftLabels:
    """A function of training rows giving {soft_<task>: float32 [n]} from a trained
    `takd_teacher` (calibrated outputs, or sigmoid of its raw scores)."""

    def columns(data: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        out = predict_rows(teacher, data, batch_size, outputs=lambda batch: soft_labels_of(teacher, batch, calibrated))
        return {name: values.astype(np.float32) for name, values in out.items()}

    return columns
