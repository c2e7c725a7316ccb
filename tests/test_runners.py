"""The Kubeflow and Airflow runners build the same pipeline as the local runner."""

import dataclasses
import fnmatch
import importlib.util
import json
import os
import pathlib

import pytest
import yaml

from pipeline import airflow_runner
from pipeline.configs import PipelineConfig

REPO = pathlib.Path(__file__).resolve().parents[1]
# Component ids of the data stages, in pipeline/pipeline.py.
DATA_STAGES = {
    "InteractionExampleGen", "StatisticsGen", "ImportSchemaGen", "ExampleValidator", "AnomalyGate", "Transform",
}
# The scheduled runners' last step (pipeline/report_step.py); the local runner writes the report itself.
REPORT_STEP = "RunReport"


def _config(tmp_path, families=()):
    return dataclasses.replace(PipelineConfig(), output_dir=str(tmp_path / "out"), families=tuple(families))


def _local_pipeline(config):
    """The pipeline exactly as pipeline.local_runner.run builds it."""
    from tfx import v1 as tfx

    from pipeline.pipeline import create_pipeline

    return create_pipeline(
        config,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            config.metadata_path),
        report_step=False)


def _report_upstream(families):
    """What the report step runs after: the data stages it reads, Transform, and each family's Trainer,
    Evaluator and Pusher."""
    return sorted(["StatisticsGen", "ExampleValidator", "Transform"]
                  + [f"{stage}_{f}" for f in families for stage in ("Trainer", "Evaluator", "Pusher")])


def _shape(pipeline):
    """(id, component class, sorted upstream ids) of every component."""
    return [(c.id, type(c).__name__, sorted(u.id for u in c.upstream_nodes)) for c in pipeline.components]


def _compile(tmp_path, config, name="pipeline.yaml", **kwargs):
    from pipeline import kubeflow_runner

    output_file = tmp_path / "kubeflow" / name
    spec = kubeflow_runner.compile_pipeline(config, str(output_file), **kwargs)
    assert not [p for p in output_file.parent.iterdir() if p.name != output_file.name], "temp files left"
    return spec, output_file


def _task_id(task, ids):
    """The component id of a spec task: the KFP v2 compiler splits a latest-blessed-model Resolver into
    "<id>-model-blessing-resolver" and "<id>-model-resolver" tasks; other tasks are named by their id."""
    return task if task in ids else task.split("-", 1)[0]


IMAGE_MOVIELENS = "/pipeline/data/movielens-small"  # the shipped data inside the image (Dockerfile)


def _kfp_config(tmp_path, families):
    from pipeline import kubeflow_runner

    return kubeflow_runner.image_config(dataclasses.replace(_config(tmp_path, families), output_dir="gs://bucket/recsys"))


def _description_file(tmp_path, name="my_shop"):
    """A description of the MovieLens files under another name, in a file outside the repository."""
    text = (REPO / "datasets" / "movielens.yaml").read_text().replace("name: movielens", f"name: {name}")
    path = tmp_path / f"{name}.yaml"
    path.write_text(text.replace("data_dir: ../data/movielens-small\n", ""))
    return path


