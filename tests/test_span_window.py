"""The rolling window, the drift gate and the run record of scheduled runs on spans (no pipeline run)."""
import json
import os

import pandas as pd
import pytest
import tensorflow_data_validation as tfdv
from tfx.types import standard_artifacts

from components import drift, span_runs, window
from contract import description as desc

SCHEMA = os.path.join(os.path.dirname(__file__), "..", "schemas", "movielens", "schema.pbtxt")


def test_the_window_trains_on_the_last_n_spans_before_eval_and_test():
    spans = [(s, f"ex{s}", f"us{s}") for s in (5, 1, 2, 3, 4)]
    w = window.assemble(spans, train_spans=2)
    assert (w["train"], w["eval"], w["test"]) == ([2, 3], 4, 5)
    assert w["uris"][3] == ("ex3", "us3") and 1 not in w["uris"]
    # a span delivered again (later in the list) replaces the accepted one
    assert window.assemble(spans + [(5, "ex5b", "us5b")], 2)["uris"][5] == ("ex5b", "us5b")
    w = window.assemble(spans[:3], train_spans=7)
    assert (w["train"], w["eval"], w["test"]) == ([1], 2, 5)
    with pytest.raises(window.WindowError, match=r"at least 3 spans .* \[1, 5\]"):
        window.assemble(spans[:2], 7)


def _artifact(kind, id_, span=None, ingest=""):
    a = kind()
    a.id = id_
    if span is not None:
        a.span = span
    a.set_string_custom_property(window.INGEST_PROPERTY, ingest)
    return a


def _accepted(ingest):
    return _artifact(window.SpanAcceptance, 0, ingest=ingest)


def test_only_accepted_ingests_are_carried_and_windowed():
    states = [_artifact(window.SpanState, 1, 2, "run1"), _artifact(window.SpanState, 2, 3, "run2"),
              _artifact(window.SpanState, 3, 3, "run3")]
    resolve = window.AcceptedStateStrategy().resolve_artifacts
    # run2 was stopped by a gate: run3 continues from run1's state; before any acceptance, from nothing
    assert [a.id for a in resolve(None, {"state": states, "accepted": [_accepted("run1"), _accepted("run3")]})["state"]] == [3]
    assert [a.id for a in resolve(None, {"state": states, "accepted": [_accepted("run1")]})["state"]] == [1]
    assert resolve(None, {"state": states, "accepted": []})["state"] == []

    ex = [_artifact(standard_artifacts.Examples, i, span, ingest) for i, span, ingest in
          [(10, 0, "run1"), (11, 1, "run1"), (12, 2, "run1"), (13, 3, "run2"), (14, 3, "run3"), (15, 4, "run3")]]
    users = [_artifact(standard_artifacts.Examples, 100 + a.id, a.span, a.get_string_custom_property("ingest"))
             for a in ex]
    out = window.WindowSpansStrategy(spans=3).resolve_artifacts(
        None, {"examples": ex, "user_examples": users, "accepted": [_accepted("run1"), _accepted("run3")]})
    assert [(a.span, a.id) for a in out["examples"]] == [(2, 12), (3, 14), (4, 15)]
    assert sorted(a.id for a in out["user_examples"]) == [112, 114, 115]


def test_an_output_template_without_an_ingest_is_not_a_span():
    real = [_artifact(standard_artifacts.Examples, i, i, "run1") for i in (1, 2)]
    template = _artifact(standard_artifacts.Examples, 3, None, "")
    assert window.spans_of([template] + real) == real


def test_link_split_gathers_each_spans_role_files(tmp_path):
    for span in (1, 2):
        d = tmp_path / f"span-{span}" / "Split-eval"
        d.mkdir(parents=True)
        (d / "data_tfrecord-00000-of-00001.gz").write_bytes(b"x" * span)
    n = window.link_split([(1, str(tmp_path / "span-1")), (2, str(tmp_path / "span-2"))], "eval", str(tmp_path / "w"))
    assert n == 2
    assert sorted(os.listdir(tmp_path / "w" / "Split-eval")) == [
        "span-1-data_tfrecord-00000-of-00001.gz", "span-2-data_tfrecord-00000-of-00001.gz"]


def _stats(tmp_path, frames):
    for split, frame in frames.items():
        stats = tfdv.generate_statistics_from_dataframe(frame)
        path = tmp_path / "stats" / f"Split-{split}" / "FeatureStats.pb"
        path.parent.mkdir(parents=True)
        path.write_bytes(stats.SerializeToString())
    return str(tmp_path / "stats")


def _frame(ratings, behaviors):
    return pd.DataFrame({"rating": ratings, "history_behaviors": behaviors})


