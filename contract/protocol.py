"""The serving contract's names and fast TensorProto <-> numpy conversion.

Signature and tensor names of a pushed model live here (feature names stay in
`contract/features.py`); the client, the local server, the warmup writer and the
benchmark all build their requests with these helpers.
"""

from __future__ import annotations

import math
from typing import Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from tensorflow.core.example import example_pb2
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

from contract import features

# --------------------------------------------------------------------------
# Signature contract of a pushed model.
# --------------------------------------------------------------------------
SERVING_DEFAULT = "serving_default"
RECOMMEND = "recommend"
TRANSFORM_FEATURES = "transform_features"
EXAMPLES = "examples"  # serving_default input: serialized tf.Example, [None]
RECOMMEND_ITEM_IDS = "item_ids"  # recommend output: string [None, K]
RECOMMEND_SCORES = "scores"  # recommend output: float32 [None, K]
HISTORY_PAD = b""  # padding value of the recommend inputs
RECOMMEND_EXCLUDING = "recommend_excluding"  # recommend plus items to keep out of the answer
EXCLUDE_ITEM_IDS = "exclude_item_ids"  # recommend_excluding input: string [None, E], padded with HISTORY_PAD
SIMILAR_ITEMS = "similar_items"  # item ids -> the closest items
SIMILAR_INPUT = "item_ids"  # similar_items input: string [None]
RANK_QUERIES = "rank_queries"  # user-view examples -> ranked rows (for the Evaluator)
RANKED_ROWS = "ranked_rows"  # rank_queries output: int64 [None, K] item rows, best first
POPULAR_ROWS = "popular_rows"  # rank_queries output: the training-popularity ranking, same rules
TARGET_ROWS = "target_rows"  # rank_queries output: int64 [None, T] target item rows (0 = unknown)
TARGET_PAD = -1  # padding of TARGET_ROWS
SOFT_LABELS = "soft_labels"  # a teacher's signature: serialized transformed examples -> soft label per task
SCORE_QUERIES = "score_queries"  # user-view examples -> every item's score (protocol S in the Evaluator)
CATALOGUE_SCORES = "catalogue_scores"  # score_queries output: float32 [None, N], -inf at rows that are not items
HISTORY_ROWS = "history_rows"  # score_queries output: int64 [None, L] the input's item rows (0 = pad / unknown)
QUERY_USER = "user_id"  # score_queries output: string [None], the example's user (seeds sampled negatives)
EXPLAIN = "explain"  # serving_default's examples -> the generated explanation and each task's output
EXPLANATION = "explanation"  # explain output: string [None], the generated words joined by spaces
EXPLANATION_TOKENS = "explanation_tokens"  # explain output: string [None, L], the words ("" after the end)
UNKNOWN_WORD = "<unk>"  # a generated id outside the vocabulary

# numpy dtype <-> TensorProto dtype and the typed value field that carries it.
_NUMERIC = {
    types_pb2.DT_FLOAT: (np.dtype("<f4"), "float_val"),
    types_pb2.DT_DOUBLE: (np.dtype("<f8"), "double_val"),
    types_pb2.DT_INT32: (np.dtype("<i4"), "int_val"),
    types_pb2.DT_INT64: (np.dtype("<i8"), "int64_val"),
    types_pb2.DT_INT16: (np.dtype("<i2"), "int_val"),
    types_pb2.DT_INT8: (np.dtype("i1"), "int_val"),
    types_pb2.DT_UINT8: (np.dtype("u1"), "int_val"),
    types_pb2.DT_UINT16: (np.dtype("<u2"), "int_val"),
    types_pb2.DT_UINT32: (np.dtype("<u4"), "uint32_val"),
    types_pb2.DT_UINT64: (np.dtype("<u8"), "uint64_val"),
    types_pb2.DT_BOOL: (np.dtype("?"), "bool_val"),
}
_NP_TO_DT = {(np_dtype.kind, np_dtype.itemsize): dt for dt, (np_dtype, _) in _NUMERIC.items()}