def test_kubeflow_spec_read_back_by_the_kfp_sdk_matches_the_local_pipeline(tmp_path):
    import kfp.components
    from google.protobuf import json_format
    from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_entrypoint_utils as entrypoint
    from tfx.utils import import_utils

    from kfp.pipeline_spec import pipeline_spec_pb2
    from pipeline import kubeflow_runner
    from pipeline.configs import REPO_ROOT

    families = PipelineConfig().families
    config = dataclasses.replace(_kfp_config(tmp_path, families), train_steps=123)
    _, output_file = _compile(tmp_path, config, image="registry.example/recsys-tfx:7")
    text = output_file.read_text()
    assert str(REPO_ROOT) not in text and "/tmp/" not in text  # nothing of the compiling machine

    loaded = kfp.components.load_component_from_file(str(output_file))  # the KFP SDK's own reader
    spec = json_format.MessageToDict(loaded.pipeline_spec)
    from pipeline.pipeline import create_pipeline

    local = create_pipeline(config)  # as the local runner builds it, minus the (local) metadata store, plus the report
    order = [c.id for c in local.components]  # the local runner's (topological) order
    upstream = {c.id: sorted(u.id for u in c.upstream_nodes) for c in local.components}
    assert order[-1] == REPORT_STEP and upstream[REPORT_STEP] == _report_upstream(families)

    # Components: every local component is a task (the Resolvers as two), the report step, and nothing else.
    tasks = spec["root"]["dag"]["tasks"]
    assert {_task_id(t, upstream) for t in tasks} == set(order)
    assert sorted(tasks[REPORT_STEP]["dependentTasks"]) == _report_upstream(families)  # after every Pusher
    for family in families:
        assert {f"Trainer_{family}", f"Evaluator_{family}", f"Pusher_{family}"} <= set(tasks)
    assert f"# Families: {', '.join(families)}" in text
    # Order: a task depends on exactly the local component's upstream components, all earlier.
    for task, body in tasks.items():
        component = _task_id(task, upstream)
        depends = sorted({_task_id(t, upstream) for t in body.get("dependentTasks", [])} - {component})
        assert depends == [u for u in upstream[component] if not u.startswith("Resolver_")] or \
            depends == upstream[component], (task, depends, upstream[component])
        assert all(order.index(d) < order.index(component) for d in depends), task

    # Runtime parameters, as the SDK sees them: optional, defaulting to what the local pipeline computes.
    inputs = loaded.component_spec.inputs
    assert set(inputs) == {kubeflow_runner.DATA_ROOT, kubeflow_runner.TRAIN_ARGS}
    assert inputs["data_root"].default == IMAGE_MOVIELENS and inputs["data_root"].optional
    assert json.loads(inputs["train_args"].default) == {"num_steps": 123} and inputs["train_args"].optional
    assert tasks["InteractionExampleGen"]["inputs"]["parameters"]["input_base"] == {
        "componentInputParameter": "data_root"}
    for family in families:
        assert tasks[f"Trainer_{family}"]["inputs"]["parameters"]["train_args"] == {
            "componentInputParameter": "train_args"}
    # The report names the run's data_root, and goes to the output directory as the containers see it.
    report_parameters = tasks[REPORT_STEP]["inputs"]["parameters"]
    assert report_parameters["data_dir"] == {"componentInputParameter": "data_root"}
    assert json.loads(report_parameters["config"]["runtimeValue"]["constant"])["output_dir"] == "gs://bucket/recsys"
    schema_file = tasks["ImportSchemaGen"]["inputs"]["parameters"]["schema_file"]["runtimeValue"]["constant"]
    assert schema_file == kubeflow_runner.IMAGE_SCHEMA_DIR + "/movielens/schema.pbtxt"

    executors = spec["deploymentSpec"]["executors"]
    assert {e["container"]["image"] for e in executors.values() if "container" in e} == {
        "registry.example/recsys-tfx:7"}
    assert executors[REPORT_STEP + "_executor"]["container"]["args"][:2] == [
        "--executor_class_path", "pipeline.report_step.Executor"]
    # Every artifact type is a schemaTitle that TFX's container entrypoint maps to an importable class.
    titles = set()
    for component in spec["components"].values():
        for side in ("inputDefinitions", "outputDefinitions"):
            for artifact in component.get(side, {}).get("artifacts", {}).values():
                assert set(artifact["artifactType"]) == {"schemaTitle", "schemaVersion"}, artifact
                titles.add(artifact["artifactType"]["schemaTitle"])
    assert {"tfx.Examples", "tfx.TransformGraph", "tfx.Model", "tfx.ModelBlessing", "tfx.PushedModel",
            "tfx.File"} <= titles
    for title in titles:
        type_schema = pipeline_spec_pb2.ArtifactTypeSchema(schema_title=title)
        assert import_utils.import_class_by_path(entrypoint._retrieve_class_path(type_schema)).TYPE_NAME


