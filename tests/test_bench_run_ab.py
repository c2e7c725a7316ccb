"""bench.run_ab: the runner's printed summary read back, and the no-slower goal."""

from bench import run_ab

OUTPUT = """Pipeline on movielens (datasets/movielens.yaml) data from data/movielens-small (split: hash, Beam: in_process)
  ImportSchemaGen              ok          0.1 s
  InteractionExampleGen        ok         14.9 s
  Trainer_mmoe                 ok         23.6 s
  Pusher_mf                    ok          0.2 s

Models (serving base outputs/serving):
  mf             blessed, pushed version 1796621258 -> outputs/serving/mf/1796621258
                 eval:        rmse 0.8622  mae 0.6611  auc 0.7930  calibration 1.0005
                 test:        rmse 0.8737  mae 0.6672  auc 0.7914  calibration 1.0027
                 trained:     best epoch 8 of 10, val_rating_rmse 0.8622
  mmoe           not blessed (rating fails), the served model is unchanged
                 test:        mean_auc 0.8248
                 test liked:  auc 0.8091  pr_auc 0.8074
                 gates liked: 0.17 0.19 0.37 0.27
"""


def test_the_runners_summary_is_read_back():
    parsed = run_ab.parse_output(OUTPUT)
    assert parsed["components"] == {"ImportSchemaGen": 0.1, "InteractionExampleGen": 14.9, "Trainer_mmoe": 23.6,
                                    "Pusher_mf": 0.2}
    assert set(parsed["status"].values()) == {"ok"}
    assert parsed["test"] == {"mf/rmse": 0.8737, "mf/mae": 0.6672, "mf/auc": 0.7914, "mf/calibration": 1.0027,
                              "mmoe/mean_auc": 0.8248, "mmoe/liked/auc": 0.8091, "mmoe/liked/pr_auc": 0.8074}


def _row(checkout, commit, round_, seconds, returncode=0):
    return {"checkout": checkout, "commit": commit, "round": round_, "seconds": seconds, "returncode": returncode,
            "components": {"Transform": seconds / 5}, "status": {}, "test": {"mf/rmse": 0.87}}


def test_no_slower_reads_the_means_and_the_larger_std_and_a_failed_run_fails_it():
    rows = [_row("a", "aaa", 1, 280.0), _row("b", "bbb", 1, 290.0), _row("a", "aaa", 2, 300.0),
            _row("b", "bbb", 2, 296.0)]
    summary = run_ab.summarize(rows, ["a", "b"])
    assert [s["seconds"] for s in summary] == [290.0, 293.0] and summary[0]["components"]["Transform"]["mean"] == 58.0
    assert run_ab.goal_line(summary).endswith("— met")  # 293 <= 290 + 14.1
    slower = run_ab.summarize(rows[:2] + [_row("a", "aaa", 2, 282.0), _row("b", "bbb", 2, 330.0)], ["a", "b"])
    assert run_ab.goal_line(slower).endswith("— not met")  # 310 > 281 + 28.3
    failed = run_ab.summarize(rows[:3] + [_row("b", "bbb", 2, 296.0, returncode=1)], ["a", "b"])
    assert run_ab.goal_line(failed).endswith("— not met")
    text = run_ab.markdown(rows, summary)
    assert "| Transform | 58.0 ± 2.8 | 58.6 ± 0.8 |" in text and "| mf/rmse | 0.8700, 0.8700 | 0.8700, 0.8700 |" in text


def test_rerender_writes_the_page_again_from_the_runs_it_kept(tmp_path):
    import json

    rows = [_row("a", "aaa", 1, 280.0), _row("b", "bbb", 1, 290.0)]
    meta = {"command": "python -m bench.run_ab --checkouts a,b --rounds 1", "machine": "m", "commit": "aaa, bbb"}
    (tmp_path / "run_ab.json").write_text(json.dumps([{"meta": meta}] + rows))
    assert run_ab.main(["--checkouts", "a,b", "--rerender", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "run_ab.md").read_text()
    assert "## Method" in text and "| 1 | bbb | 290.0000 | 0 |" in text
    assert "Produced by: `python -m bench.run_ab --checkouts a,b --rounds 1`" in text
    assert json.loads((tmp_path / "run_ab.json").read_text())[1:] == rows
