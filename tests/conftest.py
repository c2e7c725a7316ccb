"""Shared test set-up: Keras 2 before TensorFlow loads, and paths to the shipped data."""
import os
import pathlib

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

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
