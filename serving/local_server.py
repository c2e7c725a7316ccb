"""A development stand-in for `tensorflow_model_server` speaking its gRPC API.

Serves SavedModel versions through `tensorflow.serving.PredictionService` (Predict,
GetModelMetadata) and `tensorflow.serving.ModelService` (GetModelStatus,
HandleReloadConfigRequest) with TF Serving's status codes, and decides which versions
to serve the way `tensorflow_model_server` does:

- with `--model_config_file`: the models, base paths, version policies (latest N, all,
  specific versions) and version labels of a ModelServerConfig text proto, as
  `serving/config/models.config`;
- without it: every model directory under `--model_base`, newest `--num_versions` each.

New versions are found by polling, warmed up from `assets.extra`, and swapped in
without failing in-flight requests. Loading follows TF Serving's availability-preserving
policy: a version the policy no longer wants is retired only once a version it wants is
serving, so a newest version that fails to load leaves the previous one serving, and
GetModelStatus reports the failure with its error code and message. The README's
conformance table lists each behaviour next to TF Serving's. Production runs the real
server. A version whose `recommend` searches a ScaNN index (a family's `scann` on) gets
ScaNN's TensorFlow ops registered before it loads, as a TF Serving build with them linked.

    python -m serving.local_server --model_base DIR --port 8500 [--poll_seconds 1]
    python -m serving.local_server --model_config_file FILE --port 8500
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import functools
import logging
import os
import signal
import sys
import threading
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import message as protobuf_message
from google.protobuf import text_format
from tensorflow.core.protobuf import error_codes_pb2, saved_model_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2

from contract import protocol
from export import scann_index, warmup

log = logging.getLogger("serving.local_server")

State = get_model_status_pb2.ModelVersionStatus.State
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
SERVE_TAG = "serve"
SIGNATURE_DEF = "signature_def"
DEFAULT_MAX_BATCH_ROWS = 512  # as serving/config/batching_parameters.txt
TENSORFLOW_PLATFORM = "tensorflow"
LATEST, ALL, SPECIFIC = "latest", "all", "specific"


class RequestError(Exception):
    """A request the server rejects: a gRPC status code and a message naming the problem."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class ConfigError(RequestError):
    """A model server config the server cannot take (at start or on reload)."""


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """One declared input: its TF dtype, TensorProto dtype enum and shape (None = any size)."""

    dtype: tf.DType
    dtype_enum: int
    shape: Optional[Tuple[Optional[int], ...]]  # None: unknown rank


@dataclasses.dataclass(frozen=True)
class Signature:
    """One callable signature of a loaded version and its declared inputs/outputs."""

    fn: object
    inputs: Mapping[str, InputSpec]
    outputs: Tuple[str, ...]
    batcher: Optional["Batcher"] = None

    @classmethod
    def from_function(cls, fn, max_batch_rows: int = 0) -> "Signature":
        _, kwargs = fn.structured_input_signature
        inputs = {
            key: InputSpec(
                dtype=spec.dtype,
                dtype_enum=spec.dtype.as_datatype_enum,
                shape=tuple(spec.shape.as_list()) if spec.shape.rank is not None else None,
            )
            for key, spec in sorted(kwargs.items())  # fixed order: same error for the same request
        }
        outputs = fn.structured_outputs
        names = tuple(outputs) if isinstance(outputs, Mapping) else ("output_0",)
        batcher = None
        if max_batch_rows > 0:
            batcher = Batcher(functools.partial(_call_signature, fn, inputs), max_batch_rows)
        return cls(fn=fn, inputs=inputs, outputs=names, batcher=batcher)


@dataclasses.dataclass(frozen=True)
class Servable:
    """One loaded model version."""

    name: str
    version: int
    path: str
    module: object  # keeps the loaded SavedModel (and its resources) alive
    signatures: Mapping[str, Signature]
    signature_defs: get_model_metadata_pb2.SignatureDefMap


@dataclasses.dataclass
class VersionStatus:
    state: int
    error_code: int = error_codes_pb2.OK
    error_message: str = ""


def _read_signature_defs(path: str) -> get_model_metadata_pb2.SignatureDefMap:
    """The serving meta graph's signatures; RequestError with the code TF Serving's loader gives.

    Read before TensorFlow loads the version, and strictly: Python's protobuf parser only
    warns when it stops before the end of the file, where TF Serving's C++ loader fails
    with DATA_LOSS.
    """
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    pb = os.path.join(path, "saved_model.pb")
    pbtxt = os.path.join(path, "saved_model.pbtxt")
    saved = saved_model_pb2.SavedModel()
    if os.path.exists(pb):
        with open(pb, "rb") as f:
            data = f.read()
        try:
            consumed = saved.ParseFromString(data)
        except protobuf_message.DecodeError:
            consumed = -1
        if consumed != len(data):  # stopped early: only a warning in Python, an error in C++
            raise RequestError(grpc.StatusCode.DATA_LOSS, f"Can't parse {pb} as binary proto")
    elif os.path.exists(pbtxt):
        with open(pbtxt, encoding="utf-8", errors="replace") as f:
            try:
                text_format.Parse(f.read(), saved)
            except text_format.ParseError:
                raise RequestError(grpc.StatusCode.DATA_LOSS, f"Can't parse {pbtxt} as text proto") from None
    else:
        raise RequestError(
            grpc.StatusCode.NOT_FOUND,
            f"Could not find SavedModel .pb or .pbtxt at supplied export directory path: {path}",
        )
    for meta_graph in saved.meta_graphs:
        if SERVE_TAG in meta_graph.meta_info_def.tags:
            for key, sig in meta_graph.signature_def.items():
                sig_map.signature_def[key].CopyFrom(sig)
            _register_custom_ops(meta_graph, path)
            return sig_map
    raise RequestError(
        grpc.StatusCode.NOT_FOUND,
        f"Could not find meta graph def matching supplied tags: {{ {SERVE_TAG} }}. To inspect available "
        f"tag-sets in the SavedModel, please use the SavedModel CLI: `saved_model_cli` ({path})",
    )


