"""The ingest benchmark's replicated data: offset (or prefixed) ids, same format, every record once per replica."""

import json
import os

import pytest

from bench import common, ingest
from contract import description as desc

RATINGS = (b"userId,movieId,rating,timestamp\r\n"
           b"1,10,4.0,100\r\n"
           b"3,20,2.5,200\r\n"
           b"\r\n"
           b"2,10,5.0,300\r\n")
MOVIES = (b"movieId,title,genres\r\n"
          b"10,\"American President, The (1995)\",Comedy|Drama\r\n"
          b"20,Heat (1995),Action\r\n"
          b"25,\"Cry, the Beloved Country (1995)\",Drama")  # no line end at the end of the file
MOVIELENS = desc.load("movielens")


def _write(directory, ratings=RATINGS, movies=MOVIES):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ratings.csv").write_bytes(ratings)
    (directory / "movies.csv").write_bytes(movies)
    return directory


def test_replicas_offset_ids_and_keep_the_format(tmp_path):
    src = _write(tmp_path / "src")
    info = ingest.replicate(MOVIELENS, str(src), str(tmp_path / "out"), 3)
    # Offsets: max user id 3 -> 4; max item id 25 (movies.csv) -> 26.
    assert (info.user_offset, info.item_offset, info.rows, info.items) == (4, 26, 9, 9)
    ratings = (tmp_path / "out" / "ratings.csv").read_bytes()
    movies = (tmp_path / "out" / "movies.csv").read_bytes()
    assert info.bytes == len(ratings) + len(movies)
    assert ratings.startswith(RATINGS) and movies.startswith(MOVIES)  # replica 0 byte for byte
    assert ratings[len(RATINGS):] == (b"5,36,4.0,100\r\n7,46,2.5,200\r\n6,36,5.0,300\r\n"
                                      b"9,62,4.0,100\r\n11,72,2.5,200\r\n10,62,5.0,300\r\n")
    assert movies[len(MOVIES):] == (b"\r\n36,\"American President, The (1995)\",Comedy|Drama\r\n"
                                    b"46,Heat (1995),Action\r\n51,\"Cry, the Beloved Country (1995)\",Drama\r\n"
                                    b"62,\"American President, The (1995)\",Comedy|Drama\r\n"
                                    b"72,Heat (1995),Action\r\n77,\"Cry, the Beloved Country (1995)\",Drama\r\n")
    assert sorted(os.listdir(tmp_path / "out")) == ["movies.csv", "ratings.csv"]  # no temp files left


def test_replicated_shipped_data_reads_back_with_disjoint_replicas(movielens_dir, tmp_path):
    info = ingest.replicate(MOVIELENS, str(movielens_dir), str(tmp_path), 2)
    frame = common.read_table(MOVIELENS.interactions, str(tmp_path))
    assert len(frame) == info.rows
    half = info.rows // 2
    first, copy = frame.iloc[0], frame.iloc[half]
    assert int(copy["userId"]) == int(first["userId"]) + info.user_offset
    assert int(copy["movieId"]) == int(first["movieId"]) + info.item_offset
    assert (copy["rating"], copy["timestamp"]) == (first["rating"], first["timestamp"])
    users = [set(part["userId"]) for part in (frame.iloc[:half], frame.iloc[half:])]
    items = [set(part["movieId"]) for part in (frame.iloc[:half], frame.iloc[half:])]
    assert not users[0] & users[1] and not items[0] & items[1] and len(users[0]) == len(users[1])
    catalogue = common.read_table(MOVIELENS.items, str(tmp_path))
    assert len(catalogue) == info.items and set(frame["movieId"]) <= set(catalogue["movieId"])


def test_string_ids_quoted_lines_and_json_lines_are_replicated_with_a_prefix(tmp_path):
    shop = desc.from_dict({
        "name": "shop", "interactions": {"files": "log.csv", "user": "Kunde", "item": "Artikel", "time": "Zeit",
                                          "columns": {"note": {"column": "Notiz", "type": "text"}}},
        "labels": {"seen": {"implicit": True}}, "tasks": [{"name": "items", "kind": "retrieval"}]})
    src = tmp_path / "src"
    src.mkdir()
    log = b'Zeit,Kunde,Artikel,Notiz\n5,A1,B7,"two\nlines, ""quoted"""\n6,A2,B7,plain\n'
    (src / "log.csv").write_bytes(log)
    info = ingest.replicate(shop, str(src), str(tmp_path / "out"), 2)
    assert (info.rows, info.items, info.user_offset, info.item_offset) == (4, 0, 0, 0)
    assert (tmp_path / "out" / "log.csv").read_bytes() == log + (
        b'5,r1-A1,r1-B7,"two\nlines, ""quoted"""\n6,r1-A2,r1-B7,plain\n')
    lines = desc.from_dict({**shop.to_dict(), "interactions": {**shop.to_dict()["interactions"], "files": "log.jsonl"}})
    (src / "log.jsonl").write_bytes(b'{"Zeit": 5, "Kunde": 11, "Artikel": "B7"}\n\n{"Zeit": 6, "Kunde": 12, "Artikel": "B8"}\n')
    info = ingest.replicate(lines, str(src), str(tmp_path / "j"), 2)
    written = [json.loads(l) for l in (tmp_path / "j" / "log.jsonl").read_bytes().splitlines() if l.strip()]
    assert [(r["Kunde"], r["Artikel"]) for r in written] == [(11, "B7"), (12, "B8"), (24, "r1-B7"), (25, "r1-B8")]
    assert info.user_offset == 13


