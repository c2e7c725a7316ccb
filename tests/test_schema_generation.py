"""The curated schemas are generated from the dataset descriptions (pipeline/schema_generation.py)."""

import dataclasses
import os
import pathlib

import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from contract import description as desc
from pipeline import schema_generation as gen
from pipeline import update_schema
from pipeline.configs import PipelineConfig

REPO = pathlib.Path(__file__).resolve().parents[1]
SHIPPED = ("movielens", "taobao", "amazon_reviews")
TYPES = {desc.BYTES: schema_pb2.BYTES, desc.INT: schema_pb2.INT, desc.FLOAT: schema_pb2.FLOAT}


def _checked_in(name):
    return (REPO / "schemas" / name / "schema.pbtxt").read_text(encoding="utf-8")


def _parse(text):
    return text_format.Parse(text, schema_pb2.Schema())


def _write_examples(path, rows):
    """GZIP TFRecords of tf.Examples from {feature: list of str / int / float}."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
        for row in rows:
            example = tf.train.Example()
            for name, values in row.items():
                if not values:  # an empty list of bytes (e.g. a first interaction's history)
                    example.features.feature[name].bytes_list.SetInParent()
                elif isinstance(values[0], str):
                    example.features.feature[name].bytes_list.value.extend(v.encode() for v in values)
                elif values and isinstance(values[0], float):
                    example.features.feature[name].float_list.value.extend(values)
                else:
                    example.features.feature[name].int64_list.value.extend(values)
            writer.write(example.SerializeToString())


@pytest.mark.parametrize("name", SHIPPED)
def test_checked_in_schemas_are_what_generation_gives_for_the_shipped_descriptions(name):
    """Everything but the domains read from data is a function of the description; the domains
    are the frozen ones."""
    d = desc.load(name)
    text = _checked_in(name)
    assert gen.render(d, gen.checked_in_domains(text, d), f"datasets/{name}.yaml") == text


@pytest.mark.parametrize("name", SHIPPED)
def test_a_descriptions_raw_features_and_its_schema_agree(name):
    d = desc.load(name)
    schema = _parse(_checked_in(name))
    features = {f.name: f for f in schema.feature}
    domains = {s.name: list(s.value) for s in schema.string_domain}
    raw = {f.name: f for f in desc.raw_features(d)}
    assert list(features) == list(raw)
    for name_, r in raw.items():
        f = features[name_]
        assert f.type == TYPES[r.dtype], name_
        assert ("SERVING" in f.not_in_environment) == (not r.serving), name_
        assert (f.presence.min_fraction == 1.0) == r.required, name_
        count_max = f.shape.dim[0].size if f.HasField("shape") else f.value_count.max
        assert count_max == (r.max_count or 0), name_
        if r.domain:
            assert domains[f.domain] == list(r.domain), name_
        if r.minimum is not None or r.maximum is not None:
            bounds = f.int_domain if r.dtype == desc.INT else f.float_domain
            assert (bounds.min if r.minimum is not None else None) == r.minimum, name_
            assert (bounds.max if r.maximum is not None else None) == r.maximum, name_
    assert domains[f"{d.name}_behavior"] == list(d.behaviors)


def test_the_movielens_schema_keeps_todays_constraints():
    """Generated from the description, the MovieLens schema accepts today's data exactly as the
    curated one did: the same features, bounds and domains (the genres' renamed after the feature)."""
    schema = _parse(_checked_in("movielens"))
    features = {f.name: f for f in schema.feature}
    domains = {s.name: list(s.value) for s in schema.string_domain}
    assert sorted(features) == sorted(["user_id", "item_id", "timestamp", "item_genres", "item_year",
                                       "history_item_ids", "history_behaviors", "rating", "watched", "split"])
    assert (features["item_year"].int_domain.min, features["item_year"].int_domain.max) == (1870, 2030)
    assert (features["rating"].float_domain.min, features["rating"].float_domain.max) == (0.5, 5.0)
    assert (features["item_genres"].value_count.min, features["item_genres"].value_count.max) == (1, 10)
    assert features["item_year"].presence.min_fraction == 0.0 and features["item_year"].value_count.max == 1
    assert len(domains["item_genres"]) == 20 and "(no genres listed)" in domains["item_genres"]
    assert domains["movielens_behavior"] == ["disliked", "neutral", "liked"]
    taobao = {f.name for f in _parse(_checked_in("taobao")).feature}
    assert "item_category" in taobao and "item_genres" not in taobao


def test_training_values_and_which_features_get_a_domain(tmp_path):
    files = tmp_path / "Split-train" / "data_tfrecord-00000-of-00001.gz"
    _write_examples(files, [{"item_genres": ["Drama", "Comedy"], "item_category": ["c1"]},
                            {"item_genres": ["Drama"]}, {"user_id": ["u"]}])
    values = gen.training_values(gen.split_files(str(tmp_path)), ["item_genres", "item_category", "item_color"])
    assert values == {"item_genres": ["Comedy", "Drama"], "item_category": ["c1"], "item_color": []}
    with pytest.raises(FileNotFoundError, match="no training-split files"):
        gen.training_values([], ["item_genres"])

    d = desc.load("movielens")
    many = {"item_genres": [f"g{i:03d}" for i in range(gen.MAX_DOMAIN_VALUES + 1)]}
    kept, notes = gen.small_domains(d, many)
    assert kept == {} and notes == [f"item_genres: {gen.MAX_DOMAIN_VALUES + 1} distinct training values (more "
                                    f"than {gen.MAX_DOMAIN_VALUES}): no string domain"]
    kept, _ = gen.small_domains(d, {"item_genres": ["b", "a"]})
    assert kept == {"item_genres": ["a", "b"]}


def _shop_description(tmp_path, with_color=True):
    """A description of one's own with unusual column names, a categorical and a text feature."""
    color = "    color: {column: Farbe, type: categorical}\n" if with_color else ""
    path = tmp_path / "shop.yaml"
    path.write_text(
        "name: shop\n"
        "interactions:\n"
        "  files: log.jsonl\n"
        "  user: kunde\n  item: artikel\n  time: {column: zeit, unit: milliseconds}\n"
        "  behavior: {column: aktion, vocabulary: [view, buy]}\n"
        "  columns:\n    note: {column: notiz, type: text}\n"
        "items:\n  files: items.csv\n  key: artikel\n  features:\n" + color +
        "    price: {column: preis, type: numeric, normalize: log, minimum: 0}\n"
        "labels:\n  seen: {implicit: true}\n  bought: {behavior: buy}\n"
        "tasks:\n  - {name: bought, kind: binary}\n  - {name: items, kind: retrieval}\n")
    return path


def test_generate_reads_the_training_split_of_a_run_and_writes_atomically(tmp_path, capsys):
    mine = _shop_description(tmp_path)
    run = tmp_path / "run"
    examples = run / "pipeline_root" / "InteractionExampleGen" / "examples" / "7"
    _write_examples(examples / "Split-train" / "part.gz", [{"item_color": ["rot"]}, {"item_color": ["blau"]}])
    _write_examples(examples / "Split-eval" / "part.gz", [{"item_color": ["gelb"]}])  # eval values are not read
    out = tmp_path / "schemas" / "shop" / "schema.pbtxt"
    assert update_schema.main(["--generate", "--dataset_file", str(mine), "--data_dir", str(tmp_path),
                               "--from_run", str(run), "--out", str(out)]) == 0
    text = out.read_text()
    d = desc.load(str(mine))
    assert text == gen.render(d, {"item_color": ["blau", "rot"]}, str(mine))
    assert f"--generate --dataset_file {mine} --data_dir DIR" in text
    schema = _parse(text)
    assert [list(s.value) for s in schema.string_domain if s.name == "item_color"] == [["blau", "rot"]]
    features = {f.name: f for f in schema.feature}
    assert features["item_price"].float_domain.min == 0.0 and features["note"].not_in_environment == ["SERVING"]
    assert features["history_behaviors"].domain == "shop_behavior"
    assert [p.name for p in out.parent.iterdir()] == ["schema.pbtxt"]  # no temporary file left
    assert f"Wrote the schema of shop ({mine})" in capsys.readouterr().out
    # Again: the same file, said so.
    assert update_schema.main(["--generate", "--dataset_file", str(mine), "--data_dir", str(tmp_path),
                               "--from_run", str(run), "--out", str(out)]) == 0
    assert "It is the same as the file it replaced." in capsys.readouterr().out


def test_generate_without_categorical_features_reads_no_data(tmp_path, capsys):
    mine = _shop_description(tmp_path, with_color=False)
    out = tmp_path / "schema.pbtxt"
    # No data_dir anywhere, and none is needed.
    assert update_schema.main(["--generate", "--dataset_file", str(mine), "--out", str(out)]) == 0
    assert out.read_text() == gen.render(desc.load(str(mine)), {}, str(mine))
    # A description that needs its data and names none: a clear error, nothing written.
    (tmp_path / "c").mkdir()
    colored = _shop_description(tmp_path / "c")
    assert update_schema.main(["--generate", "--dataset_file", str(colored), "--out", str(tmp_path / "x")]) == 2
    assert "names no data_dir: pass --data_dir" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_generated_schema_validates_examples_and_catches_an_unknown_value(tmp_path):
    import tensorflow_data_validation as tfdv

    d = desc.load("movielens")
    schema = _parse(gen.render(d, {"item_genres": ["Comedy", "Drama"]}))
    good = {"user_id": ["1"], "item_id": ["10"], "timestamp": [964982703], "history_item_ids": ["3"],
            "history_behaviors": ["liked"], "item_genres": ["Comedy", "Drama"], "item_year": [1995],
            "rating": [4.0], "watched": [1], "split": ["train"]}
    no_year = dict(good, item_genres=["Drama"], history_item_ids=[], history_behaviors=[])
    del no_year["item_year"]
    _write_examples(tmp_path / "good.gz", [good, no_year])
    options = tfdv.StatsOptions(schema=schema)
    stats = tfdv.generate_statistics_from_tfrecord(str(tmp_path / "good.gz"), stats_options=options)
    assert not tfdv.validate_statistics(stats, schema).anomaly_info
    _write_examples(tmp_path / "bad.gz", [dict(good, item_genres=["Western"])])
    stats = tfdv.generate_statistics_from_tfrecord(str(tmp_path / "bad.gz"), stats_options=options)
    assert "item_genres" in tfdv.validate_statistics(stats, schema).anomaly_info


def test_generating_from_the_data_fills_the_genres_from_the_training_split(movielens_slice, tmp_path, monkeypatch):
    """The whole path: ExampleGen ingests the slice, the training split's genres become the domain;
    everything else is the checked-in schema."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the ingest writes, then removes
    d = desc.load("movielens")
    config = dataclasses.replace(PipelineConfig(), data_dir=str(movielens_slice))
    text, notes = update_schema.generate(config)
    assert notes == []
    genres = gen.checked_in_domains(text, d)["item_genres"]
    assert set(genres) <= set(gen.checked_in_domains(_checked_in("movielens"), d)["item_genres"])
    assert text == gen.render(d, {"item_genres": genres}, "datasets/movielens.yaml")
    assert os.listdir(tmp_path) == []  # the ingest's temporary directory is gone


def test_the_anomaly_gate_points_at_generation_when_the_description_changed(tmp_path):
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    from components import anomaly_gate

    anomalies = anomalies_pb2.Anomalies()
    info = anomalies.anomaly_info["item_color"]
    info.short_description = "New column"
    info.reason.add(type=anomalies_pb2.AnomalyInfo.SCHEMA_NEW_COLUMN)
    uri = tmp_path / "out" / "pipeline_root" / "ExampleValidator" / "anomalies" / "5"
    (uri / "Split-train").mkdir(parents=True)
    (uri / "Split-train" / anomaly_gate.ANOMALIES_FILE).write_bytes(anomalies.SerializeToString())
    lines = anomaly_gate.how_to_proceed(str(uri), ["train"], "")
    text = "\n".join(lines)
    assert "add a feature 'item_color'" in text
    assert 'make update-schema ARGS="--generate --dataset NAME" (or --dataset_file FILE)' in text
    assert f'make update-schema ARGS="--output_dir {tmp_path / "out"}"' in text
