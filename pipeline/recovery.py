"""Cleaning up after a run that died (kill -9, power loss) and checking that nothing partial is left.

What LocalDagRunner (TFX 1.16) leaves when its process is killed mid-component: the
execution stays RUNNING in ML Metadata forever (a rerun starts a new pipeline run and
never looks at it; only a normal exception publishes FAILED and removes the outputs),
no output artifact is registered (artifacts are published only on success), and the
component's output directories `<pipeline_root>/<node>/<output>/<execution id>/` stay
on disk half-written. Downstream components never read them (they resolve LIVE
artifacts only), but they are visible and `pipeline.report` would pick them up as the
newest outputs. A push killed mid-copy leaves its hidden staging directory
`<serving>/<model>/.tmp-<version>-<pid>` (never a version directory: the Pusher renames
complete copies only).

`recover` runs at the start of every local run, after the run lock is taken (so any
RUNNING execution belongs to a dead process): it marks such executions FAILED with a
note, removes their output directories, and removes staging directories of dead pushers.
`audit` lists what would be inconsistent; the reliability benchmark and tests call it.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
from typing import Dict, List

NODE_CONTEXT = "node"
SYSTEM_DIR = ".system"
STATEFUL_DIR_INDEX = "__stateful_working_dir_index__"  # tfx.orchestration.portable.outputs_utils
RECOVERY_NOTE = "recovery"
_STAGING = re.compile(r"^\.tmp-\d+-(\d+)$")  # components/pusher.py: .tmp-<version>-<pid>


def open_store(metadata_path: str):
    """The run's ML Metadata store (SQLite at `metadata_path`, opened without creating it)."""
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = metadata_path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE
    return metadata_store.MetadataStore(config)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _node_of(store, execution_id: int, context_types: Dict[int, str]) -> str:
    for context in store.get_contexts_by_execution(execution_id):
        if context_types.get(context.type_id) == NODE_CONTEXT:
            return context.name.split(".", 1)[-1]  # "<pipeline>.<node id>"
    return ""


def _execution_dirs(pipeline_root: str, node: str, execution) -> List[str]:
    """Output and working directories of one execution under the TFX 1.16 layout:
    `<node>/<output>/<id>`, `<node>/.system/executor_execution/<id>` and
    `<node>/.system/stateful_working_dir/<uuid kept on the execution>`."""
    node_dir = os.path.join(pipeline_root, node)
    found = [
        d for d in glob.glob(os.path.join(node_dir, "*", str(execution.id)))
        if not os.path.basename(os.path.dirname(d)).startswith(".")
    ]
    found += glob.glob(os.path.join(node_dir, SYSTEM_DIR, "*", str(execution.id)))
    if STATEFUL_DIR_INDEX in execution.custom_properties:
        index = execution.custom_properties[STATEFUL_DIR_INDEX].string_value
        stateful = os.path.join(node_dir, SYSTEM_DIR, "stateful_working_dir", index)
        if index and os.path.isdir(stateful):
            found.append(stateful)
    return sorted(found)


def recover(pipeline_root: str, metadata_path: str, serving_dir: str) -> List[str]:
    """Cleans up after dead runs; returns one line per thing done. Call only with the run lock held.

    Args:
      pipeline_root: the pipeline root of the output directory.
      metadata_path: its ML Metadata SQLite file (may not exist yet).
      serving_dir: the Pusher's serving base.
    """
    notes: List[str] = []
    if os.path.exists(metadata_path):
        from ml_metadata.proto import metadata_store_pb2

        State = metadata_store_pb2.Execution.State
        store = open_store(metadata_path)
        context_types = {t.id: t.name for t in store.get_context_types()}
        live_uris = {a.uri for a in store.get_artifacts() if a.state == metadata_store_pb2.Artifact.LIVE}
        for execution in store.get_executions():
            if execution.last_known_state not in (State.NEW, State.RUNNING):
                continue
            node = _node_of(store, execution.id, context_types)
            removed = []
            if node:
                for path in _execution_dirs(pipeline_root, node, execution):
                    if path not in live_uris:
                        shutil.rmtree(path, ignore_errors=True)
                        removed.append(os.path.relpath(path, pipeline_root))
            execution.last_known_state = State.FAILED
            execution.custom_properties[RECOVERY_NOTE].string_value = (
                "the process running this execution died before it finished; "
                "marked FAILED and its partial outputs removed by a later run"
            )
            store.put_executions([execution])
            notes.append(
                f"{node or 'execution'} (execution {execution.id}) was interrupted by a dead run: marked FAILED"
                + (f", removed {', '.join(removed)}" if removed else "")
            )
    for staging in sorted(glob.glob(os.path.join(serving_dir, "*", ".tmp-*"))):
        match = _STAGING.match(os.path.basename(staging))
        if match and not _pid_alive(int(match.group(1))):
            shutil.rmtree(staging, ignore_errors=True)
            notes.append(f"removed the staging directory of an interrupted push: {staging}")
    return notes


