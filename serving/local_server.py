"""A development stand-in for `tensorflow_model_server` speaking its gRPC API.

Serves every model directory under a serving base (`<base>/<model>/<version>/`) through
`tensorflow.serving.PredictionService` (Predict, GetModelMetadata) and
`tensorflow.serving.ModelService` (GetModelStatus), with TF Serving's status codes.
New versions are found by polling, warmed up from `assets.extra`, and swapped in
without failing in-flight requests; a version that fails to load leaves the previous
one serving and is reported by GetModelStatus. Production runs the real server
(see serving/README.md).

    python -m serving.local_server --model_base DIR --port 8500 [--poll_seconds 1]
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
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.protobuf import error_codes_pb2, saved_model_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from contract import protocol
from export import warmup

log = logging.getLogger("serving.local_server")

State = get_model_status_pb2.ModelVersionStatus.State
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
SERVE_TAG = "serve"
SIGNATURE_DEF = "signature_def"
DEFAULT_MAX_BATCH_ROWS = 512  # as serving/config/batching_parameters.txt


class RequestError(Exception):
    """A request the server rejects: a gRPC status code and a message naming the problem."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


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
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    pb = os.path.join(path, "saved_model.pb")
    saved = saved_model_pb2.SavedModel()
    if os.path.exists(pb):
        with open(pb, "rb") as f:
            saved.ParseFromString(f.read())
    else:
        with open(os.path.join(path, "saved_model.pbtxt")) as f:
            text_format.Parse(f.read(), saved)
    for meta_graph in saved.meta_graphs:
        if SERVE_TAG in meta_graph.meta_info_def.tags:
            for key, sig in meta_graph.signature_def.items():
                sig_map.signature_def[key].CopyFrom(sig)
            break
    return sig_map


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
    module = tf.saved_model.load(path, tags=[SERVE_TAG])
    signatures = {key: Signature.from_function(fn, max_batch_rows) for key, fn in module.signatures.items()}
    servable = Servable(name, version, path, module, signatures, _read_signature_defs(path))
    if run_warmup:
        count = 0
        for i, record in enumerate(warmup.read_warmup_requests(path)):
            if not record.HasField("predict_log"):
                raise ValueError(f"warmup record {i} of {name}/{version} is not a PredictLog")
            try:
                predict(servable, record.predict_log.request)
            except RequestError as exc:
                raise ValueError(
                    f"warmup request {i} of {name}/{version} failed: {exc.code.name}: {exc.message}"
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
    problems = []
    if missing:
        problems.append(f"missing input(s) {missing}")
    if unknown:
        problems.append(f"unknown input(s) {unknown}")
    return RequestError(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"model '{servable.name}' signature '{sig_name}': {'; '.join(problems)}; "
        f"expected inputs {sorted(expected)}",
    )


def predict(servable: Servable, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
    """Runs one PredictRequest against a loaded version; raises RequestError with TF Serving's codes.

    Args:
      servable: the loaded version.
      request: the request (its model_spec.name/version are not checked here).
    """
    sig_name = request.model_spec.signature_name or protocol.SERVING_DEFAULT
    signature = servable.signatures.get(sig_name)
    if signature is None:
        raise RequestError(
            grpc.StatusCode.NOT_FOUND,
            f"model '{servable.name}' version {servable.version} has no signature '{sig_name}'; "
            f"signatures: {sorted(servable.signatures)}",
        )
    expected = signature.inputs
    got = request.inputs
    if len(got) != len(expected) or not all(key in got for key in expected):
        raise _input_names_error(servable, sig_name, expected, list(got.keys()))
    output_names = signature.outputs
    if request.output_filter:
        output_names = tuple(request.output_filter)
        bad = sorted(set(output_names) - set(signature.outputs))
        if bad:
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"model '{servable.name}' signature '{sig_name}': output_filter names unknown output(s) "
                f"{bad}; outputs are {sorted(signature.outputs)}",
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


def _version_dirs(model_dir: str) -> Dict[int, Tuple[str, int]]:
    """Complete version directories: version -> (path, marker mtime)."""
    out = {}
    try:
        entries = list(os.scandir(model_dir))
    except FileNotFoundError:
        return out
    for entry in entries:
        if not entry.name.isdigit() or not entry.is_dir():
            continue
        for marker in ("saved_model.pb", "saved_model.pbtxt"):
            marker_path = os.path.join(entry.path, marker)
            try:
                out[int(entry.name)] = (entry.path, os.stat(marker_path).st_mtime_ns)
                break
            except FileNotFoundError:
                continue
    return out


class ModelRegistry:
    """The loaded versions of every model under a serving base, refreshed by `poll()`.

    Args:
      model_base: directory holding one sub-directory per model.
      model_names: serve only these (default: every sub-directory not starting with '.').
      num_versions: newest versions kept loaded per model.
      run_warmup: replay warmup records before a version takes traffic.
      max_batch_rows: merge concurrent requests per signature up to this many rows (0: never).
    """

    def __init__(
        self,
        model_base: str,
        model_names: Optional[Sequence[str]] = None,
        num_versions: int = 1,
        run_warmup: bool = True,
        max_batch_rows: int = DEFAULT_MAX_BATCH_ROWS,
    ):
        if not os.path.isdir(model_base):
            raise FileNotFoundError(f"model base {model_base} is not a directory")
        if num_versions < 1:
            raise ValueError(f"num_versions must be >= 1, got {num_versions}")
        self.model_base = model_base
        self.model_names = list(model_names) if model_names else None
        self.num_versions = num_versions
        self.run_warmup = run_warmup
        self.max_batch_rows = max_batch_rows
        self._servables: Dict[str, Dict[int, Servable]] = {}  # replaced, never mutated
        self._status: Dict[str, Dict[int, VersionStatus]] = {}
        self._failed: Dict[Tuple[str, int], int] = {}  # (model, version) -> marker mtime
        self._lock = threading.Lock()
        self._poll_lock = threading.Lock()

    # -- lookups used by request handlers (lock-free reads of immutable dicts) --
    def model_names_seen(self) -> List[str]:
        return sorted(set(self._servables) | set(self._status))

    def loaded_versions(self, name: str) -> List[int]:
        return sorted(self._servables.get(name, {}))

    def get(self, name: str, version: Optional[int] = None) -> Servable:
        """The servable for a request; raises RequestError(NOT_FOUND) naming the model/version."""
        versions = self._servables.get(name)
        if not versions:
            if name in self._status:
                raise RequestError(
                    grpc.StatusCode.NOT_FOUND, f"model '{name}' has no version available; see GetModelStatus"
                )
            raise RequestError(
                grpc.StatusCode.NOT_FOUND,
                f"model '{name}' not found; served models: {self.model_names_seen()}",
            )
        if version is None:
            return versions[max(versions)]
        servable = versions.get(version)
        if servable is None:
            raise RequestError(
                grpc.StatusCode.NOT_FOUND,
                f"model '{name}' version {version} is not available; available versions: {sorted(versions)}",
            )
        return servable

    def status(self, name: str, version: Optional[int] = None) -> List[Tuple[int, VersionStatus]]:
        """(version, status) pairs of a model; raises RequestError(NOT_FOUND) when unknown."""
        with self._lock:
            statuses = dict(self._status.get(name, {}))
        if name not in self._status:
            raise RequestError(
                grpc.StatusCode.NOT_FOUND,
                f"model '{name}' not found; served models: {self.model_names_seen()}",
            )
        if version is not None:
            if version not in statuses:
                raise RequestError(
                    grpc.StatusCode.NOT_FOUND,
                    f"model '{name}' version {version} not found; known versions: {sorted(statuses)}",
                )
            return [(version, statuses[version])]
        return sorted(statuses.items())

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
        """Loads new versions and retires old ones; returns one line per change."""
        with self._poll_lock:
            events = []
            for name in self._model_dirs():
                events.extend(self._sync_model(name))
            return events

    def _sync_model(self, name: str) -> List[str]:
        events = []
        with self._lock:
            self._status.setdefault(name, {})
        present = _version_dirs(os.path.join(self.model_base, name))
        current = self._servables.get(name, {})
        wanted: Dict[int, Servable] = {}
        for version in sorted(present, reverse=True):
            if len(wanted) >= self.num_versions:
                break
            path, mtime = present[version]
            if version in current:
                wanted[version] = current[version]
                continue
            if self._failed.get((name, version)) == mtime:
                continue
            self._set_status(name, version, VersionStatus(State.LOADING))
            try:
                servable = load_servable(name, version, path, self.run_warmup, self.max_batch_rows)
            except Exception as exc:  # any load/warmup failure keeps the old version serving
                message = f"{type(exc).__name__}: {exc}".strip()
                if len(message) > 2000:
                    message = message[:2000] + "..."
                self._failed[(name, version)] = mtime
                self._set_status(
                    name, version, VersionStatus(State.END, error_codes_pb2.UNKNOWN, f"failed to load {path}: {message}")
                )
                events.append(f"{name}: version {version} failed to load ({message.splitlines()[0]})")
                continue
            self._failed.pop((name, version), None)
            wanted[version] = servable
            self._set_status(name, version, VersionStatus(State.AVAILABLE))
            events.append(f"{name}: version {version} available")
        if not wanted:
            return events  # nothing loadable on disk: keep what is served
        if wanted.keys() != current.keys() or any(wanted[v] is not current[v] for v in wanted):
            self._servables = {**self._servables, name: wanted}  # one reference swap
            for version in current:
                if version not in wanted:
                    self._set_status(name, version, VersionStatus(State.END))
                    events.append(f"{name}: version {version} retired")
        # Forget versions deleted from disk (TF Serving stops reporting them too).
        for key in [k for k in self._failed if k[0] == name and k[1] not in present]:
            del self._failed[key]
        with self._lock:
            statuses = self._status[name]
            for version in [v for v in statuses if v not in present and v not in wanted]:
                del statuses[version]
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


class _PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, registry: ModelRegistry):
        self.registry = registry

    def Predict(self, request, context):
        return _respond(context, self._predict, request)

    def _predict(self, request):
        spec = request.model_spec
        if spec.version_label:
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"model '{spec.name}': version labels are not supported here; use model_spec.version",
            )
        servable = self.registry.get(spec.name, spec.version.value if spec.HasField("version") else None)
        return predict(servable, request)

    def GetModelMetadata(self, request, context):
        return _respond(context, self._metadata, request)

    def _metadata(self, request):
        spec = request.model_spec
        fields = list(request.metadata_field)
        if not fields:
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT, "GetModelMetadataRequest must name a metadata_field"
            )
        unsupported = [f for f in fields if f != SIGNATURE_DEF]
        if unsupported:
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"metadata_field {unsupported} not supported; supported: ['{SIGNATURE_DEF}']",
            )
        servable = self.registry.get(spec.name, spec.version.value if spec.HasField("version") else None)
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
        spec = request.model_spec
        version = spec.version.value if spec.HasField("version") else None
        response = get_model_status_pb2.GetModelStatusResponse()
        for number, status in self.registry.status(spec.name, version):
            entry = response.model_version_status.add()
            entry.version = number
            entry.state = status.state
            entry.status.error_code = status.error_code
            entry.status.error_message = status.error_message
        return response

    def HandleReloadConfigRequest(self, request, context):
        context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            "HandleReloadConfigRequest is not implemented by the local server; it polls the model base",
        )


