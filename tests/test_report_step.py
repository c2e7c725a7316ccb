"""The pipeline's report step (scheduled runs) writes the run report and model cards from a run's artifacts.

It runs on the outputs of the shared tiny run (fixture `trained_run`), wired as the
pipeline wires it, with the output directory a URI (TensorFlow's in-memory `ram://` file
system, standing in for gs://) and one family whose model the gate did not bless.
"""

import dataclasses
import json
import logging
import os
import re

import pytest
import tensorflow as tf

from pipeline import html_report, model_card, report
from pipeline.report_step import COMPONENT_ID, REPORT_KEY, REPORT_PATH_PROPERTY, Executor, RunReport


def _unblessed_push(config, outputs, tmp_path):
    """What the project's Pusher writes for mf when the Evaluator did not bless it."""
    from tfx.types import standard_artifacts

    from components.pusher import ServingPusher

    def artifact(kind, uri):
        a = kind()
        a.uri = uri
        return a

    blessing = artifact(standard_artifacts.ModelBlessing, str(tmp_path / "blessing"))
    blessing.set_int_custom_property("blessed", 0)
    pushed = artifact(standard_artifacts.PushedModel, str(tmp_path / "pushed_model"))
    ServingPusher.EXECUTOR_SPEC.executor_class().Do(
        {"model": [artifact(standard_artifacts.Model, outputs["Trainer_mf"]["model"])],
         "model_blessing": [blessing],
         "examples": [artifact(standard_artifacts.Examples, outputs["InteractionExampleGen"]["examples"])]},
        {"pushed_model": [pushed]},
        {"serving_base_dir": config.serving_model_dir, "model_name": "mf", "warmup_split": "eval"})
    return pushed.uri


def test_the_report_step_writes_report_and_cards_from_the_runs_artifacts(trained_run, tmp_path, caplog):
    from tfx.types.experimental.simple_artifacts import File

    from pipeline.pipeline import create_pipeline

    run_config, timings, _ = trained_run
    # The local runner writes the report itself after the run: its pipeline has no report step.
    assert COMPONENT_ID not in [t.name for t in timings]
    assert COMPONENT_ID not in report.output_dirs(run_config.pipeline_root)

    output_dir = f"ram://report_step/{tmp_path.name}"
    config = dataclasses.replace(run_config, output_dir=output_dir)
    step = next(c for c in create_pipeline(config).components if c.id == COMPONENT_ID)
    found = report.output_dirs(run_config.pipeline_root)
    found["Pusher_mf"] = {"pushed_model": _unblessed_push(run_config, found, tmp_path)}
    inputs = {}
    for key, (component, output) in json.loads(step.exec_properties["sources"]).items():
        artifact = step.inputs[key].type()
        artifact.uri = found[component][output]
        inputs[key] = [artifact]
    out = File()
    out.uri = str(tmp_path / "report_artifact")
    tower_push = report.family_outcome(run_config.pipeline_root, "two_tower")["push"]
    card = os.path.join(tower_push["path"], "assets.extra", model_card.CARD_NAME)
    if os.path.exists(card):  # written by another test of this run
        os.remove(card)

    with caplog.at_level(logging.INFO, logger="absl"):
        Executor().Do(inputs, {REPORT_KEY: [out]}, dict(step.exec_properties))

    path = f"{output_dir}/{html_report.REPORT_NAME}"
    assert out.get_string_custom_property(REPORT_PATH_PROPERTY) == path
    with tf.io.gfile.GFile(path) as f:
        text = f.read()
    assert open(os.path.join(out.uri, html_report.REPORT_NAME), encoding="utf-8").read() == text
    # The report and its summary for the next run's comparison; no temporary left.
    assert sorted(tf.io.gfile.listdir(output_dir)) == [html_report.REPORT_NAME, html_report.SUMMARY_NAME]
    assert f"Report: {path}" in caplog.text and f"Model card: {card}" in caplog.text
    for section in ("run", "data", "models", "family-mf", "family-two_tower"):
        assert f'id="{section}"' in text, section
    for split in ("train", "eval", "test"):
        assert f"<td>{split}</td>" in text
    # Each family as this run left it: two_tower pushed, mf evaluated but not pushed.
    tower = text[text.index('id="family-two_tower"'):]
    mf = text[text.index('id="family-mf"'):text.index('id="family-two_tower"')]
    assert f"blessed, pushed version {tower_push['version']}" in tower
    assert "not blessed, not pushed" in mf and "mf prediction: calibration" in mf
    # A card only for the pushed version.
    assert os.path.exists(card) and "# Model card: two_tower" in open(card, encoding="utf-8").read()
    assert f"Model card: {os.path.join(run_config.serving_model_dir, 'mf')}" not in caplog.text


def test_the_report_step_names_an_output_the_pipeline_lacks(tmp_path):
    from pipeline.configs import PipelineConfig

    config = dataclasses.replace(PipelineConfig(), output_dir=str(tmp_path), families=("mf",))
    with pytest.raises(ValueError, match=r"reads StatisticsGen\.statistics, .*Pusher_mf\.pushed_model, which"):
        RunReport(config, {})