def _register_custom_ops(meta_graph, path: str) -> None:
    """Registers the custom ops a version's graph uses before TensorFlow loads it: ScaNN's,
    when `recommend` searches a ScaNN index (export/scann_index.py). Without them the load
    fails with NOT_FOUND, as in a TF Serving build that does not link them."""
    graph = meta_graph.graph_def
    used = scann_index.scann_ops_used(
        [node.op for node in graph.node] + [node.op for f in graph.library.function for node in f.node_def])
    if not used:
        return
    try:
        scann_index.load_scann_ops()
    except ImportError as exc:
        raise RequestError(grpc.StatusCode.NOT_FOUND, f"{path} uses the ops {', '.join(used)}: {exc}") from None


def load_servable(
    name: str, version: int, path: str, run_warmup: bool = True, max_batch_rows: int = DEFAULT_MAX_BATCH_ROWS
) -> Servable:
    """Loads one SavedModel version and replays its warmup requests (a failure fails the load).

    Args:
      name: model name.
      version: version number.
      path: the version directory.
      run_warmup: replay `assets.extra/tf_serving_warmup_requests` when present.
      max_batch_rows: merge concurrent requests up to this many rows per call (0: never).
    """
    signature_defs = _read_signature_defs(path)
    module = tf.saved_model.load(path, tags=[SERVE_TAG])
    signatures = {key: Signature.from_function(fn, max_batch_rows) for key, fn in module.signatures.items()}
    servable = Servable(name, version, path, module, signatures, signature_defs)
    if run_warmup:
        count = 0
        for i, record in enumerate(warmup.read_warmup_requests(path)):
            if not record.HasField("predict_log"):
                raise RequestError(
                    grpc.StatusCode.INVALID_ARGUMENT, f"warmup record {i} of {name}/{version} is not a PredictLog"
                )
            try:
                predict(servable, record.predict_log.request)
            except RequestError as exc:  # TF Serving fails the load with the request's status
                raise RequestError(
                    exc.code, f"warmup request {i} of {name}/{version} failed: {exc.code.name}: {exc.message}"
                ) from None
            count += 1
        if count:
            log.info("%s/%d: replayed %d warmup requests", name, version, count)
    return servable


_GRPC_BY_VALUE = {code.value[0]: code for code in grpc.StatusCode}


def _shape_ok(expected: Optional[Tuple[Optional[int], ...]], got: Sequence[int]) -> bool:
    if expected is None:
        return True
    if len(expected) != len(got):
        return False
    return all(e is None or e == g for e, g in zip(expected, got))


def _convert_input(model: str, sig_name: str, key: str, proto, spec: InputSpec):
    """Checks one input TensorProto against its spec and returns a value for tf.constant."""
    if proto.dtype != spec.dtype_enum:
        where = f"model '{model}' signature '{sig_name}' input '{key}'"
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{where}: expected dtype {protocol.dtype_name(spec.dtype_enum)}, "
            f"got {protocol.dtype_name(proto.dtype)}",
        )
    where = f"model '{model}' signature '{sig_name}' input '{key}'"
    if proto.tensor_shape.unknown_rank:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"{where}: tensor_shape has unknown rank")
    shape = [d.size for d in proto.tensor_shape.dim]
    if not _shape_ok(spec.shape, shape):
        expected = protocol.shape_str(spec.shape) if spec.shape is not None else "of any rank"
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{where}: expected shape {expected}, got {protocol.shape_str(shape)}",
        )
    try:
        return protocol.tensor_proto_to_value(proto, name=where)
    except protocol.TensorConversionError as exc:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None


def _input_names_error(servable: Servable, sig_name: str, expected, got) -> RequestError:
    missing = sorted(set(expected) - set(got))
    unknown = sorted(set(got) - set(expected))
    where = f"(model '{servable.name}' signature '{sig_name}')"
    if len(got) != len(expected):  # predict_util.cc VerifyRequestInputsSize
        message = (
            f"input size does not match signature: {len(got)}!={len(expected)} "
            f"len({{{','.join(sorted(got))}}}) != len({{{','.join(sorted(expected))}}}). "
            f"Sent extra: {{{','.join(unknown)}}}. Missing but required: {{{','.join(missing)}}}. {where}"
        )
    else:
        message = (
            f"inputs {unknown} are not in the signature; missing but required: {missing}; "
            f"expected inputs {sorted(expected)} {where}"
        )
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, message)


