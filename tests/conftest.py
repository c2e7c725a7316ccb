"""Shared test set-up: Keras 2 before TensorFlow loads, and paths to the shipped data."""
import os
import pathlib

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

# How `make test` (-n 2 --dist loadfile --no-loadscope-reorder) spreads the files over its two
# workers. Each file is one unit, so its module fixtures are built once; the files that read
# the session's whole pipeline run (`trained_run`) form one unit, so that run happens on one
# worker only. Units start heaviest first (seconds each unit's tests took in
# `pytest -n 2 --durations=0`, December 2026), so the two workers end together; any other
# file follows in collection order.
SHARED_RUN = "trained_run"
UNIT_SECONDS = {
    SHARED_RUN: 1190, "test_transform.py": 500, "test_bench_peterrec.py": 250, "test_sequential_pipeline.py": 240,
    "test_model_layer.py": 220, "test_dtrn.py": 175, "test_airflow_dag.py": 170, "test_scann_index.py": 135,
    "test_review_families.py": 120, "test_explain.py": 115, "test_example_gen_formats.py": 50,
    "test_example_gen_beam.py": 40,
}


def _shared_run_files() -> frozenset:
    """The test files that name the `trained_run` fixture."""
    here = pathlib.Path(__file__).parent
    return frozenset(p.name for p in here.glob("test_*.py") if SHARED_RUN in p.read_text(encoding="utf-8"))


def _unit(nodeid: str, shared: frozenset) -> str:
    name = nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
    return SHARED_RUN if name in shared else name


def pytest_collection_modifyitems(config, items):
    shared = _shared_run_files()
    items.sort(key=lambda item: -UNIT_SECONDS.get(_unit(item.nodeid, shared), 0))  # stable: files stay whole


def pytest_xdist_make_scheduler(config, log):
    """--dist loadfile, with the `trained_run` files as one unit (xdist's loadgroup marks do not
    reach the scheduler under this pytest)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    shared = _shared_run_files()

    class SharedRunScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _unit(nodeid, shared)

    return SharedRunScheduling(config, log)


REPO = pathlib.Path(__file__).resolve().parents[1]
MOVIELENS_DIR = REPO / "data" / "movielens-small"
TAOBAO_FILE = "UserBehavior_sample.csv"
DAY = 86400
FIRST_DAY = 1511568000  # 2017-11-25 00:00 UTC


@pytest.fixture(scope="session")
def movielens_dir():
    return MOVIELENS_DIR


def write_taobao_log(dst: pathlib.Path, users: int = 40, items: int = 300, seed: int = 7) -> pathlib.Path:
    """A synthetic log in the Taobao UserBehavior format (`user,item,category,behavior,ts`,
    no header) over 2017-11-25 .. 2017-12-04: page views, and carts / favs / buys of viewed
    items later on (some before their view, some on the day after the test day)."""
    import random

    rng = random.Random(seed)
    dst.mkdir(parents=True, exist_ok=True)
    lines = []
    for user in range(1, users + 1):
        for _ in range(rng.randint(5, 40)):
            item = rng.randint(1, items)
            ts = FIRST_DAY + rng.randint(0, 10 * DAY - 1)
            lines.append((user, item, item % 25, "pv", ts))
            for behavior, p in (("cart", 0.12), ("fav", 0.06), ("buy", 0.05)):
                if rng.random() < p:
                    lines.append((user, item, item % 25, behavior, ts + rng.randint(-3600, 2 * DAY)))
    rng.shuffle(lines)
    with open(dst / TAOBAO_FILE, "w", newline="") as f:
        f.writelines(f"{u},{i},{c},{b},{t}\n" for u, i, c, b, t in lines)
    return dst


@pytest.fixture(scope="session")
def taobao_dir(tmp_path_factory):
    """A small synthetic log in the Taobao format (the real sample's terms keep it out of the repo)."""
    return write_taobao_log(tmp_path_factory.mktemp("taobao"))


def write_movielens_slice(dst: pathlib.Path, max_user: int) -> pathlib.Path:
    """ratings.csv of users 1..max_user (CRLF kept) plus the full movies.csv."""
    import shutil

    dst.mkdir(parents=True, exist_ok=True)
    with open(MOVIELENS_DIR / "ratings.csv", newline="") as src, open(dst / "ratings.csv", "w", newline="") as out:
        for n, line in enumerate(src):
            if n == 0 or int(line.split(",", 1)[0]) <= max_user:
                out.write(line)
    shutil.copy(MOVIELENS_DIR / "movies.csv", dst / "movies.csv")
    return dst


@pytest.fixture(scope="session")
def movielens_slice(tmp_path_factory):
    """A small MovieLens slice (users 1-15, ~1,500 ratings) for pipeline runs."""
    return write_movielens_slice(tmp_path_factory.mktemp("movielens_slice"), 15)


@pytest.fixture(scope="session")
def trained_run(movielens_slice, tmp_path_factory):
    """One whole pipeline run (a rating and a retrieval family, gates loose enough to bless) on the slice."""
    import dataclasses
    import io

    from pipeline.configs import PipelineConfig
    from pipeline.local_runner import run

    config = dataclasses.replace(
        PipelineConfig(),
        data_dir=str(movielens_slice),
        output_dir=str(tmp_path_factory.mktemp("trained_run")),
        families=("mf", "two_tower"),
        train_steps=40,
        # Gates loose enough to bless what a few steps on 15 users learn.
        gate_thresholds={"rating": 10.0, "items": -1.0},
        gate_max_worsening={"rating": 10.0, "items": 1.0},
    ).resolved()
    progress = io.StringIO()
    timings = run(config, progress_out=progress)
    return config, timings, progress.getvalue()
