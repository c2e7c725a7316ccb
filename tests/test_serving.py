"""Client + local server over a real loopback socket, against stand-in SavedModels
(test fixtures with the pushed-model signatures)."""
import csv
import os
import shutil
import socket
import tempfile
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import classification_pb2, prediction_service_pb2_grpc

from contract import datasets as D
from contract import features
from contract import protocol
from serving import client as serving_client
from export import warmup
from serving import local_server, stand_in
from serving.client import ServingClient, ServingError

HEAD = "rating"  # the served output of the stand-ins (as a rating family's)
BEHAVIORS = D.dataset_spec("movielens").behaviors  # the stand-ins' behavior vocabulary

K = 5
POLL_SECONDS = 0.1
WAIT_BOUND_S = 60.0  # upper bound for waiting on the poller; tests end as soon as it acts


def _movie_ids(movielens_dir, n):
    with open(movielens_dir / "movies.csv", newline="", encoding="utf-8") as f:
        return [row["movieId"] for _, row in zip(range(n), csv.DictReader(f))]


@pytest.fixture(scope="module")
def catalog(movielens_dir):
    ids = _movie_ids(movielens_dir, 24)
    scores_v1 = {item: 1.0 + 0.1 * i for i, item in enumerate(ids)}
    scores_v2 = {item: 5.0 - 0.1 * i for i, item in enumerate(ids)}  # reversed ranking
    return ids, scores_v1, scores_v2


@pytest.fixture(scope="module")
def templates(catalog):
    """Two exported stand-in models (v1 and v2 scores) with warmup files, copied per push."""
    ids, scores_v1, scores_v2 = catalog
    root = tempfile.mkdtemp(prefix="serving-templates-")
    examples = [stand_in.make_example(ids[0]), stand_in.make_example(ids[1], history=[ids[2]])]
    histories = [([ids[0], ids[3]], ["liked", "neutral"])]
    out = {}
    for name, scores in (("v1", scores_v1), ("v2", scores_v2)):
        path = os.path.join(root, name)
        stand_in.export_stand_in_model(path, scores, head=HEAD, k=K, behaviors=BEHAVIORS)
        warmup.write_warmup_requests(path, "any", examples, histories, batch_sizes=(1, 2))
        out[name] = path
    yield out
    shutil.rmtree(root, ignore_errors=True)


def push(model_base, model, version, template):
    """Atomic push: copy to a hidden staging dir inside the model dir, then rename."""
    model_dir = os.path.join(model_base, model)
    os.makedirs(model_dir, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".staging-{version}-", dir=model_dir)
    shutil.rmtree(staging)
    shutil.copytree(template, staging)
    os.rename(staging, os.path.join(model_dir, str(version)))


@pytest.fixture(scope="module")
def server(templates):
    base = tempfile.mkdtemp(prefix="serving-base-")
    for model in ("mf", "mf_history", "mf_dnn"):
        push(base, model, 1, templates["v1"])
    handle = local_server.serve(base, port=0, host="127.0.0.1", poll_seconds=POLL_SECONDS)
    yield handle
    handle.stop(grace=0)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def client(server):
    c = ServingClient(server.address, timeout_s=20.0, retries=2, backoff_s=0.05)
    yield c
    c.close()


@pytest.fixture(scope="module")
def in_process(templates):
    return {name: tf.saved_model.load(path) for name, path in templates.items()}


def _call(loaded, signature, **inputs):
    out = loaded.signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})
    return {k: v.numpy() for k, v in out.items()}


def _wait_for(condition, what):
    end = time.monotonic() + WAIT_BOUND_S
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(POLL_SECONDS / 2)
    pytest.fail(f"gave up waiting for {what}")


