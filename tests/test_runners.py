"""The Kubeflow and Airflow runners build the same pipeline as the local runner."""

import dataclasses
import importlib.util
import json

import pytest

from pipeline import airflow_runner
from pipeline.configs import PipelineConfig

# Component ids of the data stages, in pipeline/pipeline.py.
DATA_STAGES = {
    "InteractionExampleGen", "StatisticsGen", "ImportSchemaGen", "ExampleValidator", "AnomalyGate", "Transform",
}
HAS_MODEL_STAGES = importlib.util.find_spec("pipeline.model_stages") is not None
HAS_KFP_SPEC = importlib.util.find_spec("kfp") is not None and importlib.util.find_spec("kfp.pipeline_spec") is not None
needs_kfp_spec = pytest.mark.skipif(
    not HAS_KFP_SPEC,
    reason="KubeflowV2DagRunner imports kfp.pipeline_spec: install kfp-pipeline-spec (tfx[kfp]) to compile")
needs_model_stages = pytest.mark.skipif(
    not HAS_MODEL_STAGES,
    reason="pipeline/model_stages.py (trainer/evaluator/pusher stages) is not in this tree yet")


def _config(tmp_path, families=()):
    return dataclasses.replace(PipelineConfig(), output_dir=str(tmp_path / "out"), families=tuple(families))


def _local_pipeline(config):
    """The pipeline exactly as pipeline.local_runner.run builds it."""
    from tfx import v1 as tfx

    from pipeline.pipeline import create_pipeline

    return create_pipeline(
        config,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            config.metadata_path))


def _shape(pipeline):
    """(id, component class, sorted upstream ids) of every component."""
    return [(c.id, type(c).__name__, sorted(u.id for u in c.upstream_nodes)) for c in pipeline.components]


def _compile(tmp_path, config, **kwargs):
    from pipeline import kubeflow_runner

    output_file = tmp_path / "kubeflow" / "pipeline.json"
    compiled = kubeflow_runner.compile_pipeline(config, str(output_file), **kwargs)
    with open(output_file) as f:
        on_disk = json.load(f)
    assert on_disk["pipelineSpec"]["root"] == compiled["pipelineSpec"]["root"]
    assert not [p for p in output_file.parent.iterdir() if p.name != output_file.name], "temp files left"
    return on_disk


@needs_kfp_spec
def test_kubeflow_compiles_every_data_stage(tmp_path):
    config = dataclasses.replace(_config(tmp_path), data_dir="gs://bucket/movielens")
    compiled = _compile(tmp_path, config, image="registry.example/recsys-tfx:7", pipeline_root="gs://bucket/root")
    tasks = compiled["pipelineSpec"]["root"]["dag"]["tasks"]
    assert set(tasks) == DATA_STAGES == {c.id for c in _local_pipeline(config).components}
    # The DAG's edges are the local pipeline's.
    for component_id, _, upstream in _shape(_local_pipeline(config)):
        assert sorted(tasks[component_id].get("dependentTasks", [])) == upstream, component_id
    executors = compiled["pipelineSpec"]["deploymentSpec"]["executors"]
    assert {e["container"]["image"] for e in executors.values()} == {"registry.example/recsys-tfx:7"}
    assert compiled["runtimeConfig"]["gcsOutputDirectory"] == "gs://bucket/root"
    input_base = tasks["InteractionExampleGen"]["inputs"]["parameters"]["input_base"]
    assert "gs://bucket/movielens" in json.dumps(input_base)


@needs_kfp_spec
def test_kubeflow_main_writes_default_named_file(tmp_path, monkeypatch, capsys):
    from pipeline import kubeflow_runner

    output_file = tmp_path / "k" / "recsys_pipeline.json"
    assert kubeflow_runner.main(["--families", "none", "--output_file", str(output_file),
                                 "--output_dir", "/mnt/pvc/recsys"]) == 0
    compiled = json.loads(output_file.read_text())
    assert set(kubeflow_runner.task_names(compiled)) == DATA_STAGES
    assert compiled["runtimeConfig"]["gcsOutputDirectory"] == "/mnt/pvc/recsys/pipeline_root"
    assert kubeflow_runner.DEFAULT_IMAGE in json.dumps(compiled["pipelineSpec"]["deploymentSpec"])


