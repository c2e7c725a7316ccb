"""Pushes a blessed model into TF Serving's base-directory layout, atomically.

`<serving base>/<model name>/<version>/` with the SavedModel and TF Serving warmup
records (`assets.extra/tf_serving_warmup_requests`) built from real evaluation
examples. The version is copied under a hidden temporary name and renamed into
place, so a server watching the base directory never sees a partial version. An
unblessed model is not pushed; the reason is recorded.

The model, the serving base and the Pusher's own output may be local paths or URIs
(gs://... on Kubeflow): files go through TensorFlow's file systems, and the version is
staged in a local temporary directory (where its warmup records are written) before it
is copied next to its final name. On an object store the final rename is the store's
(GCS renames a directory object by object); TF Serving reads a version once it is listed.
"""

import json
import os
import shutil
import tempfile
import time
from typing import List, Optional, Sequence, Tuple

from tfx import v1 as tfx

from common.io_utils import atomic_write, is_uri
from contract import protocol

PUSH_RESULT = protocol.PUSH_RESULT
WARMUP_EXAMPLES = 8


def _next_version(model_dir: str) -> int:
    import tensorflow as tf

    names = [d.rstrip("/") for d in tf.io.gfile.listdir(model_dir)] if tf.io.gfile.isdir(model_dir) else []
    return max([int(time.time())] + [int(d) + 1 for d in names if d.isdigit()])


def _copy_tree(src: str, dst: str) -> None:
    """Copies the directory `src` to `dst`, either a local path or a URI."""
    import tensorflow as tf

    for root, _, files in tf.io.gfile.walk(src):
        rel = os.path.relpath(root, src)
        target = dst if rel == "." else os.path.join(dst, rel)
        tf.io.gfile.makedirs(target)
        for name in files:
            tf.io.gfile.copy(os.path.join(root, name), os.path.join(target, name), overwrite=True)


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

    import tensorflow as tf

    model_dir = os.path.join(serving_base_dir, model_name)
    tf.io.gfile.makedirs(model_dir)
    version = _next_version(model_dir)
    final = os.path.join(model_dir, str(version))
    tmp = os.path.join(model_dir, f".tmp-{version}-{os.getpid()}")
    stage = tempfile.mkdtemp(prefix=".push-") if is_uri(model_dir) else None
    staged = os.path.join(stage, "version") if stage else tmp  # where the warmup records are written
    try:
        _copy_tree(saved_model_dir, staged)
        # Warm what the model serves: examples for a scoring serving_default, histories
        # for recommend.
        signatures = signature_inputs(staged)
        takes_examples = signatures.get(protocol.SERVING_DEFAULT) == [protocol.EXAMPLES]
        examples = list(warmup_examples) if takes_examples else []
        histories = list(warmup_histories or []) if protocol.RECOMMEND in signatures else []
        history_signatures = [s for s in (protocol.RECOMMEND, protocol.RECOMMEND_EXCLUDING) if s in signatures]
        if examples or histories:
            write_warmup_requests(staged, model_name, examples, histories=histories or None,
                                  history_signatures=history_signatures)
        if stage:
            _copy_tree(staged, tmp)
        tf.io.gfile.rename(tmp, final)
    except BaseException:
        if tf.io.gfile.exists(tmp):
            tf.io.gfile.rmtree(tmp)
        raise
    finally:
        if stage:
            shutil.rmtree(stage, ignore_errors=True)
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
    atomic_write(os.path.join(pushed_model.uri, PUSH_RESULT), json.dumps(result, indent=2))
