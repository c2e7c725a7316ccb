"""Three scheduled runs through Airflow (`airflow dags test` with three logical dates) on a log
that keeps arriving: each run ingests only its new span, the second warm-starts from the first
run's blessed model, and a day of drifted data is stopped without touching what is served.

Not part of `make test` (three whole pipeline runs under Airflow, about 3.5 minutes): run it
by name, `pytest tests/slow_airflow_daily.py`."""

import glob
import json
import os
import subprocess
import sys

import pytest

import daily_logs as L
from components import span_runs
from pipeline import airflow_runner, html_report

AIRFLOW = os.path.join(os.path.dirname(sys.executable), "airflow")
DATES = ("2024-01-02", "2024-01-03", "2024-01-04")


def _airflow(env, *args, timeout=1500):
    return subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=timeout)


def _states(env, date):
    proc = _airflow(env, AIRFLOW, "tasks", "states-for-dag-run", airflow_runner.DAG_ID,
                    f"manual__{date}T00:00:00+00:00", "-o", "json")
    rows = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("[{")))
    return {r["task_id"]: r["state"] for r in rows}


def _served(config):
    path = os.path.join(config.serving_model_dir, "mf")
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


@pytest.fixture(scope="module")
def daily(tmp_path_factory):
    home, out, data = (tmp_path_factory.mktemp(n) for n in ("airflow_home", "airflow_out", "daily_log"))
    d = L.write_log(data, 3)  # the first run needs three spans: train, eval, test
    description = data / "daily.json"
    description.write_text(json.dumps(d))
    schema = os.path.join(os.path.dirname(__file__), "..", "schemas", "movielens", "schema.pbtxt")
    env = dict(
        os.environ,
        TF_USE_LEGACY_KERAS="1",
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=airflow_runner.DAG_FOLDER,
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT="600",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home}/airflow.db",
        RECSYS_DATASET_FILE=str(description),
        RECSYS_OUTPUT_DIR=str(out),
        RECSYS_FAMILIES="mf",
        RECSYS_TRAIN_STEPS="20",
        RECSYS_RETRIES="0",
        RECSYS_CONFIG_JSON=json.dumps({"train_spans": 2, "schema_file": os.path.abspath(schema),
                                       "gate_thresholds": {"rating": 10.0}, "gate_max_worsening": {"rating": 10.0}}),
    )
    proc = _airflow(env, AIRFLOW, "db", "migrate")
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = airflow_runner.config_from_env(env)
    runs = {}
    for index, date in enumerate(DATES):
        if index == 1:
            L.write_day(d["data_dir"], 3)
        if index == 2:  # valid rows, but every rating is 0.5: the newest span drifted
            L.write_day(d["data_dir"], 4, rows=[(u, i, 0.5, t) for u, i, _, t in L.day_rows(4)])
        served = _served(config)
        proc = _airflow(env, AIRFLOW, "dags", "test", airflow_runner.DAG_ID, date)
        runs[date] = {"states": _states(env, date), "served_before": served, "log": proc.stdout + proc.stderr,
                      "served_after": _served(config)}
    return config, runs


def _examples_spans(config):
    """The spans of each SpanExampleGen execution, in execution order."""
    root = os.path.join(config.pipeline_root, "SpanExampleGen", "examples")
    return [sorted(int(os.path.basename(p)[len("span-"):]) for p in glob.glob(os.path.join(root, run, "span-*")))
            for run in sorted(os.listdir(root), key=int)]


def test_each_run_ingests_only_its_new_span(daily):
    config, runs = daily
    for date in DATES[:2]:
        assert set(runs[date]["states"].values()) == {"success"}, (runs[date]["states"], runs[date]["log"][-3000:])
    assert _examples_spans(config) == [[0, 1, 2], [3], [4]]


def test_the_second_run_warm_starts_from_the_first_runs_blessed_model(daily):
    config, runs = daily
    summaries = sorted(glob.glob(os.path.join(config.pipeline_root, "Trainer_mf", "model_run", "*",
                                              "training_summary.json")), key=lambda p: int(p.split(os.sep)[-2]))
    first, second = (json.load(open(p)) for p in summaries[:2])
    assert "warm_start" not in first
    warm = second["warm_start"]
    models = sorted(glob.glob(os.path.join(config.pipeline_root, "Trainer_mf", "model", "*")),
                    key=lambda p: int(os.path.basename(p)))
    assert warm["base_model"].startswith(models[0] + os.sep)
    ids = {t["vocabulary"]: t for t in warm["id_tables"].values()}
    assert ids["item_id_vocab"]["known_ids"] > 0 and warm["copied"] > 0
    assert len(runs[DATES[1]]["served_after"]) == 2  # each run's blessed model was pushed


def test_a_drifted_day_is_stopped_and_what_is_served_is_unchanged(daily):
    config, runs = daily
    third = runs[DATES[2]]
    assert third["states"]["DriftGate"] == "failed"
    assert third["states"]["Trainer_mf"] == "upstream_failed" and third["states"]["Pusher_mf"] == "upstream_failed"
    assert third["served_after"] == third["served_before"]
    entries = span_runs.read(config.output_dir)
    assert [(e["stage"], e["status"], e["spans"]) for e in entries] == [
        ("Pusher_mf", "pushed", [0, 1, 2]), ("Pusher_mf", "pushed", [3]), ("DriftGate", "stopped", [4])]
    assert "feature 'rating'" in entries[-1]["reason"]
    # The report of the last completed run shows its window and drift.
    text = open(os.path.join(config.output_dir, html_report.REPORT_NAME), encoding="utf-8").read()
    assert 'id="daily"' in text and "Drift: newest span against the training window" in text
