"""Serving pieces that need no server: tensor conversion, request padding, model config,
warmup records, and the deployment files."""
import pathlib

import numpy as np
import pytest
import yaml
from google.protobuf import text_format
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.config import model_server_config_pb2

from contract import features
from contract import protocol
from export import warmup
from serving import model_config

SERVING_DIR = pathlib.Path(__file__).resolve().parents[1] / "serving"


# --------------------------------------------------------------------------
# TensorProto <-> numpy
# --------------------------------------------------------------------------
@pytest.mark.parametrize("use_tensor_content", [True, False])
@pytest.mark.parametrize(
    "array",
    [
        np.array([[1.5, -2.25, 3.0], [0.0, 7.5, -1.0]], dtype=np.float32),
        np.array([3, -(2**40), 7], dtype=np.int64),
        np.array([[1, 2], [3, 4]], dtype=np.int32),
        np.array([0.1, 0.2], dtype=np.float64),
        np.array([True, False, True]),
    ],
)
def test_numeric_round_trip(array, use_tensor_content):
    proto = protocol.ndarray_to_tensor_proto(array, use_tensor_content=use_tensor_content)
    assert bool(proto.tensor_content) == use_tensor_content
    assert [d.size for d in proto.tensor_shape.dim] == list(array.shape)
    back = protocol.tensor_proto_to_ndarray(proto)
    assert back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)


def test_typed_value_fields_are_the_ones_tf_serving_uses():
    floats = protocol.ndarray_to_tensor_proto(np.array([1.0, 2.0], np.float32), use_tensor_content=False)
    ints = protocol.ndarray_to_tensor_proto(np.array([5, 6], np.int64), use_tensor_content=False)
    assert floats.dtype == types_pb2.DT_FLOAT and list(floats.float_val) == [1.0, 2.0]
    assert ints.dtype == types_pb2.DT_INT64 and list(ints.int64_val) == [5, 6]


def test_big_endian_input_is_written_little_endian():
    array = np.array([1.0, -3.5], dtype=">f4")
    proto = protocol.ndarray_to_tensor_proto(array)
    assert proto.tensor_content == np.array([1.0, -3.5], dtype="<f4").tobytes()
    np.testing.assert_array_equal(protocol.tensor_proto_to_ndarray(proto), [1.0, -3.5])


def test_strings_round_trip_with_shape_and_binary_bytes():
    values = np.array([[b"a\x00", "b\u00e9"], [b"", b"\xff\x00"]], dtype=object)
    proto = protocol.ndarray_to_tensor_proto(values)
    assert proto.dtype == types_pb2.DT_STRING
    assert list(proto.string_val) == [b"a\x00", "b\u00e9".encode(), b"", b"\xff\x00"]
    back = protocol.tensor_proto_to_ndarray(proto)
    assert back.shape == (2, 2) and back.dtype == object
    assert back[1, 1] == b"\xff\x00" and back[0, 1] == "b\u00e9".encode()
    assert protocol.tensor_proto_to_value(protocol.string_tensor_proto([b"x", b"y"])) == [b"x", b"y"]


def test_short_value_list_repeats_the_last_value_like_tensorflow():
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
    proto.tensor_shape.dim.add().size = 4
    proto.float_val.extend([1.0, 2.0])
    np.testing.assert_array_equal(protocol.tensor_proto_to_ndarray(proto), [1.0, 2.0, 2.0, 2.0])
    empty = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING)
    empty.tensor_shape.dim.add().size = 2
    assert protocol.tensor_proto_to_ndarray(empty).tolist() == [b"", b""]


def test_malformed_protos_name_the_tensor():
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_content=b"\x00" * 6)
    proto.tensor_shape.dim.add().size = 2
    with pytest.raises(protocol.TensorConversionError, match=r"scores.*6 bytes.*needs 8"):
        protocol.tensor_proto_to_ndarray(proto, name="scores")
    too_many = tensor_pb2.TensorProto(dtype=types_pb2.DT_INT64, int64_val=[1, 2, 3])
    too_many.tensor_shape.dim.add().size = 2
    with pytest.raises(protocol.TensorConversionError, match="3 values but shape \\[2\\]"):
        protocol.tensor_proto_to_ndarray(too_many)


