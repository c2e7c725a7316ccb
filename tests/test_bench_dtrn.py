"""The DTRN benchmark's bookkeeping: rows from per-seed values, merged runs, and the goal
and ablation verdicts (direction per metric, "no difference" within one std)."""

import json

import numpy as np
import pytest

from bench import dtrn

METRICS = {"movielens": {"liked": "auc", "rating": "rmse"}}


def _entry(liked, rating, seeds):
    return {"eval/liked": [v - 0.01 for v in liked], "test/liked": liked, "eval/rating": rating,
            "test/rating": rating, "params": 100, "seeds": seeds, "epochs": [1] * len(seeds),
            "train_seconds": [1.0] * len(seeds), "serve_ms_b1": [1.0] * len(seeds),
            "serve_ms_b100": [2.0] * len(seeds)}


def _results(seeds=(42, 43)):
    n = len(seeds)
    return {"movielens": {
        "mmoe": _entry([0.80] * n, [0.86] * n, list(seeds)),
        "ple": _entry([0.81, 0.812][:n], [0.85, 0.852][:n], list(seeds)),
        "dtrn": _entry([0.83, 0.832][:n], [0.853, 0.851][:n], list(seeds)),
        "no_hyper": _entry([0.82, 0.822][:n], [0.8525, 0.8515][:n], list(seeds)),
    }}


def test_rows_carry_the_issues_columns_with_mean_and_std_over_seeds():
    rows = dtrn.rows_of(_results(), METRICS)
    row = next(r for r in rows if r["variant"] == "dtrn" and r["task"] == "liked")
    assert set(dtrn.COLUMNS) <= set(row)
    assert row["model"] == "dtrn" and row["metric"] == "auc" and row["seeds"] == 2
    assert row["value"] == pytest.approx(0.831) and row["std"] == pytest.approx(0.0014142, abs=1e-6)
    assert row["eval_value"] == pytest.approx(0.821)
    assert next(r for r in rows if r["variant"] == "no_hyper")["model"] == "dtrn"


def _measured_results(seeds=(42, 43, 44)):
    """Runs with per-seed test values and bootstrap draws from synthetic predictions: on
    liked, dtrn learns the label best, ple next, mmoe least; on the rating every model has
    the same error. Eval prefers mmoe on liked (test does not) and ple on the rating."""
    from contract import datasets as D
    from evaluation import definitions as d

    rng = np.random.default_rng(0)
    n = 400
    liked_y = (rng.random(n) < 0.3).astype(float)
    rating_y = rng.uniform(1, 5, n)
    spec = D.dataset_spec("movielens")
    noise = {"mmoe": 2.0, "ple": 1.2, "dtrn": 0.5, "no_hyper": 1.2}
    evals = {"mmoe": (0.90, 0.86), "ple": (0.80, 0.85), "dtrn": (0.85, 0.85), "no_hyper": (0.80, 0.85)}
    results = {}
    for variant, scale in noise.items():
        entry = {"params": 100, "seeds": list(seeds), "epochs": [1] * len(seeds), "train_seconds": [1.0] * len(seeds)}
        for _ in seeds:
            liked = liked_y + rng.normal(scale=scale, size=n)
            rating = rating_y + rng.normal(scale=0.9, size=n)
            entry.setdefault("test/liked", []).append(d.binary_auc(liked, liked_y > 0.5))
            entry.setdefault("test/rating", []).append(d.rmse(rating, rating_y))
            entry.setdefault("eval/liked", []).append(evals[variant][0])
            entry.setdefault("eval/rating", []).append(evals[variant][1])
            dtrn.record_draws(entry, "liked", dtrn.statistic_of(spec.task("liked"), liked, liked_y), n)
            dtrn.record_draws(entry, "rating", dtrn.statistic_of(spec.task("rating"), rating, rating_y), n)
        results[variant] = entry
    return {"movielens": results}


def test_goal_picks_the_baseline_by_eval_and_needs_the_paired_interval_and_both_stds():
    results = _measured_results()
    lines = dtrn.goals(dtrn.rows_of(results, METRICS), results)
    liked = next(l for l in lines if l.startswith("- movielens liked auc, against"))
    # Eval picks mmoe (though ple is better on test); dtrn beats it beyond noise.
    assert "better of mmoe/ple by eval (mmoe): dtrn" in liked and "vs mmoe" in liked
    assert "paired 95% bootstrap" in liked and "(3 seeds)" in liked and "over 400 test rows" in liked
    assert liked.endswith("— met")
    rating = next(l for l in lines if l.startswith("- movielens rating rmse, against"))
    assert "by eval (ple)" in rating and "— not met: no difference" in rating
    ablation = next(l for l in lines if "liked auc: no_hyper" in l)
    assert ablation.endswith("— the part earns its place")
    assert "no difference" in next(l for l in lines if "rating rmse: no_hyper" in l)


