"""The Beam `run_ingest` and the TFX component on small slices of the shipped data, read through the
shipped descriptions."""
import glob
import json
import os
import shutil

import pytest
import tensorflow as tf

from components.example_gen import IngestConfig, encoding, inmemory, run_ingest
from contract import features as F

SPLITS = ("train", "eval", "test")


def _head(src, dst, lines):
    with open(src, newline="") as f, open(dst, "w", newline="") as out:
        for n, line in enumerate(f):
            if n >= lines:
                break
            out.write(line)


@pytest.fixture(scope="module")
def ml_slice(movielens_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("ml")
    _head(movielens_dir / "ratings.csv", d / "ratings.csv", 301)  # header + users 1..4
    shutil.copy(movielens_dir / "movies.csv", d / "movies.csv")
    return str(d)


@pytest.fixture(scope="module")
def tb_slice(taobao_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("tb")
    _head(taobao_dir / "UserBehavior_sample.csv", d / "UserBehavior_sample.csv", 2500)
    return str(d)


def _read_split(output_dir, split):
    files = sorted(glob.glob(os.path.join(output_dir, f"Split-{split}", "data_tfrecord-*.gz")))
    assert files, f"no files in Split-{split}"
    return list(tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator())


def _assert_nothing_published(output_dir):
    assert not glob.glob(os.path.join(output_dir, "Split-*"))
    assert not glob.glob(os.path.join(output_dir, ".ingest-tmp-*"))
    assert not os.path.exists(os.path.join(output_dir, "ingest_report.json"))


@pytest.mark.parametrize("dataset", ["movielens", "taobao"])
def test_run_ingest_writes_the_same_examples_as_the_pure_path(dataset, ml_slice, tb_slice, tmp_path):
    if dataset == "movielens":
        input_base, config = ml_slice, IngestConfig("movielens", split="leave_last_two_out", negatives_per_positive=1)
    else:
        input_base, config = tb_slice, IngestConfig("taobao", split="hash", negatives_per_positive=1, max_history=8)
    types = encoding.feature_types(config.spec.description)
    item_feature = config.spec.item_features[0].raw_name
    out = str(tmp_path / "out")
    report = run_ingest(input_base, config.to_json(), out)

    expected, expected_report = inmemory.ingest_in_memory(input_base, config)
    for split in SPLITS:
        written = _read_split(out, split)
        want = [encoding.serialize(e.features, types) for e in expected if e.split == split]
        assert sorted(written) == sorted(want), split
        assert report["rows_written"][split] == len(written) > 0
    for key in ("rows_read", "rows_written", "negatives_written", "label_positives", "users"):
        assert report[key] == expected_report[key], key
    assert report["negatives_total"] == sum(report["positives_written"].values())
    assert json.loads((tmp_path / "out" / "ingest_report.json").read_text()) == report
    assert sorted(os.listdir(out)) == ["Split-eval", "Split-test", "Split-train", "ingest_report.json"]

    decoded = [encoding.from_tf_example(tf.train.Example.FromString(b)) for b in _read_split(out, "test")]
    pos = [d for d in decoded if d[config.spec.implicit_label] == [1]]
    neg = [d for d in decoded if d[config.spec.implicit_label] == [0]]
    assert pos and len(neg) == len(pos)
    for d in pos:
        assert d[F.ITEM_ID][0] not in d[F.HISTORY_ITEM_IDS]
        assert len(d[F.HISTORY_ITEM_IDS]) == len(d[F.HISTORY_BEHAVIORS]) <= config.max_history
        assert set(d[F.HISTORY_BEHAVIORS]) <= set(config.spec.behaviors)
        assert d[item_feature]
    if dataset == "movielens":
        assert len(pos) == 4  # one test row per user
        assert all("rating" in d for d in pos) and not any("rating" in d for d in neg)
        assert all(isinstance(d["item_year"][0], int) for d in pos)


def _write_bad_movielens(d):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "movies.csv"), "w", newline="") as f:
        f.write("movieId,title,genres\r\n1,Toy Story (1995),Comedy\r\n2,\"Heat, The (1995)\",Action\r\n"
                "3,Broken\r\n")
    with open(os.path.join(d, "ratings.csv"), "w", newline="") as f:
        f.write("userId,movieId,rating,timestamp\r\n"
                "1,1,4.0,100\r\n"
                "1,2,x,101\r\n"
                "1,2,5.0,102\r\n"
                "1,7,3.0,103\r\n"
                "2,1,9.0,104\r\n"
                "2,2,3.0,105\r\n")
    return d


def test_too_many_bad_rows_fail_naming_file_and_line_and_publish_nothing(tmp_path):
    d = _write_bad_movielens(str(tmp_path / "in"))
    out = str(tmp_path / "out")
    with pytest.raises(ValueError) as err:
        run_ingest(d, IngestConfig("movielens", max_bad_rows=3), out)
    message = str(err.value)
    ratings = os.path.join(d, "ratings.csv")
    assert f"{ratings}:3: rating 'x' is not a number" in message
    assert f"{ratings}:5: item 7 (user 1) is not in the items table (movies.csv)" in message
    assert f"{os.path.join(d, 'movies.csv')}:4: expected 3 fields" in message
    for part in ("wrong_field_count: 1", "missing_item_metadata: 1", "rating_out_of_range: 1",
                 "unparsable_number: 1", "max_bad_rows=3", "4 bad input rows"):
        assert part in message
    _assert_nothing_published(out)


