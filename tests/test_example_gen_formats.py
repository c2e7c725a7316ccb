"""Any interaction log from its description: one synthetic log with unusual column names written as
CSV (two files, a glob), headerless TSV, JSON lines and Parquet gives the same examples in memory and
through the Beam `run_ingest`; bad descriptions and bad data stop with messages naming what is wrong."""
import copy
import csv
import glob
import json
import os
import random

import pytest
import tensorflow as tf

from components.example_gen import encoding, inmemory, preflight, run_ingest
from components.example_gen.config import IngestConfig
from contract import description as desc

DAY = 86400
START_MS = 1_512_000_000_000  # 2017-11-30 in milliseconds
INTER = ["Kunde ID", "artikel#", "zeit(ms)", "Wertung", "aktion", "notiz", "menge", "unbenutzt"]
ITEMS = ["Artikel-Nr", "Kategorie", "Tags", "Preis", "Beschreibung"]
USERS = ["kid", "Land"]


def _rows(seed=5, users=10, items=25):
    rng = random.Random(seed)
    inter = []
    for u in range(1, users + 1):
        for n in range(rng.randint(8, 16)):
            item = rng.randint(1, items)
            action = rng.choice(["view", "view", "cart", "order"])
            note = rng.choice(["", "ok", 'good, "really"', "two\nlines", "fine; thanks"])
            inter.append([f"K {u}", f"A-{item}", START_MS + rng.randint(0, 6 * DAY) * 1000 + rng.randint(0, 999),
                          float(rng.randint(1, 5)), action, note, rng.randint(1, 4), "x"])
    item_rows = [[f"A-{i}", f"cat{i % 4}", [f"t{i % 3}", f"t{i % 5}"] if i % 6 else [], round(1.5 * i, 2),
                  f"Artikel {i}, sehr gut"] for i in range(1, items + 1)]
    user_rows = [[f"K {u}", rng.choice(["DE", "AT", "CH"])] for u in range(1, users + 1)]
    return inter, item_rows, user_rows


def _description(fmt, files, items_files, users_files, csv_opts=None):
    def source(f):
        out = {"files": f, "format": fmt}
        if csv_opts is not None:
            out["csv"] = csv_opts(f)
        return out

    return {
        "name": f"shop-{fmt}",
        "interactions": dict(source(files), **{
            "user": "Kunde ID", "item": "artikel#", "time": {"column": "zeit(ms)", "unit": "milliseconds"},
            "rating": {"column": "Wertung", "min": 1, "max": 5},
            "behavior": {"column": "aktion", "vocabulary": ["view", "cart", "order"]},
            "columns": {"notiz": {"type": "text", "documents": True, "max_documents": 3},
                        "menge": {"type": "numeric", "dtype": "int", "minimum": 1, "maximum": 9}},
        }),
        "items": dict(source(items_files), **{"key": "Artikel-Nr", "features": {
            "kategorie": {"column": "Kategorie", "type": "categorical", "required": True},
            "tags": {"column": "Tags", "type": "multi_categorical", "separator": ";", "max_values": 2},
            "preis": {"column": "Preis", "type": "numeric", "normalize": "log"},
            "text": {"column": "Beschreibung", "type": "text"}}}),
        "users": dict(source(users_files), **{"key": "kid", "features": {
            "land": {"column": "Land", "type": "categorical"}}}),
        "labels": {"gesehen": {"implicit": True}, "sterne": {"rating": True}, "bestellt": {"behavior": "order"},
                   "gut": {"expr": "rating >= 4"}},
        "tasks": [{"name": "sterne", "kind": "regression"}, {"name": "bestellt", "kind": "binary"},
                  {"name": "gut", "kind": "binary"}, {"name": "items", "kind": "retrieval"}],
    }


def _text(value):
    return ";".join(value) if isinstance(value, list) else str(value)


def _write_csv(path, header, rows, delimiter=",", with_header=True):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter=delimiter, lineterminator="\r\n")
        if with_header:
            w.writerow(header)
        w.writerows([[_text(v) for v in r] for r in rows])


