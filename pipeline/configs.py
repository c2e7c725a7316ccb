"""Every knob of the pipeline in one place.

Runners (`local_runner.py`, `kubeflow_runner.py`) differ only in orchestration and
metadata settings; what the pipeline computes is decided here.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
from typing import Dict, Mapping, Optional, Sequence, Tuple

from components.example_gen.config import IngestConfig
from contract import datasets as D

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
      train_strategy: the Trainers' `tf.distribute` strategy: `default`, `mirrored`
        (every local device) or `multi_worker` (one process per worker, each with its
        TF_CONFIG; see training/distribute.py and README "Distributed training").
      top_k: K of `recommend`, `similar_items` and the top-K metrics.
      seed: one seed for sampling, initialisation and shuffling.
      gate_thresholds / gate_max_worsening: per task name, the gate's value bound and
        tolerated worsening against the last blessed model (defaults: the dataset's
        task specs, contract/datasets.py).
      schema_file: validate against this schema instead of the curated
        `schemas/<dataset>/schema.pbtxt` (e.g. one written by `make update-schema`).
    """

    data_dir: str = str(REPO_ROOT / "data" / "movielens-small")
    # The curated schemas (schemas/<dataset>/schema.pbtxt); a compiled Kubeflow spec
    # points at the copy inside the pipeline image.
    schema_dir: str = str(REPO_ROOT / "schemas")
    dataset: str = "movielens"
    split: str = D.HASH_SPLIT
    output_dir: str = os.environ.get("RECSYS_OUTPUT_DIR", str(REPO_ROOT / "outputs"))
    families: Tuple[str, ...] = ("mf", "mf_dnn", "two_tower", "mmoe")
    hparams: Dict[str, Dict[str, str]] = dataclasses.field(default_factory=dict)
    max_history: int = 64
    negatives_per_positive: int = 0
    max_bad_rows: int = 0
    eval_day: str = "2017-12-02"
    test_day: str = "2017-12-03"
    train_steps: int = 0
    train_strategy: str = "default"
    top_k: int = 10
    seed: int = 42
    gate_thresholds: Dict[str, float] = dataclasses.field(default_factory=dict)
    gate_max_worsening: Dict[str, float] = dataclasses.field(default_factory=dict)
    # Reuse a component's earlier outputs when its inputs and settings are unchanged.
    enable_cache: bool = False
    # Transform traces the preprocessing_fn as a TF1 graph (tf.Transform's compat mode):
    # the same vocabularies and transformed values (floats within 1e-5) as the TF2 mode
    # in about half the time (README, scaling benchmark; `python -m bench.ingest
    # --transform_tf2` measures the TF2 mode).
    transform_tf_compat_v1: bool = True
    # Where the Beam stages (ExampleGen, StatisticsGen, Transform, Evaluator) run: a
    # profile of BEAM_PROFILES; `beam_pipeline_args` are its arguments (see beam_args()).
    beam_profile: str = "in_process"
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
        return os.path.join(self.schema_dir, self.dataset, "schema.pbtxt")

    def ingest_config(self) -> Dict:
        """The ExampleGen configuration (components.example_gen.IngestConfig fields)."""
        config = IngestConfig(
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

    @classmethod
    def from_json(cls, text: str) -> "PipelineConfig":
        """The config `to_json` wrote."""
        return dataclasses.replace(cls(), **config_fields(json.loads(text), "the config JSON"))


def config_fields(values: Mapping, source: str) -> Dict:
    """PipelineConfig fields as JSON holds them (lists for tuples), as dataclasses.replace takes them.

    Args:
      values: field name -> value.
      source: where the values come from, named in the error on an unknown field.
    """
    names = {f.name for f in dataclasses.fields(PipelineConfig)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{source} has unknown fields {unknown}; PipelineConfig fields are "
                         f"{', '.join(sorted(names))}")
    return {name: tuple(value) if name in _TUPLE_FIELDS and value is not None else value
            for name, value in values.items()}


_TUPLE_FIELDS = ("families", "beam_pipeline_args")


# ----------------------------------------------------------------------------
# Beam runner profiles
# ----------------------------------------------------------------------------
# Argument templates per profile; `{name}` is filled from settings (the runners'
# `--beam_setting name=value`, or RECSYS_BEAM_<NAME> in the environment). The
# distributed profiles run every worker in the pipeline's container image, which has
# this project installed (Dockerfile), so the workers can import its code.
BEAM_PROFILES: Dict[str, Tuple[str, ...]] = {
    # Today's default: one process, one thread of work.
    "in_process": ("--direct_running_mode=in_memory", "--direct_num_workers=1"),
    # The DirectRunner with one worker process per core (each imports TensorFlow).
    "multi_process": ("--direct_running_mode=multi_processing", "--direct_num_workers={workers}"),
    # Google Cloud Dataflow (Runner v2, workers in the pipeline image).
    "dataflow": (
        "--runner=DataflowRunner",
        "--project={project}",
        "--region={region}",
        "--temp_location={temp_location}",
        "--sdk_container_image={image}",
        "--sdk_location=container",
        "--experiments=use_runner_v2",
        "--max_num_workers={max_workers}",
    ),
    # A Flink cluster through its Beam job server; SDK workers from the image.
    "flink": (
        "--runner=PortableRunner",
        "--job_endpoint={job_endpoint}",
        "--environment_type={environment_type}",
        "--environment_config={environment_config}",
        "--parallelism={parallelism}",
    ),
    # A Spark cluster through its Beam job server; SDK workers from the image.
    "spark": (
        "--runner=PortableRunner",
        "--job_endpoint={job_endpoint}",
        "--environment_type={environment_type}",
        "--environment_config={environment_config}",
    ),
}
# Profiles whose Beam workers run in this Python environment (this project and TFX
# installed): nothing has to be packaged for them.
LOCAL_BEAM_PROFILES = ("in_process", "multi_process")
BEAM_SETTING_DEFAULTS: Dict[str, str] = {
    "workers": str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1),
    "region": "us-central1",
    "max_workers": "10",
    "environment_type": "DOCKER",
    "parallelism": "2",
}
BEAM_SETTING_ENV_PREFIX = "RECSYS_BEAM_"
_SETTING_HELP = {
    "project": "the Google Cloud project",
    "temp_location": "a gs:// path Dataflow stages files in",
    "image": "the pipeline's container image (Dockerfile), pushed to a registry the workers can pull",
    "job_endpoint": "host:port of the Beam job server of the Flink or Spark cluster (port 8099 by default)",
    "environment_config": "the pipeline's container image (environment_type DOCKER) or host:port of "
                          "an SDK worker pool (EXTERNAL)",
}