def predict(servable: Servable, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
    """Runs one PredictRequest against a loaded version; raises RequestError with TF Serving's codes.

    Args:
      servable: the loaded version.
      request: the request (its model_spec.name/version are not checked here).
    """
    sig_name = request.model_spec.signature_name or protocol.SERVING_DEFAULT
    signature = servable.signatures.get(sig_name)
    if signature is None:  # predict_util.cc: FailedPrecondition
        raise RequestError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f'Serving signature key "{sig_name}" not found. (model \'{servable.name}\' version '
            f"{servable.version} has {sorted(servable.signatures)})",
        )
    expected = signature.inputs
    got = request.inputs
    if len(got) != len(expected) or not all(key in got for key in expected):
        raise _input_names_error(servable, sig_name, expected, list(got.keys()))
    output_names = signature.outputs
    if request.output_filter:
        output_names = tuple(request.output_filter)
        if len(set(output_names)) != len(output_names):
            duplicate = next(n for n in output_names if output_names.count(n) > 1)
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"duplicate output tensor alias: {duplicate}")
        bad = sorted(set(output_names) - set(signature.outputs))
        if bad:  # predict_util.cc's message
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"output tensor alias not found in signature: {bad[0]} Outputs expected to be in the set "
                f"{{{','.join(sorted(signature.outputs))}}}. (model '{servable.name}' signature '{sig_name}')",
            )
    values = {
        key: _convert_input(servable.name, sig_name, key, got[key], spec) for key, spec in expected.items()
    }
    try:
        if signature.batcher is not None:
            outputs = signature.batcher(values)
        else:
            outputs = _call_signature(signature.fn, expected, values)
    except tf.errors.OpError as exc:
        code = _GRPC_BY_VALUE.get(exc.error_code, grpc.StatusCode.INTERNAL)
        raise RequestError(code, f"model '{servable.name}' signature '{sig_name}': {exc.message}") from None
    response = predict_pb2.PredictResponse()
    spec_out = response.model_spec
    spec_out.name = servable.name
    spec_out.version.value = servable.version
    spec_out.signature_name = sig_name
    response_outputs = response.outputs
    for key in output_names:
        protocol.fill_tensor_proto(response_outputs[key], outputs[key])
    return response


def _call_signature(fn, specs: Mapping[str, InputSpec], values: Mapping[str, object]) -> Dict[str, np.ndarray]:
    """One call of a signature function on converted inputs; numpy outputs."""
    kwargs = {
        key: tf.constant(value) if isinstance(value, list) else tf.constant(value, dtype=specs[key].dtype)
        for key, value in values.items()
    }
    outputs = fn(**kwargs)
    if not isinstance(outputs, Mapping):
        outputs = {"output_0": outputs}
    return {key: tensor.numpy() for key, tensor in outputs.items()}


def _rows_and_key(values: Mapping[str, object]):
    """(batch rows, merge key) of a request's inputs; key None when it cannot be merged."""
    rows, key = None, []
    for name in sorted(values):
        value = values[name]
        if isinstance(value, list):
            n, part = len(value), (name, "list")
        elif isinstance(value, np.ndarray) and value.ndim >= 1:
            n, part = value.shape[0], (name, value.shape[1:], value.dtype.str)
        else:
            return 0, None
        if n == 0 or (rows is not None and n != rows):
            return 0, None
        rows = n
        key.append(part)
    return rows or 0, tuple(key) if key else None


class _Task:
    __slots__ = ("values", "rows", "key", "result", "error", "event", "lead")

    def __init__(self, values, rows, key):
        self.values, self.rows, self.key = values, rows, key
        self.result = self.error = None
        self.event = threading.Event()
        self.lead = False


class Batcher:
    """Merges concurrent requests to one signature into one call, without waiting.

    A request arriving while no call runs is executed at once (no added latency); those
    arriving during a call queue up and the next of them runs the queued requests with
    matching inner shapes as one batch, split back by rows afterwards. A failed merged
    call is retried request by request, so each gets its own answer or error.

    Args:
      run: values dict -> numpy outputs dict (one signature call).
      max_rows: largest merged batch, in rows.
    """

    def __init__(self, run: Callable[[Mapping[str, object]], Dict[str, np.ndarray]], max_rows: int):
        self._run = run
        self._max_rows = max_rows
        self._lock = threading.Lock()
        self._queue: List[_Task] = []
        self._busy = False
        self.calls = 0  # signature calls made, for tests and stats
        self.requests = 0

    @property
    def queued(self) -> int:
        """Requests not yet taken into a call."""
        with self._lock:
            return len(self._queue)

    def __call__(self, values: Mapping[str, object]) -> Dict[str, np.ndarray]:
        rows, key = _rows_and_key(values)
        if key is None:
            return self._run(values)
        task = _Task(values, rows, key)
        with self._lock:
            self._queue.append(task)
            lead = not self._busy
            self._busy = True
        if not lead:
            task.event.wait()
            lead = task.lead
        if lead:
            self._lead()
        if task.error is not None:
            raise task.error
        return task.result

    def _lead(self) -> None:
        with self._lock:
            head = self._queue[0]
            batch, rest, rows = [], [], 0
            for t in self._queue:
                if t.key == head.key and (not batch or rows + t.rows <= self._max_rows):
                    batch.append(t)
                    rows += t.rows
                else:
                    rest.append(t)
            self._queue = rest
        try:
            self._execute(batch)
        finally:
            with self._lock:
                successor = self._queue[0] if self._queue else None
                if successor is None:
                    self._busy = False
                else:
                    successor.lead = True
            for t in batch:
                t.event.set()
            if successor is not None:
                successor.event.set()

    def _execute(self, batch: List[_Task]) -> None:
        self.requests += len(batch)
        if len(batch) > 1:
            merged = {}
            for name in batch[0].values:
                parts = [t.values[name] for t in batch]
                merged[name] = [v for p in parts for v in p] if isinstance(parts[0], list) else np.concatenate(parts)
            try:
                self.calls += 1
                outputs = self._run(merged)
            except Exception:  # one bad request: let each find out alone
                outputs = None
            total = sum(t.rows for t in batch)
            if outputs is not None and all(v.ndim >= 1 and v.shape[0] == total for v in outputs.values()):
                start = 0
                for t in batch:
                    t.result = {k: v[start : start + t.rows] for k, v in outputs.items()}
                    start += t.rows
                return
        for t in batch:
            try:
                self.calls += 1
                t.result = self._run(t.values)
            except BaseException as exc:  # delivered to the request's own thread
                t.error = exc