# --------------------------------------------------------------------------
# recommend request padding
# --------------------------------------------------------------------------
def test_history_arrays_pad_to_max_history_with_empty_bytes():
    items, behaviors = protocol.history_arrays([["1", "50", "260"], [b"7"]], [["liked", "liked", "neutral"], None])
    assert items.shape == behaviors.shape == (2, features.MAX_HISTORY)
    assert items[0, :3].tolist() == [b"1", b"50", b"260"] and items[1, 0] == b"7"
    assert set(items[0, 3:].tolist()) == {protocol.HISTORY_PAD}
    assert behaviors[0, :3].tolist() == [b"liked", b"liked", b"neutral"]
    assert set(behaviors[1].tolist()) == {protocol.HISTORY_PAD}


def test_history_width_is_a_multiple_of_max_history():
    long = [str(i) for i in range(features.MAX_HISTORY + 1)]
    items, _ = protocol.history_arrays([long])
    assert items.shape == (1, 2 * features.MAX_HISTORY)


def test_history_arrays_reject_misaligned_behaviors():
    with pytest.raises(ValueError, match="history row 1: 1 behaviors for 2 items"):
        protocol.history_arrays([["1"], ["2", "3"]], [["liked"], ["liked"]])
    with pytest.raises(ValueError, match="2 rows but history_item_ids has 1"):
        protocol.history_arrays([["1"]], [["liked"], ["liked"]])


def test_ranked_items_drop_padding_and_masked_scores():
    ids = np.array([[b"5", b"", b"9", b"3"]], dtype=object)
    scores = np.array([[2.0, 1.5, -np.inf, 1.0]], dtype=np.float32)
    assert protocol.ranked_items(ids, scores) == [[("5", 2.0), ("3", 1.0)]]
    assert protocol.ranked_items(ids, scores, k=1) == [[("5", 2.0)]]


# --------------------------------------------------------------------------
# Model server config
# --------------------------------------------------------------------------
def test_write_model_config_parses_as_model_server_config(tmp_path):
    path = model_config.write_model_config(str(tmp_path / "sub" / "models.config"), ["mf", "mf_dnn"], "/srv/base", 3)
    config = text_format.Parse(pathlib.Path(path).read_text(), model_server_config_pb2.ModelServerConfig())
    models = config.model_config_list.config
    assert [m.name for m in models] == ["mf", "mf_dnn"]
    assert [m.base_path for m in models] == ["/srv/base/mf", "/srv/base/mf_dnn"]
    assert all(m.model_platform == "tensorflow" for m in models)
    assert all(m.model_version_policy.latest.num_versions == 3 for m in models)
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["models.config"]  # no temp file left


def test_committed_models_config_is_the_generated_one():
    committed = model_config.read_model_config(str(SERVING_DIR / "config" / "models.config"))
    assert committed == model_config.build_model_config()
    assert [m.name for m in committed.model_config_list.config] == list(model_config.DEFAULT_MODELS)
    assert all(m.base_path == f"/models/{m.name}" for m in committed.model_config_list.config)


@pytest.mark.parametrize(
    "names, message",
    [([], "at least one model"), (["mf", "mf"], "duplicates"), (["../mf"], "plain directory name")],
)
def test_model_config_rejects_bad_names(names, message):
    with pytest.raises(ValueError, match=message):
        model_config.build_model_config(names)


def test_read_model_config_names_the_file(tmp_path):
    bad = tmp_path / "bad.config"
    bad.write_text("model_config_list { nonsense: 1 }")
    with pytest.raises(ValueError, match="bad.config"):
        model_config.read_model_config(str(bad))


