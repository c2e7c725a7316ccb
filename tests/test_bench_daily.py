"""bench/daily.py's summary of warm against cold days (no pipeline run)."""
import html

import pytest

from bench import daily


def _row(day, arm, rmse, seconds, warm=True, status="ok"):
    return {"day": day, "arm": arm, "status": status,
            "families": {"mf": {"eval": {"rmse": rmse}, "train_seconds": seconds, "warm_start": warm or arm == "cold"}}}


def test_summary_pairs_days_both_arms_trained_and_checks_the_goals():
    rows = [_row(0, "warm", 1.0, 10, warm=False), _row(0, "cold", 1.0, 10),  # day 0: nothing to start from
            _row(1, "warm", 0.95, 4), _row(1, "cold", 0.90, 10),
            _row(2, "warm", 0.93, 4), _row(2, "cold", 1.00, 10),
            _row(3, "warm", 0.0, 0, status="stopped in DriftGate"), _row(3, "cold", 0.0, 0, status="stopped in DriftGate")]
    summary = daily.summarize(rows, ["mf"])["mf"]
    assert summary["days"] == 2
    rmse = summary["metrics"]["rmse"]
    assert round(rmse["warm"]["mean"], 4) == 0.94 and round(rmse["cold"]["mean"], 2) == 0.95
    assert rmse["within_one_std"] is True  # |0.94 - 0.95| <= std(0.90, 1.00) = 0.0707
    assert summary["train_seconds"] == {"warm": 8, "cold": 20, "ratio": 0.4, "ratio_interval": [0.4, 0.4]}


def _ok(day, arm, rows, history, egen_seconds, pushed=True, served_changed=True, record=()):
    return {"day": day, "arm": arm, "status": "ok", "new_spans": list(range(len(rows))), "window_rows": rows,
            "history_spans": history, "rows_ingested": sum(rows), "stage_seconds": {"SpanExampleGen": egen_seconds},
            "served_changed": served_changed, "record": list(record),
            "families": {"mf": {"pushed": pushed}}}


def test_goals_check_what_each_run_ingested_and_that_failures_left_the_served_model():
    drift = {"stage": "DriftGate", "status": "stopped", "reason": "rating's 'drift' 0.9 > 0.3"}
    worse = {"stage": "Pusher_mf", "status": "not_pushed", "reason": "mf: not blessed (rmse worse)"}
    rows = [_ok(0, "warm", [100, 100, 100], 0, 9.0),
            _ok(1, "warm", [100], 3, 5.0),
            {"day": 2, "arm": "warm", "status": "stopped in DriftGate", "stage_seconds": {}, "served_changed": False,
             "record": [drift]},
            _ok(3, "warm", [100, 100], 3, 6.0),  # the stopped day's span again, and today's
            _ok(4, "warm", [100], 5, 5.0, pushed=False, served_changed=False, record=[worse]),
            _ok(5, "warm", [100], 6, 5.0)]
    delivered = {"warm": {0: [100] * 3, 1: [100], 2: [100], 3: [100, 100], 4: [100], 5: [100]}}
    report = "<td>" + html.escape(drift["reason"]) + "</td><td>" + html.escape(worse["reason"]) + "</td>"
    lines = daily.goal_lines(rows, {}, delivered, {"warm": report})
    ingest, failures = lines
    assert ingest.startswith("- A run on new spans ingests only them: 4 of 4 ") and ingest.endswith("— met")
    assert failures.startswith("- No failure changes what is served: 2 of 2 ") and "2 of 2 are in" in failures
    assert failures.endswith("— met")

    # A run that ingested a span it had already accepted, or a failure missing from the report
    delivered["warm"][5] = []
    assert daily.goal_lines(rows, {}, delivered, {"warm": ""})[0].endswith("— not met")
    assert "0 of 2 are in" in daily.goal_lines(rows, {}, delivered, {"warm": ""})[1]
    rows[4]["served_changed"] = True
    assert daily.goal_lines(rows, {}, delivered, {"warm": report})[1].endswith("— not met")


def test_goals_judge_trainer_time_by_cpu_seconds():
    rows = [_row(1, "warm", 0.95, 4), _row(1, "cold", 0.90, 10), _row(2, "warm", 0.93, 4), _row(2, "cold", 1.00, 10)]
    for r, cpu, epochs in zip(rows, (3, 10, 3, 10), (2, 6, 2, 6)):
        r["families"]["mf"].update(train_cpu_seconds=cpu, epochs_run=epochs)
    summary = daily.summarize(rows, ["mf"])
    assert summary["mf"]["train_cpu_seconds"] == {"warm": 6, "cold": 20, "ratio": 0.3, "ratio_interval": [0.3, 0.3]}
    metrics, time = daily.goal_lines([], summary, {}, {})[:2]
    assert metrics.endswith("— met") and time.endswith("— met") and "epochs 4 / 12" in time
    assert "= 0.3 (95% interval over resampled days [0.3, 0.3])" in time
    rows[0]["families"]["mf"]["train_cpu_seconds"] = 9
    assert daily.goal_lines([], daily.summarize(rows, ["mf"]), {}, {})[1].endswith("— not met")
    # A centre at most half whose interval reaches above it is not met: days 0.1 and 0.8
    rows[0]["families"]["mf"]["train_cpu_seconds"], rows[2]["families"]["mf"]["train_cpu_seconds"] = 1, 8
    summary = daily.summarize(rows, ["mf"])
    assert summary["mf"]["train_cpu_seconds"]["ratio"] <= 0.5 < summary["mf"]["train_cpu_seconds"]["ratio_interval"][1]
    assert daily.goal_lines([], summary, {}, {})[1].endswith("— not met")


