"""Pushes a blessed model into TF Serving's base-directory layout, atomically.

`<serving base>/<model name>/<version>/` with the SavedModel and TF Serving warmup
records (`assets.extra/tf_serving_warmup_requests`) built from real evaluation
examples. The version is copied under a hidden temporary name and renamed into
place, so a server watching the base directory never sees a partial version. An
unblessed model is not pushed; the reason is recorded.
"""

import json
import os
import shutil
import time
from typing import List, Optional, Sequence, Tuple

from tfx import v1 as tfx

from contract import protocol

PUSH_RESULT = protocol.PUSH_RESULT
WARMUP_EXAMPLES = 8


def _next_version(model_dir: str) -> int:
    existing = [int(d) for d in os.listdir(model_dir) if d.isdigit()] if os.path.isdir(model_dir) else []
    return max([int(time.time())] + [v + 1 for v in existing])


def _warmup_inputs(examples_uri: str, split: str, count: int) -> Tuple[List[bytes], List[Tuple[Sequence[str], Sequence[str]]]]:
    """The first `count` raw examples of a split, and their histories."""
    import tensorflow as tf

    from contract import features as F

    files = sorted(tf.io.gfile.glob(os.path.join(examples_uri, f"Split-{split}", "*")))
    serialized: List[bytes] = []
    histories = []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP").take(count):
        raw = record.numpy()
        example = tf.train.Example.FromString(raw)
        feature = example.features.feature
        serialized.append(raw)
        items = [v.decode() for v in feature[F.HISTORY_ITEM_IDS].bytes_list.value]
        behaviors = [v.decode() for v in feature[F.HISTORY_BEHAVIORS].bytes_list.value]
        if items:
            histories.append((items, behaviors))
    return serialized, histories


def push_model(
    saved_model_dir: str,
    serving_base_dir: str,
    model_name: str,
    warmup_examples: Sequence[bytes] = (),
    warmup_histories: Optional[Sequence] = None,
) -> Tuple[int, str]:
    """Copies a SavedModel into `<base>/<name>/<version>` atomically; returns (version, path)."""
    from export.warmup import signature_inputs, write_warmup_requests

    model_dir = os.path.join(serving_base_dir, model_name)
    os.makedirs(model_dir, exist_ok=True)
    version = _next_version(model_dir)
    final = os.path.join(model_dir, str(version))
    tmp = os.path.join(model_dir, f".tmp-{version}-{os.getpid()}")
    try:
        shutil.copytree(saved_model_dir, tmp)
        # Warm what the model serves: examples for a scoring serving_default, histories
        # for recommend.
        signatures = signature_inputs(tmp)
        takes_examples = signatures.get(protocol.SERVING_DEFAULT) == [protocol.EXAMPLES]
        examples = list(warmup_examples) if takes_examples else []
        histories = list(warmup_histories or []) if protocol.RECOMMEND in signatures else []
        if examples or histories:
            write_warmup_requests(tmp, model_name, examples, histories=histories or None)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return version, final


@tfx.dsl.components.component
def ServingPusher(  # noqa: N802
    model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model],
    model_blessing: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ModelBlessing],
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    pushed_model: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.PushedModel],
    serving_base_dir: tfx.dsl.components.Parameter[str],
    model_name: tfx.dsl.components.Parameter[str],
    warmup_split: tfx.dsl.components.Parameter[str] = "eval",
):
    """Pushes `model` to `<serving_base_dir>/<model_name>/<version>` when blessed."""
    result = {"model_name": model_name, "pushed": False}
    if not model_blessing.get_int_custom_property("blessed"):
        result["reason"] = "not blessed by the Evaluator"
    else:
        serialized, histories = _warmup_inputs(examples.uri, warmup_split, WARMUP_EXAMPLES)
        version, path = push_model(
            os.path.join(model.uri, "Format-Serving"),
            serving_base_dir,
            model_name,
            warmup_examples=serialized,
            warmup_histories=histories,
        )
        result.update(pushed=True, version=version, path=path)
        pushed_model.set_string_custom_property("pushed_destination", path)
        pushed_model.set_int_custom_property("pushed_version", version)
    pushed_model.set_int_custom_property("pushed", int(result["pushed"]))
    os.makedirs(pushed_model.uri, exist_ok=True)
    with open(os.path.join(pushed_model.uri, PUSH_RESULT), "w") as f:
        json.dump(result, f, indent=2)
