"""gRPC client for TF Serving (or the local server): predictions, recommendations, metadata, status.

Every call has one deadline that covers all its attempts; UNAVAILABLE (server down or
starting) is retried with exponential backoff while the deadline allows; any other
failure raises `ServingError` with the gRPC code and the server's message.

    python -m serving.client recommend --target localhost:8500 --model mf --items 1,50,260 \
        [--behaviors B1,B2,B3] [--exclude 32,593] --k 10 [--dataset NAME_OR_FILE]
    python -m serving.client explain --target localhost:8500 --model review_mt --user U --item I \
        [--items 1,50] [--text user_review_docs="an earlier review"]...
    python -m serving.client status --target localhost:8500 --model mf
    python -m serving.client metadata --target localhost:8500 --model mf
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import glob
import json
import os
import sys
import time
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import grpc
import numpy as np
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from contract import features
from contract import protocol

MAX_MESSAGE_BYTES = 256 * 1024 * 1024
STATE_NAMES = {v: k for k, v in get_model_status_pb2.ModelVersionStatus.State.items()}


class ServingError(Exception):
    """A failed serving call: the gRPC status code and the server's message.

    Attributes:
      code: `grpc.StatusCode`.
      message: the server's (or channel's) error details.
      method: the RPC that failed.
    """

    def __init__(self, code: grpc.StatusCode, message: str, method: str = ""):
        super().__init__(f"{method + ': ' if method else ''}{code.name}: {message}")
        self.code = code
        self.message = message
        self.method = method


@dataclasses.dataclass(frozen=True)
class Prediction:
    """Outputs of one Predict call and the model version that served it."""

    model: str
    version: int
    signature: str
    outputs: Dict[str, np.ndarray]


class ServingClient:
    """Client of TF Serving's PredictionService and ModelService over one gRPC channel.

    Args:
      target: `host:port` of the server.
      timeout_s: deadline of a whole call: every attempt and every backoff sleep fit in it;
        when it passes the call raises DEADLINE_EXCEEDED.
      retries: extra attempts after UNAVAILABLE (0 = none), while the deadline allows.
      backoff_s: sleep before the first retry; doubles per retry up to `max_backoff_s`.
      max_backoff_s: cap of one backoff sleep.
      on_retry: optional callback(method, attempt, ServingError) before each retry sleep.
    """

    _clock = staticmethod(time.monotonic)  # replaced by tests
    _sleep = staticmethod(time.sleep)

    def __init__(
        self,
        target: str,
        timeout_s: float = 10.0,
        retries: int = 3,
        backoff_s: float = 0.1,
        max_backoff_s: float = 5.0,
        on_retry: Optional[Callable[[str, int, "ServingError"], None]] = None,
    ):
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.target = target
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.on_retry = on_retry
        self._channel = grpc.insecure_channel(
            target,
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        self._prediction = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

    # -- plumbing --
    def _call(self, method: str, rpc, request):
        """One call: attempts with the remaining time as their deadline, backoff sleeps cut short
        by it, DEADLINE_EXCEEDED naming the last error once it is spent."""
        deadline = self._clock() + self.timeout_s
        attempt = 0
        while True:
            remaining = deadline - self._clock()
            try:
                return rpc(request, timeout=max(remaining, 0.0))
            except grpc.RpcError as exc:
                code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
                details = (exc.details() if hasattr(exc, "details") else str(exc)) or ""
                if code != grpc.StatusCode.UNAVAILABLE or attempt >= self.retries:
                    if code == grpc.StatusCode.UNAVAILABLE and attempt:
                        details = f"{details} (after {attempt + 1} attempts to {self.target})"
                    raise ServingError(code, details, method) from None
                sleep = min(self.backoff_s * (2**attempt), self.max_backoff_s)
                if self._clock() + sleep >= deadline:
                    raise ServingError(
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                        f"deadline of {self.timeout_s:g} s spent after {attempt + 1} attempt(s) to "
                        f"{self.target}; last error: {code.name}: {details}",
                        method,
                    ) from None
                if self.on_retry is not None:
                    self.on_retry(method, attempt + 1, ServingError(code, details, method))
                self._sleep(sleep)
                attempt += 1

    @staticmethod
    def _model_spec(
        spec, model: str, version: Optional[int], signature: Optional[str] = None, label: Optional[str] = None
    ) -> None:
        spec.name = model
        if version is not None and label is not None:
            raise ValueError(f"model '{model}': give a version ({version}) or a version label ({label!r}), not both")
        if version is not None:
            spec.version.value = int(version)
        if label is not None:
            spec.version_label = label
        if signature:
            spec.signature_name = signature

    # -- PredictionService --
    def predict(
        self,
        model: str,
        inputs: Mapping[str, object],
        signature: str = protocol.SERVING_DEFAULT,
        version: Optional[int] = None,
        output_filter: Sequence[str] = (),
        version_label: Optional[str] = None,
    ) -> Prediction:
        """One Predict call; returns the outputs as numpy arrays and the version that served them.

        Args:
          model: model name.
          inputs: input name -> numpy array, list, or TensorProto.
          signature: signature name.
          version: pin a version (default: the newest the server has).
          output_filter: return only these outputs.
          version_label: ask for a version by its label in the server's model config
            (e.g. `stable`); not together with `version`.
        """
        request = predict_pb2.PredictRequest()
        self._model_spec(request.model_spec, model, version, signature, version_label)
        for key, value in inputs.items():
            if isinstance(value, tensor_pb2.TensorProto):
                request.inputs[key].CopyFrom(value)
            else:
                protocol.fill_tensor_proto(request.inputs[key], value)
        request.output_filter.extend(output_filter)
        return self._predict_call(request, model, signature)

    def _predict_call(self, request: predict_pb2.PredictRequest, model: str, signature: str) -> Prediction:
        response = self._call("Predict", self._prediction.Predict, request)
        outputs = {
            key: protocol.tensor_proto_to_ndarray(proto, name=f"output '{key}'")
            for key, proto in response.outputs.items()
        }
        return Prediction(
            model=response.model_spec.name or model,
            version=int(response.model_spec.version.value),
            signature=response.model_spec.signature_name or signature,
            outputs=outputs,
        )

    def predict_tensors(
        self,
        model: str,
        inputs: Mapping[str, object],
        signature: str = protocol.SERVING_DEFAULT,
        version: Optional[int] = None,
        output_filter: Sequence[str] = (),
        version_label: Optional[str] = None,
    ) -> Dict[str, np.ndarray]:
        """Predict with raw input tensors; returns output name -> numpy array.

        Args: as `predict`.
        """
        return self.predict(model, inputs, signature, version, output_filter, version_label).outputs

    def predict_examples(
        self,
        model: str,
        serialized_examples: Sequence[bytes],
        signature: str = protocol.SERVING_DEFAULT,
        version: Optional[int] = None,
        output_filter: Sequence[str] = (),
        version_label: Optional[str] = None,
    ) -> Dict[str, np.ndarray]:
        """Predict on serialized tf.Examples (raw features); returns output name -> [N] array.

        Args:
          model: model name.
          serialized_examples: serialized `tf.Example`s.
          signature: signature taking `examples`.
          version: pin a version.
          output_filter: return only these outputs.
          version_label: ask for a labelled version instead.
        """
        request = predict_pb2.PredictRequest()
        self._model_spec(request.model_spec, model, version, signature, version_label)
        proto = request.inputs[protocol.EXAMPLES]
        proto.dtype = types_pb2.DT_STRING
        values = list(serialized_examples)
        proto.tensor_shape.dim.add().size = len(values)
        try:
            proto.string_val.extend(values)
        except TypeError:
            raise TypeError("serialized_examples must be bytes (tf.Example.SerializeToString())") from None
        request.output_filter.extend(output_filter)
        return self._predict_call(request, model, signature).outputs

    def recommend(
        self,
        model: str,
        history_item_ids: Sequence[Sequence[Union[str, bytes, int]]],
        history_behaviors: Optional[Sequence[Optional[Sequence[Union[str, bytes]]]]] = None,
        k: Optional[int] = None,
        version: Optional[int] = None,
        version_label: Optional[str] = None,
        exclude_item_ids: Optional[Sequence[Optional[Sequence[Union[str, bytes, int]]]]] = None,
    ) -> List[List[Tuple[str, float]]]:
        """Top items for each history through the `recommend` signature, or with
        `exclude_item_ids` through `recommend_excluding`.

        The history is the query (the model reads its most recent MAX_HISTORY items) and
        is never recommended; `exclude_item_ids` adds items never to return without making
        them part of the query, e.g. everything the user rated when the history sent is
        only the most recent items. Histories and exclusions are padded with b"" to a
        multiple of MAX_HISTORY so TF Serving's batcher can merge requests. Returns one
        [(item_id, score), ...] list per history, best first.

        Args:
          model: model name.
          history_item_ids: per request row, the user's item ids, oldest first.
          history_behaviors: aligned behaviors per row (None sends b"").
          k: keep at most k items per row (the model returns its export-time K).
          version: pin a version.
          version_label: ask for a labelled version instead.
          exclude_item_ids: per request row, item ids never to return (None: no exclusions
            beyond the history; a None row excludes nothing more).
        """
        if not history_item_ids:
            return []
        items, behaviors = protocol.history_arrays(history_item_ids, history_behaviors)
        inputs = {features.HISTORY_ITEM_IDS: items, features.HISTORY_BEHAVIORS: behaviors}
        signature = protocol.RECOMMEND
        if exclude_item_ids is not None:
            inputs[protocol.EXCLUDE_ITEM_IDS] = protocol.exclusion_array(exclude_item_ids, len(history_item_ids))
            signature = protocol.RECOMMEND_EXCLUDING
        try:
            outputs = self.predict(model, inputs, signature, version, version_label=version_label).outputs
        except ServingError as exc:
            if signature != protocol.RECOMMEND_EXCLUDING or exc.code != grpc.StatusCode.FAILED_PRECONDITION:
                raise
            raise ServingError(exc.code, f"{exc.message}; this version of '{model}' has no "
                               f"'{protocol.RECOMMEND_EXCLUDING}' (exported before it existed): re-export it, or "
                               "send the whole history without exclude_item_ids", exc.method) from None
        for key in (protocol.RECOMMEND_ITEM_IDS, protocol.RECOMMEND_SCORES):
            if key not in outputs:
                raise ServingError(
                    grpc.StatusCode.INTERNAL,
                    f"model '{model}' signature '{signature}' returned {sorted(outputs)}, "
                    f"without '{key}'",
                    "Predict",
                )
        return protocol.ranked_items(outputs[protocol.RECOMMEND_ITEM_IDS], outputs[protocol.RECOMMEND_SCORES], k)

    def score_histories(
        self,
        model: str,
        history_item_ids: Sequence[Sequence[Union[str, bytes, int]]],
        history_behaviors: Optional[Sequence[Optional[Sequence[Union[str, bytes]]]]] = None,
        version: Optional[int] = None,
        output_filter: Sequence[str] = (),
        version_label: Optional[str] = None,
    ) -> Dict[str, np.ndarray]:
        """Each task's score of each history, from a model that scores user histories
        (`peterrec`: the probability that the next interaction is a like); output name ->
        [N] array. `output_filter` asks for some tasks only."""
        examples = protocol.history_examples(history_item_ids, history_behaviors)
        return self.predict_examples(model, examples, version=version, output_filter=output_filter,
                                     version_label=version_label)

    def explain(
        self,
        model: str,
        serialized_examples: Sequence[bytes],
        version: Optional[int] = None,
        version_label: Optional[str] = None,
    ) -> List[dict]:
        """The generated explanation and each task's output (e.g. the rating) per raw interaction
        example (`protocol.interaction_example`: the inputs `serving_default` takes, documents
        included) through the `explain` signature: [{"explanation": text, <task>: value}].

        Args:
          model: model name.
          serialized_examples: serialized raw `tf.Example`s.
          version: pin a version.
          version_label: ask for a labelled version instead.
        """
        outputs = self.predict_examples(model, serialized_examples, signature=protocol.EXPLAIN, version=version,
                                        version_label=version_label)
        if protocol.EXPLANATION not in outputs:
            raise ServingError(grpc.StatusCode.INTERNAL, f"model '{model}' signature '{protocol.EXPLAIN}' returned "
                                                         f"{sorted(outputs)}, without '{protocol.EXPLANATION}'",
                               "Predict")
        return protocol.explanations(outputs)

    def model_metadata(self, model: str, version: Optional[int] = None, version_label: Optional[str] = None) -> dict:
        """Signatures of the served version: {"model", "version", "signatures": {name: {...}}}.

        Each signature maps to {"method_name", "inputs", "outputs"}, the tensors as
        {alias: {"dtype": "string", "shape": [-1]}} (-1 = unknown dimension).

        Args:
          model: model name.
          version: pin a version.
          version_label: ask for a labelled version instead.
        """
        request = get_model_metadata_pb2.GetModelMetadataRequest()
        self._model_spec(request.model_spec, model, version, label=version_label)
        request.metadata_field.append("signature_def")
        response = self._call("GetModelMetadata", self._prediction.GetModelMetadata, request)
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(sig_map)

        def tensors(infos):
            return {
                alias: {
                    "dtype": protocol.dtype_name(info.dtype),
                    "shape": None
                    if info.tensor_shape.unknown_rank
                    else [d.size for d in info.tensor_shape.dim],
                }
                for alias, info in sorted(infos.items())
            }

        return {
            "model": response.model_spec.name,
            "version": int(response.model_spec.version.value),
            "signatures": {
                name: {
                    "method_name": sig.method_name,
                    "inputs": tensors(sig.inputs),
                    "outputs": tensors(sig.outputs),
                }
                for name, sig in sorted(sig_map.signature_def.items())
            },
        }

    def model_status(self, model: str, version: Optional[int] = None) -> List[dict]:
        """Version states: [{"version", "state" (e.g. AVAILABLE), "error_code", "error_message"}].

        Args:
          model: model name.
          version: only this version.
        """
        request = get_model_status_pb2.GetModelStatusRequest()
        self._model_spec(request.model_spec, model, version)
        response = self._call("GetModelStatus", self._models.GetModelStatus, request)
        return [
            {
                "version": int(s.version),
                "state": STATE_NAMES.get(s.state, str(s.state)),
                "error_code": grpc.StatusCode.OK.name
                if s.status.error_code == 0
                else _code_name(s.status.error_code),
                "error_message": s.status.error_message,
            }
            for s in response.model_version_status
        ]

    def reload_config(self, config) -> None:
        """Replaces the server's models, version policies and labels (HandleReloadConfigRequest).

        Args:
          config: a `tensorflow_serving.config.model_server_config_pb2.ModelServerConfig`.
        """
        request = model_management_pb2.ReloadConfigRequest()
        request.config.CopyFrom(config)
        self._call("HandleReloadConfigRequest", self._models.HandleReloadConfigRequest, request)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _code_name(value: int) -> str:
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code.name
    return str(value)


def item_titles(dataset, column: str = "") -> Dict[str, str]:
    """Item id -> a display title from a dataset description's items table: the `column`,
    or by default the table's first column that is not its key. Empty when the description
    has no items table (e.g. item features read from the interactions) or no data
    directory, or its files are absent.

    Args:
      dataset: a shipped description's name, a description file or mapping, or a spec
        (contract.datasets.dataset_spec).
      column: the title column (default: see above).
    """
    from contract import datasets  # the description loader, needed only for titles

    d = datasets.dataset_spec(dataset).description
    if d.items is None or not d.data_dir:
        return {}
    files = sorted(f for pattern in d.items.files for f in glob.glob(os.path.join(d.data_dir, pattern)))
    titles: Dict[str, str] = {}
    for path in files:
        for row in _table_rows(path, d.items):
            if not column:
                others = [c for c in row if c != d.item_key]
                column = others[0] if others else ""
            if d.item_key in row and column in row:
                titles[str(row[d.item_key])] = str(row[column])
    return titles


def _table_rows(path: str, source) -> List[Dict[str, object]]:
    """The rows of one side-table file as column -> value mappings, in column order."""
    if source.format == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    with open(path, newline="", encoding=source.encoding) as f:
        if source.format == "jsonl":
            return [json.loads(line) for line in f if line.strip()]
        reader = csv.reader(f, delimiter=source.delimiter, quotechar=source.quotechar)
        header = next(reader, None) if source.header else list(source.columns)
        if header is None:
            return []
        return [dict(zip(header, values)) for values in reader]


def add_explain_arguments(parser: argparse.ArgumentParser) -> None:
    """The inputs of an `explain` request: user, item, history and texts by raw feature name."""
    parser.add_argument("--user", required=True, help="user id")
    parser.add_argument("--item", required=True, help="item id")
    parser.add_argument("--items", default="", help="comma-separated history item ids, oldest first")
    parser.add_argument("--behaviors", default=None, help="comma-separated behaviors aligned with --items")
    parser.add_argument("--text", action="append", default=[], metavar="FEATURE=TEXT",
                        help="a text value of a raw feature, repeatable, oldest first (the documents, e.g. "
                             "user_review_docs=\"...\" and item_review_docs=\"...\")")


def explain_example(parser: argparse.ArgumentParser, args) -> bytes:
    """The serialized raw example of `add_explain_arguments`' values."""
    items = _split(args.items)
    behaviors = _split(args.behaviors) if args.behaviors is not None else None
    if behaviors is not None and len(behaviors) != len(items):
        parser.error(f"--behaviors has {len(behaviors)} values for {len(items)} --items")
    texts: Dict[str, List[str]] = {}
    for item in args.text:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            parser.error(f"--text {item!r}: expected FEATURE=TEXT, e.g. user_review_docs=\"great strings\"")
        texts.setdefault(name.strip(), []).append(value)
    return protocol.interaction_example(args.user, args.item, items, behaviors, texts)


