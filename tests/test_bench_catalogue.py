"""bench.catalogue's pieces on small arrays: the synthetic catalogue, the exact reference,
the choice of an index setting, the peer index's exclusion of history items, and the goals'
bootstrap intervals over report queries and requests."""

import json
import types

import numpy as np
import pytest

from bench import catalogue as C


def _queries(vectors, history_rows):
    q = C.Queries(items=[[]] * len(vectors), behaviors=[[]] * len(vectors))
    q.vectors = np.asarray(vectors, np.float32)
    q.biases = np.zeros(len(vectors), np.float32)
    q.history_rows = [np.asarray(r, np.int64) for r in history_rows]
    return q


def test_synthetic_items_follow_the_real_items_gaussian_fit_and_grow_by_appending():
    rng = np.random.default_rng(0)
    mix = np.array([[1.0, 0.0, 0.0], [0.8, 0.5, 0.0], [0.0, -0.3, 0.2]])
    real = (rng.normal(size=(4000, 3)) @ mix + [0.5, -1.0, 2.0]).astype(np.float32)
    many = C.synthetic_items(real, 50_000, seed=7, chunk=6_000)
    np.testing.assert_allclose(many.mean(axis=0), real.mean(axis=0), atol=0.03)
    np.testing.assert_allclose(np.cov(many, rowvar=False), np.cov(real, rowvar=False), atol=0.03)
    # A smaller catalogue's synthetic items are the first ones of a larger one.
    np.testing.assert_array_equal(C.synthetic_items(real, 1_000, seed=7), many[:1_000])
    assert not np.array_equal(C.synthetic_items(real, 1_000, seed=8), many[:1_000])


def test_exact_top_skips_rows_that_are_not_items_and_the_history():
    vectors = np.array([[0, 0], [5, 0], [4, 0], [3, 0], [2, 0], [1, 0]], np.float32)
    biases = np.zeros(6, np.float32)
    valid = np.array([False, True, True, True, False, True])
    top = C.exact_top(_queries([[1.0, 0.0], [-1.0, 0.0]], [[2], []]), vectors, biases, valid, k=3)
    assert top.tolist() == [[1, 3, 5], [5, 3, 2]]


def test_the_chosen_setting_is_the_fastest_that_reaches_the_recall_goal():
    grid = [{"id": "slow", "recall_at_10": 0.99, "ms": 3.0},
            {"id": "fast", "recall_at_10": C.TUNING_RECALL + 0.001, "ms": 1.0},
            {"id": "as fast, finds more", "recall_at_10": C.TUNING_RECALL + 0.01, "ms": 1.03},
            {"id": "fastest, misses", "recall_at_10": C.TUNING_RECALL - 0.01, "ms": 0.5}]
    assert C._fastest(grid, "ms")["id"] == "as fast, finds more"
    assert C._fastest([g for g in grid if g["recall_at_10"] < C.TUNING_RECALL], "ms")["id"] == "fastest, misses"


def test_served_ids_map_back_to_catalogue_rows():
    vocabulary_rows = {b"1": 1, b"50": 2}
    ids = np.array([[b"50", b"s17", b"", b"1"]], dtype=object)
    assert C.ids_to_rows(ids, vocabulary_rows) == [[2, 17, 0, 1]]


def test_faiss_peer_drops_the_history_and_finds_the_exact_top():
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(2000, 8)).astype(np.float32)
    biases = rng.normal(0.0, 0.1, size=2000).astype(np.float32)
    valid = np.ones(2000, bool)
    valid[0] = False
    rows = np.flatnonzero(valid)
    index = C.FaissIndex(np.concatenate([vectors[rows], biases[rows, None]], axis=1), rows, seed=0)
    index.nprobe = index.nlist  # every list: exact
    queries = _queries(rng.normal(size=(20, 8)), [[]] * 20)
    exact = C.exact_top(queries, vectors, biases, valid)
    history = [e[:3] for e in exact]  # each query's three best rows are its history
    queries.history_rows = history
    found = index.top_rows(queries.vectors, history)
    assert C.recall(found, C.exact_top(queries, vectors, biases, valid)) == 1.0
    assert not any(set(f) & set(h) for f, h in zip(found.tolist(), history))