# --------------------------------------------------------------------------
# Predictions equal the SavedModel called in-process
# --------------------------------------------------------------------------
def test_predict_examples_equals_in_process(client, in_process, catalog):
    ids = catalog[0]
    examples = [
        stand_in.make_example(ids[4]),
        stand_in.make_example(ids[9], history=[ids[1], ids[2]]),
        stand_in.make_example("not-in-catalog"),
    ]
    got = client.predict_examples("mf", examples)
    want = _call(in_process["v1"], protocol.SERVING_DEFAULT, examples=np.array(examples, dtype=object))
    assert set(got) == {HEAD}
    assert got[HEAD].dtype == np.float32
    np.testing.assert_array_equal(got[HEAD], want[HEAD])
    assert got[HEAD][1] != got[HEAD][0]  # history and item both matter


def test_predict_tensors_equals_in_process_for_both_signatures(client, in_process, catalog):
    ids = catalog[0]
    examples = np.array([stand_in.make_example(ids[3])] * 2, dtype=object)
    got = client.predict_tensors("mf", {protocol.EXAMPLES: examples})
    want = _call(in_process["v1"], protocol.SERVING_DEFAULT, examples=examples)
    np.testing.assert_array_equal(got[HEAD], want[HEAD])

    items, behaviors = protocol.history_arrays([[ids[0], ids[5]], [ids[7]]], [["liked", "liked"], ["disliked"]])
    inputs = {features.HISTORY_ITEM_IDS: items, features.HISTORY_BEHAVIORS: behaviors}
    got = client.predict_tensors("mf", inputs, signature=protocol.RECOMMEND)
    want = _call(in_process["v1"], protocol.RECOMMEND, **inputs)
    assert got[protocol.RECOMMEND_ITEM_IDS].shape == (2, K)
    np.testing.assert_array_equal(got[protocol.RECOMMEND_ITEM_IDS], want[protocol.RECOMMEND_ITEM_IDS])
    np.testing.assert_array_equal(got[protocol.RECOMMEND_SCORES], want[protocol.RECOMMEND_SCORES])


def test_recommend_equals_in_process_and_skips_history(client, in_process, catalog):
    ids, scores_v1, _ = catalog
    history = [ids[-1], ids[-3]]  # the two best-scored items in v1
    ranked = client.recommend("mf", [history, [ids[0]]], [["liked", "neutral"], None])
    items, behaviors = protocol.history_arrays([history, [ids[0]]], [["liked", "neutral"], None])
    want = _call(
        in_process["v1"], protocol.RECOMMEND,
        **{features.HISTORY_ITEM_IDS: items, features.HISTORY_BEHAVIORS: behaviors},
    )
    assert ranked == protocol.ranked_items(want[protocol.RECOMMEND_ITEM_IDS], want[protocol.RECOMMEND_SCORES])
    assert len(ranked) == 2 and all(len(row) == K for row in ranked)
    assert not set(history) & {item for item, _ in ranked[0]}
    assert ranked[0][0][0] == ids[-2]
    # One "liked" behavior raises every score by the stand-in's bonus.
    assert ranked[0][0][1] == pytest.approx(scores_v1[ids[-2]] + stand_in.STRONGEST_BONUS, rel=1e-6)
    assert client.recommend("mf", [history], k=2)[0] == [(i, s - stand_in.STRONGEST_BONUS) for i, s in ranked[0][:2]]