def print_explanation(model: str, row: dict) -> None:
    scores = ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k != protocol.EXPLANATION)
    print(f"{model}: {scores}")
    print(f"  explanation: {row[protocol.EXPLANATION] or '(empty)'}")


def _split(text: Optional[str]) -> List[str]:
    return [t.strip() for t in text.split(",") if t.strip()] if text else []


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Query a TF Serving-compatible gRPC server.")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--target", default="localhost:8500", help="host:port")
        p.add_argument("--model", required=True)
        p.add_argument("--version", type=int, default=None)
        p.add_argument("--label", default=None, help="a version label of the server's model config")
        p.add_argument("--timeout_s", type=float, default=10.0)
        p.add_argument("--retries", type=int, default=3)

    rec = sub.add_parser("recommend", help="top items for one history")
    common(rec)
    rec.add_argument("--items", required=True, help="comma-separated item ids, oldest first")
    rec.add_argument("--behaviors", default=None, help="comma-separated behaviors aligned with --items")
    rec.add_argument("--exclude", default=None,
                     help="comma-separated item ids never to return besides --items (e.g. everything the user "
                          "rated when --items holds only the most recent); uses recommend_excluding")
    rec.add_argument("--k", type=int, default=10)
    rec.add_argument("--dataset", default=None,
                     help="show item titles from this dataset's items table (a shipped description's name or "
                          "a description file; item_titles)")
    rec.add_argument("--title_column", default="", help="the items table's title column (default: its first "
                                                        "column that is not the key)")
    hist = sub.add_parser("score-history", help="each task's score of one history (a model scoring histories)")
    common(hist)
    hist.add_argument("--items", required=True, help="comma-separated item ids, oldest first")
    hist.add_argument("--behaviors", default=None, help="comma-separated behaviors aligned with --items")
    exp = sub.add_parser("explain", help="the generated explanation and the rating of one (user, item)")
    common(exp)
    add_explain_arguments(exp)
    common(sub.add_parser("status", help="version states of a model"))
    common(sub.add_parser("metadata", help="signatures of a model"))
    args = parser.parse_args(argv)

    client = ServingClient(args.target, timeout_s=args.timeout_s, retries=args.retries)
    try:
        if args.command in ("recommend", "score-history"):
            items = _split(args.items)
            behaviors = _split(args.behaviors) if args.behaviors is not None else None
            if not items:
                parser.error("--items is empty")
            if behaviors is not None and len(behaviors) != len(items):
                parser.error(f"--behaviors has {len(behaviors)} values for {len(items)} --items")
        if args.command == "score-history":
            outputs = client.score_histories(args.model, [items], [behaviors] if behaviors else None,
                                             version=args.version, version_label=args.label)
            for name, values in sorted(outputs.items()):
                print(f"{args.model} {name}: {float(np.asarray(values).reshape(-1)[0]):.4f}")
        elif args.command == "recommend":
            titles = item_titles(args.dataset, args.title_column) if args.dataset else {}
            exclude = [_split(args.exclude)] if args.exclude is not None else None
            ranked = client.recommend(
                args.model, [items], [behaviors] if behaviors else None, k=args.k, version=args.version,
                version_label=args.label, exclude_item_ids=exclude,
            )[0]
            print(f"{args.model}: top {len(ranked)} for history {', '.join(items)}"
                  + (f", excluding {len(exclude[0])} more item(s)" if exclude else ""))
            for rank, (item, score) in enumerate(ranked, 1):
                title = titles.get(item, "")
                print(f"{rank:3d}. {item:>10}  {score:9.4f}  {title}".rstrip())
        elif args.command == "explain":
            for row in client.explain(args.model, [explain_example(parser, args)], version=args.version,
                                      version_label=args.label):
                print_explanation(args.model, row)
        elif args.command == "status":
            for s in client.model_status(args.model, args.version):
                line = f"{args.model} version {s['version']}: {s['state']}"
                if s["error_code"] != "OK":
                    line += f" ({s['error_code']}: {s['error_message']})"
                print(line)
        else:
            meta = client.model_metadata(args.model, args.version, args.label)
            print(f"{meta['model']} version {meta['version']}")
            for name, sig in meta["signatures"].items():
                print(f"  {name} ({sig['method_name']})")
                for kind in ("inputs", "outputs"):
                    for alias, t in sig[kind].items():
                        shape = "?" if t["shape"] is None else protocol.shape_str(t["shape"])
                        print(f"    {kind[:-1]:6} {alias}: {t['dtype']} {shape}")
    except (ServingError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