# -- intervals and goals ------------------------------------------------------------------
def _run(method, recall, latencies, items=C.GOAL_SIZE):
    return {"items": items, "method": method, "recall_at_10": list(recall), "in_process_b1_ms": list(latencies)}


def _recalls(mean, queries=306, seed=0):
    """Per-query recall@10 averaging `mean` (to a query): 1.0, or 0.8 for a share of the queries."""
    low = int(round(queries * (1.0 - mean) / 0.2))
    return np.random.default_rng(seed).permutation(np.r_[np.full(low, 0.8), np.ones(queries - low)])


def _latencies(p50, n=2000, seed=1):
    rng = np.random.default_rng(seed)
    return p50 * np.exp(rng.normal(0.0, 0.1, n))


def test_each_query_has_its_recall_and_a_run_keeps_every_query_and_request():
    exact = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    per_query = C.recalls([[4, 3, 9, 9], [5, 6, 7, 8]], exact)
    assert per_query.tolist() == [0.5, 1.0] and C.recall([[4, 3, 9, 9], [5, 6, 7, 8]], exact) == 0.75
    args = types.SimpleNamespace(requests=30, seconds=60.0)
    cell = C.measure(lambda: sum(range(100)), args, keep_latencies=True)
    assert len(cell["latencies_ms"]) == cell["requests"] == 30 and "latencies_ms" not in C.measure(lambda: 0, args)
    run = C.run_of({"items": 10_000, "method": C.SCANN}, per_query, cell)
    assert run["items"] == 10_000 and run["method"] == C.SCANN and run["recall_at_10"] == [0.5, 1.0]
    assert run["in_process_b1_ms"] == [round(x, 4) for x in cell["latencies_ms"]]



def test_intervals_bootstrap_recall_over_queries_and_p50_over_requests():
    recall_at_10, latencies = _recalls(0.953), _latencies(0.8)
    runs = [_run(C.BRUTE, np.ones(306), _latencies(84.0, seed=2)), _run(C.SCANN, recall_at_10, latencies)]
    brute, scann = C.intervals(runs, resamples=300)
    assert scann["queries"] == 306 and scann["requests"] == 2000
    assert scann["recall_at_10"] == recall_at_10.mean()
    assert scann["recall_low"] < scann["recall_at_10"] < scann["recall_high"]
    assert scann["recall_high"] - scann["recall_low"] < 0.05  # 306 queries pin the mean to about +-0.01
    assert scann["b1_p50_ms"] == np.percentile(latencies, 50)
    assert scann["b1_p50_low"] < scann["b1_p50_ms"] < scann["b1_p50_high"]
    assert brute["recall_low"] == brute["recall_high"] == 1.0 and brute["speedup_b1"] is None
    assert scann["speedup_b1"] == brute["b1_p50_ms"] / scann["b1_p50_ms"]
    assert scann["speedup_low"] < scann["speedup_b1"] < scann["speedup_high"]


def test_the_speed_up_resamples_each_methods_requests_on_their_own():
    same = _latencies(1.0, n=200)
    _, twin = C.intervals([_run(C.BRUTE, np.ones(5), same), _run(C.SCANN, np.ones(5), same)], resamples=300)
    # Paired resamples of the same latencies would give a ratio of exactly 1 on every resample.
    assert twin["speedup_b1"] == 1.0 and twin["speedup_low"] < 0.99 and twin["speedup_high"] > 1.01
    with pytest.raises(ValueError, match="hnsw: the method is not one of"):
        C.intervals([_run("hnsw", np.ones(5), same)])


