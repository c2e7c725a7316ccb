"""bench.catalogue's pieces on small arrays: the synthetic catalogue, the exact reference,
the choice of an index setting and the peer index's exclusion of history items."""

import numpy as np

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