def beam_args(profile: str, settings: Optional[Mapping[str, str]] = None,
              extra: Sequence[str] = (), environ: Optional[Mapping[str, str]] = None) -> Tuple[str, ...]:
    """The Beam pipeline arguments of a profile, its `{placeholders}` filled.

    A placeholder's value is looked up in `settings`, then `RECSYS_BEAM_<NAME>` in the
    environment, then BEAM_SETTING_DEFAULTS; `extra` arguments are appended as given.

    Args:
      profile: a key of BEAM_PROFILES.
      settings: placeholder name -> value.
      extra: more Beam arguments (e.g. `--num_workers=4`), appended last.
      environ: the environment to read (default `os.environ`).
    """
    if profile not in BEAM_PROFILES:
        raise ValueError(f"unknown Beam profile {profile!r}; expected one of {', '.join(BEAM_PROFILES)}")
    env = os.environ if environ is None else environ
    settings = dict(settings or {})
    args = []
    for template in BEAM_PROFILES[profile]:
        values = {}
        for name in re.findall(r"{(\w+)}", template):
            value = settings.get(name) or env.get(BEAM_SETTING_ENV_PREFIX + name.upper()) \
                or BEAM_SETTING_DEFAULTS.get(name)
            if not value:
                hint = _SETTING_HELP.get(name, "")
                raise ValueError(
                    f"Beam profile {profile!r} needs {name}{' (' + hint + ')' if hint else ''}: pass "
                    f"--beam_setting {name}=VALUE or set {BEAM_SETTING_ENV_PREFIX}{name.upper()}")
            values[name] = value
        args.append(template.format(**values))
    return tuple(args) + tuple(extra)


def settings_arg(values: Optional[Sequence[str]]) -> Dict[str, str]:
    """`name=value` strings (the runners' repeated --beam_setting) as a dict."""
    settings = {}
    for text in values or ():
        name, sep, value = text.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--beam_setting expects name=value, got {text!r}")
        settings[name.strip()] = value.strip()
    return settings


def with_beam_profile(config: "PipelineConfig", profile: str, settings: Optional[Mapping[str, str]] = None,
                      extra: Sequence[str] = ()) -> "PipelineConfig":
    """`config` with its Beam stages on `profile` (see beam_args)."""
    return dataclasses.replace(config, beam_profile=profile,
                               beam_pipeline_args=beam_args(profile, settings, extra))


def add_beam_arguments(parser) -> None:
    """Adds --beam_profile, --beam_setting and --beam_arg to a runner's argparse parser."""
    parser.add_argument("--beam_profile", default=PipelineConfig.beam_profile, choices=list(BEAM_PROFILES),
                        help="where the Beam stages run (pipeline/configs.py BEAM_PROFILES)")
    parser.add_argument("--beam_setting", action="append", default=[], metavar="NAME=VALUE",
                        help="fills a {placeholder} of the profile, e.g. temp_location=gs://b/tmp; repeatable")
    parser.add_argument("--beam_arg", action="append", default=[], metavar="ARG",
                        help="one more Beam argument, e.g. --beam_arg=--num_workers=4; repeatable")


def apply_beam_arguments(config: "PipelineConfig", args) -> "PipelineConfig":
    """The config with the profile chosen by add_beam_arguments' flags."""
    return with_beam_profile(config, args.beam_profile, settings_arg(args.beam_setting), args.beam_arg)


def families_arg(value: Optional[str]) -> Tuple[str, ...]:
    """Parses a comma-separated family list ('' or 'none' -> no trainers)."""
    if value is None:
        return PipelineConfig.families
    if value.strip().lower() in ("", "none"):
        return ()
    return tuple(name.strip() for name in value.split(",") if name.strip())