def test_a_missing_column_names_the_file(tmp_path):
    src = _write(tmp_path / "src", ratings=RATINGS.replace(b"userId", b"user"))
    with pytest.raises(ValueError, match=r"ratings\.csv: no column 'userId'"):
        ingest.replicate(MOVIELENS, str(src), str(tmp_path / "out"), 2)
    assert not (tmp_path / "out" / "ratings.csv").exists()


def test_stage_rows_and_a_failed_scale_in_the_markdown():
    ok = {"scale": 1, "profile": "in_process", "rows": 10, "status": "ok", "seconds": 2.0, "rows_per_second": 5.0,
          "example_gen_seconds": 1.0, "transform_seconds": 1.0, "peak_rss_mb": 100.0,
          "component_seconds": {"InteractionExampleGen": 0.5, "Transform": 1.5},
          "stage_peak_rss_mb": {"InteractionExampleGen": 80.0, "Transform": 120.0, "both": 120.0},
          "load_average_at_start": [1.0], "load_average_at_end": [1.5]}
    failed = {"scale": 16, "profile": "multi_process", "rows": 160, "status": "failed", "seconds": None,
              "wall_seconds": 50.0, "error": "child killed by SIGKILL (out of memory?)", "sampled_peak_rss_mb": 9000.0,
              "log_tail": "MemoryError", "load_average_at_start": [2.0], "load_average_at_end": [2.0]}
    rows = ingest.stage_rows([ok, failed])
    assert [(r["stage"], r["profile"], r["seconds"], r["rows_per_second"], r["peak_rss_mb"]) for r in rows] == [
        ("ExampleGen", "in_process", 0.5, 20.0, 80.0), ("Transform", "in_process", 1.5, 6.7, 120.0),
        ("ExampleGen+Transform", "in_process", 2.0, 5.0, 120.0)]
    assert set(rows[0]) == {"stage", "profile", "scale", "rows", "seconds", "rows_per_second", "peak_rss_mb",
                            "load_average"}
    meta = {"command": "python -m bench.ingest --scales 1,4,16", "started": "t", "scales": [1, 4, 16],
            "profiles": ["in_process", "multi_process"], "profile_args": {"in_process": ["--a"]},
            "data_dir": "data/movielens-small", "split": "hash", "seed": 42, "max_history": 64,
            "negatives_per_positive": 0, "niceness": 10,
            "machine": {"nproc": 2, "cpu_model": "cpu", "memory_gb": 1.0, "python": "3.10", "tfx": "1",
                        "tensorflow": "2", "tensorflow_transform": "1", "apache_beam": "2"}}
    text = ingest.render_markdown([ok, failed], meta)
    assert "| Transform | in_process | 1 | 10 | 1.5 | 7 | 120 | 1.0 / 1.5 |" in text
    assert "**Scale 16 (multi_process) did not finish** after 50.0 s: child killed by SIGKILL (out of memory?)" in text
    assert "MemoryError" in text and "multi_process 1x" in text and "in_process 4x" in text
    assert "`python -m bench.ingest --scales 1,4,16`" in text and "Split: `hash`; seed: 42" in text


def test_component_cpu_from_runner_log_records():
    import logging

    handler = ingest._ComponentCpu()
    logger = logging.getLogger("test_bench_ingest.cpu")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.info("Component %s is running.", "Transform")
        logger.info("Component Other is finished.")  # never started: ignored
        sum(i * i for i in range(300_000))
        logger.info("Component %s is finished.", "Transform")
        logger.info("Component Transform is finished, and more")  # not the runner's line
    finally:
        logger.removeHandler(handler)
    assert set(handler.seconds) == {"Transform"} and handler.seconds["Transform"] >= 0
    fields = ingest._cpu_fields({"cpu_timings": {"InteractionExampleGen": 3.0, "Transform": 5.0}}, 40)
    assert (fields["cpu_seconds"], fields["rows_per_cpu_second"]) == (8.0, 5.0)
    assert ingest._cpu_fields({}, 40) == {}