def _version_dirs(model_dir: str) -> Dict[int, Tuple[str, Optional[int]]]:
    """Every version directory of a model: version -> (path, mtime of its saved_model.pb or None).

    As TF Serving's file-system source, any child whose name is a number is a version,
    complete or not; the marker's mtime lets a failed version be retried once its
    saved_model.pb changes.
    """
    out: Dict[int, Tuple[str, Optional[int]]] = {}
    try:
        entries = list(os.scandir(model_dir))
    except (FileNotFoundError, NotADirectoryError):
        return out
    for entry in entries:
        if not entry.name.isdigit() or not entry.is_dir():
            continue
        marker = None
        for name in ("saved_model.pb", "saved_model.pbtxt"):
            try:
                marker = os.stat(os.path.join(entry.path, name)).st_mtime_ns
                break
            except FileNotFoundError:
                continue
        out[int(entry.name)] = (entry.path, marker)
    return out


@dataclasses.dataclass(frozen=True)
class ModelPolicy:
    """One served model: its name, base path and TF Serving version policy.

    Attributes:
      name: model name clients ask for.
      base_path: directory holding `<version>/` sub-directories.
      kind: `latest` (the `num_versions` highest versions), `all`, or `specific`.
      num_versions: versions kept by `latest` (TF Serving: at least 1).
      versions: the versions `specific` serves.
    """

    name: str
    base_path: str
    kind: str = LATEST
    num_versions: int = 1
    versions: Tuple[int, ...] = ()

    def aspired(self, on_disk: Iterable[int]) -> Set[int]:
        """The versions the policy wants among those on disk."""
        on_disk = set(on_disk)
        if self.kind == ALL:
            return on_disk
        if self.kind == SPECIFIC:
            return on_disk & set(self.versions)
        return set(sorted(on_disk, reverse=True)[: max(self.num_versions, 1)])

    def describe(self) -> str:
        if self.kind == LATEST:
            return f"latest {max(self.num_versions, 1)}"
        if self.kind == SPECIFIC:
            return f"specific {sorted(self.versions)}"
        return "all"


def _invalid(message: str) -> ConfigError:
    return ConfigError(grpc.StatusCode.INVALID_ARGUMENT, message)


def policies_from_config(
    config: model_server_config_pb2.ModelServerConfig, source: str = "config"
) -> Tuple[List[ModelPolicy], Dict[str, Dict[str, int]]]:
    """The model policies and version labels of a ModelServerConfig, checked as TF Serving checks them.

    Args:
      config: the parsed config.
      source: where it came from, for messages (a file name).

    Raises:
      ConfigError: INVALID_ARGUMENT naming the model and the problem.
    """
    if config.WhichOneof("config") != "model_config_list":
        raise _invalid(
            f"{source}: only model_config_list is supported (ServerModelConfig type not supported; "
            "Only ModelConfigList is currently supported)"
        )
    policies: List[ModelPolicy] = []
    labels: Dict[str, Dict[str, int]] = {}
    seen: Set[str] = set()
    for model in config.model_config_list.config:
        name = model.name
        if not name:
            raise _invalid(f"{source}: a model config has no name")
        if name in seen:
            raise _invalid(f"{source}: Illegal to list model {name} multiple times in config list")
        seen.add(name)
        if model.model_type:
            raise _invalid(f"{source}: model {name}: the deprecated model_type is not supported; set model_platform")
        platform = model.model_platform
        if not platform:
            raise _invalid(
                f"{source}: model {name}: Illegal setting neither ModelServerConfig::model_type (deprecated) "
                "nor ModelServerConfig::model_platform."
            )
        if platform != TENSORFLOW_PLATFORM:
            raise _invalid(f"{source}: Model {name} requests unsupported platform {platform}")
        base = model.base_path
        if "://" in base:
            raise _invalid(f"{source}: model {name}: base_path {base} is a URI; the local server reads local directories")
        if not os.path.isabs(base):
            raise _invalid(
                f"{source}: Expected model {name} to have an absolute path or URI; got base_path()={base}"
            )
        policy = model.model_version_policy
        choice = policy.WhichOneof("policy_choice")
        if choice == "all":
            policies.append(ModelPolicy(name, base, ALL))
        elif choice == "specific":
            versions = tuple(int(v) for v in policy.specific.versions)
            if not versions:
                raise _invalid(f"{source}: model {name}: model_version_policy.specific lists no versions")
            policies.append(ModelPolicy(name, base, SPECIFIC, versions=versions))
        else:  # latest, or unset: TF Serving's default is the latest version
            policies.append(ModelPolicy(name, base, LATEST, num_versions=max(int(policy.latest.num_versions), 1)))
        if model.version_labels:
            labels[name] = {label: int(v) for label, v in model.version_labels.items()}
    return policies, labels