# --------------------------------------------------------------------------
# Warmup records
# --------------------------------------------------------------------------
def test_warmup_file_parses_back_as_prediction_logs(tmp_path):
    examples = [b"example-a", b"example-b"]
    histories = [(["1", "50"], ["liked", "neutral"]), (["7"], None)]
    path = warmup.write_warmup_requests(str(tmp_path), "mf_dnn", examples, histories, batch_sizes=(1, 3))
    assert path == warmup.warmup_path(str(tmp_path))
    logs = list(warmup.read_warmup_requests(str(tmp_path)))
    assert len(logs) == 4
    requests = [log.predict_log.request for log in logs]
    assert all(r.model_spec.name == "mf_dnn" for r in requests)
    assert [r.model_spec.signature_name for r in requests] == [protocol.SERVING_DEFAULT] * 2 + [protocol.RECOMMEND] * 2
    assert protocol.tensor_proto_to_ndarray(requests[0].inputs[protocol.EXAMPLES]).tolist() == [b"example-a"]
    assert protocol.tensor_proto_to_ndarray(requests[1].inputs[protocol.EXAMPLES]).tolist() == [
        b"example-a", b"example-b", b"example-a"
    ]
    items = protocol.tensor_proto_to_ndarray(requests[3].inputs[features.HISTORY_ITEM_IDS])
    behaviors = protocol.tensor_proto_to_ndarray(requests[3].inputs[features.HISTORY_BEHAVIORS])
    assert items.shape == (3, features.MAX_HISTORY)
    assert items[:, :2].tolist() == [[b"1", b"50"], [b"7", b""], [b"1", b"50"]]
    assert behaviors[:, :2].tolist() == [[b"liked", b"neutral"], [b"", b""], [b"liked", b"neutral"]]
    assert sorted(p.name for p in (tmp_path / warmup.WARMUP_DIR).iterdir()) == [warmup.WARMUP_FILE]


def test_warmup_needs_examples_and_an_existing_dir(tmp_path):
    with pytest.raises(ValueError, match="needs serialized examples or histories"):
        warmup.write_warmup_requests(str(tmp_path), "mf", [])
    with pytest.raises(FileNotFoundError, match="missing"):
        warmup.write_warmup_requests(str(tmp_path / "missing"), "mf", [b"x"])


# --------------------------------------------------------------------------
# Deployment files
# --------------------------------------------------------------------------
def _flag(args, name):
    values = [a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")]
    assert len(values) == 1, f"--{name} expected once in {args}"
    return values[0]


def test_docker_compose_runs_tf_serving_with_the_config_files():
    compose = yaml.safe_load((SERVING_DIR / "docker-compose.yml").read_text())
    service = compose["services"]["tf-serving"]
    assert service["image"].startswith("tensorflow/serving")
    args = service["command"]
    assert _flag(args, "port") == "8500" and _flag(args, "rest_api_port") == "8501"
    assert _flag(args, "enable_batching") == "true"
    assert _flag(args, "enable_model_warmup").endswith("true}")  # default on
    mounts = {v.rsplit(":", 2)[1]: v.rsplit(":", 2)[0] for v in service["volumes"]}
    assert "/models" in mounts
    config_dir = SERVING_DIR / mounts["/config"]
    for flag in ("model_config_file", "batching_parameters_file"):
        path = _flag(args, flag)
        assert path.startswith("/config/") and (config_dir / path[len("/config/"):]).is_file()
    assert any(p.endswith(":8500") for p in service["ports"]) and any(p.endswith(":8501") for p in service["ports"])


def test_k8s_manifests_probe_declared_ports_and_mount_models():
    docs = []
    for path in sorted((SERVING_DIR / "k8s").glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service"} <= kinds
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert port_names == {"grpc": 8500, "http": 8501}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        spec = container[probe]
        port = (spec.get("httpGet") or spec.get("tcpSocket"))["port"]
        assert port in port_names, f"{probe} uses undeclared port {port}"
    assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/models", "/config"}
    assert _flag(container["args"], "model_config_file") == "/config/models.config"
    services = [d for d in docs if d["kind"] == "Service"]
    assert all(p["targetPort"] in port_names for s in services for p in s["spec"]["ports"])


def test_batching_parameters_keep_server_side_padding_off():
    text = (SERVING_DIR / "config" / "batching_parameters.txt").read_text()
    fields = {
        line.split()[0].rstrip(":")
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    }
    assert fields == {
        "max_batch_size", "batch_timeout_micros", "num_batch_threads", "max_enqueued_batches",
        "pad_variable_length_inputs",
    }
    assert "pad_variable_length_inputs: false" in text