def test_trainer_row_from_one_worker_on_a_runs_transform_output(trained_run, tmp_path):
    config = trained_run[0]
    data = {"scale": 1, "pipeline_root": config.pipeline_root, "rows_written": {"train": 1000}}
    row = ingest.measure_trainer(1, data, str(tmp_path), "mf", epochs=2)
    assert row["status"] == "ok", row.get("log_tail")
    assert (row["stage"], row["profile"], row["workers"], row["replicas"]) == ("Trainer (mf)", "1 worker", 1, 1)
    # Early stopping cannot cut the run short: rows are the training rows once per epoch.
    assert row["epochs_run"] == 2 and row["rows"] == 2000
    assert row["rows_per_second"] == round(2000 / row["seconds"], 1) and row["peak_rss_mb"] > 100
    assert (tmp_path / "trainer-mf-1" / "model" / "saved_model.pb").exists()

    stages = ingest.stage_rows([row])
    assert [(r["stage"], r["profile"], r["rows"]) for r in stages] == [("Trainer (mf)", "1 worker", 2000)]
    meta = {"command": "c", "started": "t", "scales": [1], "profiles": [], "trainer_workers": [1, 2],
            "data_dir": "d", "split": "hash", "seed": 42, "max_history": 64, "negatives_per_positive": 0,
            "niceness": 0, "machine": {"nproc": 2, "cpu_model": "cpu", "memory_gb": 1.0, "python": "3.10",
                                       "tfx": "1", "tensorflow": "2", "tensorflow_transform": "1", "apache_beam": "2"}}
    text = ingest.render_markdown([row], meta)
    assert "| mf | 1 | 2 | 2,000 |" in text and "Trainer with 2 worker(s)" in text


def test_whole_pipeline_rows_grow_against_the_smallest_scale():
    def run(scale, trainer_s, trainer_peak):
        return {"scale": scale, "profile": "in_process", "rows": 10 * scale, "status": "ok", "families": ["mf"],
                "seconds": 2.0 * scale, "rows_per_second": 5.0, "pipeline_seconds": 10.0 * scale,
                "process_cpu_seconds": 12.0 * scale, "sampled_peak_rss_mb": 900.0 + scale,
                "component_seconds": {"InteractionExampleGen": 0.5 * scale, "Transform": 1.5 * scale,
                                      "Resolver_mf": 0.0, "Trainer_mf": trainer_s},
                "component_cpu_seconds": {"InteractionExampleGen": 0.6 * scale, "Transform": 2.0 * scale,
                                          "Trainer_mf": 2 * trainer_s},
                "stage_peak_rss_mb": {"InteractionExampleGen": 80.0, "Transform": 120.0, "both": 120.0,
                                      "Resolver_mf": 120.0, "Trainer_mf": trainer_peak},
                "load_average_at_start": [1.0], "load_average_at_end": [1.5]}

    runs = [run(1, 4.0, 500.0), run(4, 8.0, 2500.0)]
    rows = ingest.pipeline_stage_rows(runs)
    # the resolver (under a second at every scale) has no row; the stages keep their run order
    assert [(r["stage"], r["scale"]) for r in rows] == [
        (s, scale) for scale in (1, 4) for s in ("ExampleGen", "Transform", "Trainer_mf", ingest.PIPELINE)]
    trainer = {r["scale"]: r for r in rows if r["stage"] == "Trainer_mf"}
    assert (trainer[4]["x_rows"], trainer[4]["x_seconds"], trainer[4]["x_cpu"], trainer[4]["x_peak_rss"]) == \
        (4.0, 2.0, 2.0, 5.0)
    whole = {r["scale"]: r for r in rows if r["stage"] == ingest.PIPELINE}
    assert (whole[4]["seconds"], whole[4]["cpu_seconds"], whole[4]["x_seconds"]) == (40.0, 48.0, 4.0)
    # scale.json keeps the data-stage rows and adds the other stages and the whole pipeline once
    stages = [r["stage"] for r in ingest.stage_rows(runs) if r["scale"] == 4]
    assert stages == ["ExampleGen", "Transform", "ExampleGen+Transform", "Trainer_mf", ingest.PIPELINE]
    meta = {"command": "python -m bench.ingest --families mf", "started": "t", "scales": [1, 4],
            "profiles": ["in_process"], "profile_args": {"in_process": ["--a"]}, "families": ["mf"],
            "data_dir": "d", "split": "hash", "seed": 42, "max_history": 64, "negatives_per_positive": 0,
            "niceness": 0, "machine": {"nproc": 2, "cpu_model": "cpu", "memory_gb": 1.0, "python": "3.10",
                                       "tfx": "1", "tensorflow": "2", "tensorflow_transform": "1",
                                       "apache_beam": "2"}}
    text = ingest.render_markdown(runs, meta)
    assert "| Trainer_mf | in_process | 4 | 40 | 4.00 | 8.0 | 2.00 | 16.0 | 2.00 | 2,500 | 5.00 |" in text
    assert "with families=('mf',)" in text


def test_stage_peaks_cover_every_component_and_short_ones_take_the_nearest_sample():
    samples = [(0.0, 1024), (1.0, 2048), (2.0, 4096), (3.0, 1024)]
    windows = {"InteractionExampleGen": [0.0, 1.0], "Transform": [1.5, 2.5], "Resolver": [2.9, 2.95]}
    peaks = ingest._stage_peaks(samples, windows)
    assert peaks == {"InteractionExampleGen": 2.0, "Transform": 4.0, "both": 4.0, "Resolver": 1.0}
