"""TF Serving conformance of the local server and the client.

One test per row of the README's conformance table; the row id (S1, V1, K1, ...) is in
the test name or parameter id. What TF Serving does is quoted from its sources in that
table; these tests pin what the local server does.
"""
import os
import shutil
import threading

import grpc
import numpy as np
import pytest
from google.protobuf import text_format
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2

from contract import datasets as D
from contract import features, protocol
from serving import local_server, stand_in
from serving.client import ServingClient, ServingError
from serving.local_server import ConfigError, ModelRegistry, RequestError

HEAD = "rating"  # the served output of the stand-ins (as a rating family's)
BEHAVIORS = D.dataset_spec("movielens").behaviors  # the stand-ins' behavior vocabulary

K = 5
ITEMS = [str(i) for i in range(1, 25)]
SCORES = {item: 1.0 + 0.1 * i for i, item in enumerate(ITEMS)}
EXAMPLE = stand_in.make_example("1")
HIST = protocol.history_arrays([["1"]])


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    """Exported stand-ins: a plain one and a strict one (its recommend asserts in the graph)."""
    root = tmp_path_factory.mktemp("conformance-templates")
    out = {}
    for name, strict in (("plain", False), ("strict", True)):
        out[name] = stand_in.export_stand_in_model(str(root / name), SCORES, head=HEAD, k=K, strict=strict, behaviors=BEHAVIORS)
    return out


def put(base, model, version, template):
    """Copies a template to <base>/<model>/<version> via a hidden staging name and a rename."""
    model_dir = os.path.join(base, model)
    os.makedirs(model_dir, exist_ok=True)
    staging = os.path.join(model_dir, f".staging-{version}")
    shutil.copytree(template, staging)
    os.rename(staging, os.path.join(model_dir, str(version)))
    return os.path.join(model_dir, str(version))


# TF logs this while failing to parse the garbage saved_model.pb of `broken` versions.
pytestmark = pytest.mark.filterwarnings("ignore:Unexpected end-group tag")


def broken(base, model, version):
    """A version directory whose saved_model.pb is not a SavedModel."""
    path = os.path.join(base, model, str(version))
    os.makedirs(path)
    with open(os.path.join(path, "saved_model.pb"), "wb") as f:
        f.write(b"this is not a protobuf")
    return path


def config_text(*models):
    """A ModelServerConfig from (name, base_path, policy text, {label: version}) tuples."""
    parts = []
    for name, base, policy, labels in models:
        label_text = "".join(f' version_labels {{ key: "{k}" value: {v} }}' for k, v in labels.items())
        parts.append(
            f'config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow" '
            f"{('model_version_policy { ' + policy + ' }') if policy else ''}{label_text} }}"
        )
    return "model_config_list { " + " ".join(parts) + " }"


def parse(text):
    return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())


def registry(text, **kwargs):
    reg = ModelRegistry(config=parse(text), run_warmup=False, **kwargs)
    reg.poll()
    return reg


def states(reg, model):
    return {v: (get_model_status_pb2.ModelVersionStatus.State.Name(s.state), s.error_code) for v, s in reg.status(model)}


def version_served(reg, model, version=None, label=None):
    return reg.get(model, version=version, label=label).version


# --------------------------------------------------------------------------
# S: status codes and messages over gRPC
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(templates, tmp_path_factory):
    base = str(tmp_path_factory.mktemp("conformance-base"))
    put(base, "mf", 1, templates["plain"])
    put(base, "strict", 1, templates["strict"])
    config = tmp_path_factory.mktemp("conformance-config") / "models.config"
    config.write_text(config_text(
        ("mf", f"{base}/mf", "", {}),
        ("strict", f"{base}/strict", "", {}),
    ))
    handle = local_server.serve(model_config_file=str(config), port=0, poll_seconds=0, run_warmup=False)
    yield handle
    handle.stop(grace=0)