def test_bad_rows_within_the_limit_are_dropped_and_reported(tmp_path):
    d = _write_bad_movielens(str(tmp_path / "in"))
    out = str(tmp_path / "out")
    report = run_ingest(d, IngestConfig("movielens", max_bad_rows=4, split="leave_last_two_out"), out)
    bad = report["bad_rows"]
    assert bad["total"] == 4 and bad["max_bad_rows"] == 4
    assert {k: v["count"] for k, v in bad["by_reason"].items()} == {
        "wrong_field_count": 1, "missing_item_metadata": 1, "rating_out_of_range": 1, "unparsable_number": 1}
    assert bad["by_reason"]["unparsable_number"]["first"] == [f"{os.path.join(d, 'ratings.csv')}:3: rating 'x' is not a number"]
    assert report["rows_read"] == {"interactions": 6, "items": 3}
    assert sum(report["rows_written"].values()) == 3  # (1,1), (1,2)@102, (2,2)
    users = [encoding.from_tf_example(tf.train.Example.FromString(b))
             for split in SPLITS for b in _read_split(out, split)]
    assert sorted((u[F.USER_ID][0], u[F.ITEM_ID][0]) for u in users) == [("1", "1"), ("1", "2"), ("2", "2")]


def test_unreadable_input_fails_cleanly(tmp_path):
    out = str(tmp_path / "out")
    with pytest.raises(FileNotFoundError, match=r"interactions file not found: .*ratings\.csv"):
        run_ingest(str(tmp_path), IngestConfig("movielens"), out)
    d = tmp_path / "hdr"
    d.mkdir()
    (d / "ratings.csv").write_text("user,item\n1,2\n")
    (d / "movies.csv").write_text("movieId,title,genres\n1,A (1999),Drama\n")
    with pytest.raises(ValueError, match=r"ratings\.csv:1: no column 'userId' \(interactions\.user\)"):
        run_ingest(str(d), IngestConfig("movielens"), out)
    _assert_nothing_published(out)


def test_component_publishes_examples_in_a_local_dag(ml_slice, tmp_path):
    from ml_metadata.metadata_store import metadata_store
    from tfx.orchestration import metadata
    from tfx.orchestration import pipeline as tfx_pipeline
    from tfx.orchestration.local.local_dag_runner import LocalDagRunner
    from tfx.types import artifact_utils

    from components.example_gen import InteractionExampleGen

    gen = InteractionExampleGen(input_base=ml_slice, config=IngestConfig("movielens"))
    connection = metadata.sqlite_metadata_connection_config(str(tmp_path / "metadata.sqlite"))
    LocalDagRunner().run(tfx_pipeline.Pipeline(
        pipeline_name="example_gen_test", pipeline_root=str(tmp_path / "root"), components=[gen],
        metadata_connection_config=connection, beam_pipeline_args=["--direct_num_workers=1"]))

    store = metadata_store.MetadataStore(connection)
    artifacts = store.get_artifacts_by_type("Examples")
    assert len(artifacts) == 2  # the interaction view and the user view
    for artifact in artifacts:
        assert artifact_utils.decode_split_names(artifact.properties["split_names"].string_value) == list(SPLITS)
        assert artifact.custom_properties["payload_format"].string_value == "FORMAT_TF_EXAMPLE"
        assert artifact.custom_properties["file_format"].string_value == "tfrecords_gzip"
    (artifact,) = [a for a in artifacts if os.path.exists(os.path.join(a.uri, "ingest_report.json"))]
    (users,) = [a for a in artifacts if a is not artifact]
    report = json.loads(open(os.path.join(artifact.uri, "ingest_report.json")).read())
    for split in SPLITS:
        assert len(_read_split(artifact.uri, split)) == report["rows_written"][split]
    assert sum(report["rows_written"].values()) == 300
    # One user-view example per user in train; eval/test only for users with liked items there.
    def parsed(uri, split):
        return [encoding.from_tf_example(tf.train.Example.FromString(r)) for r in _read_split(uri, split)]

    train_users = {r["user_id"][0] for r in parsed(users.uri, "train")}
    assert train_users == {r["user_id"][0] for r in parsed(artifact.uri, "train")}
    for record in parsed(users.uri, "test"):
        assert record["split"] == ["test"] and record["target_item_ids"] and record["history_item_ids"]


def test_component_rejects_a_bad_config_when_built():
    from components.example_gen import InteractionExampleGen

    with pytest.raises(ValueError, match="unknown split"):
        InteractionExampleGen(input_base="/nowhere", config='{"description": "movielens", "split": "random"}')
    with pytest.raises(ValueError, match="needs its `description`"):
        InteractionExampleGen(input_base="/nowhere", config='{"split": "hash"}')
