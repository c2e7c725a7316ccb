"""The PeterRec benchmark's kept test scores and its paired comparisons (bench/peterrec.py)."""
import json

import numpy as np
import pytest

from bench import peterrec as PR
from evaluation import definitions as d
from models.blocks import patches as P
from training import downstream as DS

SEEDS = (1, 2)
# The benchmark's bookkeeping needs scratch (the reference), a fine-tune and a patch; every mode
# is trained on its own in test_peterrec_patches.py.
MODES = (P.SCRATCH, P.FINE_LAST, P.PATCH_PARALLEL)


@pytest.fixture(scope="module")
def tiny_run(movielens_slice, tmp_path_factory):
    """bench.peterrec on the MovieLens slice, MODES, two seeds, one epoch each."""
    out = tmp_path_factory.mktemp("peterrec_out")
    PR.main(["--data_dir", str(movielens_slice), "--work_dir", str(tmp_path_factory.mktemp("peterrec_work")),
             "--out", str(out), "--name", "tiny", "--seeds", ",".join(map(str, SEEDS)), "--dim", "8",
             "--modes", ",".join(MODES),
             "--bottleneck", "4", "--pretrain_epochs", "1", "--epochs", "1", "--patience", "1"])
    with open(out / "tiny.json") as f:
        rows = json.load(f)
    with open(out / "tiny_runs.json") as f:
        runs = json.load(f)
    return rows, runs, (out / "tiny.md").read_text()


def _metric(kind, scores, labels):
    scores, labels = np.asarray(scores), np.asarray(labels)
    return d.binary_auc(scores, labels > 0.5) if kind == DS.BINARY else d.set_accuracy(scores, labels)


def test_the_runs_file_keeps_every_fine_tunes_and_baselines_test_scores(tiny_run):
    rows, runs, _ = tiny_run
    [meta] = [r for r in rows if r["kind"] == "meta"]
    assert set(runs["tasks"]) == set(meta["counts"]) and len(runs["tasks"]) == 2
    for task, info in runs["tasks"].items():
        labels = np.asarray(info["labels"])
        assert len(labels) == meta["counts"][task][DS.TEST]["labelled_positions"] > 0
        if info["kind"] != DS.BINARY:
            assert labels.shape == (len(labels), len(info["classes"]))
        entries = [r for r in runs["runs"] if r["task"] == task]
        keys = sorted((r["mode"], r["seed"] or 0) for r in entries)
        assert keys == sorted([(m, s) for m in MODES for s in SEEDS] + [("history", 0), ("prior", 0)])
        for r in entries:
            assert np.shape(r["scores"]) == labels.shape  # one score (or class scores) per test row
            if r["kind"] == "fine_tune":
                [row] = [x for x in rows if x["kind"] == "fine_tune" and x["task"] == task
                         and x["mode"] == r["mode"] and x["seed"] == r["seed"]]
            else:
                [row] = [x for x in rows if x["kind"] == "baseline" and x["task"] == task
                         and x["mode"] == r["mode"] and x["split"] == DS.TEST]
                row = dict(row, test=row["value"])
            # The kept scores are the scored ones: they give the row's test metric again.
            np.testing.assert_equal(_metric(info["kind"], r["scores"], labels), row["test"])


def test_the_page_compares_every_mode_with_scratch_and_the_history_baseline(tiny_run):
    rows, runs, page = tiny_run
    lines = page.splitlines()
    section = lines[lines.index("## Paired comparisons"):]
    summary = {(r["task"], r["mode"]): r for r in rows if r["kind"] == "summary"}
    blocks, task = {}, None
    for line in section:
        if line.endswith("test rows):"):
            task = line.split(" (")[0]
        elif task and line.startswith("- "):
            blocks.setdefault(task, []).append(line)
    assert set(blocks) == set(runs["tasks"])
    for task, block in blocks.items():
        for mode in MODES:
            mine = [line for line in block if line.startswith(f"- {mode} ")]
            assert any(" vs history baseline " in line for line in mine), (task, mode)
            assert (mode == P.SCRATCH) != any(" vs scratch " in line for line in mine), (task, mode)
        compared = [r for r in rows if r["kind"] == "comparison" and r["task"] == task]
        assert len(compared) == 2 * len(MODES) - 1
        for r in compared:
            assert r["a_seeds"] == len(SEEDS) and r["low"] <= r["high"]
            assert r["a_mean"] == pytest.approx(summary[(task, r["mode"])]["test"])
            if r["against"] == "history":  # the deterministic baseline: one value, no seed std
                assert r["b_seeds"] == 1 and r["b_std"] is None and r["text"].count("(1 seed)") == 1
                assert r["b_mean"] == pytest.approx(summary[(task, "baseline: history")]["test"])
            assert f"- {r['text']}" in section


def _runs(kind, labels, scores, classes=()):
    return {"tasks": {"t": {"kind": kind, "metric": "m", "classes": list(classes), "labels": labels}},
            "runs": [{"kind": "baseline" if mode == "history" else "fine_tune", "task": "t", "mode": mode,
                      "seed": seed, "scores": s} for mode, seed, s in scores]}


def test_a_mode_that_ranks_every_test_row_right_beats_a_history_baseline_that_ranks_none():
    rng = np.random.default_rng(0)
    labels = (rng.random(300) < 0.4).astype(float).tolist()
    right = [list(np.asarray(labels) + 0.01 * rng.random(300)) for _ in SEEDS]
    runs = _runs(DS.BINARY, labels, [("history", None, [0.5] * 300)]
                 + [("scratch", s, r) for s, r in zip(SEEDS, right)]
                 + [("fine_all", s, list(rng.random(300))) for s in SEEDS])
    got = {(r["mode"], r["against"]): r for r in PR.comparisons(runs, ["scratch", "fine_all"])}
    assert set(got) == {("fine_all", "scratch"), ("scratch", "history"), ("fine_all", "history")}
    best = got[("scratch", "history")]
    assert (best["a_mean"], best["b_mean"], best["b_seeds"]) == (1.0, 0.5, 1)
    assert best["verdict"] == "better" and best["low"] > 0
    assert got[("fine_all", "scratch")]["verdict"] == "worse"


def test_the_class_task_compares_per_row_hits_of_the_top_class():
    labels = [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.5, 0.5, 0]] * 50
    history = [[1, 0, 0]] * 200  # top class a: right on the first and the last row of four
    right = [[2, 1, 0], [0, 2, 1], [0, 1, 2], [1, 1, 0]] * 50  # the last a tie of two right classes
    runs = _runs(DS.MULTICLASS, labels, [("history", None, history)] + [("scratch", s, history) for s in SEEDS]
                 + [("fine_all", s, right) for s in SEEDS], classes=("a", "b", "c"))
    got = {(r["mode"], r["against"]): r for r in PR.comparisons(runs, ["scratch", "fine_all"])}
    same = got[("scratch", "history")]
    assert (same["a_mean"], same["b_mean"], same["diff"], same["low"], same["high"]) == (0.5, 0.5, 0.0, 0.0, 0.0)
    assert same["verdict"] == "no difference (the interval includes 0 and within one seed std)"
    for reference in ("scratch", "history"):
        ahead = got[("fine_all", reference)]
        assert (ahead["a_mean"], ahead["b_mean"], ahead["verdict"]) == (1.0, 0.5, "better")
