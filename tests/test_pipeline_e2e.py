"""The whole pipeline with LocalDagRunner on a small MovieLens slice, and on a synthetic log
of one's own in JSON lines described by a file.

One blessed run (fixture `trained_run`) is shared; other runs change one thing each:
the eval/test rows (train-only statistics), an unreachable gate, an anomaly, a
malformed file, another dataset.
"""

import dataclasses
import glob
import io
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from components.example_gen.splits import hash_split
from contract import description as desc
from contract import features as F
from transform import preprocessing
from pipeline import report
from pipeline.configs import PipelineConfig
from pipeline.local_runner import PipelineFailed, run

DATA_STAGES = ["InteractionExampleGen", "StatisticsGen", "ImportSchemaGen", "ExampleValidator", "AnomalyGate", "Transform"]
# MovieLens's multi-valued item feature, as its description declares it.
GENRES = next(f for f in desc.load("movielens").item_features if f.type == desc.MULTI_CATEGORICAL)


def _data_config(data_dir, output_dir, **overrides):
    return dataclasses.replace(
        PipelineConfig(), data_dir=str(data_dir), output_dir=str(output_dir), families=(), **overrides
    )


def _newest(config, component, output):
    return report.output_dirs(config.pipeline_root)[component][output]


def test_every_stage_runs_in_data_flow_order(trained_run):
    config, timings, progress = trained_run
    names = [t.name for t in timings]
    assert all(t.status == "ok" for t in timings), timings
    for name in DATA_STAGES + ["Trainer_mf", "Evaluator_mf", "Pusher_mf", "Pusher_two_tower"]:
        assert name in names
    order = names.index
    assert order("InteractionExampleGen") < order("StatisticsGen") < order("ExampleValidator")
    assert order("ExampleValidator") < order("AnomalyGate") < order("Transform") < order("Trainer_mf")
    assert order("Trainer_mf") < order("Evaluator_mf") < order("Pusher_mf")
    # One progress line per component, with its status and seconds.
    lines = [line for line in progress.splitlines() if line.strip()]
    assert len(lines) == len(timings)
    assert all(line.split()[1] == "ok" and line.endswith(" s") for line in lines)
    # The TensorFlow/Beam logs went to the file instead.
    assert os.path.getsize(config.log_path) > 10_000
    # No Beam component packaged TFX for workers that run in this environment (the
    # in-process profile): TFX logs the sdist it would add to the Beam arguments.
    with open(config.log_path) as f:
        log = f.read()
    assert "Component Evaluator_mf is running" in log and "tfx_ephemeral" not in log


def test_blessed_models_are_pushed_in_tf_serving_layout(trained_run):
    config = trained_run[0]
    for family in config.families:
        outcome = report.family_outcome(config.pipeline_root, family)
        assert outcome["failures"] == []
        assert outcome["push"]["pushed"] is True
        versions = os.listdir(os.path.join(config.serving_model_dir, family))
        assert versions == [str(outcome["push"]["version"])]  # no temporary directory left
        version_dir = os.path.join(config.serving_model_dir, family, versions[0])
        assert os.path.exists(os.path.join(version_dir, "saved_model.pb"))
        assert os.path.getsize(os.path.join(version_dir, "assets.extra", "tf_serving_warmup_requests")) > 0
        # The run summary says which epoch the Trainer kept, by which eval metric.
        training = outcome["training"]
        assert 1 <= training["best_epoch"] <= training["epochs_run"] and training["monitor"].startswith("val_")
        assert any(line.strip().startswith("trained:") for line in report.format_outcome(outcome))
    # Metrics of both splits: the gate read eval, test is reported.
    mf = report.family_outcome(config.pipeline_root, "mf")["metrics"]
    for split in ("eval", "test"):
        assert mf[split][""]["rmse"] > 0 and 0.0 <= mf[split][""]["auc"] <= 1.0
    tower = report.family_outcome(config.pipeline_root, "two_tower")["metrics"]
    for split in ("eval", "test"):
        values = tower[split][""]
        assert 0.0 <= values["ndcg@10"] <= 1.0 and values["users"] > 0
        assert values["ndcg@10_lift"] == pytest.approx(values["ndcg@10"] - values["popularity_ndcg@10"])


