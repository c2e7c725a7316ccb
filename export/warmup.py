"""SavedModel warmup records in TF Serving's format (`assets.extra/tf_serving_warmup_requests`).

TF Serving (with `--enable_model_warmup`) and the local server replay these
PredictRequests before a version takes traffic, so the first real request does not
pay for graph initialisation.
"""

from __future__ import annotations

import os
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from contract import protocol
from common.io_utils import atomic_path

WARMUP_DIR = protocol.ASSETS_EXTRA
WARMUP_FILE = "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000  # TF Serving reads at most this many records

History = Tuple[Sequence[Union[str, bytes]], Optional[Sequence[Union[str, bytes]]]]


def signature_inputs(saved_model_dir: str) -> dict:
    """{signature name: sorted input names} of a SavedModel, read from saved_model.pb."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    out = {}
    for meta_graph in proto.meta_graphs:
        for name, signature in meta_graph.signature_def.items():
            out[name] = sorted(signature.inputs)
    return out


def warmup_path(saved_model_dir: str) -> str:
    """Where the warmup file of a SavedModel directory lives."""
    return os.path.join(saved_model_dir, WARMUP_DIR, WARMUP_FILE)


def _cycle(values: Sequence, n: int) -> list:
    return [values[i % len(values)] for i in range(n)]


def build_warmup_logs(
    model_name: str,
    serialized_examples: Sequence[bytes],
    histories: Optional[Sequence[History]] = None,
    batch_sizes: Sequence[int] = (1,),
    history_signatures: Sequence[str] = (protocol.RECOMMEND,),
) -> List[prediction_log_pb2.PredictionLog]:
    """PredictionLogs for `serving_default` with examples (when any are given) and the
    history signatures (when histories are given).

    Args:
      model_name: written into each request's model_spec.
      serialized_examples: serialized raw-feature tf.Examples (empty: a model whose
        `serving_default` does not take examples).
      histories: (item_ids, behaviors or None) pairs for `recommend` requests.
      batch_sizes: one request per size per signature; inputs repeat to fill a size.
      history_signatures: `recommend` and / or `recommend_excluding` (whose requests
        exclude the history's own items again).
    """
    if not serialized_examples and not histories:
        raise ValueError(f"warmup for model {model_name!r} needs serialized examples or histories")
    if not batch_sizes or any(int(b) < 1 for b in batch_sizes):
        raise ValueError(f"batch_sizes must be positive integers, got {list(batch_sizes)}")
    logs = []
    for size in batch_sizes if serialized_examples else ():
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model_name
        request.model_spec.signature_name = protocol.SERVING_DEFAULT
        request.inputs[protocol.EXAMPLES].CopyFrom(
            protocol.string_tensor_proto(_cycle(list(serialized_examples), int(size)))
        )
        logs.append(prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request)))
    unknown = sorted(set(history_signatures) - {protocol.RECOMMEND, protocol.RECOMMEND_EXCLUDING})
    if unknown:
        raise ValueError(f"history_signatures {unknown}: expected {protocol.RECOMMEND!r} or "
                         f"{protocol.RECOMMEND_EXCLUDING!r}")
    for signature in history_signatures if histories else ():
        for size in batch_sizes:
            rows = _cycle(list(histories), int(size))
            items, behaviors = protocol.history_arrays([r[0] for r in rows], [r[1] for r in rows])
            exclude = (protocol.exclusion_array([r[0] for r in rows], len(rows))
                       if signature == protocol.RECOMMEND_EXCLUDING else None)
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model_name
            request.model_spec.signature_name = signature
            for key, proto in protocol.recommend_inputs(items, behaviors, exclude).items():
                request.inputs[key].CopyFrom(proto)
            logs.append(
                prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            )
    if len(logs) > MAX_WARMUP_RECORDS:
        raise ValueError(f"{len(logs)} warmup records; TF Serving reads at most {MAX_WARMUP_RECORDS}")
    return logs


def write_warmup_requests(
    saved_model_dir: str,
    model_name: str,
    serialized_examples: Sequence[bytes],
    histories: Optional[Sequence[History]] = None,
    batch_sizes: Sequence[int] = (1,),
    history_signatures: Sequence[str] = (protocol.RECOMMEND,),
) -> str:
    """Writes `assets.extra/tf_serving_warmup_requests` (TFRecord of PredictionLog) atomically.

    Args:
      saved_model_dir: the SavedModel version directory.
      model_name: model name written into the requests.
      serialized_examples: serialized raw-feature tf.Examples for `serving_default` (may be empty).
      histories: (item_ids, behaviors or None) pairs; adds `recommend` requests.
      batch_sizes: request sizes to warm (e.g. (1, 100) for single and candidate-list calls).
      history_signatures: which of `recommend` / `recommend_excluding` the histories warm.
    Returns the path written.
    """
    if not os.path.isdir(saved_model_dir):
        raise FileNotFoundError(f"SavedModel directory {saved_model_dir} does not exist")
    logs = build_warmup_logs(model_name, serialized_examples, histories, batch_sizes, history_signatures)
    out_dir = os.path.join(saved_model_dir, WARMUP_DIR)
    os.makedirs(out_dir, exist_ok=True)
    final = os.path.join(out_dir, WARMUP_FILE)
    with atomic_path(final) as tmp:
        with tf.io.TFRecordWriter(tmp) as writer:
            for log in logs:
                writer.write(log.SerializeToString())
    return final


def read_warmup_requests(saved_model_dir: str) -> Iterator[prediction_log_pb2.PredictionLog]:
    """Parses the warmup file of a SavedModel directory back into PredictionLogs (none if absent)."""
    path = warmup_path(saved_model_dir)
    if not os.path.exists(path):
        return
    for i, record in enumerate(tf.data.TFRecordDataset(path).as_numpy_iterator()):
        if i >= MAX_WARMUP_RECORDS:
            return
        log = prediction_log_pb2.PredictionLog()
        try:
            log.ParseFromString(record)
        except Exception as exc:  # protobuf's DecodeError
            raise ValueError(f"{path}: record {i} is not a PredictionLog ({exc})") from None
        yield log