@pytest.fixture(scope="module")
def client(server):
    with ServingClient(server.address, timeout_s=30.0, retries=0) as c:
        yield c


def _stub_call(server, method, request):
    with grpc.insecure_channel(server.address) as channel:
        if method == "GetModelStatus":
            stub = model_service_pb2_grpc.ModelServiceStub(channel)
        else:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        return getattr(stub, method)(request, timeout=30)


def _raw(method, request):
    """A call made with a hand-built request (what ServingClient never sends)."""
    return lambda c, server: _stub_call(server, method, request)


def _recommend(model, items, behaviors):
    arrays = protocol.history_arrays(items, behaviors)
    return lambda c, server: c.predict_tensors(
        model, {features.HISTORY_ITEM_IDS: arrays[0], features.HISTORY_BEHAVIORS: arrays[1]}, protocol.RECOMMEND
    )


ROWS = [
    ("S1-unknown-model", lambda c, s: c.predict_examples("nope", [EXAMPLE]),
     "NOT_FOUND", ["Servable not found for request: Latest(nope)"]),
    ("S2-unknown-version", lambda c, s: c.predict_examples("mf", [EXAMPLE], version=7),
     "NOT_FOUND", ["Servable not found for request: Specific(mf, 7)", "[1]"]),
    ("S3-unknown-signature", lambda c, s: c.predict_examples("mf", [EXAMPLE], signature="rank"),
     "FAILED_PRECONDITION", ['Serving signature key "rank" not found.', "recommend"]),
    ("S4-missing-input",
     lambda c, s: c.predict_tensors("mf", {features.HISTORY_ITEM_IDS: HIST[0]}, protocol.RECOMMEND),
     "INVALID_ARGUMENT", ["input size does not match signature: 1!=2", f"Missing but required: {{{features.HISTORY_BEHAVIORS}}}"]),
    ("S5-extra-input", lambda c, s: c.predict_tensors("mf", {protocol.EXAMPLES: [EXAMPLE], "extra": [1.0]}),
     "INVALID_ARGUMENT", ["input size does not match signature: 2!=1", "Sent extra: {extra}"]),
    ("S6-wrong-dtype", lambda c, s: c.predict_tensors("mf", {protocol.EXAMPLES: np.array([1.0, 2.0], np.float32)}),
     "INVALID_ARGUMENT", ["'examples'", "expected dtype string", "got float"]),
    ("S7-wrong-rank",
     lambda c, s: c.predict_tensors("mf", {protocol.EXAMPLES: np.array([[EXAMPLE]], dtype=object)}),
     "INVALID_ARGUMENT", ["'examples'", "expected shape [?]", "got [1, 1]"]),
    ("S8-unknown-output", lambda c, s: c.predict_examples("mf", [EXAMPLE], output_filter=["nope"]),
     "INVALID_ARGUMENT", ["output tensor alias not found in signature: nope", HEAD]),
    ("S9-duplicate-output",
     lambda c, s: c.predict_examples("mf", [EXAMPLE], output_filter=[HEAD, HEAD]),
     "INVALID_ARGUMENT", [f"duplicate output tensor alias: {HEAD}"]),
    ("S10-unparsable-example", lambda c, s: c.predict_examples("mf", [b"not a tf.Example"]),
     "INVALID_ARGUMENT", ["serving_default"]),
    ("S11-graph-assert-behavior", _recommend("strict", [["1", "2"]], [["liked", "hated"]]),
     "INVALID_ARGUMENT", ["history_behaviors holds a behavior outside"]),
    ("S12-graph-assert-unknown-ids", _recommend("strict", [["no-such-item"]], [["liked"]]),
     "INVALID_ARGUMENT", ["a history holds item ids but none the model knows"]),
    ("S13-missing-model-spec", _raw("Predict", predict_pb2.PredictRequest()),
     "INVALID_ARGUMENT", ["Missing ModelSpec"]),
    ("S14-empty-model-name",
     _raw("Predict", predict_pb2.PredictRequest(model_spec={"signature_name": protocol.SERVING_DEFAULT})),
     "INVALID_ARGUMENT", ["ModelSpec has no name specified."]),
    ("S15-unknown-label", lambda c, s: c.predict_examples("mf", [EXAMPLE], version_label="nope"),
     "INVALID_ARGUMENT", ["Unrecognized servable version label: nope"]),
    ("S16-metadata-no-field",
     _raw("GetModelMetadata", get_model_metadata_pb2.GetModelMetadataRequest(model_spec={"name": "mf"})),
     "INVALID_ARGUMENT", ["GetModelMetadataRequest must specify at least one metadata_field"]),
    ("S17-metadata-unsupported-field",
     _raw("GetModelMetadata", get_model_metadata_pb2.GetModelMetadataRequest(
         model_spec={"name": "mf"}, metadata_field=["signature_def", "nope"])),
     "INVALID_ARGUMENT", ["Metadata field nope is not supported"]),
    ("S18-metadata-unknown-model", lambda c, s: c.model_metadata("nope"),
     "NOT_FOUND", ["Servable not found for request: Latest(nope)"]),
    ("S19-status-unknown-model", lambda c, s: c.model_status("nope"),
     "NOT_FOUND", ["Could not find any versions of model nope"]),
    ("S20-status-unknown-version", lambda c, s: c.model_status("mf", version=9),
     "NOT_FOUND", ["Could not find version 9 of model mf"]),
    ("S21-classify", _raw("Classify", __import__(
        "tensorflow_serving.apis.classification_pb2", fromlist=["x"]).ClassificationRequest()),
     "UNIMPLEMENTED", ["Classify"]),
]