def test_a_model_failing_the_gate_is_not_pushed_and_the_threshold_is_named(trained_run):
    blessed = trained_run[0]
    before = sorted(os.listdir(os.path.join(blessed.serving_model_dir, "mf")))
    # The data stages are unchanged: reuse them from the cache.
    config = dataclasses.replace(blessed, families=("mf",), train_steps=2, gate_thresholds={"rating": 0.3},
                                 enable_cache=True)
    run(config, progress_out=io.StringIO())
    outcome = report.family_outcome(config.pipeline_root, "mf")
    assert outcome["push"]["pushed"] is False
    assert any(f.startswith("rmse value") and "upper_bound" in f and f.endswith("on split=eval") for f in outcome["failures"])
    assert sorted(os.listdir(os.path.join(config.serving_model_dir, "mf"))) == before


def _vocabularies(transform_graph):
    assets = os.path.join(transform_graph, "transform_fn", "assets")
    sums = [preprocessing.ITEM_COUNT_VOCAB, preprocessing.ITEM_RATING_SUM_VOCAB, preprocessing.USER_COUNT_VOCAB]
    names = [F.USER_VOCAB, F.ITEM_VOCAB, GENRES.vocabulary_name] + sums + [s + preprocessing.FOLD_SUFFIX for s in sums]
    out = {}
    for name in names:
        with open(os.path.join(assets, name), "rb") as f:
            out[name] = f.read()
    return out


def _records(split_dir):
    """Transformed examples as {feature: values}, in a canonical order."""
    files = sorted(glob.glob(os.path.join(split_dir, "*")))
    records = []
    for raw in tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator():
        feature = tf.train.Example.FromString(raw).features.feature
        records.append({k: tuple(getattr(f, f.WhichOneof("kind")).value) for k, f in feature.items()})
    return sorted(records, key=lambda r: (r[F.USER_IDX], r[F.ITEM_IDX], r[F.HISTORY_LENGTH]))


def _assert_same_records(before, after):
    """Ids, labels and histories equal; floats equal up to the analyzers' summation order."""
    assert len(before) == len(after)
    for x, y in zip(before, after):
        assert x.keys() == y.keys()
        for name, value in x.items():
            if value and isinstance(value[0], float):
                np.testing.assert_allclose(value, y[name], rtol=1e-4, atol=1e-4, err_msg=name)
            else:
                assert value == y[name], name


