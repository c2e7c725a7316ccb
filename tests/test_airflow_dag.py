"""Airflow itself parses the project's DAG folder and runs the DAG end to end on a MovieLens slice.

Airflow runs in child processes (its CLI, with a temporary AIRFLOW_HOME and SQLite
metadata), configured only through the environment, as a deployment would be; the test
then reads the run's ML Metadata and the report its last task wrote.
"""

import json
import os
import subprocess
import sys

import pytest

from pipeline import airflow_runner, html_report, model_card
from pipeline.report_step import COMPONENT_ID as REPORT_STEP, REPORT_PATH_PROPERTY

AIRFLOW = os.path.join(os.path.dirname(sys.executable), "airflow")
EXECUTION_DATE = "2024-01-02"
RUN_ID = f"manual__{EXECUTION_DATE}T00:00:00+00:00"


def _airflow(env, *args, timeout=900):
    proc = subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(args)} exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-4000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def airflow_env(movielens_slice, tmp_path_factory):
    """A fresh Airflow home (SQLite metadata, the repository's DAG folder) and the DAG's RECSYS_* settings."""
    home = tmp_path_factory.mktemp("airflow_home")
    out = tmp_path_factory.mktemp("airflow_out")
    env = dict(
        os.environ,
        TF_USE_LEGACY_KERAS="1",
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=airflow_runner.DAG_FOLDER,
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT="600",  # parsing imports TFX: tens of seconds on 2 busy cores
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home}/airflow.db",
        RECSYS_DATASET="movielens",  # the shipped description; its content goes into the DAG's components
        RECSYS_DATA_DIR=str(movielens_slice),
        RECSYS_OUTPUT_DIR=str(out),
        RECSYS_FAMILIES="mf",
        RECSYS_TRAIN_STEPS="40",
        RECSYS_CONFIG_JSON=json.dumps({"gate_thresholds": {"rating": 10.0}, "gate_max_worsening": {"rating": 10.0}}),
    )
    _airflow(env, AIRFLOW, "db", "migrate")
    return env


def _local_shape(config):
    """[component id, sorted upstream ids] of the pipeline the local runner builds, by id."""
    from tfx import v1 as tfx

    from pipeline.pipeline import create_pipeline

    pipeline = create_pipeline(config, tfx.orchestration.metadata.sqlite_metadata_connection_config(
        config.metadata_path), report_step=False)
    return sorted([c.id, sorted(u.id for u in c.upstream_nodes)] for c in pipeline.components)


def _dag_shape(config):
    """The local runner's graph plus the report step, after the data stages and every family's stages."""
    report = [REPORT_STEP, sorted(["StatisticsGen", "ExampleValidator", "Transform"] + [
        f"{stage}_{f}" for f in config.families for stage in ("Trainer", "Evaluator", "Pusher")])]
    return sorted(_local_shape(config) + [report])


def test_airflow_loads_the_dag_with_the_local_runners_graph(airflow_env, tmp_path):
    described = tmp_path / "dagbag.json"
    _airflow(airflow_env, sys.executable, "-m", "pipeline.airflow_runner", "describe", "--out", str(described))
    found = json.loads(described.read_text())
    assert found["import_errors"] == {}
    assert list(found["dags"]) == [airflow_runner.DAG_ID]
    dag = found["dags"][airflow_runner.DAG_ID]
    assert dag["fileloc"] == os.path.join(airflow_runner.DAG_FOLDER, "recsys_dag.py")
    assert (dag["schedule"], dag["retries"]) == ("@daily", [2])
    config = airflow_runner.config_from_env(airflow_env)
    assert (config.families, config.train_steps, config.gate_thresholds) == (("mf",), 40, {"rating": 10.0})
    assert config.dataset_name == "movielens" and config.description["data_dir"] == airflow_env["RECSYS_DATA_DIR"]
    assert dag["tasks"] == _dag_shape(config)
    assert {"Trainer_mf", "Evaluator_mf", "Pusher_mf", "Transform"} <= {t for t, _ in dag["tasks"]}
    assert "Pusher_mf" in dict(dag["tasks"])[REPORT_STEP]


def test_airflow_runs_the_dag_and_metadata_holds_the_pushed_model(airflow_env):
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    _airflow(airflow_env, AIRFLOW, "dags", "test", airflow_runner.DAG_ID, EXECUTION_DATE)
    states = _airflow(airflow_env, AIRFLOW, "tasks", "states-for-dag-run", airflow_runner.DAG_ID, RUN_ID,
                      "-o", "json")
    rows = json.loads(next(line for line in states.splitlines() if line.startswith("[{")))
    assert {r["task_id"]: r["state"] for r in rows} == {t: "success" for t, _ in _dag_shape(
        airflow_runner.config_from_env(airflow_env))}

    config = airflow_runner.config_from_env(airflow_env)
    connection = metadata_store_pb2.ConnectionConfig()
    connection.sqlite.filename_uri = config.metadata_path
    store = metadata_store.MetadataStore(connection)
    pushed = [a for a in store.get_artifacts_by_type("PushedModel")
              if a.custom_properties["pushed"].int_value == 1]
    assert len(pushed) == 1
    destination = pushed[0].custom_properties["pushed_destination"].string_value
    assert destination.startswith(os.path.join(config.serving_model_dir, "mf") + os.sep)
    assert os.path.exists(os.path.join(destination, "saved_model.pb"))
    # The push belongs to this Airflow run.
    assert pushed[0].custom_properties["name"].string_value.endswith(RUN_ID)

    # The last task wrote the run report (in its artifact and the output directory) and the pushed model's card.
    [artifact] = store.get_artifacts_by_type("File")
    report_path = os.path.join(config.output_dir, html_report.REPORT_NAME)
    assert artifact.custom_properties[REPORT_PATH_PROPERTY].string_value == report_path
    text = open(report_path, encoding="utf-8").read()
    assert open(os.path.join(artifact.uri, html_report.REPORT_NAME), encoding="utf-8").read() == text
    assert 'id="family-mf"' in text and f"blessed, pushed version {os.path.basename(destination)}" in text
    assert os.path.exists(os.path.join(destination, "assets.extra", model_card.CARD_NAME))