def write_log(root, fmt):
    """Writes the same synthetic log in `fmt` under `root`; returns its description mapping."""
    inter, item_rows, user_rows = _rows()
    os.makedirs(root, exist_ok=True)
    if fmt == "csv":
        half = len(inter) // 2
        _write_csv(os.path.join(root, "log-1.csv"), INTER, inter[:half])
        _write_csv(os.path.join(root, "log-2.csv"), list(reversed(INTER)), [r[::-1] for r in inter[half:]])
        _write_csv(os.path.join(root, "items.csv"), ITEMS, item_rows)
        _write_csv(os.path.join(root, "users.csv"), USERS, user_rows)
        return _description("csv", "log-*.csv", "items.csv", "users.csv")
    if fmt == "tsv":
        _write_csv(os.path.join(root, "log.tsv"), INTER, inter, "\t", with_header=False)
        _write_csv(os.path.join(root, "items.tsv"), ITEMS, item_rows, "\t", with_header=False)
        _write_csv(os.path.join(root, "users.tsv"), USERS, user_rows, "\t", with_header=False)
        columns = {"log.tsv": INTER, "items.tsv": ITEMS, "users.tsv": USERS}
        return _description("tsv", "log.tsv", "items.tsv", "users.tsv",
                            lambda f: {"header": False, "columns": columns[f]})
    if fmt == "jsonl":
        for name, header, rows in (("log.jsonl", INTER, inter), ("items.jsonl", ITEMS, item_rows),
                                   ("users.jsonl", USERS, user_rows)):
            with open(os.path.join(root, name), "w", encoding="utf-8") as f:
                for r in rows:
                    f.write(json.dumps({k: v for k, v in zip(header, r) if v != ""}, ensure_ascii=False) + "\n")
        return _description("jsonl", "log.jsonl", "items.jsonl", "users.jsonl")
    import pyarrow as pa
    import pyarrow.parquet as pq

    for name, header, rows in (("log.parquet", INTER, inter), ("items.parquet", ITEMS, item_rows),
                               ("users.parquet", USERS, user_rows)):
        pq.write_table(pa.table({c: [r[i] for r in rows] for i, c in enumerate(header)}), os.path.join(root, name),
                       row_group_size=50)
    return _description("parquet", "log.parquet", "items.parquet", "users.parquet")


FORMATS = ("csv", "tsv", "jsonl", "parquet")


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    root = tmp_path_factory.mktemp("formats")
    return {fmt: (str(root / fmt), write_log(str(root / fmt), fmt)) for fmt in FORMATS}


def _serialized(examples, types):
    return {split: sorted(encoding.serialize(e.features, types) for e in examples if e.split == split)
            for split in ("train", "eval", "test")}


def _read_split(output_dir, split):
    files = sorted(glob.glob(os.path.join(output_dir, f"Split-{split}", "data_tfrecord-*.gz")))
    return sorted(tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator())


def _nothing_published(output_dir):
    return not (glob.glob(os.path.join(output_dir, "Split-*")) or glob.glob(os.path.join(output_dir, ".ingest-tmp-*"))
                or os.path.exists(os.path.join(output_dir, "ingest_report.json")))


def test_every_format_gives_the_same_examples_in_memory(logs):
    results = {}
    for fmt, (root, values) in logs.items():
        config = IngestConfig(values, negatives_per_positive=1)
        examples, report = inmemory.ingest_in_memory(root, config)
        assert report["bad_rows"]["total"] == 0, (fmt, report["bad_rows"])
        results[fmt] = _serialized(examples, encoding.feature_types(config.spec.description))
    assert results["csv"]["train"] and results["csv"]["test"]
    for fmt in FORMATS[1:]:
        assert results[fmt] == results["csv"], fmt
    # What the examples hold: typed item / user features, outcomes, documents, labels.
    examples, report = inmemory.ingest_in_memory(logs["csv"][0], IngestConfig(logs["csv"][1]))
    one = next(e.features for e in examples if e.features["item_id"] == ["A-6"])
    assert one["item_kategorie"] == ["cat2"] and "item_tags" not in one and one["item_preis"] == [9.0]
    assert one["item_text"] == ["Artikel 6, sehr gut"] and one["user_land"][0] in ("DE", "AT", "CH")
    assert isinstance(one["menge"][0], int) and one["sterne"][0] in (1.0, 2.0, 3.0, 4.0, 5.0)
    assert "gut" not in one and one["bestellt"] in ([0], [1]) and one["timestamp"][0] < 2 * 10 ** 9
    notes = [e.features["notiz"][0] for e in examples if "notiz" in e.features]
    assert {"two\nlines", 'good, "really"', "fine; thanks"} <= set(notes)  # quoted fields, line breaks kept
    assert any(e.features["item_notiz_docs"] for e in examples) and any(e.features["user_notiz_docs"]
                                                                         for e in examples)
    assert report["rows_read"] == {"interactions": len(_rows()[0]), "items": 25, "users": 10}
    assert report["label_positives"]["train"]["bestellt"] > 0 and report["label_positives"]["train"]["gut"] > 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_beam_ingest_writes_what_the_in_memory_ingest_builds(fmt, logs, tmp_path):
    root, values = logs[fmt]
    config = IngestConfig(values, negatives_per_positive=1)
    out, users_out = str(tmp_path / "out"), str(tmp_path / "users")
    report = run_ingest(root, config, out, user_output_dir=users_out)
    examples, expected = inmemory.ingest_in_memory(root, config)
    want = _serialized(examples, encoding.feature_types(config.spec.description))
    for split in ("train", "eval", "test"):
        assert _read_split(out, split) == want[split], split
        assert _read_split(users_out, split)
    for key in ("rows_read", "rows_written", "label_positives", "users", "input_files"):
        assert report[key] == expected[key], key