def test_transform_statistics_come_from_the_training_split_only(trained_run, movielens_slice, tmp_path):
    """Changing every eval/test row (and adding eval/test-only items) changes no vocabulary or statistic."""
    changed = tmp_path / "changed"
    shutil.copytree(movielens_slice, changed)
    lines = (changed / "ratings.csv").read_bytes().decode().split("\r\n")
    out, added = [lines[0]], 0
    for line in lines[1:]:
        if not line:
            continue
        user, item, rating, ts = line.split(",")
        if hash_split(user, item) != "train":
            rating = "0.5" if float(rating) >= 3 else "5.0"
            ts = str(int(ts) + 1)
        out.append(",".join([user, item, rating, ts]))
    seen = {tuple(line.split(",")[:2]) for line in out[1:]}
    for item in ("1", "2", "3", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15"):
        if ("1", item) not in seen and hash_split("1", item) != "train":
            out.append(f"1,{item},5.0,1300000000")  # an item only eval/test ever sees
            added += 1
    assert added > 0
    (changed / "ratings.csv").write_bytes(("\r\n".join(out) + "\r\n").encode())

    original = trained_run[0]
    config = _data_config(changed, tmp_path / "out")
    run(config, progress_out=io.StringIO())

    assert _vocabularies(_newest(config, "Transform", "transform_graph")) == _vocabularies(
        _newest(original, "Transform", "transform_graph")
    )
    # Every transformed training example (z-scores, min-max statistics, ids, histories)
    # is byte-identical.
    train_before = _records(os.path.join(_newest(original, "Transform", "transformed_examples"), "Split-train"))
    train_after = _records(os.path.join(_newest(config, "Transform", "transformed_examples"), "Split-train"))
    _assert_same_records(train_before, train_after)
    # ...while the eval/test splits did change.
    test_before = _records(os.path.join(_newest(original, "Transform", "transformed_examples"), "Split-test"))
    test_after = _records(os.path.join(_newest(config, "Transform", "transformed_examples"), "Split-test"))
    assert test_before != test_after


def test_an_anomaly_stops_the_pipeline_before_transform_and_says_how_to_proceed(movielens_slice, tmp_path, capsys):
    from pipeline import update_schema

    data = tmp_path / "data"
    shutil.copytree(movielens_slice, data)
    with open(data / "movies.csv", encoding="utf-8", newline="") as f:
        movies = f.read()
    # Older MovieLens releases spell the genre "Children's"; the curated schema says "Children".
    movies = movies.replace("|Children|", "|Children's|")
    with open(data / "movies.csv", "w", encoding="utf-8", newline="") as f:
        f.write(movies)
    config = _data_config(data, tmp_path / "out")
    with pytest.raises(PipelineFailed) as failure:
        run(config, progress_out=io.StringIO())
    assert failure.value.component == "AnomalyGate"
    message = str(failure.value.cause)
    assert "item_genres" in message and "Children\\'s" in message
    assert "How to proceed" in message and config.schema_path in message
    assert f"add the new values to string_domain '{GENRES.raw_name}'" in message
    assert f'make update-schema ARGS="--output_dir {config.output_dir}"' in message and "--schema_file" in message
    assert "Transform" not in report.output_dirs(config.pipeline_root)

    # The documented command writes the schema the data implies, for review; the curated one is untouched.
    curated = open(config.schema_path, encoding="utf-8").read()
    inferred = tmp_path / "schema.inferred.pbtxt"
    assert update_schema.main(["--output_dir", config.output_dir, "--out", str(inferred)]) == 0
    printed = capsys.readouterr().out
    assert f"string_domain '{GENRES.raw_name}': add [\"Children's\"]" in printed
    assert f"--schema_file {inferred}" in printed
    assert "Children\\'s" in inferred.read_text()
    assert open(config.schema_path, encoding="utf-8").read() == curated


def test_a_malformed_file_fails_naming_file_and_line(movielens_slice, tmp_path, capsys):
    from pipeline.local_runner import main

    data = tmp_path / "data"
    shutil.copytree(movielens_slice, data)
    with open(data / "ratings.csv", "a", newline="") as f:
        f.write("1,31,2.5\r\n")  # 3 fields instead of 4
    line_no = sum(1 for _ in open(data / "ratings.csv", newline=""))
    code = main(["--data_dir", str(data), "--output_dir", str(tmp_path / "out"), "--families", "none"])
    printed = capsys.readouterr().out
    assert code == 1
    assert "FAILED in component InteractionExampleGen:" in printed
    assert f"ratings.csv:{line_no}: expected 4 fields" in printed
    # Bad input is a message, not a crash: no stack trace from the log on the terminal.
    assert "Traceback" not in printed and f"Full log: {tmp_path / 'out'}" in printed


def test_a_new_log_in_json_lines_runs_end_to_end_from_its_description_file_alone(tmp_path, capsys):
    """Issue 27's goal: a log of one's own (JSON lines, unusual column names, item features of
    several types, a user feature, an interaction text with documents) goes through every stage,
    ExampleGen .. Pusher, with a description file and the commands a user runs, no Python; a
    description naming a missing file stops before any component."""
    import json

    from test_example_gen_formats import write_log

    from pipeline import update_schema
    from pipeline.local_runner import main

    data = tmp_path / "shop"
    values = write_log(str(data), "jsonl")  # columns "Kunde ID", "artikel#", "zeit(ms)", ...
    mine = tmp_path / "shop.json"
    mine.write_text(json.dumps(values, ensure_ascii=False, indent=2), encoding="utf-8")
    d = desc.load(str(mine))
    assert {f.type for f in d.item_features} >= {desc.CATEGORICAL, desc.MULTI_CATEGORICAL, desc.NUMERIC, desc.TEXT}
    schema = tmp_path / "schemas" / d.name / "schema.pbtxt"
    dataset = ["--dataset_file", str(mine), "--data_dir", str(data)]
    assert update_schema.main(["--generate", *dataset, "--out", str(schema)]) == 0  # make update-schema --generate
    out = tmp_path / "out"
    code = main([*dataset, "--output_dir", str(out), "--families", "mf_dnn", "--train_steps", "20",
                 "--schema_file", str(schema), "--gate", "sterne=100"])  # make run ARGS="--dataset_file ..."
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert f"Pipeline on {d.name} ({mine}) data from {data}" in printed
    assert f"description       {d.name} ({mine})" in printed
    config = dataclasses.replace(PipelineConfig(), dataset=str(mine), data_dir=str(data), output_dir=str(out),
                                 families=("mf_dnn",)).resolved()
    outcome = report.family_outcome(config.pipeline_root, "mf_dnn")
    assert outcome["failures"] == [] and outcome["push"]["pushed"] is True, outcome
    for split in ("eval", "test"):
        assert outcome["metrics"][split][""]["rmse"] > 0  # the Evaluator measured the description's rating task
    # Transform wrote each declared feature by its type; the pushed model serves raw examples.
    transformed = _newest(config, "Transform", "transformed_examples")
    (record,) = tf.data.TFRecordDataset(glob.glob(os.path.join(transformed, "Split-train", "*")),
                                        compression_type="GZIP").take(1).as_numpy_iterator()
    names = set(tf.train.Example.FromString(record).features.feature)
    for f in d.features:
        assert set(f.transformed_names()) <= names, f.name
    raw = _newest(config, "InteractionExampleGen", "examples")
    served = {f.name for f in desc.raw_features(d) if f.serving}
    examples = []
    for record in tf.data.TFRecordDataset(glob.glob(os.path.join(raw, "Split-test", "*")),
                                          compression_type="GZIP").take(5).as_numpy_iterator():
        example = tf.train.Example.FromString(record)
        for name in set(example.features.feature) - served:
            del example.features.feature[name]
        examples.append(example.SerializeToString())
    version = os.path.join(config.serving_model_dir, "mf_dnn", str(outcome["push"]["version"]))
    scores = tf.saved_model.load(version).signatures["serving_default"](examples=tf.constant(examples))
    assert all(np.isfinite(v.numpy()).all() and v.shape[0] == len(examples) for v in scores.values())

    # The description names a file the data folder lacks: ExampleGen's preflight stops the run
    # before any component, naming the file.
    values["interactions"]["files"] = "logs.jsonl"
    mine.write_text(json.dumps(values), encoding="utf-8")
    code = main(["--dataset_file", str(mine), "--data_dir", str(data), "--output_dir", str(tmp_path / "out2"),
                 "--families", "none", "--schema_file", str(schema)])
    printed = capsys.readouterr().out
    assert code == 2 and "logs.jsonl" in printed and "error:" in printed
    assert not (tmp_path / "out2" / "pipeline_root").exists()


def test_the_run_report_is_one_self_contained_html_file(trained_run):
    import html.parser
    import re

    from pipeline import html_report

    config, timings, _ = trained_run
    path = html_report.write(config, timings)
    assert path == os.path.join(config.output_dir, html_report.REPORT_NAME)
    text = open(path, encoding="utf-8").read()
    # Nothing is fetched from elsewhere: no script, no external stylesheet, image or font.
    assert "<script" not in text and not re.findall(r"(?:src|href)=[\"'](?:https?:)?//", text)
    for section in ("run", "data", "models"):
        assert f'id="{section}"' in text
    assert "<td>movielens (datasets/movielens.yaml)</td>" in text  # which description the run read
    for family in config.families:
        assert f'id="family-{family}"' in text and "blessed, pushed version" in text
    assert text.count("<svg") >= len(config.families)  # a training curve per family
    # Pointwise families get a reliability diagram per task from the Evaluator's calibration
    # bins, eval and test on one chart; retrieval families (no probabilities) get none.
    assert text.count('class="calibration"') == 1 and "mf prediction: calibration" in text
    assert "Against the last blessed model" in text
    assert "<td class=\"l\">eval · user_activity=" in text  # slices within a split, one row each
    for split in ("train", "eval", "test"):  # the data section has every split's statistics
        assert f"<td>{split}</td>" in text

    class Checker(html.parser.HTMLParser):  # well-formed: every opened table/svg/section tag is closed
        def __init__(self):
            super().__init__()
            self.open = []

        def handle_starttag(self, tag, attrs):
            if tag in ("table", "svg", "ul", "h2", "h3", "h4"):
                self.open.append(tag)

        def handle_endtag(self, tag):
            if tag in ("table", "svg", "ul", "h2", "h3", "h4"):
                assert self.open and self.open.pop() == tag, tag

    checker = Checker()
    checker.feed(text)
    assert checker.open == []


def test_each_pushed_version_gets_a_model_card_from_the_runs_measurements(trained_run):
    from pipeline import model_card

    config = trained_run[0]
    paths = model_card.write_cards(config)
    # Every family whose newest run pushed a version (another test reruns `mf` with a gate it fails).
    pushed = {f: report.family_outcome(config.pipeline_root, f) for f in config.families}
    pushed = {f: o for f, o in pushed.items() if o["push"]["pushed"]}
    assert "two_tower" in pushed
    assert paths == [os.path.join(o["push"]["path"], "assets.extra", model_card.CARD_NAME) for o in pushed.values()]
    for family, path in zip(pushed, paths):
        outcome = pushed[family]
        text = open(path, encoding="utf-8").read()
        for section in ("## Model details", "## Intended use", "## Data", "## Metrics", "## Metrics by slice",
                        "## Gate", "## Caveats"):
            assert section in text, (family, section)
        assert "Dataset `movielens`, described by `datasets/movielens.yaml`" in text
        # The card's numbers are the Evaluator's: the test split's first key metric, as measured.
        test = outcome["metrics"]["test"]
        output, values = sorted(test.items())[0]
        name = next(n for n in report.KEY_METRICS if n in values)
        assert f"| test | {output or '-'} | {name} | {values[name]:.4f} |" in text
    assert "recommends the top K" in open(paths[list(pushed).index("two_tower")]).read()


def test_the_evaluator_profile_reruns_an_evaluator_from_ml_metadata(trained_run, tmp_path):
    """bench/profile_evaluator.py: each family's Evaluator is found in the run's ML Metadata
    and executed again on the recorded inputs and settings, giving the run's own metrics; the
    profile's parts add up to the time it profiled."""
    from bench import profile_evaluator

    config = trained_run[0]
    runs = profile_evaluator.evaluator_runs(config.output_dir)
    assert set(config.families) <= set(runs)
    _, stats = profile_evaluator.run_evaluator(runs["mf"], list(config.beam_pipeline_args), str(tmp_path))
    want = report.split_metrics(_newest(config, "Evaluator_mf", "evaluation"))
    got = report.split_metrics(str(tmp_path / "evaluation"))
    assert got.keys() == want.keys() and got["eval"][""].keys() == want["eval"][""].keys()
    for split in want:
        for name, value in want[split][""].items():
            assert got[split][""][name] == pytest.approx(value, rel=1e-9, nan_ok=True), (split, name)
    parts = profile_evaluator.breakdown(stats)
    own = sum(entry[2] for entry in stats.stats.values())
    assert sum(parts[p] for p in profile_evaluator.PARTS) == pytest.approx(own, rel=1e-6)
    assert parts["project_combiners"] > 0 and parts["signature_calls"] > 0 and parts["load_models"] > 0