def test_recommend_answers_invalid_argument_naming_both_shapes(client):
    """Ids and behaviors that do not align are an error, not a broadcast: [1, 2] ids with
    [1, 1] behaviors would otherwise give both items the one behavior."""
    inputs = {features.HISTORY_ITEM_IDS: np.array([[b"1", b"2"]], dtype=object),
              features.HISTORY_BEHAVIORS: np.array([[b"liked"]], dtype=object)}
    with pytest.raises(ServingError) as info:
        client.predict_tensors("mf", inputs, signature=protocol.RECOMMEND)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert (f"{features.HISTORY_ITEM_IDS} has shape [1, 2] but {features.HISTORY_BEHAVIORS} has shape [1, 1]"
            in info.value.message)
    # recommend_excluding checks the same, and that its exclusions have one row per history.
    inputs[protocol.EXCLUDE_ITEM_IDS] = np.array([[b"3"]], dtype=object)
    with pytest.raises(ServingError, match=r"has shape \[1, 2\] but history_behaviors has shape \[1, 1\]"):
        client.predict_tensors("mf", inputs, signature=protocol.RECOMMEND_EXCLUDING)
    inputs[features.HISTORY_BEHAVIORS] = np.array([[b"liked", b""]], dtype=object)
    inputs[protocol.EXCLUDE_ITEM_IDS] = np.array([[b"3"], [b"4"]], dtype=object)
    with pytest.raises(ServingError) as info:
        client.predict_tensors("mf", inputs, signature=protocol.RECOMMEND_EXCLUDING)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert (f"{features.HISTORY_ITEM_IDS} has shape [1, 2] but {protocol.EXCLUDE_ITEM_IDS} has shape [2, 1]"
            in info.value.message)


def test_recommend_excluding_keeps_out_items_that_are_not_in_the_history(client, in_process, catalog):
    ids = catalog[0]
    history = [ids[-1]]
    plain = client.recommend("mf", [history])[0]
    # The two best items the history alone gets, and one item the model does not know.
    exclude = [plain[0][0], plain[2][0], "not-in-catalog"]
    got = client.recommend("mf", [history, history], exclude_item_ids=[exclude, None])
    assert got[1] == plain  # a None row excludes nothing more
    kept = got[0]
    assert not {item for item, _ in kept} & set(exclude + history)
    # The query is the history alone: the other items keep their scores and order.
    assert kept[:K - 2] == [p for p in plain if p[0] not in exclude]
    items, behaviors = protocol.history_arrays([history])
    want = _call(in_process["v1"], protocol.RECOMMEND_EXCLUDING,
                 **{features.HISTORY_ITEM_IDS: items, features.HISTORY_BEHAVIORS: behaviors,
                    protocol.EXCLUDE_ITEM_IDS: protocol.exclusion_array([exclude], 1)})
    assert kept == protocol.ranked_items(want[protocol.RECOMMEND_ITEM_IDS], want[protocol.RECOMMEND_SCORES])[0]
    with pytest.raises(ValueError, match="exclude_item_ids has 1 rows but there are 2 histories"):
        client.recommend("mf", [history, history], exclude_item_ids=[exclude])


def test_output_filter_and_version_pin(client):
    items, behaviors = protocol.history_arrays([["1"]])
    inputs = {features.HISTORY_ITEM_IDS: items, features.HISTORY_BEHAVIORS: behaviors}
    result = client.predict("mf", inputs, protocol.RECOMMEND, version=1, output_filter=[protocol.RECOMMEND_SCORES])
    assert set(result.outputs) == {protocol.RECOMMEND_SCORES}
    assert (result.model, result.version, result.signature) == ("mf", 1, protocol.RECOMMEND)


def test_metadata_lists_signatures(client):
    meta = client.model_metadata("mf")
    assert meta["model"] == "mf" and meta["version"] == 1
    sigs = meta["signatures"]
    assert {protocol.SERVING_DEFAULT, protocol.RECOMMEND, protocol.RECOMMEND_EXCLUDING,
            protocol.TRANSFORM_FEATURES} <= set(sigs)
    assert sigs[protocol.SERVING_DEFAULT]["inputs"] == {protocol.EXAMPLES: {"dtype": "string", "shape": [-1]}}
    assert sigs[protocol.SERVING_DEFAULT]["outputs"] == {HEAD: {"dtype": "float", "shape": [-1]}}
    assert set(sigs[protocol.RECOMMEND]["inputs"]) == {features.HISTORY_ITEM_IDS, features.HISTORY_BEHAVIORS}
    assert sigs[protocol.RECOMMEND]["outputs"][protocol.RECOMMEND_ITEM_IDS] == {"dtype": "string", "shape": [-1, K]}
    assert set(sigs[protocol.RECOMMEND_EXCLUDING]["inputs"]) == {
        features.HISTORY_ITEM_IDS, features.HISTORY_BEHAVIORS, protocol.EXCLUDE_ITEM_IDS}
    assert sigs[protocol.RECOMMEND_EXCLUDING]["outputs"] == sigs[protocol.RECOMMEND]["outputs"]