def test_kubeflow_vertex_job_keeps_instance_schemas_and_sets_parameter_values(tmp_path):
    from pipeline import kubeflow_runner

    config = _kfp_config(tmp_path, ())
    _compile(tmp_path, config, name="job.json", target="vertex", pipeline_root="gs://bucket/root")
    job = json.loads((tmp_path / "kubeflow" / "job.json").read_text())
    assert job["runtimeConfig"]["gcsOutputDirectory"] == "gs://bucket/root"
    assert job["runtimeConfig"]["parameterValues"] == {"data_root": IMAGE_MOVIELENS}
    assert set(kubeflow_runner.task_names(job["pipelineSpec"])) == DATA_STAGES | {REPORT_STEP}
    assert "instanceSchema" in json.dumps(job["pipelineSpec"]["components"])


def test_kubeflow_spec_carries_the_description_content_not_its_file(tmp_path):
    from pipeline import kubeflow_runner

    mine = _description_file(tmp_path)
    output_file = tmp_path / "k" / "spec.yaml"
    assert kubeflow_runner.main(["--dataset_file", str(mine), "--data_dir", "gs://bucket/shop", "--families", "mf",
                                 "--output_dir", "gs://bucket/out", "--output_file", str(output_file)]) == 0
    text = output_file.read_text()
    assert str(tmp_path) not in text and str(REPO) not in text  # no path of the compiling machine
    spec = yaml.safe_load(text)
    tasks = spec["root"]["dag"]["tasks"]
    expected = dict(yaml.safe_load(mine.read_text()), data_dir="gs://bucket/shop")

    def constant(task, name):
        return json.loads(tasks[task]["inputs"]["parameters"][name]["runtimeValue"]["constant"])

    assert constant("InteractionExampleGen", "config")["description"] == expected
    assert constant("Transform", "custom_config")["description"] == expected
    assert constant("Trainer_mf", "custom_config")["description"] == expected
    assert spec["root"]["inputDefinitions"]["parameters"]["data_root"]["defaultValue"] == "gs://bucket/shop"
    schema_file = tasks["ImportSchemaGen"]["inputs"]["parameters"]["schema_file"]["runtimeValue"]["constant"]
    assert schema_file == kubeflow_runner.IMAGE_SCHEMA_DIR + "/my_shop/schema.pbtxt"
    # Where the file does not exist, the report step's configuration still resolves from the content.
    mine.unlink()
    config = PipelineConfig.from_json(json.dumps(constant("RunReport", "config"))).resolved()
    assert config.dataset_name == "my_shop" and config.describe_dataset() == "my_shop (my_shop.yaml)"
    assert config.spec.task("rating").kind == "regression"


def test_kubeflow_needs_a_data_dir_for_data_outside_the_image(tmp_path, capsys):
    from pipeline import kubeflow_runner

    mine = _description_file(tmp_path)
    mine.write_text(mine.read_text() + f"data_dir: {REPO / 'data' / 'movielens-small'}\n")
    config = kubeflow_runner.image_config(dataclasses.replace(PipelineConfig(), dataset=str(mine)))
    assert config.data_dir == IMAGE_MOVIELENS and config.description["data_dir"] == IMAGE_MOVIELENS
    mine.write_text(mine.read_text().replace(str(REPO / "data" / "movielens-small"), str(tmp_path)))
    with pytest.raises(SystemExit):
        kubeflow_runner.main(["--dataset_file", str(mine), "--output_dir", "gs://b/o", "--families", "none",
                              "--output_file", str(tmp_path / "x.yaml")])
    assert "is not in the image: pass --data_dir" in capsys.readouterr().err


