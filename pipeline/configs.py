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

from components.example_gen.config import IngestConfig

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
      hparams: per-family hyperparameter overrides, {family: {name: value}}
        (`--hparam mf.dim=64`); the defaults are each family's typed record.
      max_history: most recent N history interactions kept per example, read by a
        query and padded to by Transform (the same N in ExampleGen, Transform and
        the Trainer).
      negatives_per_positive: sampled negatives per positive (0 = none).
      max_bad_rows: bad input rows tolerated (dropped and reported) before failing.
      train_steps: cap on each Trainer's total steps (0: none; each family trains
        until its eval metric stops improving, at most its `max_epochs`).
      top_k: K of `recommend`, `similar_items` and the top-K metrics.
      seed: one seed for sampling, initialisation and shuffling.
      gate_thresholds / gate_max_worsening: per task name, the gate's value bound and
        tolerated worsening against the last blessed model (defaults: the dataset's
        task specs, contract/datasets.py).
    """

    data_dir: str = str(REPO_ROOT / "data" / "movielens-small")
    dataset: str = "movielens"
    split: str = "hash"
    output_dir: str = os.environ.get("RECSYS_OUTPUT_DIR", str(REPO_ROOT / "outputs"))
    families: Tuple[str, ...] = ("mf", "mf_history", "mf_dnn", "two_tower")
    hparams: Dict[str, Dict[str, str]] = dataclasses.field(default_factory=dict)
    max_history: int = 64
    negatives_per_positive: int = 0
    max_bad_rows: int = 0
    eval_day: str = "2017-12-02"
    test_day: str = "2017-12-03"
    train_steps: int = 0
    top_k: int = 10
    seed: int = 42
    gate_thresholds: Dict[str, float] = dataclasses.field(default_factory=dict)
    gate_max_worsening: Dict[str, float] = dataclasses.field(default_factory=dict)
    # Reuse a component's earlier outputs when its inputs and settings are unchanged.
    enable_cache: bool = False
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
        return str(REPO_ROOT / "schemas" / self.dataset / "schema.pbtxt")

    def ingest_config(self) -> Dict:
        """The ExampleGen configuration (components.example_gen.IngestConfig fields)."""
        config = IngestConfig.for_dataset(
            self.dataset,
            split=self.split,
            eval_day=self.eval_day,
            test_day=self.test_day,
            max_history=self.max_history,
            negatives_per_positive=self.negatives_per_positive,
            seed=self.seed,
            max_bad_rows=self.max_bad_rows,
        )
        return json.loads(config.to_json())

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)


def families_arg(value: Optional[str]) -> Tuple[str, ...]:
    """Parses a comma-separated family list ('' or 'none' -> no trainers)."""
    if value is None:
        return PipelineConfig.families
    if value.strip().lower() in ("", "none"):
        return ()
    return tuple(name.strip() for name in value.split(",") if name.strip())