def test_drift_measures_the_newest_span_against_the_window_and_stops_with_how_to_proceed(tmp_path):
    train = _frame([1.0, 3.0, 4.0, 5.0, 4.5, 2.5] * 20, ["liked", "neutral", "liked", "disliked", "liked", "neutral"] * 20)
    same = _frame([1.0, 3.0, 4.0, 5.0, 4.5, 2.5] * 5, ["liked", "neutral", "liked", "disliked", "liked", "neutral"] * 5)
    shifted = _frame([0.5] * 30, ["disliked"] * 30)
    assert drift.watched_features(desc.load("movielens"))["history_behaviors"] == drift.L_INFTY
    quiet = drift.measure(_stats(tmp_path / "a", {"train": train, "test": same}), SCHEMA, "movielens")
    found = {f.feature: f for f in quiet}
    assert found["rating"].measure == drift.JSD and found["rating"].value < 0.05
    assert not any(f.exceeded for f in quiet)

    stats = _stats(tmp_path / "b", {"train": train, "test": shifted})
    loud = {f.feature: f for f in drift.measure(stats, SCHEMA, "movielens")}
    assert loud["rating"].exceeded and loud["history_behaviors"].exceeded
    assert not {f.feature: f for f in drift.measure(stats, SCHEMA, "movielens", {"rating": 1.0})}["rating"].exceeded
    assert "rating" not in {f.feature for f in drift.measure(stats, SCHEMA, "movielens", {"rating": 0})}
    with pytest.raises(ValueError, match="drift_thresholds name features \\['ratng'\\]"):
        drift.measure(stats, SCHEMA, "movielens", {"ratng": 0.1})

    schema_dir = tmp_path / "schema"
    schema_dir.mkdir()
    (schema_dir / "schema.pbtxt").write_text(open(SCHEMA).read())
    out = tmp_path / "out"
    accepted = tmp_path / "accepted"
    accepted.mkdir()
    with pytest.raises(drift.DataDriftError) as stop:
        drift._drift_gate(stats, str(schema_dir), {"train": [1, 2], "eval": 3, "test": 4}, str(accepted),
                          json.dumps(desc.load("movielens").to_dict()), "{}", SCHEMA, str(out), "run7", [4])
    message = str(stop.value)
    assert "newest span (4) drifted from the training window (spans [1, 2])" in message
    assert "feature 'rating': JENSEN_SHANNON_DIVERGENCE" in message and "How to proceed" in message
    assert "served models are unchanged" in message
    assert not (accepted / drift.DRIFT_FILE).exists()
    [entry] = span_runs.read(str(out))
    assert (entry["stage"], entry["status"], entry["spans"], entry["window"]) == ("DriftGate", "stopped", [4], [1, 2, 3, 4])
    assert entry["reason"].startswith("drift: feature 'history_behaviors'")


def test_the_run_record_appends_entries(tmp_path):
    assert span_runs.read(str(tmp_path)) == []
    span_runs.record(str(tmp_path), "SpanExampleGen", span_runs.STOPPED, "bad rows", [3])
    span_runs.record(str(tmp_path), "Pusher_mf", span_runs.PUSHED, "blessed", [4], [1, 2, 3, 4], {"version": "7"})
    entries = span_runs.read(str(tmp_path))
    assert [(e["stage"], e["status"], e["spans"]) for e in entries] == [
        ("SpanExampleGen", "stopped", [3]), ("Pusher_mf", "pushed", [4])]
    assert entries[1]["details"] == {"version": "7"}
    assert span_runs.record("", "X", span_runs.STOPPED, "nothing written")["stage"] == "X"


def test_the_report_and_the_model_card_show_the_window_the_drift_and_every_run(tmp_path):
    import dataclasses

    from pipeline import html_report, model_card
    from pipeline.configs import PipelineConfig

    win, acc = tmp_path / "window", tmp_path / "accepted"
    win.mkdir()
    acc.mkdir()
    (win / window.WINDOW_REPORT).write_text(json.dumps(
        {"train": [1, 2], "eval": 3, "test": 4, "new_spans": [4], "rows": {"1": 5, "4": 7}, "ingest_seconds": {"4": 1.5}}))
    (acc / drift.DRIFT_FILE).write_text(json.dumps({"drift": drift.as_rows(
        [drift.FeatureDrift("rating", drift.JSD, 0.01, 0.2), drift.FeatureDrift("item_year", drift.JSD, float("nan"), 0.2)])}))
    out = tmp_path / "out"
    span_runs.record(str(out), "DriftGate", span_runs.STOPPED, "drift: feature 'rating': too far", [3])
    outputs = {"SpanWindow": {"window_examples": str(win)}, "DriftGate": {"accepted": str(acc)}}
    config = dataclasses.replace(PipelineConfig(), output_dir=str(out))
    text = html_report.daily_section(config, outputs)
    assert "<td>1, 2</td>" in text and "<td>1.5000</td>" in text and "n/a" in text
    assert "drift: feature &#x27;rating&#x27;: too far" in text and "stopped" in text
    lines = model_card.daily_lines(outputs, {"warm_start": {"base_model": "/m/1", "copied": 3, "id_tables": {
        "0:embeddings": {"vocabulary": "item_id_vocab", "known_ids": 10, "new_ids": 2}}}})
    assert "- Trained on spans 1, 2; gated on span 3, reported on span 4 (new this run: 4)." in lines
    assert "- Warm start: from /m/1, 3 weights copied, id tables item_id_vocab 10 known / 2 new." in lines
    assert "| rating | JENSEN_SHANNON_DIVERGENCE | 0.01 | 0.2 |" in lines
    assert "from scratch" in model_card.daily_lines(outputs, {})[4]