def test_kubeflow_main_needs_an_output_dir_and_defaults_to_the_images_data(tmp_path, capsys):
    from pipeline import kubeflow_runner

    with pytest.raises(SystemExit):
        kubeflow_runner.main(["--families", "none"])
    assert "--output_dir" in capsys.readouterr().err
    output_file = tmp_path / "k" / "recsys_pipeline.yaml"
    assert kubeflow_runner.main(["--families", "none", "--output_file", str(output_file),
                                 "--output_dir", "/mnt/pvc/recsys", "--beam_profile", "multi_process"]) == 0
    spec = yaml.safe_load(output_file.read_text())
    assert set(kubeflow_runner.task_names(spec)) == DATA_STAGES | {REPORT_STEP}
    data_root = spec["root"]["inputDefinitions"]["parameters"]["data_root"]
    assert data_root["defaultValue"] == "/pipeline/data/movielens-small"
    assert kubeflow_runner.DEFAULT_IMAGE in json.dumps(spec["deploymentSpec"])
    assert "--direct_running_mode=multi_processing" in json.dumps(spec["deploymentSpec"])
    printed = capsys.readouterr().out
    assert "Runtime parameters: data_root" in printed
    assert json.loads(printed.splitlines()[-1])["report"] == "/mnt/pvc/recsys/report.html"


def _dockerfile():
    instructions, current = [], ""
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if line.strip().startswith("#") or not line.strip():
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            instructions.append(current.strip())
            current = ""
    return instructions


def _dockerignored(path):
    patterns = [p.strip() for p in (REPO / ".dockerignore").read_text().splitlines() if p.strip()]
    parts = path.split("/")
    return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(parts[0], p) or
               (p.startswith("**/") and any(fnmatch.fnmatch(x, p[3:]) for x in parts)) for p in patterns)


def test_dockerfile_builds_on_the_tfx_image_from_files_that_exist():
    from importlib import metadata

    from pipeline import kubeflow_runner

    instructions = _dockerfile()
    assert instructions[0] == f"FROM tensorflow/tfx:{metadata.version('tfx')}"
    assert f"WORKDIR {kubeflow_runner.IMAGE_ROOT}" in instructions
    copies = [i.split()[1:] for i in instructions if i.startswith("COPY ")]
    for args in copies:
        if args[0].startswith("--from="):  # Beam's SDK image of the locked Beam version
            assert args[0] == f"--from=apache/beam_python3.10_sdk:{metadata.version('apache-beam')}"
            continue
        for source in args[:-1]:
            assert (REPO / source).exists(), source
            assert source == "." or not _dockerignored(source), source
    # What the image needs from the repository is not excluded from the build context.
    for path in ("requirements.lock", "setup.py", "data/movielens-small/ratings.csv", "datasets/movielens.yaml",
                 "datasets/description.schema.json", "schemas/movielens/schema.pbtxt", "pipeline/pipeline.py", "components/example_gen/executor.py"):
        assert (REPO / path).exists() and not _dockerignored(path), path
    for image_path in (IMAGE_MOVIELENS, kubeflow_runner.IMAGE_SCHEMA_DIR, kubeflow_runner.IMAGE_ROOT + "/datasets"):
        assert (REPO / os.path.relpath(image_path, kubeflow_runner.IMAGE_ROOT)).is_dir(), image_path
    for excluded in (".venv/bin/python", "outputs/metadata.sqlite", ".git/HEAD"):
        assert _dockerignored(excluded), excluded
    runs = " ".join(i for i in instructions if i.startswith("RUN "))
    assert "-r requirements.lock" in runs and "-e ." in runs
    for module in ("pipeline.pipeline", "components.example_gen", "transform.preprocessing", "training.trainer",
                   "pipeline.report_step"):
        assert importlib.util.find_spec(module) is not None, module