@needs_kfp_spec
@needs_model_stages
def test_kubeflow_compiles_model_stages_per_family(tmp_path):
    families = PipelineConfig().families
    config = _config(tmp_path, families)
    local = _local_pipeline(config)
    tasks = set(_compile(tmp_path, config)["pipelineSpec"]["root"]["dag"]["tasks"])
    ids = {c.id for c in local.components}
    # The KFP v2 compiler splits a latest-blessed-model Resolver into "<id>-model-blessing-resolver"
    # and "<id>-model-resolver" tasks; every other component is one task named by its id.
    assert {t if t in ids else t.split("-", 1)[0] for t in tasks} == ids
    assert DATA_STAGES <= tasks
    for stage in ("Trainer", "Evaluator", "Pusher"):
        stage_ids = [c.id for c in local.components if stage in type(c).__name__]  # e.g. ServingPusher
        assert len(stage_ids) == len(families) and set(stage_ids) <= tasks, (stage, stage_ids)
        for family in families:
            assert any(family in i for i in stage_ids), (stage, family, stage_ids)


def test_airflow_pipeline_matches_local_runner(tmp_path):
    config = _config(tmp_path)
    pipeline = airflow_runner.build_pipeline(config)
    assert _shape(pipeline) == _shape(_local_pipeline(config))
    assert {c.id for c in pipeline.components} == DATA_STAGES
    assert pipeline.metadata_connection_config.sqlite.filename_uri == config.metadata_path
    assert config.metadata_path.startswith(config.output_dir)
    assert list(pipeline.beam_pipeline_args) == list(config.beam_pipeline_args)


@needs_model_stages
def test_airflow_pipeline_matches_local_runner_with_families(tmp_path):
    config = _config(tmp_path, PipelineConfig().families)
    assert _shape(airflow_runner.build_pipeline(config)) == _shape(_local_pipeline(config))


def test_airflow_config_from_env_and_schedule(tmp_path):
    env = {"RECSYS_DATA_DIR": str(tmp_path / "data"), "RECSYS_OUTPUT_DIR": str(tmp_path / "af"),
           "RECSYS_FAMILIES": "none"}
    config = airflow_runner.config_from_env(env)
    assert (config.data_dir, config.output_dir, config.families) == (env["RECSYS_DATA_DIR"],
                                                                     env["RECSYS_OUTPUT_DIR"], ())
    assert config.metadata_path == str(tmp_path / "af" / "metadata.sqlite")
    defaults = airflow_runner.config_from_env({})
    assert defaults.output_dir == airflow_runner.DEFAULT_OUTPUT_DIR
    assert defaults.families == PipelineConfig().families
    dag_config = airflow_runner.airflow_dag_config({})
    assert dag_config["schedule"] == "@daily"
    assert dag_config["catchup"] is False and dag_config["max_active_runs"] == 1
    assert dag_config["default_args"]["retries"] == 2
    manual = airflow_runner.airflow_dag_config({"RECSYS_SCHEDULE": "none", "RECSYS_RETRIES": "0",
                                                "RECSYS_RETRY_DELAY_MINUTES": "1"})
    assert manual["schedule"] is None and manual["default_args"]["retries"] == 0
    assert manual["default_args"]["retry_delay"].total_seconds() == 60


def test_airflow_config_overrides_and_bad_values_are_named(tmp_path):
    env = {"RECSYS_OUTPUT_DIR": str(tmp_path), "RECSYS_TRAIN_STEPS": "7", "RECSYS_BEAM_PROFILE": "multi_process",
           "RECSYS_BEAM_WORKERS": "3", "RECSYS_CONFIG_JSON": '{"max_rmse": 2.5, "families": ["mf"]}'}
    config = airflow_runner.config_from_env(env)
    assert (config.train_steps, config.max_rmse, config.families) == (7, 2.5, ("mf",))
    assert config.beam_profile == "multi_process"
    assert "--direct_num_workers=3" in config.beam_pipeline_args
    with pytest.raises(ValueError, match="RECSYS_TRAIN_STEPS must be an integer"):
        airflow_runner.config_from_env({"RECSYS_TRAIN_STEPS": "many"})
    with pytest.raises(ValueError, match=r"unknown fields \['max_rsme'\]"):
        airflow_runner.config_from_env({"RECSYS_CONFIG_JSON": '{"max_rsme": 1}'})
    with pytest.raises(ValueError, match="not valid JSON"):
        airflow_runner.config_from_env({"RECSYS_CONFIG_JSON": "{max_rmse: 1}"})