# ----------------------------------------------------------------------------------------
# Errors (issue 27, point 4)
# ----------------------------------------------------------------------------------------
def _csv_log(tmp_path, mutate=None):
    """The CSV log and its description, optionally changed by `mutate(values)`."""
    root = str(tmp_path / "data")
    values = write_log(root, "csv")
    if mutate:
        mutate(values)
    return root, values


def test_a_missing_column_names_the_file_its_header_and_the_closest_name(tmp_path, logs):
    root, values = _csv_log(tmp_path, lambda v: v["interactions"].update(user="Kunde-ID"))
    path = os.path.join(root, "log-1.csv")
    want = (f"{path}:1: no column 'Kunde-ID' (interactions.user) (did you mean 'Kunde ID'?); the file's columns: "
            f"{', '.join(INTER)}")
    with pytest.raises(ValueError) as err:
        preflight.preflight(values, root)
    assert str(err.value) == want
    out = str(tmp_path / "out")
    with pytest.raises(ValueError, match=r"did you mean 'Kunde ID'\?"):
        run_ingest(root, IngestConfig(values), out)
    assert _nothing_published(out)
    # The same for a side table, a JSON lines file (its keys) and a Parquet file (its schema).
    root, values = _csv_log(tmp_path / "b", lambda v: v["items"]["features"]["preis"].update(column="preis"))
    with pytest.raises(ValueError, match=r"items\.csv:1: no column 'preis' \(items\.features\.preis\) "
                                         r"\(did you mean 'Preis'\?\); the file's columns: Artikel-Nr, Kategorie"):
        preflight.preflight(values, root)
    for fmt in ("jsonl", "parquet"):
        root, values = logs[fmt]
        changed = copy.deepcopy(values)
        changed["interactions"]["columns"]["menge"]["column"] = "Menge"
        with pytest.raises(ValueError) as err:
            preflight.preflight(changed, root)
        assert str(err.value).startswith(f"{os.path.join(root, 'log.' + fmt)}: no column 'Menge' "
                                         f"(interactions.columns.menge) (did you mean 'menge'?); the file's columns: ")


def test_a_value_outside_the_declared_vocabulary_is_a_bad_row_with_file_and_line(tmp_path):
    root, values = _csv_log(tmp_path)
    path = os.path.join(root, "log-1.csv")
    lines = open(path, encoding="utf-8", newline="").read().split("\r\n")
    number = next(i for i, line in enumerate(lines, start=1) if i > 3 and ",view," in line)
    lines[number - 1] = lines[number - 1].replace(",view,", ",refund,")
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("\r\n".join(lines))
    message = (f"{path}:{number}: aktion 'refund' is not one of the declared behaviors ['view', 'cart', 'order']")
    out = str(tmp_path / "out")
    with pytest.raises(ValueError) as err:
        run_ingest(root, IngestConfig(values), out)
    assert message in str(err.value) and "unknown_behavior: 1" in str(err.value)
    assert _nothing_published(out)
    report = run_ingest(root, IngestConfig(values, max_bad_rows=1), out)
    assert report["bad_rows"]["by_reason"] == {"unknown_behavior": {"count": 1, "first": [message]}}
    _, in_memory = inmemory.ingest_in_memory(root, IngestConfig(values, max_bad_rows=1))
    assert in_memory["bad_rows"] == report["bad_rows"]


