"""Input pipelines over Transform's output, with history-length bucketing.

Transform pads each history to its bucket (8, 16, 32 or 64). Here examples of the
same bucket are batched together, so a batch of short histories is not padded to
the longest history of the data set.
"""

from __future__ import annotations

import glob
from typing import Dict, List, Sequence, Union

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from contract import features as F
from contract import run

HISTORY_SEQUENCES = (F.HISTORY_ITEM_IDX, F.HISTORY_BEHAVIOR_IDX)


def resolve_files(file_pattern: Union[str, Sequence[str]]) -> List[str]:
    patterns = [file_pattern] if isinstance(file_pattern, str) else list(file_pattern)
    files = sorted(f for p in patterns for f in glob.glob(p))
    if not files:
        raise FileNotFoundError(f"no transformed examples match {patterns}")
    return files


def load_examples(
    file_pattern: Union[str, Sequence[str]], tf_transform_output: tft.TFTransformOutput,
    max_history: int = F.MAX_HISTORY,
) -> Dict[str, np.ndarray]:
    """All transformed examples of a split as numpy arrays (histories padded to `max_history`).

    Parsing happens once, in large vectorized batches; training epochs then only
    index into memory.
    """
    spec = tf_transform_output.transformed_feature_spec()
    ds = tf.data.TFRecordDataset(resolve_files(file_pattern), compression_type="GZIP").batch(4096)
    ds = ds.map(lambda records: tf.io.parse_example(records, spec), num_parallel_calls=tf.data.AUTOTUNE)
    parts: Dict[str, List[np.ndarray]] = {}
    for batch in ds:
        for name, value in batch.items():
            if isinstance(value, tf.SparseTensor):
                value = tf.sparse.to_dense(
                    tf.sparse.reset_shape(value, [value.dense_shape[0], max_history]), default_value=0
                )
            parts.setdefault(name, []).append(value.numpy())
    if not parts:
        raise ValueError(f"no examples in {file_pattern}")
    return {name: np.concatenate(values) for name, values in parts.items()}


def rows_inputs(data: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """`data` without its catalogue columns (`F.catalogue_name`: the item table's full
    statistics, which hold a training row's own label)."""
    return {name: value for name, value in data.items() if not name.startswith(F.CATALOGUE_PREFIX)}


def make_dataset(
    data: Dict[str, np.ndarray],
    batch_size: int,
    shuffle: bool,
    seed: int = run.SEED,
    repeat: bool = False,
) -> tf.data.Dataset:
    """Batches of feature dicts (labels included), each batch from one history bucket.

    Histories are cut to the batch's bucket length, so short histories are not
    padded to the longest. With `shuffle`, examples within a bucket and the order of
    batches are shuffled every epoch with a seeded generator (deterministic). Catalogue
    columns (`item_feature_table`'s) are never in a batch: they are no row's input.
    """
    data = rows_inputs(data)
    buckets = data[F.HISTORY_BUCKET]
    sizes = sorted(set(int(b) for b in buckets))

    def batches():
        rng = np.random.default_rng(seed)
        while True:
            plan = []
            for size in sizes:
                idx = np.flatnonzero(buckets == size)
                if shuffle:
                    rng.shuffle(idx)
                plan.extend((size, idx[i : i + batch_size]) for i in range(0, len(idx), batch_size))
            if shuffle:
                order = rng.permutation(len(plan))
                plan = [plan[i] for i in order]
            for size, idx in plan:
                yield {
                    name: (value[idx, :size] if name in HISTORY_SEQUENCES else value[idx])
                    for name, value in data.items()
                }
            if not repeat:
                return

    signature = {
        name: tf.TensorSpec(
            (None, None) if name in HISTORY_SEQUENCES else (None,) + value.shape[1:],
            tf.string if value.dtype == object else tf.as_dtype(value.dtype),
        )
        for name, value in data.items()
    }
    return tf.data.Dataset.from_generator(batches, output_signature=signature).prefetch(4)


def predict_rows(model, data: Dict[str, np.ndarray], batch_size: int = 2048,
                 outputs=None) -> Dict[str, np.ndarray]:
    """A model's outputs for every row, in row order (batched per history bucket).

    Args:
      model: a trained model; `outputs(batch)` (default: the model's served predictions,
        `model(batch)`) maps a feature batch to {name: [B] tensor}.
      data: feature arrays as `load_examples` returns them.
    """
    outputs = outputs or (lambda batch: model(batch, training=False))
    data = rows_inputs(data)
    n = len(data[F.ITEM_IDX])
    out: Dict[str, np.ndarray] = {}
    buckets = np.asarray(data[F.HISTORY_BUCKET]).reshape(n)
    for size in sorted(set(int(b) for b in buckets)):
        idx = np.flatnonzero(buckets == size)
        for start in range(0, len(idx), batch_size):
            rows = idx[start:start + batch_size]
            batch = {name: tf.constant(value[rows, :size] if name in HISTORY_SEQUENCES else value[rows])
                     for name, value in data.items()}
            for name, value in outputs(batch).items():
                out.setdefault(name, np.zeros(n, dtype=np.float64))[rows] = np.asarray(value).reshape(-1)
    return out


def num_batches(data: Dict[str, np.ndarray], batch_size: int) -> int:
    """Batches in one pass of `make_dataset` (each history bucket is batched separately)."""
    _, counts = np.unique(data[F.HISTORY_BUCKET], return_counts=True)
    return int(sum(-(-int(c) // batch_size) for c in counts))


def item_feature_table(data: Dict[str, np.ndarray], num_rows: int, names: Sequence[str]) -> Dict[str, np.ndarray]:
    """Per-item Transform features indexed by item_idx, from loaded examples (`load_examples`).

    Item features (side-table features, training statistics) are functions of the item,
    so any example of an item gives its row (the last one read; item documents, which
    grow with time, are that example's). A statistic is read from its catalogue copy
    (`F.catalogue_name`) when the examples have one: the full training statistics, as
    serving computes them, where a training row's own value is out of fold. Items with
    no example keep zeros; `present` marks the rows that were seen.
    """
    idx = data[F.ITEM_IDX]
    table: Dict[str, np.ndarray] = {}
    for name in names:
        catalogue = F.catalogue_name(name)
        values = data[catalogue] if catalogue in data else data[name]
        table[name] = np.zeros((num_rows,) + values.shape[1:], dtype=values.dtype)
        table[name][idx] = values
    present = np.zeros([num_rows], dtype=bool)
    present[idx] = True
    table["present"] = present
    return table