class TensorConversionError(ValueError):
    """A TensorProto or array that cannot be converted; the message says why."""


def dtype_name(dtype: int) -> str:
    """Readable name of a TensorProto dtype enum value (`string`, `float`, ...)."""
    try:
        return types_pb2.DataType.Name(dtype)[3:].lower()
    except ValueError:
        return f"dtype#{dtype}"


def shape_str(shape: Iterable[Optional[int]]) -> str:
    """`[2, ?]`-style rendering of a shape (None = unknown dimension)."""
    return "[" + ", ".join("?" if d is None or d < 0 else str(d) for d in shape) + "]"


def _shape_proto(shape: Sequence[int]) -> tensor_shape_pb2.TensorShapeProto:
    return tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=int(d)) for d in shape]
    )


def _as_bytes(value) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (np.bytes_, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value)).encode("ascii")
    raise TensorConversionError(
        f"string tensor element {value!r} has type {type(value).__name__}; expected bytes or str"
    )


def string_tensor_proto(values: Sequence, shape: Optional[Sequence[int]] = None) -> tensor_pb2.TensorProto:
    """A DT_STRING TensorProto from a flat sequence of bytes/str, without a numpy detour.

    Args:
      values: the elements in row-major order.
      shape: the tensor shape; defaults to `[len(values)]`.
    """
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING)
    proto.tensor_shape.CopyFrom(_shape_proto([len(values)] if shape is None else shape))
    if values and all(type(v) is bytes for v in values):
        proto.string_val.extend(values)
    else:
        proto.string_val.extend([_as_bytes(v) for v in values])
    return proto


def ndarray_to_tensor_proto(array, use_tensor_content: bool = True) -> tensor_pb2.TensorProto:
    """A TensorProto holding `array`: numbers as one `tensor_content` copy, strings in `string_val`.

    Args:
      array: numpy array (or anything `np.asarray` accepts); str/bytes/object arrays
        become DT_STRING.
      use_tensor_content: False writes numbers into the typed repeated fields
        (`float_val`, `int64_val`, ...) instead, as some clients expect.
    """
    proto = tensor_pb2.TensorProto()
    fill_tensor_proto(proto, array, use_tensor_content)
    return proto


def fill_tensor_proto(proto: tensor_pb2.TensorProto, array, use_tensor_content: bool = True) -> None:
    """Writes `array` into an empty TensorProto in place (e.g. a response's map entry, no CopyFrom).

    Args: as `ndarray_to_tensor_proto`, plus the target `proto`.
    """
    arr = np.asarray(array)
    dims = proto.tensor_shape.dim
    for d in arr.shape:
        dims.add().size = d
    if arr.dtype.kind in "OSU":
        proto.dtype = types_pb2.DT_STRING
        values = arr.ravel().tolist()
        if values and all(type(v) is bytes for v in values):
            proto.string_val.extend(values)
        else:
            proto.string_val.extend([_as_bytes(v) for v in values])
        return
    dt = _NP_TO_DT.get((arr.dtype.kind, arr.dtype.itemsize))
    if dt is None:
        raise TensorConversionError(f"numpy dtype {arr.dtype} has no TensorProto equivalent here")
    np_dtype, field = _NUMERIC[dt]
    proto.dtype = dt
    if use_tensor_content:
        proto.tensor_content = np.ascontiguousarray(arr, dtype=np_dtype).tobytes()
    else:
        getattr(proto, field).extend(arr.ravel().tolist())


def tensor_proto_to_value(proto: tensor_pb2.TensorProto, name: str = "tensor"):
    """The cheapest value `tf.constant` takes for a TensorProto: a list of bytes for a
    complete rank-1 string tensor, else the array of `tensor_proto_to_ndarray`.

    Args:
      proto: the TensorProto.
      name: what to call the tensor in error messages.
    """
    if proto.dtype == types_pb2.DT_STRING and not proto.tensor_shape.unknown_rank:
        dims = proto.tensor_shape.dim
        if len(dims) == 1 and dims[0].size == len(proto.string_val) and dims[0].size > 0:
            return list(proto.string_val)
    return tensor_proto_to_ndarray(proto, name)