def test_goals_flag_examplegen_time_that_grows_with_the_history():
    rows = [_ok(day, "warm", [100], 2 + day, seconds) for day, seconds in enumerate([5.0, 5.2, 4.8, 9.0, 11.0, 13.0], 1)]
    delivered = {"warm": {day: [100] for day in range(1, 7)}}
    assert daily.goal_lines(rows, {}, delivered, {})[0].endswith("— not met")
    rows[-1]["stage_seconds"]["SpanExampleGen"] = rows[-2]["stage_seconds"]["SpanExampleGen"] = 5.0
    rows[-3]["stage_seconds"]["SpanExampleGen"] = 5.1
    assert daily.goal_lines(rows, {}, delivered, {})[0].endswith("— met")


def test_main_writes_the_goals_and_the_table_around_the_runs(tmp_path, monkeypatch):
    """main's bookkeeping (what each day delivers, the stopped day delivered again, the files)
    with the pipeline run replaced by its record of the spans present."""
    import json
    import os

    data_files = lambda: sorted(p for p in os.listdir(tmp_path / "work" / "data" / "log") if p.startswith("date="))

    accepted = {"warm": set(), "cold": set()}

    def run_day(config, day, arm):
        present = data_files()
        new = [p for p in present if p not in accepted[arm]]
        if day == 2:
            return {"day": day, "arm": arm, "status": "stopped in DriftGate", "stage_seconds": {},
                    "served_changed": False, "wall_seconds": 1.0,
                    "record": [{"stage": "DriftGate", "status": "stopped", "reason": "drifted"}]}
        accepted[arm].update(new)
        with open(os.path.join(config.output_dir, "report.html"), "w") as f:
            f.write("<td>drifted</td>")
        rows = [len(open(os.path.join(tmp_path, "work", "data", "log", p, "part-0.csv")).read().splitlines()) - 1
                for p in new]
        return {"day": day, "arm": arm, "status": "ok", "new_spans": new, "window_rows": rows, "rows_ingested": sum(rows),
                "history_spans": len(present) - len(new), "stage_seconds": {"SpanExampleGen": 5.0},
                "wall_seconds": 1.0, "served_changed": True, "record": [],
                "families": {"mf": {"eval": {"rmse": 1.0 - 0.01 * day}, "train_seconds": 2.0 if arm == "warm" else 5.0,
                                    "train_cpu_seconds": 1.0 if arm == "warm" else 4.0, "trainer_seconds": 9.0,
                                    "epochs_run": 2 if arm == "warm" else 5, "best_epoch": 1,
                                    "warm_start": arm == "warm" and day > 0, "pushed": True}}}

    monkeypatch.setattr(daily, "run_day", lambda config, day, arm: (os.makedirs(config.output_dir, exist_ok=True),
                                                                     run_day(config, day, arm))[1])
    monkeypatch.setattr(daily, "RESULTS_DIR", str(tmp_path))
    assert daily.main(["--days", "4", "--rows", "700", "--drift_day", "2", "--work_dir", str(tmp_path / "work")]) == 0
    written = json.load(open(tmp_path / "daily.json"))
    goals = written[0]["goals"]
    assert [g.endswith("— met") for g in goals] == [True] * 4
    assert "6 of 6 later runs ingested exactly" in goals[2]
    assert [len(r.get("new_spans") or []) for r in written[1:] if r["arm"] == "warm"] == [3, 1, 0, 2, 1]
    stopped_day = os.path.join(tmp_path, "work", "data", "log", data_files()[4], "part-0.csv")
    assert {line.split(",")[2] for line in open(stopped_day).read().splitlines()[1:]} != {"0.5"}  # delivered again, fixed
    md = open(tmp_path / "daily.md").read()
    assert md.splitlines()[2] == "## Goals" and "Produced by: `python -m bench.daily --days 4" in md
    # --rescore runs nothing and re-checks the goals of the written rows
    monkeypatch.setattr(daily, "run_day", None)
    assert daily.main(["--days", "4", "--rows", "700", "--drift_day", "2", "--work_dir", str(tmp_path / "work"),
                       "--rescore"]) == 0
    rescored = json.load(open(tmp_path / "daily.json"))
    assert rescored[0]["goals"] == goals and rescored[0]["meta"] == written[0]["meta"] and rescored[1:] == written[1:]
    assert "Goals re-checked from these rows" in open(tmp_path / "daily.md").read()


def test_warm_replay_chooses_the_warm_scale_with_the_best_mean_eval_value():
    from bench.warm_replay import COLD, choose

    rows = [{"setting": s, "best_value": v, "epochs_run": 5, "train_cpu_seconds": 1.0}
            for s, v in [(COLD, 0.80), ("warm x1", 0.90), ("warm x1", 0.92), ("warm x4", 0.88), ("warm x4", 0.86)]]
    assert choose(rows, "min")["chosen"] == "warm x4"  # from scratch is a reference, never the choice
    assert choose(rows, "max")["chosen"] == "warm x1"
    assert choose(rows, "min")["settings"]["warm x4"]["best_value"]["mean"] == pytest.approx(0.87)


def test_the_time_ratio_interval_resamples_days():
    low, high = daily.ratio_interval([(1, 10), (9, 10), (5, 10)])
    assert 0.1 <= low < 0.5 < high <= 0.9  # each resample's ratio lies between the days' own
    assert daily.ratio_interval([(1, 10)]) is None
