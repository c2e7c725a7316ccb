"""Pipeline construction: configuration, per-family stages and the gate's EvalConfig (no runs)."""

import dataclasses
import json
import pathlib

import pytest

from evaluation.eval_config import eval_config
from pipeline import model_stages
from pipeline.configs import PipelineConfig, families_arg
from pipeline.pipeline import create_pipeline

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_families_argument():
    assert families_arg(None) == PipelineConfig.families
    assert families_arg("none") == () and families_arg("") == ()
    assert families_arg("mf, mf_dnn") == ("mf", "mf_dnn")


def test_description_settings_are_the_defaults_and_flags_override_them(tmp_path):
    movielens = PipelineConfig().resolved()
    assert movielens.dataset == "movielens" and movielens.description_file == "datasets/movielens.yaml"
    assert movielens.data_dir == str(REPO / "data" / "movielens-small")  # the description's data_dir
    assert (movielens.split, movielens.max_history, movielens.negatives_per_positive) == ("hash", 64, 0)
    assert movielens.description["name"] == "movielens" and movielens.description["data_dir"] == movielens.data_dir
    assert movielens.resolved() == movielens  # resolving twice changes nothing

    taobao = dataclasses.replace(PipelineConfig(), dataset="taobao", data_dir=str(tmp_path)).resolved()
    assert (taobao.split, taobao.eval_day, taobao.test_day) == ("by_day", "2017-12-02", "2017-12-03")
    assert taobao.schema_path.endswith("schemas/taobao/schema.pbtxt")
    # A flag wins over the description; what it leaves unset stays the description's.
    moved = dataclasses.replace(PipelineConfig(), dataset="taobao", data_dir=str(tmp_path), test_day="2017-12-04",
                                max_history=16, negatives_per_positive=2).resolved()
    assert (moved.eval_day, moved.test_day, moved.max_history, moved.negatives_per_positive) == (
        "2017-12-02", "2017-12-04", 16, 2)
    hashed = dataclasses.replace(PipelineConfig(), dataset="taobao", data_dir=str(tmp_path), split="hash").resolved()
    assert hashed.split == "hash"
    assert "eval_day" not in hashed.ingest_config()  # the days are the by_day split's only


def test_a_description_without_data_dir_or_days_or_known_name_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"'taobao' \(datasets/taobao.yaml\) names no data_dir: pass --data_dir DIR, "
                                         r"the folder holding UserBehavior_sample.csv"):
        dataclasses.replace(PipelineConfig(), dataset="taobao").resolved()
    with pytest.raises(ValueError, match="split 'by_day' needs an eval day and a test day.*--eval_day"):
        dataclasses.replace(PipelineConfig(), split="by_day").resolved()
    with pytest.raises(ValueError, match="unknown dataset 'movielns' \\(did you mean 'movielens'\\?\\)"):
        dataclasses.replace(PipelineConfig(), dataset="movielns").resolved()
    with pytest.raises(ValueError, match="dataset description not found: .*nope.yaml"):
        dataclasses.replace(PipelineConfig(), dataset=str(tmp_path / "nope.yaml")).resolved()


def test_component_configs_carry_the_description_content(tmp_path):
    config = dataclasses.replace(PipelineConfig(), dataset="taobao", data_dir=str(tmp_path), max_bad_rows=3, seed=7)
    ingest = config.ingest_config()
    assert ingest["description"] == config.resolved().description
    assert ingest["description"]["interactions"]["files"] == "UserBehavior_sample.csv"
    assert (ingest["split"], ingest["eval_day"], ingest["test_day"]) == ("by_day", "2017-12-02", "2017-12-03")
    assert (ingest["max_history"], ingest["negatives_per_positive"], ingest["seed"], ingest["max_bad_rows"]) == (
        64, 0, 7, 3)
    transform = config.transform_config()
    assert transform == {"description": ingest["description"], "max_history": 64}
    json.dumps(ingest)  # JSON-able: component properties
    # The content, not the file, decides: a config carrying it resolves where no file exists.
    carried = dataclasses.replace(PipelineConfig(), dataset="/nowhere/mine.yaml", description=ingest["description"],
                                  description_file="/nowhere/mine.yaml", data_dir=str(tmp_path))
    assert carried.resolved().dataset_name == "taobao" and carried.describe_dataset() == "taobao (/nowhere/mine.yaml)"
    # Changing `dataset` on a resolved config would keep the old content: refused.
    with pytest.raises(ValueError, match="does not match the description content"):
        dataclasses.replace(config.resolved(), dataset="movielens").resolved()


