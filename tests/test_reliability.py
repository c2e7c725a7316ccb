"""Faults: a run killed mid-component, a push killed mid-copy, a corrupted version pushed under load.

The full kill -9 matrix (ExampleGen, Transform, a Trainer, a Pusher; rerun; ML Metadata
audit) runs in `make bench-reliability`; these are its cheap representatives.
"""
import glob
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from bench import reliability
from components import pusher
from contract import protocol
from pipeline import recovery
from serving import local_server, stand_in
from serving.client import ServingClient, ServingError

HEAD = "rating"  # the served output of the stand-ins (as a rating family's)
WAIT_BOUND_S = 120.0  # upper bound for waiting on a poller or a child; tests end as soon as it acts
SCORES = {str(i): 1.0 + 0.1 * i for i in range(1, 25)}


def _wait_for(condition, what):
    end = time.monotonic() + WAIT_BOUND_S
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    pytest.fail(f"gave up waiting for {what}")


# --------------------------------------------------------------------------
# What LocalDagRunner leaves after kill -9, and the cleanup of the next run
# --------------------------------------------------------------------------
def _tfx_like_store(tmp_path):
    """An ML Metadata store laid out as TFX 1.16 leaves it when a run dies inside a component:
    execution 1 COMPLETE with its LIVE artifact, execution 2 RUNNING with half-written outputs."""
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2 as pb

    root = tmp_path / "pipeline_root"
    metadata_path = str(tmp_path / "metadata.sqlite")
    config = pb.ConnectionConfig()
    config.sqlite.filename_uri = metadata_path
    config.sqlite.connection_mode = pb.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
    store = metadata_store.MetadataStore(config)
    node_type = store.put_context_type(pb.ContextType(name="node"))
    execution_type = store.put_execution_type(pb.ExecutionType(name="InteractionExampleGen"))
    examples_type = store.put_artifact_type(pb.ArtifactType(name="Examples"))
    node = pb.Context(type_id=node_type, name="recsys.InteractionExampleGen")
    [node.id] = store.put_contexts([node])

    done_uri = root / "InteractionExampleGen" / "examples" / "1"
    for split in ("train", "eval", "test"):
        (done_uri / f"Split-{split}").mkdir(parents=True)
        (done_uri / f"Split-{split}" / "data_tfrecord-00000-of-00001.gz").write_bytes(b"x")
    (done_uri / "ingest_report.json").write_text("{}")
    [artifact] = store.put_artifacts([pb.Artifact(type_id=examples_type, uri=str(done_uri), state=pb.Artifact.LIVE)])
    done = pb.Execution(type_id=execution_type, last_known_state=pb.Execution.COMPLETE)
    [artifact] = store.get_artifacts_by_id([artifact])
    store.put_execution(done, [(artifact, pb.Event(type=pb.Event.OUTPUT))], [node])

    running = pb.Execution(type_id=execution_type, last_known_state=pb.Execution.RUNNING)
    running.custom_properties["__stateful_working_dir_index__"].string_value = "0b1c-uuid"
    running_id, _, _ = store.put_execution(running, [], [node])
    partial = root / "InteractionExampleGen" / "examples" / str(running_id)
    (partial / ".ingest-tmp-abc" / "Split-train").mkdir(parents=True)
    (partial / "Split-train").mkdir()  # renamed before the kill; eval and test were not
    system = root / "InteractionExampleGen" / ".system" / "executor_execution" / str(running_id)
    system.mkdir(parents=True)
    (root / "InteractionExampleGen" / ".system" / "stateful_working_dir" / "0b1c-uuid").mkdir(parents=True)
    return str(root), metadata_path, str(done_uri), str(partial), running_id


def test_recovery_marks_the_dead_execution_failed_and_removes_its_partial_outputs(tmp_path):
    from ml_metadata.proto import metadata_store_pb2 as pb

    root, metadata_path, done_uri, partial, running_id = _tfx_like_store(tmp_path)
    serving = str(tmp_path / "serving")
    problems = recovery.audit(root, metadata_path, serving)
    assert any(f"execution {running_id} (InteractionExampleGen) is still RUNNING" in p for p in problems)
    assert any(f"{partial} belongs to no LIVE artifact" in p for p in problems)

    notes = recovery.recover(root, metadata_path, serving)
    assert len(notes) == 1 and "InteractionExampleGen" in notes[0] and "marked FAILED" in notes[0]
    assert not os.path.exists(partial)
    assert not glob.glob(os.path.join(root, "InteractionExampleGen", ".system", "*", str(running_id)))
    assert not os.path.exists(os.path.join(root, "InteractionExampleGen", ".system", "stateful_working_dir", "0b1c-uuid"))
    assert os.path.isdir(os.path.join(done_uri, "Split-test"))  # published outputs are untouched
    assert recovery.audit(root, metadata_path, serving) == []
    [execution] = recovery.open_store(metadata_path).get_executions_by_id([running_id])
    assert execution.last_known_state == pb.Execution.FAILED
    assert "died" in execution.custom_properties[recovery.RECOVERY_NOTE].string_value
    assert recovery.recover(root, metadata_path, serving) == []  # nothing left to do