def test_airflow_pipeline_matches_local_runner(tmp_path):
    config = _config(tmp_path)
    pipeline = airflow_runner.build_pipeline(config)
    assert _shape(pipeline) == _shape(_local_pipeline(config)) + [(REPORT_STEP, "RunReport", _report_upstream(()))]
    assert {c.id for c in pipeline.components} == DATA_STAGES | {REPORT_STEP}
    assert pipeline.metadata_connection_config.sqlite.filename_uri == config.metadata_path
    assert config.metadata_path.startswith(config.output_dir)
    assert list(pipeline.beam_pipeline_args) == list(config.beam_pipeline_args)


def test_airflow_pipeline_matches_local_runner_with_families(tmp_path):
    config = _config(tmp_path, PipelineConfig().families)
    assert _shape(airflow_runner.build_pipeline(config)) == _shape(_local_pipeline(config)) + [
        (REPORT_STEP, "RunReport", _report_upstream(config.families))]


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


def test_airflow_dag_carries_the_description_content(tmp_path):
    mine = _description_file(tmp_path)
    env = {"RECSYS_DATASET_FILE": str(mine), "RECSYS_DATA_DIR": str(tmp_path / "data"),
           "RECSYS_OUTPUT_DIR": str(tmp_path / "af"), "RECSYS_FAMILIES": "mf",
           "RECSYS_CONFIG_JSON": '{"max_history": 16}'}
    config = airflow_runner.config_from_env(env)
    assert (config.dataset_name, config.max_history, config.split) == ("my_shop", 16, "hash")
    components = {c.id: c for c in airflow_runner.build_pipeline(config).components}
    expected = dict(yaml.safe_load(mine.read_text()), data_dir=str(tmp_path / "data"))
    assert json.loads(components["InteractionExampleGen"].exec_properties["config"])["description"] == expected
    assert json.loads(components["Transform"].exec_properties["custom_config"]) == {
        "description": expected, "max_history": 16}
    assert json.loads(components["Trainer_mf"].exec_properties["custom_config"])["description"] == expected
    report_config = json.loads(components["RunReport"].exec_properties["config"])
    assert report_config["description"] == expected and report_config["description_file"] == str(mine)
    shipped = airflow_runner.config_from_env({"RECSYS_DATASET": "taobao", "RECSYS_DATA_DIR": str(tmp_path)})
    assert (shipped.dataset_name, shipped.split) == ("taobao", "by_day")
    with pytest.raises(ValueError, match="RECSYS_DATASET .* or RECSYS_DATASET_FILE .*, not both"):
        airflow_runner.config_from_env({"RECSYS_DATASET": "taobao", "RECSYS_DATASET_FILE": str(mine)})
    with pytest.raises(ValueError, match="names no data_dir"):
        airflow_runner.config_from_env({"RECSYS_DATASET": "amazon_reviews"})


def test_airflow_config_overrides_and_bad_values_are_named(tmp_path):
    env = {"RECSYS_OUTPUT_DIR": str(tmp_path), "RECSYS_TRAIN_STEPS": "7", "RECSYS_BEAM_PROFILE": "multi_process",
           "RECSYS_BEAM_WORKERS": "3", "RECSYS_CONFIG_JSON": '{"gate_thresholds": {"rating": 2.5}, "families": ["mf"]}'}
    config = airflow_runner.config_from_env(env)
    assert (config.train_steps, config.gate_thresholds, config.families) == (7, {"rating": 2.5}, ("mf",))
    assert config.beam_profile == "multi_process"
    assert "--direct_num_workers=3" in config.beam_pipeline_args
    with pytest.raises(ValueError, match="RECSYS_TRAIN_STEPS must be an integer"):
        airflow_runner.config_from_env({"RECSYS_TRAIN_STEPS": "many"})
    with pytest.raises(ValueError, match=r"unknown fields \['max_rsme'\]"):
        airflow_runner.config_from_env({"RECSYS_CONFIG_JSON": '{"max_rsme": 1}'})
    with pytest.raises(ValueError, match="not valid JSON"):
        airflow_runner.config_from_env({"RECSYS_CONFIG_JSON": "{seed: 1}"})
