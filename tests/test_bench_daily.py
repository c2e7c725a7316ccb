"""bench/daily.py's summary of warm against cold days (no pipeline run)."""
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
    assert summary["train_seconds"] == {"warm": 8, "cold": 20, "ratio": 0.4}
