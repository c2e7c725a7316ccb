"""Distillation inputs: a teacher's soft labels as columns of the student's training rows.

The student's Trainer adds these columns to its training split only (eval batches keep
hard labels alone, so early stopping watches the same metric as for a student trained
alone); the student family reads them by name (`models.families.takd.soft_label`).

- `teacher_soft_labels`: from a teacher model in the same process (benchmarks).
- `saved_teacher_soft_labels`: from the teacher Trainer's exported model (the pipeline's
  `base_model`), through its `soft_labels` signature on the serialized transformed
  examples, read in the order `training.inputs.load_examples` reads them.
"""

from __future__ import annotations

from typing import Callable, Dict

import numpy as np
import tensorflow as tf

from contract import protocol
from training.inputs import predict_rows, resolve_files

SoftLabels = Callable[[Dict[str, np.ndarray]], Dict[str, np.ndarray]]


def teacher_soft_labels(teacher, calibrated: bool = True, batch_size: int = 2048) -> SoftLabels:
    """A function of training rows giving {soft_<task>: float32 [n]} from a trained teacher
    (a model with the `teach` capability: calibrated outputs, or sigmoid of its raw scores)."""

    def columns(data: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        out = predict_rows(teacher, data, batch_size,
                           outputs=lambda batch: teacher.soft_labels(batch, calibrated=calibrated))
        return {name: values.astype(np.float32) for name, values in out.items()}

    return columns


def saved_teacher_soft_labels(model_dir: str, train_files, batch_size: int = 4096) -> SoftLabels:
    """A function of the training rows (all of `train_files`, as loaded) giving the exported
    teacher's soft labels; a clear error when the model has no `soft_labels` signature or
    the rows are not the files' records."""
    loaded = tf.saved_model.load(model_dir)
    if protocol.SOFT_LABELS not in loaded.signatures:
        raise ValueError(f"base model {model_dir} has no {protocol.SOFT_LABELS!r} signature (signatures: "
                         f"{sorted(loaded.signatures)}); train the student from a teacher family")
    signature = loaded.signatures[protocol.SOFT_LABELS]

    def columns(data: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        parts: Dict[str, list] = {}
        records = tf.data.TFRecordDataset(resolve_files(train_files), compression_type="GZIP").batch(batch_size)
        for batch in records:
            for name, value in signature(**{protocol.EXAMPLES: batch}).items():
                parts.setdefault(name, []).append(value.numpy().reshape(-1).astype(np.float32))
        out = {name: np.concatenate(values) for name, values in parts.items()}
        n = len(next(iter(data.values())))
        wrong = {name: len(v) for name, v in out.items() if len(v) != n}
        if wrong:
            raise ValueError(f"the teacher's soft labels cover {wrong} rows, the training split has {n}")
        return out

    return columns