@pytest.mark.parametrize("call, code, words", [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_status_codes_and_messages(server, client, call, code, words):
    with pytest.raises((ServingError, grpc.RpcError)) as info:
        call(client, server)
    error = info.value
    got_code = error.code if isinstance(error, ServingError) else error.code()
    message = error.message if isinstance(error, ServingError) else error.details()
    assert got_code == getattr(grpc.StatusCode, code), message
    for word in words:
        assert word in message


def test_S11_strict_model_answers_valid_requests(client):
    """The graph asserts fire only on bad rows: a valid history is answered."""
    ranked = client.recommend("strict", [["1", "2"]], [["liked", "neutral"]])
    assert len(ranked[0]) == K and not {"1", "2"} & {item for item, _ in ranked[0]}


# --------------------------------------------------------------------------
# V: which versions are served (models.config, policies, labels, failed loads)
# --------------------------------------------------------------------------
def test_V1_latest_n_from_the_config(templates, tmp_path):
    for v in (1, 2, 3):
        put(tmp_path, "mf", v, templates["plain"])
    reg = registry(config_text(("mf", f"{tmp_path}/mf", "latest { num_versions: 2 }", {})))
    assert reg.loaded_versions("mf") == [2, 3]
    assert version_served(reg, "mf") == 3 and version_served(reg, "mf", 2) == 2
    with pytest.raises(RequestError) as info:
        reg.get("mf", 1)
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    # A push beyond the window retires the oldest once the new version serves.
    put(tmp_path, "mf", 4, templates["plain"])
    reg.poll()
    assert reg.loaded_versions("mf") == [3, 4]
    assert states(reg, "mf")[2] == ("END", 0)


def test_V2_specific_versions(templates, tmp_path):
    for v in (1, 2, 3):
        put(tmp_path, "mf", v, templates["plain"])
    reg = registry(config_text(("mf", f"{tmp_path}/mf", "specific { versions: 1 versions: 3 versions: 5 }", {})))
    assert reg.loaded_versions("mf") == [1, 3]
    assert version_served(reg, "mf") == 3
    with pytest.raises(RequestError):
        reg.get("mf", 2)
    # A listed version that appears later is loaded; nothing listed is retired.
    put(tmp_path, "mf", 5, templates["plain"])
    reg.poll()
    assert reg.loaded_versions("mf") == [1, 3, 5]


def test_V3_all_versions(templates, tmp_path):
    for v in (1, 2):
        put(tmp_path, "mf", v, templates["plain"])
    reg = registry(config_text(("mf", f"{tmp_path}/mf", "all {}", {})))
    assert reg.loaded_versions("mf") == [1, 2]


def test_V4_labels_at_start_need_the_allow_flag(templates, tmp_path):
    for v in (1, 2):
        put(tmp_path, "mf", v, templates["plain"])
    text = config_text(("mf", f"{tmp_path}/mf", "all {}", {"stable": 1, "canary": 2}))
    with pytest.raises(ConfigError) as info:
        registry(text)
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "Request to assign label to version 2 of model mf, which is not currently available" in info.value.message
    reg = registry(text, allow_version_labels_for_unavailable_models=True)
    assert version_served(reg, "mf", label="stable") == 1
    assert version_served(reg, "mf", label="canary") == 2


def test_V5_label_on_a_version_not_loaded_is_not_found(templates, tmp_path):
    put(tmp_path, "mf", 1, templates["plain"])
    reg = registry(
        config_text(("mf", f"{tmp_path}/mf", "", {"next": 2})), allow_version_labels_for_unavailable_models=True
    )
    with pytest.raises(RequestError) as info:
        reg.get("mf", label="next")
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    assert "Specific(mf, 2)" in info.value.message


def test_V6_reload_config_moves_a_label(templates, tmp_path):
    for v in (1, 2):
        put(tmp_path, "mf", v, templates["plain"])
    base = f"{tmp_path}/mf"
    reg = registry(config_text(("mf", base, "all {}", {})))
    reg.reload_config(parse(config_text(("mf", base, "all {}", {"stable": 1}))))
    assert version_served(reg, "mf", label="stable") == 1
    reg.reload_config(parse(config_text(("mf", base, "all {}", {"stable": 2}))))
    assert version_served(reg, "mf", label="stable") == 2
    # Moving a label to a version that is not available fails, and the old labels stay.
    with pytest.raises(ConfigError) as info:
        reg.reload_config(parse(config_text(("mf", base, "all {}", {"stable": 7}))))
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert version_served(reg, "mf", label="stable") == 2


def test_V6_reload_over_grpc(server, client, templates):
    base = server.registry.policies()[0].base_path.rsplit("/", 1)[0]
    config = parse(config_text(
        ("mf", f"{base}/mf", "", {"stable": 1}),
        ("strict", f"{base}/strict", "", {}),
    ))
    client.reload_config(config)
    assert client.predict_examples("mf", [EXAMPLE], version_label="stable")[HEAD].shape == (1,)
    config.model_config_list.config[0].version_labels["stable"] = 9
    with pytest.raises(ServingError) as info:
        client.reload_config(config)
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "version 9 of model mf" in info.value.message


def test_V7_failed_newest_version_keeps_the_previous_one_and_reports_the_error(templates, tmp_path):
    put(tmp_path, "mf", 1, templates["plain"])
    reg = registry(config_text(("mf", f"{tmp_path}/mf", "", {})))
    broken(tmp_path, "mf", 2)
    reg.poll()
    assert version_served(reg, "mf") == 1
    status = dict(reg.status("mf"))
    assert status[1].state == get_model_status_pb2.ModelVersionStatus.State.AVAILABLE
    assert status[2].state == get_model_status_pb2.ModelVersionStatus.State.END
    assert status[2].error_code == grpc.StatusCode.DATA_LOSS.value[0]  # TF Serving: DATA_LOSS, "Can't parse"
    assert f"Can't parse {tmp_path}/mf/2/saved_model.pb as binary proto" in status[2].error_message
    # A good newer version replaces both; the failure stays on record.
    put(tmp_path, "mf", 3, templates["plain"])
    reg.poll()
    assert reg.loaded_versions("mf") == [3]
    assert states(reg, "mf")[1] == ("END", 0) and states(reg, "mf")[2][1] == grpc.StatusCode.DATA_LOSS.value[0]


def test_V8_failed_newest_with_latest_2_retires_the_oldest(templates, tmp_path):
    for v in (1, 2):
        put(tmp_path, "mf", v, templates["plain"])
    reg = registry(config_text(("mf", f"{tmp_path}/mf", "latest { num_versions: 2 }", {})))
    broken(tmp_path, "mf", 3)
    reg.poll()
    # Wanted: {3, 2}; 2 serves, so 1 (no longer wanted) is retired.
    assert reg.loaded_versions("mf") == [2]


def test_V9_broken_newest_at_start_serves_nothing(templates, tmp_path):
    put(tmp_path, "mf", 1, templates["plain"])
    broken(tmp_path, "mf", 2)
    reg = registry(config_text(("mf", f"{tmp_path}/mf", "", {})))
    assert reg.loaded_versions("mf") == []
    with pytest.raises(RequestError) as info:
        reg.get("mf")
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    assert states(reg, "mf") == {2: ("END", grpc.StatusCode.DATA_LOSS.value[0])}


def test_V15_a_failed_version_is_retried_when_its_saved_model_changes(templates, tmp_path):
    put(tmp_path, "mf", 1, templates["plain"])
    reg = registry(config_text(("mf", f"{tmp_path}/mf", "", {})))
    path = broken(tmp_path, "mf", 2)
    reg.poll()
    reg.poll()  # unchanged on disk: not tried again
    assert version_served(reg, "mf") == 1 and states(reg, "mf")[2][0] == "END"
    # The version is rewritten in place, saved_model.pb last.
    for entry in os.listdir(templates["plain"]):
        source = os.path.join(templates["plain"], entry)
        if os.path.isdir(source):
            shutil.copytree(source, os.path.join(path, entry))
    shutil.copy(os.path.join(templates["plain"], "saved_model.pb"), os.path.join(path, "saved_model.pb.tmp"))
    os.replace(os.path.join(path, "saved_model.pb.tmp"), os.path.join(path, "saved_model.pb"))
    reg.poll()
    assert version_served(reg, "mf") == 2 and states(reg, "mf") == {1: ("END", 0), 2: ("AVAILABLE", 0)}


def test_V10_retired_versions_stay_in_the_status(templates, tmp_path):
    for v in (1, 2):
        put(tmp_path, "mf", v, templates["plain"])
    reg = registry(config_text(("mf", f"{tmp_path}/mf", "", {})))
    shutil.rmtree(tmp_path / "mf" / "1")
    reg.poll()
    assert states(reg, "mf") == {2: ("AVAILABLE", 0)}  # 1 was never loaded: never reported
    put(tmp_path, "mf", 3, templates["plain"])
    reg.poll()
    shutil.rmtree(tmp_path / "mf" / "2")
    reg.poll()
    assert states(reg, "mf") == {2: ("END", 0), 3: ("AVAILABLE", 0)}


def test_V11_model_removed_by_reload(templates, tmp_path):
    put(tmp_path, "mf", 1, templates["plain"])
    put(tmp_path, "mf_dnn", 1, templates["plain"])
    reg = registry(config_text(("mf", f"{tmp_path}/mf", "", {}), ("mf_dnn", f"{tmp_path}/mf_dnn", "", {})))
    reg.reload_config(parse(config_text(("mf", f"{tmp_path}/mf", "", {}))))
    with pytest.raises(RequestError) as info:
        reg.get("mf_dnn")
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    assert states(reg, "mf_dnn") == {1: ("END", 0)}


def test_V12_a_model_with_no_versions(tmp_path):
    reg = registry(config_text(("mf", f"{tmp_path}/missing", "", {})))
    with pytest.raises(RequestError) as info:
        reg.status("mf")
    assert info.value.code == grpc.StatusCode.NOT_FOUND and "Could not find any versions of model mf" in info.value.message
    with pytest.raises(RequestError) as info:
        reg.get("mf")
    assert "Servable not found for request: Latest(mf)" in info.value.message


@pytest.mark.parametrize(
    "text, words",
    [
        (config_text(("mf", "relative/mf", "", {})), ["Expected model mf to have an absolute path"]),
        (config_text(("mf", "/a/mf", "", {}), ("mf", "/b/mf", "", {})), ["Illegal to list model mf multiple times"]),
        ('model_config_list { config { name: "mf" base_path: "/a/mf" } }', ["neither", "model_platform"]),
        ('model_config_list { config { name: "mf" base_path: "/a/mf" model_platform: "onnx" } }',
         ["Model mf requests unsupported platform onnx"]),
    ],
    ids=["V13-relative-base-path", "V13-duplicate-model", "V13-no-platform", "V13-other-platform"],
)
def test_V13_invalid_configs_are_rejected(text, words):
    with pytest.raises(ConfigError) as info:
        registry(text)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    for word in words:
        assert word in info.value.message


def test_V14_cli_reads_the_config_file_and_reports_bad_ones(tmp_path, capsys):
    config = tmp_path / "models.config"
    config.write_text("model_config_list { config { name: 'mf' base_path: 'relative' model_platform: 'tensorflow' } }")
    with pytest.raises(SystemExit) as info:
        local_server.main(["--model_config_file", str(config), "--port", "0"])
    assert info.value.code == 2
    assert "INVALID_ARGUMENT" in capsys.readouterr().err


# --------------------------------------------------------------------------
# K: client deadlines
# --------------------------------------------------------------------------
class _Unavailable(grpc.RpcError):
    def code(self):
        return grpc.StatusCode.UNAVAILABLE

    def details(self):
        return "connection refused"


class _FakeTime:
    def __init__(self):
        self.now = 0.0
        self.sleeps = []

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def test_K1_deadline_bounds_the_whole_call_including_retries():
    fake = _FakeTime()
    timeouts = []

    def rpc(request, timeout):
        timeouts.append(timeout)
        fake.now += timeout / 2  # each attempt fails after half of what it was given
        raise _Unavailable()

    client = ServingClient("unused:1", timeout_s=2.0, retries=50, backoff_s=0.1, max_backoff_s=1.0)
    client._clock, client._sleep = fake.clock, fake.sleep
    with pytest.raises(ServingError) as info:
        client._call("Predict", rpc, None)
    client.close()
    assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "UNAVAILABLE" in info.value.message and f"after {len(timeouts)} attempt(s)" in info.value.message
    assert fake.now <= 2.0  # attempts and sleeps together stayed inside the deadline
    assert timeouts[0] == 2.0 and all(a > b for a, b in zip(timeouts, timeouts[1:]))  # each gets what is left
    assert len(timeouts) < 51


def test_K2_deadline_exceeded_is_not_retried(tmp_path):
    release = threading.Event()

    class Slow(model_service_pb2_grpc.ModelServiceServicer):
        def GetModelStatus(self, request, context):
            release.wait(30)
            return get_model_status_pb2.GetModelStatusResponse()

    import concurrent.futures

    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=2))
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(Slow(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    retried = []
    try:
        with ServingClient(f"127.0.0.1:{port}", timeout_s=0.5, retries=3, on_retry=lambda *a: retried.append(a)) as c:
            with pytest.raises(ServingError) as info:
                c.model_status("mf")
    finally:
        release.set()
        server.stop(0)
    assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED and retried == []


def test_K3_version_and_label_are_exclusive(client):
    with pytest.raises(ValueError):
        client.predict_examples("mf", [EXAMPLE], version=1, version_label="stable")
