"""An Airflow DAG of the pipeline: AirflowDagRunner, a daily schedule, SQLite ML Metadata.

Airflow's DAGs folder is `dags/` of the repository (`dags/recsys_dag.py` calls
`create_dag()`); Airflow itself is in `requirements.lock`. The pipeline is the one
`pipeline.pipeline.create_pipeline` builds for the local runner; only orchestration
and metadata differ. Environment variables read when Airflow parses the DAG file:

  RECSYS_DATASET        a shipped dataset description by name (default: movielens)
  RECSYS_DATASET_FILE   or a description file of your own data (not both); the DAG's
                        components carry its content, read when Airflow parses the DAG
  RECSYS_DATA_DIR       input data (default: the description's data_dir)
  RECSYS_OUTPUT_DIR     root of what a run writes, including metadata.sqlite and the
                        report.html of the last task, RunReport (default: <repo>/outputs/airflow)
  RECSYS_FAMILIES       comma-separated model families, or 'none' (default: all)
  RECSYS_TRAIN_STEPS    trainer steps per family (default: PipelineConfig.train_steps)
  RECSYS_BEAM_PROFILE   where the Beam stages run (pipeline/configs.py BEAM_PROFILES);
                        RECSYS_BEAM_<SETTING> fill the profile's placeholders
  RECSYS_CONFIG_JSON    any other PipelineConfig fields as a JSON object, e.g.
                        '{"gate_thresholds": {"rating": 0.95}, "seed": 7, "max_history": 32}'
                        (a description's setting left out: the description's value)
  RECSYS_SCHEDULE       Airflow schedule (default '@daily'; 'none' = triggered runs only)
  RECSYS_RETRIES        retries of a failed task (default 2)
  RECSYS_RETRY_DELAY_MINUTES  wait before a retry (default 5)

`python -m pipeline.airflow_runner describe [--dag_folder DIR] [--out FILE]` has Airflow
parse the DAG folder and prints its import errors and every task with its upstream tasks
(JSON).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import sys
from typing import Any, Dict, List, Mapping, Optional

from common.io_utils import atomic_write
from pipeline.configs import REPO_ROOT, PipelineConfig, beam_args, config_fields, families_arg

DAG_ID = "recsys"  # the pipeline name (pipeline/configs.py PIPELINE_NAME)
DAG_FOLDER = os.path.join(str(REPO_ROOT), "dags")
DEFAULT_OUTPUT_DIR = os.path.join(str(REPO_ROOT), "outputs", "airflow")
START_DATE = datetime.datetime(2024, 1, 1)
ENV_PREFIX = "RECSYS_"


def _int_env(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {text!r}") from None


def _json_overrides(env: Mapping[str, str]) -> Dict[str, Any]:
    text = env.get(ENV_PREFIX + "CONFIG_JSON")
    if not text:
        return {}
    try:
        overrides = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{ENV_PREFIX}CONFIG_JSON is not valid JSON ({e}): {text!r}") from None
    if not isinstance(overrides, dict):
        raise ValueError(f"{ENV_PREFIX}CONFIG_JSON must be a JSON object of PipelineConfig fields, got {text!r}")
    return config_fields(overrides, f"{ENV_PREFIX}CONFIG_JSON")


def config_from_env(environ: Optional[Mapping[str, str]] = None) -> PipelineConfig:
    """The pipeline configuration of the DAG, from the RECSYS_* environment variables, resolved
    (the description's content in it; its settings where the variables leave them unset).

    Args:
      environ: the environment to read (default `os.environ`).
    """
    env = os.environ if environ is None else environ
    defaults = PipelineConfig()
    config = dataclasses.replace(defaults, **_json_overrides(env))
    name, file = env.get(ENV_PREFIX + "DATASET"), env.get(ENV_PREFIX + "DATASET_FILE")
    if name and file:
        raise ValueError(f"set {ENV_PREFIX}DATASET (a shipped description, {name!r}) or {ENV_PREFIX}DATASET_FILE "
                         f"(a description file, {file!r}), not both")
    if name or file:
        config = dataclasses.replace(config, dataset=name or file)
    if env.get(ENV_PREFIX + "BEAM_PROFILE"):
        profile = env[ENV_PREFIX + "BEAM_PROFILE"]
        config = dataclasses.replace(config, beam_profile=profile, beam_pipeline_args=beam_args(profile, environ=env))
    if ENV_PREFIX + "FAMILIES" in env:
        config = dataclasses.replace(config, families=families_arg(env[ENV_PREFIX + "FAMILIES"]))
    return dataclasses.replace(
        config,
        data_dir=env.get(ENV_PREFIX + "DATA_DIR") or config.data_dir,
        output_dir=env.get(ENV_PREFIX + "OUTPUT_DIR", DEFAULT_OUTPUT_DIR),
        train_steps=_int_env(env, ENV_PREFIX + "TRAIN_STEPS", config.train_steps),
    ).resolved()


def airflow_dag_config(environ: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
    """Arguments of Airflow's `DAG`: daily, no backfill, one run at a time (SQLite has one writer).

    A failed task is retried `RECSYS_RETRIES` times, `RECSYS_RETRY_DELAY_MINUTES` apart.

    Args:
      environ: the environment to read (default `os.environ`).
    """
    env = os.environ if environ is None else environ
    schedule = env.get(ENV_PREFIX + "SCHEDULE", "@daily")
    return {
        "schedule": None if schedule.strip().lower() in ("", "none") else schedule,
        "start_date": START_DATE,
        "catchup": False,
        "max_active_runs": 1,
        "default_args": {
            "retries": _int_env(env, ENV_PREFIX + "RETRIES", 2),
            "retry_delay": datetime.timedelta(minutes=_int_env(env, ENV_PREFIX + "RETRY_DELAY_MINUTES", 5)),
        },
    }


def build_pipeline(config: Optional[PipelineConfig] = None):
    """The TFX pipeline the DAG runs, with SQLite ML Metadata at `config.metadata_path`.

    Args:
      config: what the pipeline computes; default `config_from_env()`.
    """
    from tfx import v1 as tfx

    from pipeline.pipeline import create_pipeline

    config = config or config_from_env()
    return create_pipeline(
        config,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            config.metadata_path
        ),
        enable_cache=config.enable_cache,
    )


def create_dag(config: Optional[PipelineConfig] = None, environ: Optional[Mapping[str, str]] = None):
    """The Airflow DAG of `build_pipeline(config)`.

    Args:
      config: what the pipeline computes; default `config_from_env(environ)`.
      environ: the environment the schedule and retries are read from (default `os.environ`).
    """
    from tfx.orchestration.airflow.airflow_dag_runner import AirflowDagRunner, AirflowPipelineConfig

    config = config or config_from_env(environ)
    os.makedirs(config.output_dir, exist_ok=True)  # metadata.sqlite lives here
    runner = AirflowDagRunner(AirflowPipelineConfig(airflow_dag_config=airflow_dag_config(environ)))
    return runner.run(build_pipeline(config))


def dag_shape(dag) -> List[List[Any]]:
    """[task id, sorted upstream task ids] of every task of an Airflow DAG, by task id."""
    return [[t.task_id, sorted(t.upstream_task_ids)] for t in sorted(dag.tasks, key=lambda t: t.task_id)]


def describe_dag_folder(dag_folder: str = DAG_FOLDER) -> Dict[str, Any]:
    """What Airflow's DagBag finds in `dag_folder`: import errors, and each DAG's tasks and settings."""
    from airflow.models import DagBag

    bag = DagBag(dag_folder=dag_folder, include_examples=False)
    return {
        "import_errors": {path: str(error) for path, error in bag.import_errors.items()},
        "dags": {
            dag_id: {
                "fileloc": dag.fileloc,
                "tasks": dag_shape(dag),
                "schedule": str(dag.schedule_interval),
                "retries": sorted({t.retries for t in dag.tasks}),
            }
            for dag_id, dag in bag.dags.items()
        },
    }


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    describe = sub.add_parser("describe", help="parse the DAG folder with Airflow and print what it found")
    describe.add_argument("--dag_folder", default=DAG_FOLDER)
    describe.add_argument("--out", help="write the JSON here (Airflow logs to stdout) instead of stdout")
    args = parser.parse_args(argv)
    found = describe_dag_folder(args.dag_folder)
    text = json.dumps(found, indent=2, sort_keys=True) + "\n"
    if args.out:
        atomic_write(args.out, text)
    else:
        print(text, end="")
    return 1 if found["import_errors"] or not found["dags"] else 0


if __name__ == "__main__":
    sys.exit(main())