SLOW_PUSH = """
import sys, time
import tensorflow as tf
from bench import reliability
from components import pusher
copy = tf.io.gfile.copy
def slow_copy(src, dst, overwrite=False):
    copy(src, dst, overwrite)
    print("copied", dst, flush=True)
    time.sleep(0.5)
tf.io.gfile.copy = slow_copy
pusher.push_model(sys.argv[1], sys.argv[2], "mf")
print("pushed", flush=True)
"""


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return stand_in.export_stand_in_model(str(tmp_path_factory.mktemp("reliability") / "template"), SCORES, head=HEAD,
                                          k=5)


def test_a_push_killed_mid_copy_leaves_no_partial_version(template, tmp_path):
    serving = tmp_path / "serving"
    (serving / "mf").mkdir(parents=True)
    shutil.copytree(template, serving / "mf" / "1")
    child = subprocess.Popen(
        [sys.executable, "-c", SLOW_PUSH, template, str(serving)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().startswith("copied")  # one file is in the staging directory
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    staging = [e for e in os.listdir(serving / "mf") if e != "1"]
    assert len(staging) == 1 and staging[0].startswith(".tmp-") and staging[0].endswith(f"-{child.pid}")
    # The server sees only the complete version; the staging directory is no version.
    registry = local_server.ModelRegistry(str(serving), run_warmup=False)
    registry.poll()
    assert registry.loaded_versions("mf") == [1]
    assert [v for v, _ in registry.status("mf")] == [1]
    # The next run's recovery removes the staging directory of the dead pusher.
    assert recovery.audit(str(tmp_path / "root"), str(tmp_path / "none.sqlite"), str(serving)) != []
    notes = recovery.recover(str(tmp_path / "root"), str(tmp_path / "none.sqlite"), str(serving))
    assert len(notes) == 1 and "interrupted push" in notes[0]
    assert os.listdir(serving / "mf") == ["1"]
    assert recovery.audit(str(tmp_path / "root"), str(tmp_path / "none.sqlite"), str(serving)) == []


def test_a_push_between_uris_goes_through_tensorflows_file_systems(template, tmp_path, monkeypatch):
    # file:// URIs take the path a gs:// model or serving base takes (is_uri), on local disk.
    monkeypatch.chdir(tmp_path)
    serving = tmp_path / "serving"
    version, path = pusher.push_model(f"file://{template}", f"file://{serving}", "mf")
    assert path == f"file://{serving}/mf/{version}"
    assert os.listdir(serving / "mf") == [str(version)]  # renamed into place, no staging left
    assert sorted(os.listdir(serving / "mf" / str(version))) == sorted(os.listdir(template))
    assert not (tmp_path / "file:").exists()  # nothing written under a local directory named after the scheme
    registry = local_server.ModelRegistry(str(serving), run_warmup=False)
    registry.poll()
    assert registry.loaded_versions("mf") == [version]
    later, _ = pusher.push_model(str(template), f"file://{serving}", "mf")
    # The next version: seconds since the epoch, and above every version already there.
    assert later > version and sorted(os.listdir(serving / "mf")) == sorted([str(version), str(later)])


# --------------------------------------------------------------------------
# A corrupted version appears while the server is under load
# --------------------------------------------------------------------------
def _truncate_variables(version_dir):
    [data] = glob.glob(os.path.join(version_dir, "variables", "variables.data-*"))
    size = os.path.getsize(data)
    with open(data, "r+b") as f:
        f.truncate(size // 2)
    return data


def test_a_corrupted_version_under_load_fails_no_request(template, tmp_path):
    base = tmp_path / "serving"
    (base / "mf").mkdir(parents=True)
    shutil.copytree(template, base / "mf" / "1")
    examples = np.array([stand_in.make_example("3"), stand_in.make_example("7", history=["1"])], dtype=object)
    server = local_server.serve(str(base), port=0, poll_seconds=0.05, run_warmup=False)
    stop = threading.Event()
    answers, failures = [], []

    def load():
        with ServingClient(server.address, timeout_s=30.0, retries=0) as client:
            while not stop.is_set():
                try:
                    result = client.predict("mf", {protocol.EXAMPLES: examples})
                    answers.append((result.version, tuple(result.outputs[HEAD].tolist())))
                except ServingError as exc:
                    failures.append(exc)

    threads = [threading.Thread(target=load) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        _wait_for(lambda: len(answers) >= 20, "answers from version 1")
        staging = base / "mf" / ".staging-2"
        shutil.copytree(template, staging)
        truncated = _truncate_variables(str(staging))
        os.rename(staging, base / "mf" / "2")
        with ServingClient(server.address, timeout_s=30.0) as client:
            status = _wait_for(
                lambda: {s["version"]: s for s in client.model_status("mf") if s["version"] == 2 and s["state"] == "END"},
                "version 2 to fail",
            )[2]
            seen_before_fix = len(answers)
            _wait_for(lambda: len(answers) >= seen_before_fix + 20, "more answers after the failure")
            # A good version 3 then takes over, still without a failed request.
            staging = base / "mf" / ".staging-3"
            shutil.copytree(template, staging)
            os.rename(staging, base / "mf" / "3")
            _wait_for(lambda: answers[-1][0] == 3, "version 3 to answer")
            final = {s["version"]: s["state"] for s in client.model_status("mf")}
    finally:
        stop.set()
        for t in threads:
            t.join()
        server.stop(grace=0)
    assert failures == []
    assert {version for version, _ in answers} == {1, 3}  # never the corrupted version
    assert len({values for _, values in answers}) == 1  # both good versions answer the same
    # TF reads the checkpoint and fails as in TF Serving: OUT_OF_RANGE from the short read.
    assert status["error_code"] == "OUT_OF_RANGE"
    assert "Read less bytes than requested" in status["error_message"]
    assert str(base / "mf" / "2") in status["error_message"]
    assert final == {1: "END", 2: "END", 3: "AVAILABLE"}
    assert os.path.getsize(truncated.replace(".staging-2", "2")) > 0


def test_the_slice_keeps_the_first_users_records_byte_for_byte(tmp_path):
    from contract import description as desc

    src = tmp_path / "log.csv"
    src.write_bytes(b'who,what,note\r\n'
                    b'u2,a,"two\r\nlines, and ""quotes"""\r\n'
                    b'u1,b,plain\r\n'
                    b'u3,c,third user\r\n'
                    b'u2,d,"again"\r\n')
    source = desc.Source(files=("log.csv",), format=desc.CSV)
    assert reliability.slice_file(source, str(src), str(tmp_path / "out.csv"), "who", 2) == 3
    assert (tmp_path / "out.csv").read_bytes() == (b'who,what,note\r\n'
                                                    b'u2,a,"two\r\nlines, and ""quotes"""\r\n'
                                                    b'u1,b,plain\r\n'
                                                    b'u2,d,"again"\r\n')
    headerless = desc.Source(files=("x",), format=desc.TSV, delimiter="\t", header=False, columns=("i", "u"))
    (tmp_path / "x.tsv").write_bytes(b"a\t1\nb\t2\nc\t1\n")
    assert reliability.slice_file(headerless, str(tmp_path / "x.tsv"), str(tmp_path / "y.tsv"), "u", 1) == 2
    assert (tmp_path / "y.tsv").read_bytes() == b"a\t1\nc\t1\n"
    (tmp_path / "x.jsonl").write_bytes(b'{"u": 1, "i": "a"}\n{"u": 2, "i": "b"}\n\n{"u": 1, "i": "c"}\n')
    lines = desc.Source(files=("x.jsonl",), format=desc.JSONL)
    assert reliability.slice_file(lines, str(tmp_path / "x.jsonl"), str(tmp_path / "y.jsonl"), "u", 1) == 2


def test_the_slice_of_the_shipped_movielens_is_its_first_fifteen_users(tmp_path):
    from contract import description as desc

    d = desc.load("movielens")
    reliability.write_slice(d, d.data_dir, str(tmp_path), users=15)
    assert sorted(os.listdir(tmp_path)) == ["movies.csv", "ratings.csv"]
    with open(os.path.join(d.data_dir, "ratings.csv"), newline="") as f:
        want = "".join(line for n, line in enumerate(f) if n == 0 or int(line.split(",", 1)[0]) <= 15)
    assert (tmp_path / "ratings.csv").read_bytes() == want.encode()


def test_the_trials_gates_bless_whatever_the_family_learns(tmp_path):
    config = reliability.pipeline_config(str(tmp_path), str(tmp_path / "out"))
    assert config.gate_thresholds == {"rating": 1e9} and config.gate_max_worsening == {"rating": 1e9}
    assert config.dataset_name == "movielens" and config.train_steps == 40