def read_config_file(path: str) -> model_server_config_pb2.ModelServerConfig:
    """Parses a ModelServerConfig text proto; ConfigError (INVALID_ARGUMENT) names the file on error."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise _invalid(f"cannot read model config file {path}: {exc.strerror or exc}") from None
    try:
        return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    except text_format.ParseError as exc:
        raise _invalid(f"{path}: not a ModelServerConfig text proto: {exc}") from None


def _load_error(exc: BaseException) -> Tuple[int, str]:
    """(error code, message) of a failed load, as TF Serving reports it in GetModelStatus."""
    if isinstance(exc, tf.errors.OpError):
        return exc.error_code, exc.message
    if isinstance(exc, RequestError):
        return exc.code.value[0], exc.message
    text = f"{type(exc).__name__}: {exc}".strip()
    if isinstance(exc, IndexError):  # TF's C++ OUT_OF_RANGE reaches Python as IndexError (e.g. a
        return error_codes_pb2.OUT_OF_RANGE, str(exc)  # truncated variables file: "Read less bytes")
    if isinstance(exc, FileNotFoundError) or "SavedModel file does not exist" in text:
        return error_codes_pb2.NOT_FOUND, text
    if isinstance(exc, protobuf_message.DecodeError):
        return error_codes_pb2.DATA_LOSS, text
    return error_codes_pb2.UNKNOWN, text


def _servable_request(name: str, version: Optional[int]) -> str:
    """TF Serving's ServableRequest::DebugString."""
    return f"Latest({name})" if version is None else f"Specific({name}, {version})"


