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
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from common.io_utils import is_uri
from contract import datasets as D
from contract import description as desc
from contract import run

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
PIPELINE_NAME = "recsys"
# The dataset a run reads unless told otherwise: a shipped description (datasets/<name>.yaml).
DEFAULT_DATASET = desc.DEFAULT_DATASET


@dataclasses.dataclass
class PipelineConfig:
    """What one pipeline run computes.

    The dataset is a description (contract/description.py): its settings (data_dir, split
    method and days, max_history, negatives per positive) are the defaults of the fields
    below that are None here; a field set here overrides the description. `resolved()`
    fills them in, and every runner builds its pipeline from a resolved config.

    Attributes:
      dataset: a shipped description's name (`movielens`: datasets/movielens.yaml) or a
        description file (.yaml / .json).
      description: the description's content (the file's mapping, data_dir absolute);
        None: read from `dataset`. A resolved config carries it, so a compiled pipeline
        spec (and each component's configuration) runs where the file does not exist.
      description_file: the file the description was read from (repository-relative when
        inside the repository): what reports and model cards name.
      data_dir: directory holding the description's files; None: the description's
        data_dir.
      split: `hash` (protocol R), `leave_last_two_out` (S) or `by_day` (M); None: the
        description's.
      eval_day / test_day: the by_day split's first eval day and its test day (YYYY-MM-DD);
        None: the description's.
      output_dir: root of everything a run writes (pipeline root, metadata, logs,
        serving base directory).
      families: model families to train, evaluate and push (models.registry); empty
        runs the data stages only.
      hparams: per-family hyperparameter overrides, {family: {name: value}}
        (`--hparam mf.dim=64`, or a preset's: `--preset best`), over the description's
        `hparams` (resolved() merges them); the defaults are each family's typed record.
      max_history: most recent N history interactions kept per example, read by a
        query and padded to by Transform (the same N in ExampleGen, Transform and
        the Trainer); None: the description's history.max_length.
      negatives_per_positive: sampled negatives per positive (0 = none); None: the
        description's.
      max_bad_rows: bad input rows tolerated (dropped and reported) before failing.
      train_steps: cap on each Trainer's total steps (0: none; each family trains
        until its eval metric stops improving, at most its `max_epochs`).
      train_strategy: the Trainers' `tf.distribute` strategy: `default`, `mirrored`
        (every local device) or `multi_worker` (one process per worker, each with its
        TF_CONFIG; see training/distribute.py and README "Distributed training").
      top_k: K of `recommend`, `similar_items` and the top-K metrics.
      seed: one seed for sampling, initialisation and shuffling.
      gate_thresholds / gate_max_worsening: per task name, the gate's value bound and
        tolerated worsening against the last blessed model (defaults: the
        description's tasks).
      schema_file: validate against this schema instead of the curated
        `schemas/<description name>/schema.pbtxt` (e.g. one written by `make update-schema`).
      train_spans: spanned logs (interaction files with {SPAN} or {YYYY}{MM}{DD}, see
        components/example_gen/spans.py): N, the most spans a run trains on; eval is the
        next-to-newest span, test the newest (components/window.py).
      warm_start: each Trainer starts from the last blessed model of its family
        (training/warm_start.py); None: on for spanned logs, off otherwise.
      drift_thresholds: spanned logs: per raw feature, the drift threshold of the newest
        span against the training window (components/drift.py; <= 0: not watched).
    """

    dataset: str = DEFAULT_DATASET
    description: Optional[Dict[str, Any]] = None
    description_file: str = ""
    data_dir: Optional[str] = None
    # The curated schemas (schemas/<name>/schema.pbtxt); a compiled Kubeflow spec
    # points at the copy inside the pipeline image.
    schema_dir: str = str(REPO_ROOT / "schemas")
    split: Optional[str] = None
    eval_day: Optional[str] = None
    test_day: Optional[str] = None
    output_dir: str = os.environ.get("RECSYS_OUTPUT_DIR", str(REPO_ROOT / "outputs"))
    families: Tuple[str, ...] = ("mf", "mf_dnn", "two_tower", "mmoe")
    hparams: Dict[str, Dict[str, Any]] = dataclasses.field(default_factory=dict)
    max_history: Optional[int] = None
    negatives_per_positive: Optional[int] = None
    max_bad_rows: int = 0
    train_steps: int = 0
    train_strategy: str = "default"
    top_k: int = run.TOP_K
    seed: int = run.SEED
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
    train_spans: int = 7
    warm_start: Optional[bool] = None
    drift_thresholds: Dict[str, float] = dataclasses.field(default_factory=dict)

    # ------------------------------------------------------------------
    # The dataset description
    # ------------------------------------------------------------------
    def load_description(self) -> desc.Description:
        """The Description of this run: `description` when set, else the one `dataset` names."""
        if self.description is not None:
            return D.dataset_spec(self.description).description
        return desc.load(self.dataset)

    @property
    def spec(self) -> D.DatasetSpec:
        """The DatasetSpec of this run's description (what tasks, labels and behaviors it has)."""
        return D.spec_of(self.load_description())

    @property
    def dataset_name(self) -> str:
        """The description's name: the schema directory, report and model card title."""
        return self.load_description().name

    @property
    def description_source(self) -> str:
        """The file the description came from (repository-relative when inside it)."""
        if self.description_file:
            return self.description_file
        if self.description is None:
            return _display_path(desc.resolve(self.dataset))
        return "content carried in the configuration"

    def describe_dataset(self) -> str:
        """`name (file)`: which description a run read, for summaries and model cards."""
        return f"{self.dataset_name} ({self.description_source})"

    @property
    def spanned(self) -> bool:
        """The description's interaction files are span partitions: the run ingests the new spans
        and trains on a window of them (pipeline/span_stages.py)."""
        from components.example_gen.spans import is_spanned

        return is_spanned(self.load_description())

    @property
    def warm_starts(self) -> bool:
        """Whether the Trainers start from their family's last blessed model."""
        return self.spanned if self.warm_start is None else bool(self.warm_start)

    def resolved(self) -> "PipelineConfig":
        """This config with every None field taken from the description and the description's
        content and file recorded; unchanged when already resolved.

        Raises DescriptionError (a ValueError) for a bad or unknown description, and
        ValueError when neither the config nor the description names a data directory, or
        a by_day split has no days.
        """
        d = self.load_description()
        if self.description is None:
            file = _display_path(desc.resolve(self.dataset))
        else:
            file = self.description_file
            if not os.path.isabs(self.dataset) and self.dataset in desc.shipped() and self.dataset != d.name:
                raise ValueError(f"dataset {self.dataset!r} does not match the description content it carries "
                                 f"({d.name!r}): change `dataset` on an unresolved PipelineConfig")
        data_dir = self.data_dir or d.data_dir
        if not data_dir:
            raise ValueError(f"the description {d.name!r} ({file}) names no data_dir: pass --data_dir DIR, the "
                             f"folder holding {', '.join(d.interactions.files)}")
        split = self.split or d.split
        if split not in D.SPLIT_METHODS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(D.SPLIT_METHODS)}")
        eval_day = d.eval_day if self.eval_day is None else self.eval_day
        test_day = d.test_day if self.test_day is None else self.test_day
        spanned = _spanned(d)
        if spanned:  # a time split by spans: the window's spans are its days (components/window.py)
            split, eval_day, test_day = D.BY_DAY_SPLIT, "", ""
            if self.train_spans < 1:
                raise ValueError(f"train_spans must be >= 1, got {self.train_spans}")
        if split == D.BY_DAY_SPLIT and not (eval_day and test_day) and not spanned:
            raise ValueError(f"split {split!r} needs an eval day and a test day; the description {d.name!r} "
                             f"({file}) gives none: pass --eval_day YYYY-MM-DD --test_day YYYY-MM-DD")
        if not is_uri(data_dir):
            data_dir = os.path.abspath(data_dir)
        content = d.to_dict()
        content["data_dir"] = data_dir
        return dataclasses.replace(
            self,
            description=content,
            description_file=file,
            data_dir=data_dir,
            split=split,
            eval_day=eval_day,
            test_day=test_day,
            max_history=d.max_history if self.max_history is None else self.max_history,
            negatives_per_positive=(d.negatives_per_positive if self.negatives_per_positive is None
                                    else self.negatives_per_positive),
            hparams=merge_hparams(d.hparams, self.hparams),
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
            return self.schema_file if is_uri(self.schema_file) else os.path.abspath(self.schema_file)
        return os.path.join(self.schema_dir, self.dataset_name, SCHEMA_FILE)

    def ingest_config(self) -> Dict[str, Any]:
        """The ExampleGen configuration (components.example_gen.IngestConfig fields): the
        description's content and this run's settings (the by_day days only for by_day)."""
        config = self.resolved()
        values = {
            "description": config.description,
            "split": config.split,
            "max_history": config.max_history,
            "negatives_per_positive": config.negatives_per_positive,
            "seed": config.seed,
            "max_bad_rows": config.max_bad_rows,
        }
        if config.spanned:
            from components.example_gen.spans import ALL_TRAIN_DAYS

            values.update(ALL_TRAIN_DAYS)  # every row of a span is built as a training row
        elif config.split == D.BY_DAY_SPLIT:
            values.update(eval_day=config.eval_day, test_day=config.test_day)
        return values

    def transform_config(self) -> Dict[str, Any]:
        """Transform's custom_config: the description's content and max_history."""
        config = self.resolved()
        return {"description": config.description, "max_history": config.max_history}

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "PipelineConfig":
        """The config `to_json` wrote."""
        return dataclasses.replace(cls(), **config_fields(json.loads(text), "the config JSON"))


SCHEMA_FILE = "schema.pbtxt"  # the curated schema's file name under schemas/<name>/
PRESETS_DIR = REPO_ROOT / "presets"  # named settings shipped with the project: presets/<name>.yaml


def presets() -> Tuple[str, ...]:
    """The names of the shipped presets (presets/<name>.yaml)."""
    return tuple(sorted(p.stem for p in PRESETS_DIR.glob("*.yaml")))


def load_preset(name: str) -> Dict[str, Any]:
    """The PipelineConfig fields a shipped preset sets (presets/<name>.yaml), e.g. `best`:
    the best measured settings that cost too much for the default run.

    Raises ValueError for an unknown preset or a file that is not a mapping of
    PipelineConfig fields.
    """
    import yaml

    path = PRESETS_DIR / f"{name}.yaml"
    if name not in presets():
        raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(presets())} ({PRESETS_DIR})")
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        raise ValueError(f"preset {path}: expected a mapping of PipelineConfig fields, got {type(values).__name__}")
    return config_fields(values, f"preset {path}")