def test_status_reports_available_version(client):
    assert client.model_status("mf") == [
        {"version": 1, "state": "AVAILABLE", "error_code": "OK", "error_message": ""}
    ]
    assert client.model_status("mf", version=1)[0]["state"] == "AVAILABLE"


EXAMPLE = stand_in.make_example("1")


def test_unsupported_methods_are_unimplemented(server):
    with grpc.insecure_channel(server.address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Classify(classification_pb2.ClassificationRequest(), timeout=10)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "Classify" in info.value.details()


# --------------------------------------------------------------------------
# Version changes
# --------------------------------------------------------------------------
def test_new_version_is_picked_up_without_failed_requests(server, client, templates, in_process, catalog):
    ids = catalog[0]
    examples = [stand_in.make_example(ids[2]), stand_in.make_example(ids[20])]
    want = {
        version: _call(in_process[name], protocol.SERVING_DEFAULT, examples=np.array(examples, dtype=object))
        for version, name in ((1, "v1"), (2, "v2"))
    }
    model, n_threads, max_requests = "mf_dnn", 3, 5000
    seen = [[] for _ in range(n_threads)]
    failures = []
    started = threading.Barrier(n_threads + 1)
    stop = threading.Event()

    def worker(i):
        c = ServingClient(server.address, timeout_s=20.0, retries=0)
        started.wait()
        try:
            for n in range(max_requests):
                try:
                    result = c.predict(model, {protocol.EXAMPLES: np.array(examples, dtype=object)})
                except ServingError as exc:
                    failures.append(exc)
                    continue
                if not np.array_equal(result.outputs[HEAD], want[result.version][HEAD]):
                    failures.append(f"version {result.version} answered {result.outputs}")
                seen[i].append(result.version)
                time.sleep(0.001)  # leave CPU to the poller loading the new version
                # Stop after a few answers from the new version (or when told).
                if stop.is_set() or seen[i][-3:] == [2, 2, 2]:
                    break
        finally:
            c.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    started.wait()
    _wait_for(lambda: all(len(s) >= 3 for s in seen), "requests on version 1")
    push(server.registry.model_base, model, 2, templates["v2"])
    for t in threads:
        t.join(timeout=WAIT_BOUND_S)
    stop.set()
    for t in threads:
        t.join()
    assert failures == []
    for s in seen:
        assert s[0] == 1 and s[-1] == 2
        switch = s.index(2)
        assert set(s[:switch]) == {1} and set(s[switch:]) == {2}  # never back to the old version
    states = {s["version"]: (s["state"], s["error_code"]) for s in client.model_status(model)}
    assert states == {1: ("END", "OK"), 2: ("AVAILABLE", "OK")}


@pytest.mark.filterwarnings("ignore:Unexpected end-group tag")  # TF parsing the garbage version
def test_broken_version_keeps_the_old_one_serving(server, client, templates, catalog):
    model = "mf_history"
    example = [stand_in.make_example(catalog[0][2])]
    before = client.predict(model, {protocol.EXAMPLES: np.array(example, dtype=object)})
    assert before.version == 1

    def failed(versions):
        def check():
            statuses = client.model_status(model)
            return statuses if {s["version"] for s in statuses if s["error_code"] != "OK"} == versions else None
        return check

    # Version 2: not a SavedModel at all. (One at a time: with the policy "latest 1",
    # only the newest version on disk is ever tried, as in TF Serving.)
    broken = tempfile.mkdtemp()
    with open(os.path.join(broken, "saved_model.pb"), "wb") as f:
        f.write(b"this is not a protobuf")
    push(server.registry.model_base, model, 2, broken)
    shutil.rmtree(broken)
    _wait_for(failed({2}), "version 2 to fail")
    # Version 3: a valid SavedModel whose warmup request fails.
    bad_warmup = tempfile.mkdtemp()
    shutil.rmtree(bad_warmup)
    shutil.copytree(templates["v2"], bad_warmup)
    log = warmup.build_warmup_logs(model, example)[0]
    log.predict_log.request.model_spec.signature_name = "no_such_signature"
    with tf.io.TFRecordWriter(warmup.warmup_path(bad_warmup)) as writer:
        writer.write(log.SerializeToString())
    push(server.registry.model_base, model, 3, bad_warmup)
    shutil.rmtree(bad_warmup)

    statuses = {s["version"]: s for s in _wait_for(failed({2, 3}), "versions 2 and 3 to fail")}
    assert statuses[1]["state"] == "AVAILABLE" and statuses[1]["error_code"] == "OK"
    for version in (2, 3):
        assert statuses[version]["state"] == "END"
        assert f"{model}/{version}" in statuses[version]["error_message"]
    # The real error: a saved_model.pb that does not parse, a warmup request's own status.
    assert statuses[2]["error_code"] == "DATA_LOSS"
    assert statuses[3]["error_code"] == "FAILED_PRECONDITION"
    assert "no_such_signature" in statuses[3]["error_message"]
    after = client.predict(model, {protocol.EXAMPLES: np.array(example, dtype=object)})
    assert after.version == 1
    np.testing.assert_array_equal(after.outputs[HEAD], before.outputs[HEAD])
    with pytest.raises(ServingError) as info:
        client.predict_examples(model, example, version=3)
    assert info.value.code == grpc.StatusCode.NOT_FOUND


# --------------------------------------------------------------------------
# Client behaviour: retries, deadlines, CLI
# --------------------------------------------------------------------------
def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_client_retries_unavailable_until_a_late_server_starts(server):
    port = _free_port()
    retries = []
    ready = threading.Event()
    late = {}

    def start_late():
        ready.wait()
        time.sleep(0.3)
        late["server"] = local_server.serve(server.registry.model_base, port=port, poll_seconds=0, model_names=["mf"])

    starter = threading.Thread(target=start_late)
    starter.start()
    c = ServingClient(
        f"127.0.0.1:{port}", timeout_s=10.0, retries=12, backoff_s=0.05, max_backoff_s=0.5,
        on_retry=lambda method, attempt, error: (retries.append((method, attempt, error.code)), ready.set()),
    )
    try:
        statuses = c.model_status("mf")
    finally:
        starter.join()
        c.close()
        late["server"].stop(grace=0)
    assert statuses[0]["state"] == "AVAILABLE"
    assert retries, "the first attempt must have found no server"
    assert all(m == "GetModelStatus" and code == grpc.StatusCode.UNAVAILABLE for m, _, code in retries)
    assert [a for _, a, _ in retries] == list(range(1, len(retries) + 1))


def test_client_gives_up_after_retries_and_does_not_retry_other_errors(server):
    retries = []
    dead = ServingClient(
        f"127.0.0.1:{_free_port()}", timeout_s=5.0, retries=2, backoff_s=0.01,
        on_retry=lambda *a: retries.append(a),
    )
    with pytest.raises(ServingError) as info:
        dead.model_status("mf")
    dead.close()
    assert info.value.code == grpc.StatusCode.UNAVAILABLE and "3 attempts" in info.value.message
    assert len(retries) == 2

    retries.clear()
    live = ServingClient(server.address, retries=5, on_retry=lambda *a: retries.append(a))
    with pytest.raises(ServingError) as info:
        live.predict_examples("nope", [EXAMPLE])
    assert info.value.code == grpc.StatusCode.NOT_FOUND and retries == []
    live.close()


def test_cli_recommend_prints_ranked_titles(server, client, capsys, movielens_dir):
    history = _movie_ids(movielens_dir, 24)[-2:]
    argv = ["recommend", "--target", server.address, "--model", "mf", "--items", ",".join(history),
            "--behaviors", "liked,neutral", "--k", "3", "--dataset", "movielens"]
    assert serving_client.main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    titles = serving_client.item_titles("movielens")
    expected = client.recommend("mf", [history], [["liked", "neutral"]], k=3)[0]
    assert len(lines) == 1 + 3
    for line, (item, score) in zip(lines[1:], expected):
        assert line.split()[1] == item and f"{score:.4f}" in line and line.endswith(titles[item])


def test_cli_recommend_excludes_the_items_it_is_given(server, client, capsys, movielens_dir):
    history = _movie_ids(movielens_dir, 24)[-1:]
    top = [item for item, _ in client.recommend("mf", [history], k=2)[0]]
    argv = ["recommend", "--target", server.address, "--model", "mf", "--items", history[0],
            "--exclude", ",".join(top), "--k", "3"]
    assert serving_client.main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "excluding 2 more item(s)" in lines[0]
    shown = [line.split()[1] for line in lines[1:]]
    assert len(shown) == 3 and not set(shown) & set(top + history)
    assert shown == [item for item, _ in client.recommend("mf", [history], exclude_item_ids=[top], k=3)[0]]


def test_cli_status_metadata_and_errors(server, capsys):
    assert serving_client.main(["status", "--target", server.address, "--model", "mf"]) == 0
    assert "mf version 1: AVAILABLE" in capsys.readouterr().out
    assert serving_client.main(["metadata", "--target", server.address, "--model", "mf"]) == 0
    out = capsys.readouterr().out
    assert f"input  {features.HISTORY_ITEM_IDS}: string [?, ?]" in out
    assert serving_client.main(["status", "--target", server.address, "--model", "nope"]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err


def test_item_titles_come_from_the_descriptions_items_table_in_its_format(tmp_path):
    import json

    from serving import cli

    (tmp_path / "items.tsv").write_text("b1\tBlue Book\tx\nb2\tRed Book\ty\n", encoding="utf-8")
    (tmp_path / "items.jsonl").write_text('{"sku": "j1", "name": "Jade"}\n', encoding="utf-8")
    base = {"name": "shop", "data_dir": str(tmp_path),
            "interactions": {"files": "log.csv", "user": "u", "item": "i", "time": "t"},
            "labels": {"seen": {"implicit": True}}, "tasks": [{"name": "items", "kind": "retrieval"}]}
    tsv = {**base, "items": {"files": "items.tsv", "key": "sku",
                             "csv": {"header": False, "columns": ["sku", "title", "kind"]}}}
    assert serving_client.item_titles(tsv) == {"b1": "Blue Book", "b2": "Red Book"}  # the first non-key column
    assert serving_client.item_titles(tsv, "kind") == {"b1": "x", "b2": "y"}
    assert serving_client.item_titles({**base, "items": {"files": "items.jsonl", "key": "sku"}}) == {"j1": "Jade"}
    assert serving_client.item_titles("taobao") == {}  # item features from the interactions: no items table
    # serving.cli reads the description of the model it serves from the model record.
    model = tmp_path / "model"
    (model / protocol.ASSETS_EXTRA).mkdir(parents=True)
    (model / protocol.ASSETS_EXTRA / protocol.MODEL_RECORD).write_text(json.dumps({"description": tsv}))
    assert cli.model_titles(str(model)) == {"b1": "Blue Book", "b2": "Red Book"}
    assert cli.model_titles(str(tmp_path / "no-record")) == {}
    assert cli.model_titles(str(tmp_path / "no-record"), dataset="movielens")["1"] == "Toy Story (1995)"
