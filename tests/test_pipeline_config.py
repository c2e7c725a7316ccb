"""Pipeline construction: configuration, per-family stages and the gate's EvalConfig (no runs)."""

import dataclasses
import json

import pytest

from evaluation.eval_config import eval_config
from pipeline import model_stages
from pipeline.configs import PipelineConfig, families_arg
from pipeline.pipeline import create_pipeline


def test_families_argument():
    assert families_arg(None) == PipelineConfig.families
    assert families_arg("none") == () and families_arg("") == ()
    assert families_arg("mf, mf_dnn") == ("mf", "mf_dnn")


def test_ingest_config_per_dataset():
    movielens = PipelineConfig().ingest_config()
    assert (movielens["interactions"], movielens["items"], movielens["split"]) == ("ratings.csv", "movies.csv", "hash")
    taobao = dataclasses.replace(PipelineConfig(), dataset="taobao", split="by_day").ingest_config()
    assert taobao["interactions"] == "UserBehavior_sample.csv"
    assert taobao["items"] is None and taobao["test_day"] == "2017-12-03"
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        dataclasses.replace(PipelineConfig(), dataset="nope").ingest_config()


def test_pipeline_has_one_trainer_evaluator_pusher_per_family(tmp_path):
    config = dataclasses.replace(PipelineConfig(), output_dir=str(tmp_path), families=("mf", "mf_dnn_liked"))
    ids = [c.id for c in create_pipeline(config).components]
    for family in config.families:
        for stage in ("Trainer", "Resolver", "Evaluator", "Pusher"):
            assert f"{stage}_{family}" in ids
    assert ids.count("Transform") == 1


def test_unknown_family_and_family_without_its_label_fail_when_built(tmp_path):
    with pytest.raises(ValueError, match="unknown model family 'svd'"):
        create_pipeline(dataclasses.replace(PipelineConfig(), output_dir=str(tmp_path), families=("svd",)))
    taobao = dataclasses.replace(PipelineConfig(), output_dir=str(tmp_path), dataset="taobao", families=("mf",))
    with pytest.raises(ValueError, match="cannot train on dataset 'taobao'.*no task 'rating'"):
        create_pipeline(taobao)
    bad = dataclasses.replace(PipelineConfig(), output_dir=str(tmp_path), hparams={"mf": {"dimm": "3"}})
    with pytest.raises(ValueError, match="no hyperparameter 'dimm'"):
        create_pipeline(bad)


def test_trainer_and_evaluator_read_the_view_of_their_family(tmp_path):
    config = dataclasses.replace(PipelineConfig(), output_dir=str(tmp_path), families=("mf", "two_tower"),
                                 hparams={"mf": {"dim": "8"}}, max_history=32)
    components = {c.id: c for c in create_pipeline(config).components}
    mf, tower = components["Trainer_mf"], components["Trainer_two_tower"]
    assert mf.inputs["examples"].producer_component_id == "Transform"
    assert tower.inputs["examples"].output_key == "user_examples"
    assert components["Evaluator_two_tower"].inputs["examples"].output_key == "user_examples"
    assert components["Evaluator_mf"].inputs["examples"].output_key == "examples"
    custom = json.loads(mf.exec_properties["custom_config"])
    assert custom["hparams"]["dim"] == 8 and custom["max_history"] == 32
    assert json.loads(components["Transform"].exec_properties["custom_config"])["max_history"] == 32
    assert json.loads(components["InteractionExampleGen"].exec_properties["config"])["max_history"] == 32


@pytest.mark.parametrize("family,metric,bound", [("mf", "rmse", "upper_bound"), ("mf_dnn_liked", "auc", "lower_bound"),
                                                  ("two_tower", "ndcg@10_lift", "lower_bound")])
def test_gates_read_the_eval_split_slice(family, metric, bound):
    config = eval_config(model_stages.family_tasks(PipelineConfig(gate_thresholds={"liked": 0.65}), family))
    (spec,) = config.metrics_specs
    value = [t for t in spec.per_slice_thresholds[metric].thresholds if t.threshold.HasField("value_threshold")]
    assert len(value) == 1
    (slicing,) = value[0].slicing_specs
    assert dict(slicing.feature_values) == {"split": "eval"}
    assert value[0].threshold.value_threshold.HasField(bound)
    if family == "mf_dnn_liked":
        assert value[0].threshold.value_threshold.lower_bound.value == 0.65
    change = [t for name in spec.per_slice_thresholds for t in spec.per_slice_thresholds[name].thresholds
              if t.threshold.HasField("change_threshold")]
    assert len(change) == 1
    assert all(s.feature_keys[0] == "split" for s in config.slicing_specs)


def test_schema_file_option_replaces_the_curated_schema(tmp_path):
    from pipeline.local_runner import _parse_args

    assert PipelineConfig().schema_path.endswith("schemas/movielens/schema.pbtxt")
    other = tmp_path / "schema.inferred.pbtxt"
    config = _parse_args(["--output_dir", str(tmp_path), "--families", "none", "--schema_file", str(other)])
    assert config.schema_path == str(other)
    components = {c.id: c for c in create_pipeline(config).components}
    assert components["ImportSchemaGen"].exec_properties["schema_file"] == str(other)
    assert components["AnomalyGate"].exec_properties["schema_file"] == str(other)


def test_sequential_families_are_evaluated_with_protocol_s(tmp_path):
    from contract import protocol
    from evaluation.eval_config import PROTOCOL_S

    config = dataclasses.replace(PipelineConfig(), output_dir=str(tmp_path), families=("sasrec", "two_tower"),
                                 split="leave_last_two_out")
    components = {c.id: c for c in create_pipeline(config).components}
    assert components["Trainer_sasrec"].inputs["examples"].output_key == "user_examples"
    tasks = model_stages.family_tasks(config, "sasrec")
    sequential = eval_config(tasks, protocol_name=PROTOCOL_S)
    (spec,) = sequential.metrics_specs
    assert sequential.model_specs[0].signature_name == protocol.SCORE_QUERIES
    assert [m.class_name for m in spec.metrics] == ["NextItemMetrics"]
    (gate,) = spec.per_slice_thresholds["ndcg@10_lift"].thresholds
    assert dict(gate.slicing_specs[0].feature_values) == {"split": "eval"}
    assert spec.per_slice_thresholds["ndcg@10"].thresholds[0].threshold.HasField("change_threshold")
    assert eval_config(tasks).model_specs[0].signature_name == protocol.RANK_QUERIES  # protocol K stays the default
    with pytest.raises(ValueError, match="protocol_name"):
        eval_config(tasks, protocol_name="R")