class ModelRegistry:
    """The loaded versions of every served model, refreshed by `poll()`.

    Either scans a serving base (one model per sub-directory, newest `num_versions`
    each) or serves the models of a ModelServerConfig.

    Args:
      model_base: directory holding one sub-directory per model (scan mode).
      model_names: scan mode: serve only these (default: every sub-directory not starting with '.').
      num_versions: scan mode: newest versions kept loaded per model.
      run_warmup: replay warmup records before a version takes traffic.
      max_batch_rows: merge concurrent requests per signature up to this many rows (0: never).
      config: a ModelServerConfig (config mode; replaces model_base).
      allow_version_labels_for_unavailable_models: as TF Serving's flag of that name: a
        label may name a version that is not AVAILABLE yet, unless it moves an existing label.
    """

    def __init__(
        self,
        model_base: Optional[str] = None,
        model_names: Optional[Sequence[str]] = None,
        num_versions: int = 1,
        run_warmup: bool = True,
        max_batch_rows: int = DEFAULT_MAX_BATCH_ROWS,
        config: Optional[model_server_config_pb2.ModelServerConfig] = None,
        allow_version_labels_for_unavailable_models: bool = False,
    ):
        if (model_base is None) == (config is None):
            raise ValueError("give either model_base (scan mode) or config (a ModelServerConfig)")
        if model_base is not None and not os.path.isdir(model_base):
            raise FileNotFoundError(f"model base {model_base} is not a directory")
        if num_versions < 1:
            raise ValueError(f"num_versions must be >= 1, got {num_versions}")
        self.model_base = model_base
        self.model_names = list(model_names) if model_names else None
        self.num_versions = num_versions
        self.run_warmup = run_warmup
        self.max_batch_rows = max_batch_rows
        self.allow_unavailable_labels = allow_version_labels_for_unavailable_models
        self._servables: Dict[str, Dict[int, Servable]] = {}  # replaced, never mutated
        self._labels: Dict[str, Dict[str, int]] = {}  # replaced, never mutated
        self._status: Dict[str, Dict[int, VersionStatus]] = {}
        self._failed: Dict[Tuple[str, int], Optional[int]] = {}  # (model, version) -> marker mtime
        self._policies: Optional[Dict[str, ModelPolicy]] = None  # None: scan model_base
        self._warned_empty: Set[str] = set()
        self._lock = threading.Lock()
        self._poll_lock = threading.Lock()
        if config is not None:
            policies, labels = policies_from_config(config)
            # TF Serving checks labels before anything has loaded, so at start every label
            # fails unless --allow_version_labels_for_unavailable_models is set.
            self._labels = self._checked_labels(labels)
            self._policies = {p.name: p for p in policies}

    # -- lookups used by request handlers (lock-free reads of immutable dicts) --
    def model_names_seen(self) -> List[str]:
        return sorted(set(self._servables) | set(self._status) | set(self._policies or ()))

    def loaded_versions(self, name: str) -> List[int]:
        return sorted(self._servables.get(name, {}))

    def policies(self) -> List[ModelPolicy]:
        """The policy of every model currently configured (scan mode: every model directory)."""
        if self._policies is not None:
            return list(self._policies.values())
        return [
            ModelPolicy(name, os.path.join(self.model_base, name), LATEST, self.num_versions)
            for name in self._model_dirs()
        ]

    def labels(self, name: str) -> Dict[str, int]:
        return dict(self._labels.get(name, {}))

    def get(self, name: str, version: Optional[int] = None, label: Optional[str] = None) -> Servable:
        """The servable for a request, resolved as ServerCore does; RequestError otherwise.

        Args:
          name: model name (empty: INVALID_ARGUMENT).
          version: a specific version, or None for the latest available one.
          label: a version label from the config (INVALID_ARGUMENT when unknown).
        """
        if not name:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified.")
        if label is not None:
            version = self._labels.get(name, {}).get(label)
            if version is None:
                known = sorted(self._labels.get(name, {}))
                raise RequestError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Unrecognized servable version label: {label} (model '{name}' labels: {known})",
                )
        versions = self._servables.get(name) or {}
        servable = versions.get(version) if version is not None else (versions[max(versions)] if versions else None)
        if servable is None:
            if versions:
                hint = f"available versions: {sorted(versions)}"
            elif name in self._status:
                hint = "no version is available; see GetModelStatus"
            else:
                hint = f"served models: {self.model_names_seen()}"
            raise RequestError(
                grpc.StatusCode.NOT_FOUND,
                f"Servable not found for request: {_servable_request(name, version)} ({hint})",
            )
        return servable

    def status(self, name: str, version: Optional[int] = None) -> List[Tuple[int, VersionStatus]]:
        """(version, status) pairs of a model, as get_model_status_impl.cc; RequestError(NOT_FOUND)."""
        with self._lock:
            statuses = dict(self._status.get(name, {}))
        if version is not None:
            if version not in statuses:
                raise RequestError(
                    grpc.StatusCode.NOT_FOUND, f"Could not find version {version} of model {name}"
                )
            return [(version, statuses[version])]
        if not statuses:
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {name}")
        return sorted(statuses.items())

    # -- labels and config reloads --
    def _checked_labels(self, labels: Mapping[str, Mapping[str, int]]) -> Dict[str, Dict[str, int]]:
        """Labels that point at AVAILABLE versions (server_core.cc UpdateModelVersionLabelMap)."""
        out: Dict[str, Dict[str, int]] = {}
        for name, model_labels in sorted(labels.items()):
            with self._lock:
                states = dict(self._status.get(name, {}))
            for label, version in sorted(model_labels.items()):
                available = version in states and states[version].state == State.AVAILABLE
                existing = self._labels.get(name, {}).get(label)
                moves_existing = existing is not None and existing != version
                if not available and not (self.allow_unavailable_labels and not moves_existing):
                    raise ConfigError(
                        grpc.StatusCode.FAILED_PRECONDITION,
                        f"Request to assign label to version {version} of model {name}, which is not "
                        "currently available for inference (label "
                        f"'{label}'; tensorflow_model_server checks labels before loading, so labels in the "
                        "config it starts with need --allow_version_labels_for_unavailable_models)",
                    )
                out.setdefault(name, {})[label] = version
        return out

    def reload_config(self, config: model_server_config_pb2.ModelServerConfig) -> List[str]:
        """Replaces the served models, policies and labels, as HandleReloadConfigRequest.

        Labels are checked against the versions available before the reload; models new
        to the config must become available, else UNKNOWN names them and their errors.
        Returns one line per change.
        """
        policies, labels = policies_from_config(config, "ReloadConfigRequest")
        with self._poll_lock:
            new_labels = self._checked_labels(labels)
            old_names = set(p.name for p in self.policies())
            self._policies = {p.name: p for p in policies}
            self._labels = new_labels
            events = self._poll_locked()
        added = [p.name for p in policies if p.name not in old_names]
        missing = []
        for name in added:
            if not self._servables.get(name):
                with self._lock:
                    errors = [s.error_message for s in self._status.get(name, {}).values() if s.error_message]
                missing.append(f"{{{name}{' due to error: ' + errors[-1] if errors else ''}}}")
        if missing:
            raise RequestError(
                grpc.StatusCode.UNKNOWN, f"{len(missing)} model(s) did not become available: {', '.join(missing)}"
            )
        return events

    # -- refreshing --
    def _set_status(self, name: str, version: int, status: VersionStatus) -> None:
        with self._lock:
            self._status.setdefault(name, {})[version] = status

    def _model_dirs(self) -> List[str]:
        if self.model_names is not None:
            return self.model_names
        return sorted(
            e.name for e in os.scandir(self.model_base) if e.is_dir() and not e.name.startswith(".")
        )

    def poll(self) -> List[str]:
        """Loads the versions the policies want and retires the others; returns one line per change."""
        with self._poll_lock:
            return self._poll_locked()

    def _poll_locked(self) -> List[str]:
        events = []
        policies = self.policies()
        for policy in policies:
            events.extend(self._sync_model(policy))
        configured = {p.name for p in policies}
        for name in [n for n in self._servables if n not in configured]:  # removed from the config
            events.extend(self._sync_model(ModelPolicy(name, "", SPECIFIC, versions=())))
        return events

    def _sync_model(self, policy: ModelPolicy) -> List[str]:
        """One model's step of TF Serving's AvailabilityPreservingPolicy."""
        name = policy.name
        events: List[str] = []
        present = _version_dirs(policy.base_path) if policy.base_path else {}
        if not present and policy.base_path and name not in self._warned_empty:
            self._warned_empty.add(name)
            events.append(f"{name}: No versions of servable {name} found under base path {policy.base_path}")
        elif present:
            self._warned_empty.discard(name)
        aspired = policy.aspired(present)
        current = self._servables.get(name, {})
        loaded = dict(current)
        for version in sorted(aspired - set(current), reverse=True):  # highest first
            path, marker = present[version]
            if (name, version) in self._failed and self._failed[(name, version)] == marker:
                continue  # failed before and unchanged on disk
            self._set_status(name, version, VersionStatus(State.LOADING))
            try:
                servable = load_servable(name, version, path, self.run_warmup, self.max_batch_rows)
            except Exception as exc:  # any load/warmup failure: reported, the old version keeps serving
                code, message = _load_error(exc)
                if path not in message:
                    message = f"{message} (loading {path})"
                if len(message) > 4000:
                    message = message[:4000] + "..."
                self._failed[(name, version)] = marker
                self._set_status(name, version, VersionStatus(State.END, code, message))
                first = message.splitlines()[0] if message else ""
                events.append(f"{name}: version {version} failed to load ({path}): {first}")
                continue
            self._failed.pop((name, version), None)
            loaded[version] = servable
            self._set_status(name, version, VersionStatus(State.AVAILABLE))
            events.append(f"{name}: version {version} available")
        # Retire versions the policy no longer wants, but keep availability: while no wanted
        # version serves, the newest unwanted one stays (availability_preserving_policy.cc).
        unwanted = sorted(v for v in loaded if v not in aspired)
        serving_wanted = any(v in aspired for v in loaded)
        retire = unwanted if (not aspired or serving_wanted) else unwanted[:-1]
        for version in retire:
            del loaded[version]
        if loaded.keys() != current.keys() or any(loaded[v] is not current[v] for v in loaded):
            servables = dict(self._servables)
            if loaded:
                servables[name] = loaded
            else:
                servables.pop(name, None)
            self._servables = servables  # one reference swap
        for version in retire:
            self._set_status(name, version, VersionStatus(State.END))
            events.append(f"{name}: version {version} retired")
        # A failed version deleted from disk is tried again if it comes back.
        for key in [k for k in self._failed if k[0] == name and k[1] not in present]:
            del self._failed[key]
        return events