def _log_event(event: str) -> None:
    (log.warning if " failed to load " in event else log.info)(event)


class LocalServer:
    """A running local server: its address, its registry, and `stop()`."""

    def __init__(self, server: grpc.Server, registry: ModelRegistry, host: str, port: int, poll_seconds: float):
        self._server = server
        self.registry = registry
        self.host = host
        self.port = port
        self.address = f"{host}:{port}"
        self._stop = threading.Event()
        self._poller = None
        if poll_seconds and poll_seconds > 0:
            self._poller = threading.Thread(
                target=self._poll_loop, args=(poll_seconds,), name="model-poller", daemon=True
            )
            self._poller.start()

    def _poll_loop(self, poll_seconds: float) -> None:
        while not self._stop.wait(poll_seconds):
            try:
                for event in self.registry.poll():
                    _log_event(event)
            except Exception:  # a bad scan must not stop future polls
                log.exception("polling %s failed", self.registry.model_base)

    def stop(self, grace: Optional[float] = 1.0) -> None:
        """Stops polling and the gRPC server, letting in-flight requests finish within `grace`."""
        self._stop.set()
        self._server.stop(grace).wait()
        if self._poller is not None:
            self._poller.join(timeout=10)

    def wait(self) -> None:
        """Blocks until the server stops."""
        self._server.wait_for_termination()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def serve(
    model_base: str,
    port: int = 8500,
    host: str = "127.0.0.1",
    poll_seconds: float = 1.0,
    max_workers: int = 8,
    num_versions: int = 1,
    model_names: Optional[Sequence[str]] = None,
    run_warmup: bool = True,
    max_batch_rows: int = DEFAULT_MAX_BATCH_ROWS,
) -> LocalServer:
    """Loads the newest version of each model, then serves them over gRPC; returns a handle.

    Args:
      model_base: serving base (`<base>/<model>/<version>/`).
      port: TCP port; 0 picks a free one (read it from the handle's `port`).
      host: address to bind (loopback by default).
      poll_seconds: how often to look for new versions; 0 disables polling.
      max_workers: request threads (8 matches the benchmark's concurrency).
      num_versions: newest versions kept loaded per model.
      model_names: serve only these model directories.
      run_warmup: replay each version's warmup records before serving it.
      max_batch_rows: merge requests that arrive while a call to the same signature
        runs, up to this many rows (0: one call per request).
    """
    registry = ModelRegistry(model_base, model_names, num_versions, run_warmup, max_batch_rows)
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
    return LocalServer(server, registry, host, bound, poll_seconds)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description="Development gRPC server compatible with TF Serving's Predict/metadata/status API."
    )
    parser.add_argument("--model_base", required=True, help="serving base: <base>/<model>/<version>/")
    parser.add_argument("--port", type=int, default=8500)
    parser.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 for all interfaces)")
    parser.add_argument("--poll_seconds", type=float, default=1.0, help="0 disables polling")
    parser.add_argument("--models", default="", help="comma-separated model names (default: all dirs)")
    parser.add_argument("--num_versions", type=int, default=1)
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
        )
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(f"serving on {handle.address} (gRPC) from {os.path.abspath(args.model_base)}", flush=True)
    for name in handle.registry.model_names_seen():
        versions = handle.registry.loaded_versions(name)
        failed = [
            v for v, s in handle.registry.status(name) if s.error_code != error_codes_pb2.OK
        ]
        line = f"  {name}: versions {versions}" if versions else f"  {name}: no version loaded"
        if failed:
            line += f" (failed: {failed})"
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
