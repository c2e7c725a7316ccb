"""Every knob of the pipeline in one place.

Runners (`local_runner.py`, `kubeflow_runner.py`) differ only in orchestration and
metadata settings; what the pipeline computes is decided here.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Dict, Optional, Tuple

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
PIPELINE_NAME = "recsys"


@dataclasses.dataclass
class PipelineConfig:
    """What one pipeline run computes.

    Attributes:
      data_dir: directory holding the interaction log and item metadata.
      dataset: `movielens` or `taobao` (contract.features.DATASETS).
      split: `hash` (protocol R), `leave_last_two_out` (S) or `by_day` (M).
      output_dir: root of everything a run writes (pipeline root, metadata, logs,
        serving base directory).
      families: model families to train, evaluate and push (models.registry); empty
        runs the data stages only.
      max_history: most recent N history interactions kept per example.
      negatives_per_positive: sampled negatives per positive (0 = none).
      max_bad_rows: bad input rows tolerated (dropped and reported) before failing.
      train_steps / eval_steps / batch_size / epochs: trainer budget.
      top_k: length of the `recommend` signature's answer.
      seed: one seed for sampling, initialisation and shuffling.
      schema_file: validate against this schema instead of the curated
        `schemas/<dataset>/schema.pbtxt` (e.g. one written by `make update-schema`).
    """

    data_dir: str = str(REPO_ROOT / "data" / "movielens-small")
    dataset: str = "movielens"
    split: str = "hash"
    output_dir: str = os.environ.get("RECSYS_OUTPUT_DIR", str(REPO_ROOT / "outputs"))
    families: Tuple[str, ...] = ("mf", "mf_history", "mf_dnn", "mf_dnn_liked")
    max_history: int = 64
    negatives_per_positive: int = 0
    max_bad_rows: int = 0
    eval_day: str = "2017-12-02"
    test_day: str = "2017-12-03"
    train_steps: int = 2000
    eval_steps: int = 100
    batch_size: int = 256
    top_k: int = 10
    seed: int = 42
    # Gate: value threshold per family's key metric and change threshold against
    # the latest blessed model (absolute tolerance).
    max_rmse: float = 1.0
    min_auc: float = 0.70
    max_rmse_increase: float = 0.01
    max_auc_decrease: float = 0.01
    # Reuse a component's earlier outputs when its inputs and settings are unchanged.
    enable_cache: bool = False
    schema_file: Optional[str] = None
    beam_pipeline_args: Tuple[str, ...] = (
        "--direct_running_mode=in_memory",
        "--direct_num_workers=1",
    )

    # ------------------------------------------------------------------
    @property
    def pipeline_root(self) -> str:
        return os.path.join(self.output_dir, "pipeline_root")

    @property
    def metadata_path(self) -> str:
        return os.path.join(self.output_dir, "metadata.sqlite")

    @property
    def serving_model_dir(self) -> str:
        return os.path.join(self.output_dir, "serving")

    @property
    def log_path(self) -> str:
        return os.path.join(self.output_dir, "logs", "pipeline.log")

    @property
    def schema_path(self) -> str:
        if self.schema_file:
            return os.path.abspath(self.schema_file)
        return str(REPO_ROOT / "schemas" / self.dataset / "schema.pbtxt")

    def ingest_config(self) -> Dict:
        """The ExampleGen configuration (components.example_gen.IngestConfig fields)."""
        files = {
            "movielens": {"interactions": "ratings.csv", "items": "movies.csv"},
            "taobao": {"interactions": "UserBehavior_sample.csv", "items": None},
        }
        if self.dataset not in files:
            raise ValueError(f"unknown dataset {self.dataset!r}; expected one of {sorted(files)}")
        return {
            "dataset": self.dataset,
            **files[self.dataset],
            "split": self.split,
            "eval_day": self.eval_day,
            "test_day": self.test_day,
            "max_history": self.max_history,
            "negatives_per_positive": self.negatives_per_positive,
            "seed": self.seed,
            "max_bad_rows": self.max_bad_rows,
        }

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)


def families_arg(value: Optional[str]) -> Tuple[str, ...]:
    """Parses a comma-separated family list ('' or 'none' -> no trainers)."""
    if value is None:
        return PipelineConfig.families
    if value.strip().lower() in ("", "none"):
        return ()
    return tuple(name.strip() for name in value.split(",") if name.strip())