def test_goal_without_recorded_draws_is_undecided():
    lines = dtrn.goals(dtrn.rows_of(_results(), METRICS), _results())
    liked = next(l for l in lines if "liked auc, against" in l)
    assert "by eval (ple)" in liked and "no paired interval" in liked and liked.endswith("not met: undecided")


def test_merged_runs_keep_every_seeds_draws(tmp_path):
    paths = []
    for seed in (42, 43):
        path = tmp_path / f"run{seed}_runs.json"
        path.write_text(json.dumps({"command": f"run {seed}", "metrics": METRICS, "log": [], "args_line": "x",
                                    "results": _measured_results((seed,))}))
        paths.append(str(path))
    dtrn.merge(paths, "merged", str(tmp_path), "merge command")
    merged = json.loads((tmp_path / "merged_runs.json").read_text())["results"]["movielens"]["dtrn"]
    assert len(merged["draws/liked"]) == 2 and merged["units/liked"] == 400
    assert "paired 95% bootstrap" in (tmp_path / "merged.md").read_text()


def test_merge_concatenates_the_seeds_of_separate_runs(tmp_path):
    paths = []
    for seed in (42, 43):
        path = tmp_path / f"run{seed}_runs.json"
        path.write_text(json.dumps({"command": f"run {seed}", "metrics": METRICS, "log": [f"seed {seed}"],
                                    "args_line": "x", "results": _results((seed,))}))
        paths.append(str(path))
    dtrn.merge(paths, "merged", str(tmp_path), "merge command")
    rows = json.loads((tmp_path / "merged.json").read_text())
    assert all(r["seeds"] == 2 for r in rows)
    markdown = (tmp_path / "merged.md").read_text()
    assert "`run 42`" in markdown and "`run 43`" in markdown and "Produced by: `merge command`" in markdown


def test_merge_takes_only_the_named_variants_of_a_runs_file(tmp_path):
    first, second = tmp_path / "a_runs.json", tmp_path / "b_runs.json"
    for path, seed in ((first, 42), (second, 43)):
        path.write_text(json.dumps({"command": f"run {seed}", "metrics": METRICS, "log": [], "args_line": "x",
                                    "results": _results((seed,))}))
    variants = sorted(_results((42,))["movielens"])
    keep = variants[0]
    assert dtrn.runs_source(f"{first}:{keep}+{variants[1]}") == (str(first), [keep, variants[1]])
    assert dtrn.runs_source(str(first)) == (str(first), None)
    dtrn.merge([str(first), f"{second}:{keep}"], "merged", str(tmp_path), "merge command")
    seeds = {r["variant"]: r["seeds"] for r in json.loads((tmp_path / "merged.json").read_text())}
    assert seeds[keep] == 2 and all(seeds[v] == 1 for v in variants[1:])
    assert f"`run 43` (variants {keep} only)" in (tmp_path / "merged.md").read_text()
    with pytest.raises(ValueError, match="no variant \\['dtrn_v2'\\]"):
        dtrn.merge([f"{second}:dtrn_v2"], "other", str(tmp_path), "merge command")


def test_unknown_variants_and_ablations_without_dtrn_are_refused():
    with pytest.raises(ValueError, match="expected some of"):
        dtrn.main(["--variants", "mmoe,dtrn_v2"])
    with pytest.raises(ValueError, match="measured against dtrn"):
        dtrn.main(["--variants", "mmoe,no_hyper"])


def test_hparam_reaches_only_the_families_that_have_it():
    overrides = {"refine_gate": "sigmoid", "learning_rate": "0.0005"}
    assert dtrn.overrides_for("mmoe", overrides) == {"learning_rate": "0.0005"}
    assert dtrn.overrides_for("dtrn", overrides) == overrides
    dtrn.check_overrides({"taobao": overrides}, ["mmoe", "dtrn"])
    with pytest.raises(ValueError, match="taobao.refine_gate: no model of --variants"):
        dtrn.main(["--datasets", "taobao", "--variants", "mmoe,ple", "--hparam", "taobao.refine_gate=sigmoid"])
    with pytest.raises(ValueError, match="refine_gate must be one of"):  # a bad value, before any training
        dtrn.check_overrides({"taobao": {"refine_gate": "tanh"}}, ["mmoe", "dtrn"])


def test_merge_refuses_to_overwrite_an_input(tmp_path):
    path = tmp_path / "both_runs.json"
    path.write_text("{}")
    with pytest.raises(ValueError, match="would overwrite its input"):
        dtrn.merge([str(path)], "both", str(tmp_path), "merge command")
    assert path.read_text() == "{}"