def _evaluator_metrics(config, family):
    return report.split_metrics(report.output_dirs(config.pipeline_root)[f"Evaluator_{family}"]["evaluation"])


def test_the_report_reads_top_down_from_a_summary_of_the_evaluators_numbers(trained_run):
    config, timings, _ = trained_run
    text, summary = html_report.render_report(config, timings)
    # Summary first, then the families, then data and run details.
    positions = [text.index(f'id="{section}"') for section in ("summary", "models", "family-mf", "data", "run")]
    assert positions == sorted(positions)
    rows = {(r["family"], r["task"], r["metric"]): r for r in summary["rows"]}
    assert set(rows) >= {("mf", "rating", "rmse"), ("two_tower", "items", "ndcg@10"),
                         ("two_tower", "items", "ndcg@10_lift")}
    for (family, task, metric), row in rows.items():
        metrics = _evaluator_metrics(config, family)
        for split in ("eval", "test"):
            per_output = metrics[split]
            value = (per_output.get(task) or per_output[""])[metric]
            assert row[split] == value
            assert (f'data-metric="{metric}" data-split="{split}">{value:.4f}</td>') in text
    # Per family, one table per task with the slices as rows and bars under the values.
    mf = text[text.index('id="family-mf"'):text.index('id="family-two_tower"')]
    assert "Task rating: metrics per slice" in mf and '<td class="l">eval · user_activity=' in mf
    assert '<div class="bar" style="width:100%"></div>' in mf
    # Plots with labelled axes, times to 0.1 s.
    assert 'class="x-label"' in text and "mean prediction per bin (label units)" in text
    seconds = re.findall(r"<tr><td>[A-Za-z_]+</td><td>[a-z]*</td><td>([^<]+)</td></tr>", text[text.index('id="run"'):])
    assert seconds and all(re.fullmatch(r"\d+\.\d", s) for s in seconds), seconds


def test_the_report_compares_with_the_previous_run_of_its_output_directory(trained_run, tmp_path):
    config, timings, _ = trained_run
    outputs = report.output_dirs(config.pipeline_root)
    here = dataclasses.replace(config, output_dir=str(tmp_path))
    first = open(html_report.write(here, timings, outputs), encoding="utf-8").read()
    assert "No earlier report in this output directory" in first
    saved = json.loads((tmp_path / html_report.SUMMARY_NAME).read_text())
    rmse = next(r for r in saved["rows"] if (r["family"], r["metric"]) == ("mf", "rmse"))
    rmse["eval"] += 0.25  # as if the previous run had been worse by 0.25
    (tmp_path / html_report.SUMMARY_NAME).write_text(json.dumps(saved))
    second = open(html_report.write(here, timings, outputs), encoding="utf-8").read()
    assert f"Previous report written {saved['written']}" in second
    mf_summary = second[second.index('id="summary"'):second.index('id="models"')]
    assert "<td>-0.2500</td>" in mf_summary
    assert "<td>+0.0000</td>" in mf_summary  # two_tower: the same models, the same numbers


def test_the_reported_metrics_are_the_candidates_when_the_evaluator_had_a_baseline(tmp_path):
    """An Evaluator with a baseline writes each metric under both model names; the report's
    split metrics, slice tables and calibration arrays are the candidate's, whatever the order."""
    import tensorflow_model_analysis as tfma
    from tensorflow_model_analysis.proto import metrics_for_slice_pb2 as pb

    slice_metrics = pb.MetricsForSlice()
    slice_metrics.slice_key.single_slice_keys.add(column="split", bytes_value=b"eval")
    for model, rmse, bins in ((tfma.CANDIDATE_KEY, 0.9, [1.0, 2.0]), (tfma.BASELINE_KEY, 1.1, [3.0, 4.0])):
        kv = slice_metrics.metric_keys_and_values.add()
        kv.key.name, kv.key.model_name = "rmse", model
        kv.value.double_value.value = rmse
        kv = slice_metrics.metric_keys_and_values.add()
        kv.key.name, kv.key.model_name = "calibration_bins", model
        kv.value.array_value.float64_values.extend(bins)
        kv.value.array_value.shape.append(2)
    diff = slice_metrics.metric_keys_and_values.add()
    diff.key.name, diff.key.model_name, diff.key.is_diff = "rmse", tfma.CANDIDATE_KEY, True
    diff.value.double_value.value = -0.2
    with tf.io.TFRecordWriter(str(tmp_path / "metrics-00000-of-00001.tfrecord")) as writer:
        writer.write(slice_metrics.SerializeToString())

    assert report.split_metrics(str(tmp_path)) == {"eval": {"": {"rmse": 0.9}}}
    assert report.split_diffs(str(tmp_path)) == {"": {"rmse": -0.2}}
    assert html_report.slice_tables(str(tmp_path)) == {"": {"eval": {"rmse": 0.9}}}
    assert report.split_arrays(str(tmp_path), "calibration_bins")["eval"][""].tolist() == [1.0, 2.0]