def test_local_runner_reads_a_description_file_and_its_flags(tmp_path):
    from pipeline.local_runner import _parse_args

    text = (REPO / "datasets" / "movielens.yaml").read_text().replace("name: movielens", "name: my_shop")
    text = text.replace("data_dir: ../data/movielens-small", f"data_dir: {REPO / 'data' / 'movielens-small'}")
    text = text.replace("max_length: 64", "max_length: 20")
    mine = tmp_path / "my_shop.yaml"
    mine.write_text(text)
    config = _parse_args(["--dataset_file", str(mine), "--output_dir", str(tmp_path / "out"), "--families", "none"])
    assert (config.dataset, config.dataset_name, config.max_history) == (str(mine), "my_shop", 20)
    assert config.description_file == str(mine) and config.describe_dataset() == f"my_shop ({mine})"
    assert config.schema_path == str(REPO / "schemas" / "my_shop" / "schema.pbtxt")
    flags = _parse_args(["--dataset_file", str(mine), "--output_dir", str(tmp_path), "--max_history", "8",
                         "--split", "leave_last_two_out", "--data_dir", str(tmp_path)])
    assert (flags.max_history, flags.split, flags.data_dir) == (8, "leave_last_two_out", str(tmp_path))
    assert _parse_args(["--dataset", "movielens", "--output_dir", str(tmp_path)]).dataset == "movielens"


@pytest.mark.parametrize("argv,message", [
    (["--dataset", "movielens", "--dataset_file", "x.yaml"], "not allowed with argument"),
    (["--dataset", "amazon_reviews"], "names no data_dir: pass --data_dir"),
    (["--dataset", "nope"], "invalid choice: 'nope'"),
    (["--dataset_file", "/nowhere/x.yaml"], "dataset description not found: /nowhere/x.yaml"),
])
def test_local_runner_rejects_bad_dataset_options_before_anything_runs(argv, message, capsys, tmp_path):
    from pipeline.local_runner import _parse_args

    with pytest.raises(SystemExit):
        _parse_args(argv + ["--output_dir", str(tmp_path)])
    assert message in capsys.readouterr().err


def test_a_bad_description_file_names_the_key(tmp_path, capsys):
    from pipeline.local_runner import _parse_args

    bad = tmp_path / "bad.yaml"
    bad.write_text((REPO / "datasets" / "movielens.yaml").read_text().replace("split: {method: hash}",
                                                                              "split: {method: hash, seed: 3}"))
    with pytest.raises(SystemExit):
        _parse_args(["--dataset_file", str(bad), "--output_dir", str(tmp_path)])
    assert "unknown key split.seed" in capsys.readouterr().err


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
    taobao = dataclasses.replace(PipelineConfig(), output_dir=str(tmp_path), dataset="taobao", data_dir=str(tmp_path),
                                 families=("mf",))
    with pytest.raises(ValueError, match="'mf' cannot train on dataset 'taobao': .*has no regression task"):
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
    transform = json.loads(components["Transform"].exec_properties["custom_config"])
    ingest = json.loads(components["InteractionExampleGen"].exec_properties["config"])
    assert transform["max_history"] == 32 and ingest["max_history"] == 32
    # ExampleGen, Transform and every Trainer read the same description content.
    content = config.resolved().description
    assert ingest["description"] == transform["description"] == custom["description"] == content
    assert content["name"] == "movielens"
    # The Evaluator reads the rating scale and the liked threshold from the same description
    # (without them the rating task would report neither its calibration range nor its AUC).
    evaluation = json.loads(components["Evaluator_mf"].exec_properties["eval_config"])
    (task_metrics,) = [json.loads(m["config"]) for s in evaluation["metrics_specs"] for m in s["metrics"]
                       if m["class_name"] == "TaskMetrics"]
    assert task_metrics["value_range"] == [0.5, 5.0] and task_metrics["auc_threshold"] == 4.0


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
