"""The data stages of a description with interaction texts, run without the orchestrator.

ExampleGen's `run_ingest` (the component's own Beam pipeline) writes the raw interaction
and user views; the Transform `preprocessing_fn` is analyzed on the raw training split
and applied to every split with tf.Transform's Beam API, as the pipeline's Transform
component does (`splits_config(analyze=["train"])`), writing GZIP TFRecords of transformed
examples and the transform graph the Trainer reads. The raw feature spec is the one the
description's raw features give (`contract.description.raw_features`), so no curated
schema file is needed.

Outputs are reused when the directory already holds a finished run of the same description
and settings (`stages.json`).
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import tempfile
import time
from typing import Any, Dict, List, Optional

from common.io_utils import atomic_write
from contract import datasets as D
from contract import description as desc
from contract import features as F

SPLITS = ("train", "eval", "test")
STAMP = "stages.json"
RAW_METADATA = "metadata"  # TFTransformOutput.RAW_METADATA_DIR


@dataclasses.dataclass(frozen=True)
class TextStages:
    """Where the data stages of one description wrote their outputs.

    Attributes:
      spec: the dataset's spec (its description).
      raw_examples / user_examples / transformed_examples: directories holding Split-<name>/.
      transform_graph: the tf.Transform output directory (TFTransformOutput).
      seconds: wall time of the run that wrote them.
    """

    spec: D.DatasetSpec
    raw_examples: str
    user_examples: str
    transformed_examples: str
    transform_graph: str
    seconds: float

    def files(self, split: str) -> List[str]:
        """The transformed examples of a split, as the Trainer receives them."""
        return [os.path.join(self.transformed_examples, f"Split-{split}", "*")]

    def raw_files(self, split: str) -> List[str]:
        return sorted(glob.glob(os.path.join(self.raw_examples, f"Split-{split}", "*")))


def raw_feature_spec(d: desc.Description) -> Dict[str, Any]:
    """The tf.io spec of the raw features ExampleGen writes for `d` (ids fixed, the rest variable)."""
    dtypes = {desc.BYTES: "string", desc.INT: "int64", desc.FLOAT: "float32"}
    import tensorflow as tf

    spec = {}
    for f in desc.raw_features(d):
        dtype = getattr(tf, dtypes[f.dtype])
        spec[f.name] = (tf.io.FixedLenFeature([], dtype) if f.name in (F.USER_ID, F.ITEM_ID)
                        else tf.io.VarLenFeature(dtype))
    return spec


def write_raw_metadata(metadata, transform_graph: str) -> None:
    """The raw schema beside the transform graph, where the Transform component writes it
    (`TFTransformOutput.raw_feature_spec`, which the exported signatures parse requests with)."""
    from tensorflow_transform.tf_metadata import metadata_io

    metadata_io.write_metadata(metadata, os.path.join(transform_graph, RAW_METADATA))


def _instances(files: List[str], spec: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Raw examples as tf.Transform instance dicts (variable-length features as lists)."""
    import numpy as np
    import tensorflow as tf

    out = []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator():
        example = tf.train.Example.FromString(record)
        row = {}
        for name, feature_spec in spec.items():
            feature = example.features.feature.get(name)
            kind = {tf.string: "bytes_list", tf.int64: "int64_list", tf.float32: "float_list"}[feature_spec.dtype]
            values = list(getattr(feature, kind).value) if feature is not None else []
            if isinstance(feature_spec, tf.io.FixedLenFeature):
                if len(values) != 1:
                    raise ValueError(f"{files[0]}..: raw feature {name!r} has {len(values)} values; expected one")
                row[name] = values[0]
            else:
                row[name] = np.asarray(values, dtype=feature_spec.dtype.as_numpy_dtype)
        out.append(row)
    return out


def run(description: str, data_dir: str, work_dir: str, max_history: Optional[int] = None,
        seed: int = 42) -> TextStages:
    """Runs (or reuses) ExampleGen and Transform for a description file.

    Args:
      description: a description file or shipped name.
      data_dir: the folder its interaction files are in.
      work_dir: where to write; a subdirectory named after the description and settings is used.
      max_history: history length (None: the description's).
      seed: ExampleGen's seed (negative sampling; the hash split does not depend on it).
    """
    import apache_beam as beam  # noqa: F401  (tf.Transform's Beam API needs it imported)
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam

    from components.example_gen.beam_pipeline import run_ingest
    from components.example_gen.config import IngestConfig
    from transform.preprocessing import DESCRIPTION, MAX_HISTORY, preprocessing_fn

    spec = D.dataset_spec(description)
    config = IngestConfig(spec.to_dict(), max_history=max_history, seed=seed)
    key = json.dumps({"ingest": config.to_dict(), "data_dir": os.path.abspath(data_dir)}, sort_keys=True)
    out = os.path.join(os.path.abspath(work_dir), f"{spec.name}-text-{hashlib.md5(key.encode()).hexdigest()[:8]}")
    paths = {name: os.path.join(out, name) for name in ("raw_examples", "user_examples", "transformed_examples",
                                                         "transform_graph")}
    stamp = os.path.join(out, STAMP)
    if os.path.exists(stamp):
        with open(stamp) as f:
            return TextStages(spec=spec, seconds=json.load(f)["seconds"], **paths)
    if os.path.exists(out):
        raise FileExistsError(f"{out} holds an unfinished run of the data stages; remove it and run again")
    started = time.monotonic()
    run_ingest(data_dir, config, paths["raw_examples"], user_output_dir=paths["user_examples"])

    raw_spec = raw_feature_spec(spec.description)
    metadata = tft.DatasetMetadata.from_feature_spec(raw_spec)
    custom = {DESCRIPTION: spec.to_dict(), MAX_HISTORY: config.max_history}
    rows = {split: _instances(sorted(glob.glob(os.path.join(paths["raw_examples"], f"Split-{split}", "*"))),
                              raw_spec) for split in SPLITS}
    with tempfile.TemporaryDirectory() as tmp, tft_beam.Context(temp_dir=tmp, force_tf_compat_v1=True):
        transform_fn = (rows["train"], metadata) | "Analyze" >> tft_beam.AnalyzeDataset(
            lambda inputs: preprocessing_fn(inputs, custom))
        _ = transform_fn | "Write" >> tft_beam.WriteTransformFn(paths["transform_graph"])
        transformed = {}
        for split in SPLITS:
            (transformed[split], out_metadata) = ((rows[split], metadata), transform_fn) | (
                f"Apply{split}" >> tft_beam.TransformDataset(output_record_batches=False))
    write_raw_metadata(metadata, paths["transform_graph"])
    coder = tft.coders.ExampleProtoCoder(out_metadata.schema)
    import tensorflow as tf

    for split in SPLITS:
        target = os.path.join(paths["transformed_examples"], f"Split-{split}")
        os.makedirs(target, exist_ok=True)
        path = os.path.join(target, "transformed_examples-00000-of-00001.gz")
        tmp_path = path + ".tmp"
        with tf.io.TFRecordWriter(tmp_path, options="GZIP") as writer:
            for row in transformed[split]:
                writer.write(coder.encode(row))
        os.replace(tmp_path, path)
    seconds = time.monotonic() - started
    atomic_write(stamp, json.dumps({"seconds": seconds, "key": key}, indent=2))
    return TextStages(spec=spec, seconds=seconds, **paths)
