"""Pipeline construction: configuration, per-family stages and the gate's EvalConfig (no runs)."""

import dataclasses

import pytest

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
    with pytest.raises(ValueError, match="predicts 'rating', which dataset 'taobao' does not have"):
        create_pipeline(taobao)


@pytest.mark.parametrize("family,gated,bound", [("mf", "RatingRMSE", "upper_bound"), ("mf_dnn_liked", "LikedAUC", "lower_bound")])
def test_gate_thresholds_apply_to_the_overall_slice_only(family, gated, bound):
    config = model_stages.eval_config(PipelineConfig(), family)
    thresholds = [
        (m.class_name, t)
        for spec in config.metrics_specs
        for m in spec.metrics
        for t in m.per_slice_thresholds
    ]
    assert [name for name, _ in thresholds] == [gated]
    threshold = thresholds[0][1]
    assert len(threshold.slicing_specs) == 1 and not threshold.slicing_specs[0].feature_keys
    assert threshold.threshold.value_threshold.HasField(bound)
    assert threshold.threshold.HasField("change_threshold")
    assert {tuple(s.feature_keys) for s in config.slicing_specs} == {(), ("user_activity",), ("item_genres",)}


def test_schema_file_option_replaces_the_curated_schema(tmp_path):
    from pipeline.local_runner import _parse_args

    assert PipelineConfig().schema_path.endswith("schemas/movielens/schema.pbtxt")
    other = tmp_path / "schema.inferred.pbtxt"
    config = _parse_args(["--output_dir", str(tmp_path), "--families", "none", "--schema_file", str(other)])
    assert config.schema_path == str(other)
    components = {c.id: c for c in create_pipeline(config).components}
    assert components["ImportSchemaGen"].exec_properties["schema_file"] == str(other)
    assert components["AnomalyGate"].exec_properties["schema_file"] == str(other)
