"""TF Serving's ModelServerConfig for the pushed models (`--model_config_file`).

`serving/config/models.config` is this module's output for the default pipeline's
models (one per family) under `/models`; the pipeline can write one next to its own
serving base.
"""

from __future__ import annotations

import argparse
import posixpath
import re
from typing import Sequence

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from pipeline.configs import PipelineConfig
from common.io_utils import atomic_write

DEFAULT_BASE_DIR = "/models"
DEFAULT_MODELS = PipelineConfig.families  # what `make run` pushes: one model per family
DEFAULT_NUM_VERSIONS = 2
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def build_model_config(
    model_names: Sequence[str] = DEFAULT_MODELS,
    base_dir: str = DEFAULT_BASE_DIR,
    num_versions: int = DEFAULT_NUM_VERSIONS,
) -> model_server_config_pb2.ModelServerConfig:
    """A ModelServerConfig serving the newest `num_versions` versions of each model.

    Args:
      model_names: model directory names under `base_dir`.
      base_dir: the serving base as the server sees it (`/models` in the container).
      num_versions: versions kept loaded per model (2 lets clients pin the previous one).
    """
    if not model_names:
        raise ValueError("model_names is empty; a model config needs at least one model")
    if len(set(model_names)) != len(model_names):
        raise ValueError(f"model_names has duplicates: {list(model_names)}")
    for name in model_names:
        if not _NAME.match(name):
            raise ValueError(f"model name {name!r} is not a plain directory name")
    if num_versions < 1:
        raise ValueError(f"num_versions must be >= 1, got {num_versions}")
    config = model_server_config_pb2.ModelServerConfig()
    for name in model_names:
        model = config.model_config_list.config.add()
        model.name = name
        model.base_path = posixpath.join(base_dir, name) if "://" not in base_dir else f"{base_dir.rstrip('/')}/{name}"
        model.model_platform = "tensorflow"
        model.model_version_policy.latest.num_versions = num_versions
    return config


def write_model_config(
    path: str,
    model_names: Sequence[str] = DEFAULT_MODELS,
    base_dir: str = DEFAULT_BASE_DIR,
    num_versions: int = DEFAULT_NUM_VERSIONS,
) -> str:
    """Writes the ModelServerConfig text proto to `path` atomically; returns the path.

    Args:
      path: output file (its directory is created).
      model_names, base_dir, num_versions: as `build_model_config`.
    """
    text = text_format.MessageToString(build_model_config(model_names, base_dir, num_versions))
    return atomic_write(path, text)


def read_model_config(path: str) -> model_server_config_pb2.ModelServerConfig:
    """Parses a ModelServerConfig text proto, naming the file on error."""
    with open(path) as f:
        text = f.read()
    try:
        return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    except text_format.ParseError as exc:
        raise ValueError(f"{path}: not a ModelServerConfig text proto: {exc}") from None


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Write a TF Serving model config file.")
    parser.add_argument("--out", required=True, help="output file")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated names")
    parser.add_argument("--base_dir", default=DEFAULT_BASE_DIR, help="serving base as the server sees it")
    parser.add_argument("--num_versions", type=int, default=DEFAULT_NUM_VERSIONS)
    args = parser.parse_args(argv)
    names = [n for n in args.models.split(",") if n]
    print(write_model_config(args.out, names, args.base_dir, args.num_versions))


if __name__ == "__main__":
    main()