def _respond(context, handler, request):
    """Runs a handler, turning RequestError into its status and anything else into INTERNAL."""
    try:
        return handler(request)
    except RequestError as exc:
        code, message = exc.code, exc.message
    except Exception as exc:  # the client gets a status, not a dropped call
        log.exception("request failed")
        code, message = grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}"
    context.abort(code, message)


def _resolve(registry: ModelRegistry, request) -> Servable:
    """The servable a request's model_spec names (version, version_label, or latest)."""
    if not request.HasField("model_spec"):
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
    spec = request.model_spec
    choice = spec.WhichOneof("version_choice")
    return registry.get(
        spec.name,
        version=spec.version.value if choice == "version" else None,
        label=spec.version_label if choice == "version_label" else None,
    )


class _PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, registry: ModelRegistry):
        self.registry = registry

    def Predict(self, request, context):
        return _respond(context, self._predict, request)

    def _predict(self, request):
        return predict(_resolve(self.registry, request), request)

    def GetModelMetadata(self, request, context):
        return _respond(context, self._metadata, request)

    def _metadata(self, request):
        if not request.HasField("model_spec"):
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
        fields = list(request.metadata_field)
        if not fields:
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT, "GetModelMetadataRequest must specify at least one metadata_field"
            )
        for field in fields:
            if field != SIGNATURE_DEF:
                raise RequestError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Metadata field {field} is not supported (supported: ['{SIGNATURE_DEF}'])",
                )
        servable = _resolve(self.registry, request)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.metadata[SIGNATURE_DEF].Pack(servable.signature_defs)
        return response

    def _unimplemented(self, method, context):
        context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            f"{method} is not implemented by the local server; use Predict",
        )

    def Classify(self, request, context):
        self._unimplemented("Classify", context)

    def Regress(self, request, context):
        self._unimplemented("Regress", context)

    def MultiInference(self, request, context):
        self._unimplemented("MultiInference", context)


class _ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, registry: ModelRegistry):
        self.registry = registry

    def GetModelStatus(self, request, context):
        return _respond(context, self._status, request)

    def _status(self, request):
        if not request.HasField("model_spec"):
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
        spec = request.model_spec
        version = spec.version.value if spec.WhichOneof("version_choice") == "version" else None
        response = get_model_status_pb2.GetModelStatusResponse()
        for number, status in self.registry.status(spec.name, version):
            entry = response.model_version_status.add()
            entry.version = number
            entry.state = status.state
            entry.status.error_code = status.error_code
            entry.status.error_message = status.error_message
        return response

    def HandleReloadConfigRequest(self, request, context):
        response = model_management_pb2.ReloadConfigResponse()
        try:
            for event in self.registry.reload_config(request.config):
                _log_event(event)
            return response
        except RequestError as exc:
            code, message = exc.code, exc.message
        except Exception as exc:  # reported, not a dropped call
            log.exception("config reload failed")
            code, message = grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}"
        log.error("ReloadConfig failed: %s", message)
        response.status.error_code = code.value[0]
        response.status.error_message = message
        context.set_code(code)
        context.set_details(message)
        return response


def _log_event(event: str) -> None:
    (log.warning if " failed to load " in event or "No versions of servable" in event else log.info)(event)