def tensor_proto_to_ndarray(proto: tensor_pb2.TensorProto, name: str = "tensor") -> np.ndarray:
    """The numpy view of a TensorProto: `tensor_content` without a copy, value fields at C speed.

    Strings come back as an object array of bytes. Fewer values than the shape holds
    repeat the last value (TensorFlow's rule); none gives zeros / empty strings.

    Args:
      proto: the TensorProto.
      name: what to call the tensor in error messages.
    """
    if proto.tensor_shape.unknown_rank:
        raise TensorConversionError(f"{name}: tensor_shape has unknown rank")
    shape = tuple(d.size for d in proto.tensor_shape.dim)
    if any(d < 0 for d in shape):
        raise TensorConversionError(f"{name}: tensor_shape {shape_str(shape)} has a negative dimension")
    count = math.prod(shape)
    if proto.dtype == types_pb2.DT_STRING:
        values = proto.string_val
        out = np.empty(count, dtype=object)
        if len(values) == count:
            out[:] = list(values)
        else:
            _fill_short(out, list(values), b"", name, shape)
        return out.reshape(shape)
    spec = _NUMERIC.get(proto.dtype)
    if spec is None:
        raise TensorConversionError(f"{name}: dtype {dtype_name(proto.dtype)} is not supported")
    np_dtype, field = spec
    content = proto.tensor_content
    if content:
        if len(content) != count * np_dtype.itemsize:
            raise TensorConversionError(
                f"{name}: tensor_content has {len(content)} bytes but shape {shape_str(shape)} of "
                f"{dtype_name(proto.dtype)} needs {count * np_dtype.itemsize}"
            )
        return np.frombuffer(content, dtype=np_dtype).reshape(shape)
    values = getattr(proto, field)
    if len(values) == count:
        return np.fromiter(values, dtype=np_dtype, count=count).reshape(shape)
    out = np.zeros(count, dtype=np_dtype)
    _fill_short(out, list(values), 0, name, shape)
    return out.reshape(shape)


def _fill_short(out: np.ndarray, values: list, default, name: str, shape) -> None:
    count = out.shape[0]
    if len(values) > count:
        raise TensorConversionError(
            f"{name}: tensor has {len(values)} values but shape {shape_str(shape)} holds {count}"
        )
    out[: len(values)] = values
    out[len(values):] = values[-1] if values else default


def history_width(longest: int) -> int:
    """Padded width of a recommend request: MAX_HISTORY or the next multiple of it.

    A fixed width lets TF Serving's batcher merge recommend requests without its own
    padding (which would repeat a real item id, not the b"" the models expect).
    """
    step = features.MAX_HISTORY
    return max(1, math.ceil(max(longest, 1) / step)) * step


