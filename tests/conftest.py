"""Shared test set-up: Keras 2 before TensorFlow loads, and paths to the shipped data."""
import os
import pathlib

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
MOVIELENS_DIR = REPO / "data" / "movielens-small"
TAOBAO_DIR = pathlib.Path(
    os.environ.get("TAOBAO_DIR", REPO.parent / "shared" / "data" / "taobao-userbehavior-sample")
)


@pytest.fixture(scope="session")
def movielens_dir():
    return MOVIELENS_DIR


@pytest.fixture(scope="session")
def taobao_dir():
    if not (TAOBAO_DIR / "UserBehavior_sample.csv").exists():
        pytest.skip(f"Taobao sample not found at {TAOBAO_DIR} (set TAOBAO_DIR)")
    return TAOBAO_DIR


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
    )
    progress = io.StringIO()
    timings = run(config, progress_out=progress)
    return config, timings, progress.getvalue()