class LocalServer:
    """A running local server: its address, its registry, and `stop()`."""

    def __init__(
        self,
        server: grpc.Server,
        registry: ModelRegistry,
        host: str,
        port: int,
        poll_seconds: float,
        config_file: Optional[str] = None,
        config_poll_seconds: float = 0.0,
    ):
        self._server = server
        self.registry = registry
        self.host = host
        self.port = port
        self.address = f"{host}:{port}"
        self._stop = threading.Event()
        self._threads = []
        if poll_seconds and poll_seconds > 0:
            self._start(self._poll_loop, poll_seconds, "model-poller")
        if config_file and config_poll_seconds and config_poll_seconds > 0:
            self._config_file = config_file
            self._config_text = _read_text(config_file)
            self._start(self._config_loop, config_poll_seconds, "config-poller")

    def _start(self, target, seconds: float, name: str) -> None:
        thread = threading.Thread(target=target, args=(seconds,), name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _poll_loop(self, poll_seconds: float) -> None:
        while not self._stop.wait(poll_seconds):
            try:
                for event in self.registry.poll():
                    _log_event(event)
            except Exception:  # a bad scan must not stop future polls
                log.exception("polling the model versions failed")

    def _config_loop(self, seconds: float) -> None:
        """Re-reads the config file when it changes (--model_config_file_poll_wait_seconds)."""
        while not self._stop.wait(seconds):
            text = _read_text(self._config_file)
            if text is None or text == self._config_text:
                continue
            self._config_text = text
            try:
                for event in self.registry.reload_config(read_config_file(self._config_file)):
                    _log_event(event)
                log.info("reloaded %s", self._config_file)
            except RequestError as exc:  # the previous config stays in force
                log.error("ReloadConfig from %s failed: %s: %s", self._config_file, exc.code.name, exc.message)

    def stop(self, grace: Optional[float] = 1.0) -> None:
        """Stops polling and the gRPC server, letting in-flight requests finish within `grace`."""
        self._stop.set()
        self._server.stop(grace).wait()
        for thread in self._threads:
            thread.join(timeout=10)

    def wait(self) -> None:
        """Blocks until the server stops."""
        self._server.wait_for_termination()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def _read_text(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return None


def serve(
    model_base: Optional[str] = None,
    port: int = 8500,
    host: str = "127.0.0.1",
    poll_seconds: float = 1.0,
    max_workers: int = 8,
    num_versions: int = 1,
    model_names: Optional[Sequence[str]] = None,
    run_warmup: bool = True,
    max_batch_rows: int = DEFAULT_MAX_BATCH_ROWS,
    model_config_file: Optional[str] = None,
    model_config: Optional[model_server_config_pb2.ModelServerConfig] = None,
    allow_version_labels_for_unavailable_models: bool = False,
    model_config_file_poll_wait_seconds: float = 0.0,
) -> LocalServer:
    """Loads the models' versions, then serves them over gRPC; returns a handle.

    Args:
      model_base: scan mode: serving base (`<base>/<model>/<version>/`), one model per directory.
      port: TCP port; 0 picks a free one (read it from the handle's `port`).
      host: address to bind (loopback by default).
      poll_seconds: how often to look for new versions (TF Serving's
        --file_system_poll_wait_seconds); 0 disables polling.
      max_workers: request threads (8 matches the benchmark's concurrency).
      num_versions: scan mode: newest versions kept loaded per model.
      model_names: scan mode: serve only these model directories.
      run_warmup: replay each version's warmup records before serving it.
      max_batch_rows: merge requests that arrive while a call to the same signature
        runs, up to this many rows (0: one call per request).
      model_config_file: a ModelServerConfig text proto (config mode, as --model_config_file).
      model_config: the same, already parsed.
      allow_version_labels_for_unavailable_models: as TF Serving's flag.
      model_config_file_poll_wait_seconds: re-read model_config_file this often (0: never).

    Raises:
      ConfigError: the config is invalid or its labels name unavailable versions.
    """
    if model_config_file is not None:
        model_config = read_config_file(model_config_file)
    registry = ModelRegistry(
        model_base if model_config is None else None,
        model_names,
        num_versions,
        run_warmup,
        max_batch_rows,
        config=model_config,
        allow_version_labels_for_unavailable_models=allow_version_labels_for_unavailable_models,
    )
    for event in registry.poll():
        _log_event(event)
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.so_reuseport", 0),
    ]
    server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc-worker"),
        options=options,
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(_PredictionService(registry), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(_ModelService(registry), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if not bound:
        raise OSError(f"could not bind {host}:{port}")
    server.start()
    return LocalServer(
        server, registry, host, bound, poll_seconds, model_config_file, model_config_file_poll_wait_seconds
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description="Development gRPC server compatible with TF Serving's Predict/metadata/status API."
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model_base", help="scan mode: serving base <base>/<model>/<version>/")
    source.add_argument(
        "--model_config_file", help="ModelServerConfig text proto: models, version policies and labels"
    )
    parser.add_argument("--port", type=int, default=8500)
    parser.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 for all interfaces)")
    parser.add_argument("--poll_seconds", type=float, default=1.0, help="0 disables polling")
    parser.add_argument("--models", default="", help="scan mode: comma-separated model names (default: all dirs)")
    parser.add_argument("--num_versions", type=int, default=1, help="scan mode: newest versions served per model")
    parser.add_argument("--allow_version_labels_for_unavailable_models", action="store_true")
    parser.add_argument(
        "--model_config_file_poll_wait_seconds", type=float, default=0.0,
        help="re-read --model_config_file this often when it changed (0: never)",
    )
    parser.add_argument("--max_workers", type=int, default=8)
    parser.add_argument("--no_warmup", action="store_true", help="skip warmup replay")
    parser.add_argument(
        "--max_batch_rows", type=int, default=DEFAULT_MAX_BATCH_ROWS,
        help="merge concurrent requests up to this many rows; 0 disables",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        handle = serve(
            args.model_base,
            port=args.port,
            host=args.host,
            poll_seconds=args.poll_seconds,
            max_workers=args.max_workers,
            num_versions=args.num_versions,
            model_names=[m for m in args.models.split(",") if m] or None,
            run_warmup=not args.no_warmup,
            max_batch_rows=args.max_batch_rows,
            model_config_file=args.model_config_file,
            allow_version_labels_for_unavailable_models=args.allow_version_labels_for_unavailable_models,
            model_config_file_poll_wait_seconds=args.model_config_file_poll_wait_seconds,
        )
    except RequestError as exc:
        print(f"error: {exc.code.name}: {exc.message}", file=sys.stderr)
        sys.exit(2)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    where = args.model_config_file or os.path.abspath(args.model_base)
    print(f"serving on {handle.address} (gRPC) from {where}", flush=True)
    registry = handle.registry
    policies = {p.name: p for p in registry.policies()}
    for name in registry.model_names_seen():
        versions = registry.loaded_versions(name)
        line = f"  {name}: versions {versions}" if versions else f"  {name}: no version loaded"
        if name in policies:
            line += f" (policy {policies[name].describe()})"
        try:
            failed = [v for v, s in registry.status(name) if s.error_code != error_codes_pb2.OK]
        except RequestError:
            failed = []
        if failed:
            line += f" (failed: {failed})"
        labels = registry.labels(name)
        if labels:
            line += " labels " + ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))
        print(line, flush=True)
    done = threading.Event()

    def _stop(signum, frame):
        done.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    while not done.wait(3600):
        pass
    handle.stop(grace=2.0)


if __name__ == "__main__":
    main()