def test_goal_lines_carry_their_intervals_and_need_the_whole_interval_on_the_goals_side():
    shown = C.goals(C.intervals([_run(C.BRUTE, np.ones(306), _latencies(84.0, seed=2)),
                                 _run(C.SCANN, _recalls(0.99), _latencies(0.8))], resamples=300))
    assert [line.rsplit(": ", 1)[-1] for line in shown] == ["met", "met", "met"]
    assert "over 306 report queries" in shown[0] and "over 2000 requests" in shown[1]
    assert "resampled independently" in shown[2]
    # Near each goal: the point estimates are on its side, the intervals are not.
    close = C.goals(C.intervals([_run(C.BRUTE, np.ones(306), _latencies(10.1, seed=2)),
                                 _run(C.SCANN, _recalls(0.953), _latencies(1.0, n=40))], resamples=300))
    assert close[0].endswith("not met: not shown, the interval reaches below 0.95")
    assert close[2].endswith("not met: not shown, the interval reaches below 10x")
    slow = C.goals(C.intervals([_run(C.BRUTE, np.ones(306), _latencies(60.0, seed=2)),
                                _run(C.SCANN, np.ones(306), _latencies(6.0))], resamples=300))
    assert slow[1].endswith("not met: the whole interval is above 5 ms")
    assert C.goals(C.intervals([_run(C.SCANN, np.ones(3), [1.0, 2.0], items=10_000)])) == [
        f"goals: not measured ({C.GOAL_SIZE} items is not among --sizes)"]


def test_the_outputs_keep_every_query_and_request_and_the_docs_count_the_goals(tmp_path):
    from bench import render_docs

    runs = [_run(C.BRUTE, np.ones(306), _latencies(84.0, seed=2)), _run(C.SCANN, _recalls(0.953), _latencies(0.8)),
            _run(C.FAISS, _recalls(0.96, seed=3), _latencies(2.2, seed=4))]
    rows = [{"items": r["items"], "method": r["method"], "recall_at_10": float(np.mean(r["recall_at_10"])),
             "in_process_b1_p50_ms": float(np.percentile(r["in_process_b1_ms"], 50))} for r in runs]
    meta = {"name": "catalogue_test", "command": "python -m bench.catalogue", "commit": "abc", "dataset": "MovieLens",
            "data": "MovieLens, hash split", "machine": {"cpu": "x"}, "load_before": 1.0, "load_after": 1.0,
            "seconds": 60.0, "peak_rss_mb": {"this_process": 1.0, "local_server": 1.0}, "requests": 2000,
            "seconds_per_cell": 10.0, "tuning_queries": 294, "report_queries": 306,
            "report_history_items": {"p50": 63, "p90": 298, "max": 1917},
            "training": {"epochs_run": 1, "monitor": "val_ndcg@10", "best_value": 0.1}}
    markdown = C.write_outputs(str(tmp_path), rows, runs, {}, meta)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["catalogue_test.json", "catalogue_test.md",
                                                          "catalogue_test_runs.json"]
    with open(tmp_path / "catalogue_test_runs.json") as f:
        kept = json.load(f)
    assert [(r["method"], len(r["recall_at_10"]), len(r["in_process_b1_ms"])) for r in kept["runs"]] == [
        (C.BRUTE, 306, 2000), (C.SCANN, 306, 2000), (C.FAISS, 306, 2000)]
    assert kept["runs"][1]["recall_at_10"] == [round(x, 4) for x in runs[1]["recall_at_10"]]
    with open(tmp_path / "catalogue_test.json") as f:
        written = json.load(f)
    assert [r["method"] for r in written["intervals"]] == [C.BRUTE, C.SCANN, C.FAISS]
    _, goal_lines, _ = render_docs.split_page(markdown)
    assert goal_lines[:3] == [f"- {g}" for g in written["meta"]["goals"]]
    assert render_docs._goal_state(written["meta"]["goals"]) == "2 met, 1 not met"
    assert "catalogue_test_runs.json" in markdown