def merge_hparams(*layers: Mapping[str, Mapping[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Per-family hyperparameter overrides, later layers winning name by name (the
    description's `hparams`, then a preset's, then the command line's --hparam)."""
    out: Dict[str, Dict[str, Any]] = {}
    for layer in layers:
        for family, values in (layer or {}).items():
            out.setdefault(family, {}).update(values)
    return out


def _spanned(d: desc.Description) -> bool:
    from components.example_gen.spans import is_spanned

    return is_spanned(d)


def _display_path(path: pathlib.Path) -> str:
    """`path` relative to the repository when inside it (what reports show), else absolute."""
    path = pathlib.Path(path).resolve()
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


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



# ----------------------------------------------------------------------------
# The dataset options every runner and benchmark takes
# ----------------------------------------------------------------------------
def add_dataset_arguments(parser, data_dir_help: str = "") -> None:
    """Adds the dataset options to an argparse parser: --dataset NAME | --dataset_file FILE, and
    the settings a description gives (None: the description's value).

    Args:
      parser: the runner's or benchmark's parser.
      data_dir_help: what --data_dir defaults to, when not the description's data_dir.
    """
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--dataset", default=None, choices=desc.shipped(),
                       help=f"a shipped description, datasets/NAME.yaml (default: {DEFAULT_DATASET})")
    which.add_argument("--dataset_file", default=None, metavar="FILE",
                       help="a description file (.yaml or .json) of your own data; `make describe` drafts one")
    parser.add_argument("--data_dir", default=None,
                        help=data_dir_help or "the folder holding the description's files (default: its data_dir)")
    parser.add_argument("--split", default=None, choices=list(D.SPLIT_METHODS),
                        help="default: the description's split.method")
    parser.add_argument("--eval_day", default=None, metavar="YYYY-MM-DD",
                        help="by_day split: first day of the eval split (default: the description's)")
    parser.add_argument("--test_day", default=None, metavar="YYYY-MM-DD",
                        help="by_day split: the test day (default: the description's)")
    parser.add_argument("--max_history", type=int, default=None,
                        help="history items kept per example (default: the description's history.max_length)")
    parser.add_argument("--negatives_per_positive", type=int, default=None,
                        help="sampled negatives per example row (default: the description's negatives.per_positive)")


def dataset_overrides(args) -> Dict[str, Any]:
    """The PipelineConfig fields add_dataset_arguments' options set (an option left out: the
    description's value)."""
    values: Dict[str, Any] = {"dataset": args.dataset_file or args.dataset or DEFAULT_DATASET}
    for name in ("data_dir", "split", "eval_day", "test_day", "max_history", "negatives_per_positive"):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    return values