def test_a_behavior_that_never_occurs_stops_before_the_ingest_naming_the_task(tmp_path):
    def never_returned(v):
        v["interactions"]["behavior"]["vocabulary"].append("return")
        v["labels"]["zurueck"] = {"behavior": "return"}
        v["tasks"].append({"name": "zurueck", "kind": "binary"})

    root, values = _csv_log(tmp_path, never_returned)
    with pytest.raises(preflight.UnfedTaskError) as err:
        preflight.preflight(values, root)
    message = str(err.value)
    assert ("task 'zurueck' (label 'zurueck') cannot be fed: behavior 'return' never occurs in column 'aktion' of "
            f"{os.path.join(root, 'log-1.csv')}, {os.path.join(root, 'log-2.csv')}") in message
    assert "behaviors seen: view: " in message
    out = str(tmp_path / "out")
    with pytest.raises(preflight.UnfedTaskError, match="task 'zurueck'"):
        run_ingest(root, IngestConfig(values), out)
    assert _nothing_published(out)


def test_a_task_without_training_positives_fails_the_ingest_and_publishes_nothing(tmp_path):
    root, values = _csv_log(tmp_path)
    # Orders only from 2017-12-05 on: in the eval and test days of a by_day split.
    config = IngestConfig(values, split="by_day", eval_day="2017-12-05", test_day="2017-12-06")
    for path in glob.glob(os.path.join(root, "log-*.csv")):
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f))
        header = rows[0]
        at, act = header.index("zeit(ms)"), header.index("aktion")
        for r in rows[1:]:
            if r[act] == "order" and int(r[at]) < START_MS + 5 * DAY * 1000:
                r[act] = "cart"
        with open(path, "w", encoding="utf-8", newline="") as f:
            csv.writer(f, lineterminator="\r\n").writerows(rows)
    out = str(tmp_path / "out")
    with pytest.raises(preflight.UnfedTaskError) as err:
        run_ingest(root, config, out)
    assert "task 'bestellt': its label 'bestellt' has no positive example among the" in str(err.value)
    assert "nothing was published" in str(err.value)
    assert _nothing_published(out)
    with pytest.raises(preflight.UnfedTaskError, match="task 'bestellt'"):
        inmemory.ingest_in_memory(root, config)


def test_a_rating_task_without_a_rating_column_is_a_description_error():
    values = _description("csv", "log.csv", "items.csv", "users.csv")
    del values["interactions"]["rating"]
    with pytest.raises(desc.DescriptionError, match="labels.sterne: a rating label needs interactions.rating"):
        IngestConfig(values)


def test_missing_files_and_empty_tables_are_named(tmp_path):
    root, values = _csv_log(tmp_path)
    with open(os.path.join(root, "users.csv"), "w") as f:
        f.write("kid,Land\r\n\r\n")
    with pytest.raises(ValueError, match=r"the users table of dataset 'shop-csv' is empty: .*users\.csv holds no "
                                         r"data rows"):
        preflight.preflight(values, root)
    os.remove(os.path.join(root, "items.csv"))
    with pytest.raises(FileNotFoundError, match=r"items file not found: .*items\.csv"):
        preflight.preflight(values, root)
    values["interactions"]["files"] = "logs/*.csv"
    with pytest.raises(FileNotFoundError, match=r"interactions files: nothing matches 'logs/\*\.csv' in "):
        preflight.preflight(values, root)
    with pytest.raises(FileNotFoundError, match="data directory of dataset 'shop-csv' not found"):
        preflight.preflight(values, str(tmp_path / "nowhere"))
    config = IngestConfig(values)
    with pytest.raises(ValueError, match="no data directory for dataset 'shop-csv'"):
        run_ingest(None, config, str(tmp_path / "out"))


def check_against_raw_features(examples, d):
    """Every written feature is one `raw_features` declares, with its type and value counts."""
    declared = {f.name: f for f in desc.raw_features(d)}
    python_type = {"bytes": str, "int": int, "float": float}
    for e in examples:
        for name, values in e.features.items():
            f = declared[name]
            assert all(type(v) is python_type[f.dtype] for v in values), (name, values)
            assert f.min_count <= len(values) and (f.max_count is None or len(values) <= f.max_count), (name, values)
            if f.minimum is not None and values and f.dtype != "bytes":
                assert min(values) >= f.minimum and (f.maximum is None or max(values) <= f.maximum), (name, values)
            if f.domain:
                assert set(values) <= set(f.domain), (name, values)
        assert {f.name for f in declared.values() if f.required} <= set(e.features)


def test_examples_hold_only_the_raw_features_the_description_declares(logs):
    root, values = logs["csv"]
    config = IngestConfig(values, negatives_per_positive=1)
    examples, _ = inmemory.ingest_in_memory(root, config)
    assert any(e.negative for e in examples)
    check_against_raw_features(examples, config.spec.description)