def history_arrays(
    history_item_ids: Sequence[Sequence[Union[str, bytes, int]]],
    history_behaviors: Optional[Sequence[Optional[Sequence[Union[str, bytes]]]]] = None,
    width: Optional[int] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """Two object arrays [B, width] of bytes padded with b"": the recommend signature's inputs.

    Args:
      history_item_ids: one sequence of item ids per request row, oldest first.
      history_behaviors: aligned behaviors per row; None (or a None row) sends b"".
      width: padded width; default `history_width(longest row)`.
    """
    rows = len(history_item_ids)
    behavior_rows = aligned_behaviors(history_item_ids, history_behaviors)
    longest = max((len(r) for r in history_item_ids), default=0)
    width = history_width(longest) if width is None else width
    if longest > width:
        raise ValueError(f"a history has {longest} items but the padded width is {width}")
    items = np.full((rows, width), HISTORY_PAD, dtype=object)
    behaviors = np.full((rows, width), HISTORY_PAD, dtype=object)
    for i, row in enumerate(history_item_ids):
        items[i, : len(row)] = [_as_bytes(v) for v in row]
        behaviors[i, : len(row)] = [_as_bytes(v) for v in behavior_rows[i]]
    return items, behaviors


def aligned_behaviors(history_item_ids: Sequence[Sequence[Union[str, bytes, int]]],
                      history_behaviors: Optional[Sequence[Optional[Sequence[Union[str, bytes]]]]] = None
                      ) -> List[Sequence[Union[str, bytes]]]:
    """One behavior row per history, aligned with its items; a missing row (None, or no
    `history_behaviors`) is b"" per item, the default behavior. ValueError on a mismatch."""
    rows = len(history_item_ids)
    if history_behaviors is not None and len(history_behaviors) != rows:
        raise ValueError(
            f"history_behaviors has {len(history_behaviors)} rows but history_item_ids has {rows}"
        )
    out = []
    for i, row in enumerate(history_item_ids):
        brow = None if history_behaviors is None else history_behaviors[i]
        if brow is not None and len(brow) != len(row):
            raise ValueError(f"history row {i}: {len(brow)} behaviors for {len(row)} items; they must align")
        out.append(brow if brow is not None else [HISTORY_PAD] * len(row))
    return out


def recommend_inputs(items: np.ndarray, behaviors: np.ndarray, exclude: Optional[np.ndarray] = None) -> dict:
    """The recommend signature's input dict (TensorProtos) for padded history arrays; with
    `exclude` (padded item ids [B, E]), recommend_excluding's."""
    out = {
        features.HISTORY_ITEM_IDS: ndarray_to_tensor_proto(items),
        features.HISTORY_BEHAVIORS: ndarray_to_tensor_proto(behaviors),
    }
    if exclude is not None:
        out[EXCLUDE_ITEM_IDS] = ndarray_to_tensor_proto(exclude)
    return out


def exclusion_array(exclude_item_ids: Sequence[Optional[Sequence[Union[str, bytes, int]]]], rows: int) -> np.ndarray:
    """recommend_excluding's `exclude_item_ids`: an object array [rows, width] of bytes padded
    with b"" to a multiple of MAX_HISTORY (so requests batch together); a None row excludes
    nothing. ValueError when the row count differs from the histories'.

    Args:
      exclude_item_ids: per request row, the item ids never to return (any order, any length).
      rows: the number of history rows they go with.
    """
    if len(exclude_item_ids) != rows:
        raise ValueError(f"exclude_item_ids has {len(exclude_item_ids)} rows but there are {rows} histories; "
                         "send one row (possibly empty) per history")
    lists = [list(r) if r is not None else [] for r in exclude_item_ids]
    width = history_width(max((len(r) for r in lists), default=0))
    out = np.full((rows, width), HISTORY_PAD, dtype=object)
    for i, row in enumerate(lists):
        out[i, : len(row)] = [_as_bytes(v) for v in row]
    return out


def history_examples(history_item_ids: Sequence[Sequence[Union[str, bytes, int]]],
                     history_behaviors: Optional[Sequence[Optional[Sequence[Union[str, bytes]]]]] = None
                     ) -> List[bytes]:
    """Serialized tf.Examples holding one history each (what `serving_default` of a model
    scoring user-view examples reads); a missing behavior row sends b"" (the default).

    Args:
      history_item_ids: per example, item ids oldest first.
      history_behaviors: aligned behaviors per example (None: all default).
    """
    out = []
    for row, brow in zip(history_item_ids, aligned_behaviors(history_item_ids, history_behaviors)):
        example = example_pb2.Example()
        feature = example.features.feature
        feature[features.HISTORY_ITEM_IDS].bytes_list.value.extend(_as_bytes(v) for v in row)
        feature[features.HISTORY_BEHAVIORS].bytes_list.value.extend(_as_bytes(v) for v in brow)
        out.append(example.SerializeToString())
    return out


def interaction_example(user_id: Union[str, bytes], item_id: Union[str, bytes],
                        history_item_ids: Sequence[Union[str, bytes, int]] = (),
                        history_behaviors: Optional[Sequence[Union[str, bytes]]] = None,
                        texts: Optional[Mapping[str, Sequence[Union[str, bytes]]]] = None) -> bytes:
    """A serialized raw interaction example as `serving_default` and `explain` read it: the user
    and item ids, the user's history (behaviors b"" when not given) and any text features by
    their raw names (e.g. a description's documents `user_review_docs`, oldest first).

    Args:
      user_id / item_id: the ids.
      history_item_ids: the user's earlier items, oldest first.
      history_behaviors: aligned behaviors (None: b"" each).
      texts: raw feature name -> its byte strings.
    """
    example = example_pb2.Example()
    feature = example.features.feature
    feature[features.USER_ID].bytes_list.value.append(_as_bytes(user_id))
    feature[features.ITEM_ID].bytes_list.value.append(_as_bytes(item_id))
    behaviors = aligned_behaviors([history_item_ids], [history_behaviors] if history_behaviors is not None else None)[0]
    feature[features.HISTORY_ITEM_IDS].bytes_list.value.extend(_as_bytes(v) for v in history_item_ids)
    feature[features.HISTORY_BEHAVIORS].bytes_list.value.extend(_as_bytes(v) for v in behaviors)
    for name, values in (texts or {}).items():
        feature[name].bytes_list.value.extend(_as_bytes(v) for v in values)
    return example.SerializeToString()


def explanations(outputs: Mapping[str, np.ndarray]) -> List[dict]:
    """One {"explanation": text, <task>: value, ...} per row from `explain`'s outputs."""
    texts = outputs[EXPLANATION]
    rows = []
    for i, text in enumerate(np.asarray(texts).reshape(-1)):
        row = {EXPLANATION: text.decode("utf-8") if isinstance(text, bytes) else str(text)}
        for name, values in outputs.items():
            values = np.asarray(values)
            if name not in (EXPLANATION, EXPLANATION_TOKENS) and values.dtype.kind in "fiu":
                row[name] = float(values.reshape(len(texts), -1)[i, 0])
        rows.append(row)
    return rows


def ranked_items(item_ids: np.ndarray, scores: np.ndarray, k: Optional[int] = None) -> List[List[Tuple[str, float]]]:
    """(item_id, score) lists per row from recommend outputs, dropping padding ids and -inf scores.

    Args:
      item_ids: [B, K] bytes.
      scores: [B, K] floats.
      k: keep at most this many per row.
    """
    out = []
    for ids_row, score_row in zip(item_ids, scores):
        row = []
        for item, score in zip(ids_row, score_row):
            if item == HISTORY_PAD or item == "" or not np.isfinite(score):
                continue
            row.append((item.decode("utf-8") if isinstance(item, bytes) else str(item), float(score)))
            if k is not None and len(row) >= k:
                break
        out.append(row)
    return out


def as_input_protos(inputs: Mapping[str, object]) -> dict:
    """TensorProtos for a dict of numpy arrays / lists / TensorProtos (passed through)."""
    out = {}
    for key, value in inputs.items():
        out[key] = value if isinstance(value, tensor_pb2.TensorProto) else ndarray_to_tensor_proto(value)
    return out

# The SavedModel's directory for files TF Serving does not load as the model (its warmup
# records, the model card, the model record).
ASSETS_EXTRA = "assets.extra"
# The family, hyperparameters, dataset and max_history a model was built with (JSON in
# ASSETS_EXTRA; a fine-tuning Trainer rebuilds its base model's network from it).
MODEL_RECORD = "model_record.json"
# The exported model's attribute holding its trainable weights in the model's order (a list
# in the SavedModel's object graph): what a warm start reads (training/warm_start.py).
TRAINED_WEIGHTS = "trained_weights"
# What a Trainer writes beside its model (model_run directory): best epoch, eval values,
# mean gate weights per expert per task (JSON).
TRAINING_SUMMARY = "training_summary.json"
# The Pusher's record of a push (or of why it did not push), in its output directory.
PUSH_RESULT = "push_result.json"