def _artifact_problem(type_name: str, uri: str) -> str:
    """What is missing from a LIVE artifact's directory ('' when complete)."""
    if not os.path.exists(uri):
        return "its directory is missing"
    if type_name == "Examples":
        for split in ("train", "eval", "test"):
            split_dir = os.path.join(uri, f"Split-{split}")
            if not os.path.isdir(split_dir) or not os.listdir(split_dir):
                return f"Split-{split} is missing or empty"
        if not os.path.exists(os.path.join(uri, "ingest_report.json")) and glob.glob(os.path.join(uri, ".ingest-tmp-*")):
            return "it holds an ingest temporary directory"
    if type_name == "Model" and not os.path.exists(os.path.join(uri, "Format-Serving", "saved_model.pb")):
        return "Format-Serving/saved_model.pb is missing"
    if type_name == "TransformGraph" and not os.path.exists(os.path.join(uri, "transform_fn", "saved_model.pb")):
        return "transform_fn/saved_model.pb is missing"
    return ""


def audit(pipeline_root: str, metadata_path: str, serving_dir: str) -> List[str]:
    """Inconsistencies between ML Metadata, the pipeline root and the serving base ([] when none).

    Checks: no execution is left NEW or RUNNING; every LIVE artifact's directory is
    complete (examples with all splits, models with a SavedModel); every execution
    output directory on disk belongs to a LIVE artifact; every version directory of the
    serving base is a complete SavedModel and no push staging directory is left.
    """
    problems: List[str] = []
    live_uris = set()
    if os.path.exists(metadata_path):
        from ml_metadata.proto import metadata_store_pb2

        State = metadata_store_pb2.Execution.State
        store = open_store(metadata_path)
        context_types = {t.id: t.name for t in store.get_context_types()}
        artifact_types = {t.id: t.name for t in store.get_artifact_types()}
        for execution in store.get_executions():
            if execution.last_known_state in (State.NEW, State.RUNNING):
                node = _node_of(store, execution.id, context_types)
                problems.append(f"execution {execution.id} ({node}) is still {State.Name(execution.last_known_state)}")
        for artifact in store.get_artifacts():
            if artifact.state != metadata_store_pb2.Artifact.LIVE:
                continue
            live_uris.add(artifact.uri)
            problem = _artifact_problem(artifact_types.get(artifact.type_id, ""), artifact.uri)
            if problem:
                problems.append(f"LIVE artifact {artifact.id} at {artifact.uri}: {problem}")
    for path in sorted(glob.glob(os.path.join(pipeline_root, "*", "*", "*"))):
        output = os.path.basename(os.path.dirname(path))
        if output.startswith(".") or not os.path.basename(path).isdigit() or not os.path.isdir(path):
            continue
        if path not in live_uris:
            problems.append(f"output directory {path} belongs to no LIVE artifact")
    for model_dir in sorted(glob.glob(os.path.join(serving_dir, "*"))):
        for entry in sorted(os.listdir(model_dir)) if os.path.isdir(model_dir) else []:
            path = os.path.join(model_dir, entry)
            if entry.startswith(".tmp-"):
                problems.append(f"push staging directory left in the serving base: {path}")
            elif entry.isdigit():
                for needed in ("saved_model.pb", os.path.join("variables", "variables.index")):
                    if not os.path.exists(os.path.join(path, needed)):
                        problems.append(f"serving version {path} has no {needed}")
    return problems
