"""The `describe` command: a draft description from a sample of the files, loadable as written."""
import json
import os
import random

import pytest
import yaml

from components.example_gen import describe, inmemory
from components.example_gen.config import IngestConfig
from contract import description as desc

T0 = 1_500_000_000


def _load(path):
    return desc.from_dict(yaml.safe_load(open(path, encoding="utf-8").read()), str(path))


def _ratings_csv(root, rows=300):
    rng = random.Random(1)
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "reviews.csv"), "w", encoding="utf-8", newline="") as f:
        f.write("Customer Id,product_code,Stars,posted,comment,tags,votes\r\n")
        for n in range(rows):
            comment = rng.choice(["Great value, would buy again and again", "Terrible; it broke after a week",
                                  "Okay for the price but the strap is short"])
            f.write(f"c{rng.randint(1, 40)},P{rng.randint(1, 60):03d},{rng.randint(1, 5)},{T0 + n * 3600},"
                    f"\"{comment}\",{rng.choice(['red|small', 'blue', 'red|large|sale'])},{rng.randint(0, 900)}\r\n")
    with open(os.path.join(root, "products.csv"), "w", encoding="utf-8", newline="") as f:
        f.write("code,title,brand\r\n")
        for i in range(1, 61):
            f.write(f"P{i:03d},\"Widget {i}, deluxe (20{i % 20:02d})\",brand{i % 7}\r\n")
    return root


def test_a_csv_log_with_a_side_table_gives_a_loadable_draft_with_the_right_roles(tmp_path):
    root = _ratings_csv(str(tmp_path / "data"))
    out = tmp_path / "desc" / "reviews.yaml"
    assert describe.main([os.path.join(root, "reviews.csv"), "--items", os.path.join(root, "products.csv"),
                          "--out", str(out)]) == 0
    text = out.read_text()
    assert "# CHECK" in text
    d = _load(out)
    assert (d.user, d.item, d.time, d.time_unit, d.rating, d.rating_min, d.rating_max) == (
        "Customer Id", "product_code", "posted", "seconds", "Stars", 1, 5)
    columns = {c.column: c for c in d.columns}
    assert columns["comment"].type == "text" and columns["tags"].type == "multi_categorical"
    assert columns["tags"].separator == "|" and columns["votes"].type == "numeric" and columns["votes"].dtype == "int"
    assert d.item_key == "code"
    item = {f.name: f for f in d.item_features}
    assert item["brand"].type == "categorical" and item["title_year"].pattern and item["title_year"].dtype == "int"
    assert {l.name: l.source for l in d.labels} == {"interacted": "implicit", "rating": "rating"}
    assert os.path.normpath(d.data_dir) == os.path.normpath(root)
    # The draft runs as written.
    examples, report = inmemory.ingest_in_memory(None, IngestConfig(d))
    assert report["bad_rows"]["total"] == 0 and sum(report["rows_written"].values()) == 300
    assert all("item_brand" in e.features for e in examples)


def test_a_headerless_tsv_names_its_columns_by_role_and_finds_the_behaviors(tmp_path):
    rng = random.Random(2)
    path = tmp_path / "events.tsv"
    lines = []
    for n in range(400):
        b = rng.choice(["view"] * 8 + ["cart", "buy"])
        lines.append(f"{rng.randint(1, 30)}\t{rng.randint(100000, 100400)}\t{b}\t{(T0 + n * 60) * 1000}\tcat{n % 9}")
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "events.yaml"
    assert describe.main([str(path), "--out", str(out), "--name", "events"]) == 0
    d = _load(out)
    assert d.interactions.format == "tsv" and not d.interactions.header
    assert d.interactions.columns == ("user_id", "item_id", "behavior", "timestamp", "column_5")
    assert (d.user, d.item, d.time, d.time_unit, d.behavior_column) == (
        "user_id", "item_id", "timestamp", "milliseconds", "behavior")
    assert d.behaviors[0] == "view" and set(d.behaviors) == {"view", "cart", "buy"}
    assert {l.name for l in d.labels if l.source == "behavior"} == {"cart", "buy"}
    _, report = inmemory.ingest_in_memory(None, IngestConfig(d))
    assert report["bad_rows"]["total"] == 0 and report["rows_read"]["interactions"] == 400


def test_json_lines_with_iso_times_and_parquet(tmp_path):
    rng = random.Random(3)
    records = [{"visitor": f"v{rng.randint(1, 20)}", "article": f"a{rng.randint(1, 50)}",
                "at": f"2021-03-{1 + n % 28:02d}T10:{n % 60:02d}:00Z", "genres": ["x", "y"][: 1 + n % 2],
                "score": rng.randint(1, 10)} for n in range(200)]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    d = desc.from_dict(yaml.safe_load(describe.draft([str(tmp_path / "log.jsonl")], out_dir=str(tmp_path))))
    assert (d.user, d.item, d.time, d.time_unit, d.rating) == ("visitor", "article", "at", "iso8601", "score")
    assert {c.column: c.type for c in d.columns} == {"genres": "multi_categorical"}
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({k: [r[k] for r in records] for k in records[0]}), tmp_path / "log.parquet")
    assert describe.main([str(tmp_path / "log.parquet"), "--out", str(tmp_path / "p.yaml")]) == 0
    d = _load(tmp_path / "p.yaml")
    assert (d.interactions.format, d.user, d.item, d.time_unit) == ("parquet", "visitor", "article", "iso8601")
    _, report = inmemory.ingest_in_memory(None, IngestConfig(d))
    assert report["bad_rows"]["total"] == 0 and report["rows_read"]["interactions"] == 200


def test_the_output_is_kept_unless_forced_and_bad_input_is_named(tmp_path, capsys):
    root = _ratings_csv(str(tmp_path / "data"), rows=50)
    out = tmp_path / "d.yaml"
    out.write_text("mine")
    with pytest.raises(SystemExit):
        describe.main([os.path.join(root, "reviews.csv"), "--out", str(out)])
    assert "exists; pass --force" in capsys.readouterr().err and out.read_text() == "mine"
    assert describe.main([os.path.join(root, "reviews.csv"), "--out", str(out), "--force"]) == 0
    assert _load(out).name == "data"
    assert [p for p in os.listdir(tmp_path) if p.startswith(".")] == []  # no temporary file left
    (tmp_path / "array.json").write_text('[{"a": 1}]')
    assert describe.main([str(tmp_path / "array.json")]) == 2
    assert "a JSON array, not JSON lines" in capsys.readouterr().err
