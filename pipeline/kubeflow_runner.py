"""Compiles the pipeline to a Kubeflow Pipelines v2 spec (KFP v2 backends or Vertex AI Pipelines).

The pipeline is the one `pipeline.pipeline.create_pipeline` builds for the local runner;
only orchestration differs: every component runs in the pipeline's container image
(`Dockerfile`: the TFX 1.16 image with this project at /pipeline), and ML Metadata is
the cluster's, so no metadata connection is configured here.

Runtime parameters (set per run at submission; defaults are in the spec):

  data_root    the input data directory; default: --data_dir, or the description's
               data_dir inside the image when it lies in the repository (MovieLens:
               /pipeline/data/movielens-small); a gs:// path or a mounted volume for
               real data
  train_args   the Trainers' TrainArgs as JSON; default {"num_steps": <--train_steps>}

Compile-time choices (they change the pipeline's components, so they are not runtime
parameters): the dataset description (`--dataset NAME` or `--dataset_file FILE`) and its
settings (`--split`, `--max_history`, ...), `--families`, `--beam_profile`, and
`--output_dir` (required: where pushed models go, `<output_dir>/serving`, the run report of
the last task, `<output_dir>/report.html`, and the default pipeline root
`<output_dir>/pipeline_root`; a gs:// bucket or a mounted volume, as the containers see it).
The components carry the description's content, not its path: the spec runs where the
file does not exist. The curated schema is read inside the image
(`/pipeline/schemas/<name>/schema.pbtxt`): build the image after `make update-schema`
wrote yours, or point `--schema_file` at a copy the containers can read.

    python -m pipeline.kubeflow_runner --image REGISTRY/recsys-tfx:TAG \\
        --output_dir gs://BUCKET/recsys --output_file outputs/kubeflow/recsys_pipeline.yaml

`--target kubeflow` (default) writes artifact types as `schemaTitle`s, which KFP v2
backends pass on to the container; `--target vertex` keeps TFX's `instanceSchema`s,
which Vertex AI Pipelines reads. A `.yaml` output file is the pipeline spec (what the KFP
SDK and UI load); a `.json` one is a Vertex PipelineJob with the same spec.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import shutil
import sys
import tempfile
from typing import Any, Dict, List, Optional

import yaml

from common.io_utils import is_uri
from pipeline.configs import (REPO_ROOT, PipelineConfig, add_beam_arguments, add_dataset_arguments, apply_beam_arguments,
                              dataset_overrides, families_arg)

DEFAULT_IMAGE = "recsys-tfx:latest"
DEFAULT_OUTPUT_FILE = os.path.join("outputs", "kubeflow", "recsys_pipeline.yaml")
# Where the Dockerfile puts the repository inside the image.
IMAGE_ROOT = "/pipeline"
IMAGE_SCHEMA_DIR = IMAGE_ROOT + "/schemas"
TARGETS = ("kubeflow", "vertex")

# Runtime parameter names.
DATA_ROOT = "data_root"
TRAIN_ARGS = "train_args"
# (component class name, exec property) -> runtime parameter replacing it.
_PARAMETERIZED = {("InteractionExampleGen", "input_base"): DATA_ROOT, ("RunReport", "data_dir"): DATA_ROOT,
                  ("Trainer", "train_args"): TRAIN_ARGS}


def image_path(path: str) -> Optional[str]:
    """Where a path inside the repository is in the image (None for a path outside it)."""
    if is_uri(path):
        return None
    relative = os.path.relpath(os.path.abspath(path), str(REPO_ROOT))
    if relative == os.pardir or relative.startswith(os.pardir + os.sep):
        return None
    return IMAGE_ROOT if relative == os.curdir else f"{IMAGE_ROOT}/{relative}"


def image_config(config: PipelineConfig, data_dir: Optional[str] = None) -> PipelineConfig:
    """`config`, resolved, as the containers see it: the description's content carried in the
    config, the data directory and the schemas inside the image.

    Args:
      config: what the pipeline computes (its data_dir, when set, is the containers' path).
      data_dir: the data directory as the containers see it (a gs:// path or a mounted
        volume); default: the config's data_dir when set, else the description's data_dir
        inside the image, which needs it to lie in the repository.
    """
    explicit = data_dir or config.data_dir
    local = config.resolved()
    if explicit:
        data_dir = explicit
    else:
        data_dir = image_path(local.data_dir)
        if data_dir is None:
            raise ValueError(f"the data of description {local.dataset_name!r} ({local.data_dir}) is not in the "
                             "image: pass --data_dir with the path the containers read it from (gs://... or a "
                             "mounted volume)")
    description = dict(local.description, data_dir=data_dir)
    schema_file = local.schema_file
    if schema_file and image_path(schema_file):
        schema_file = image_path(schema_file)
    # The description travels as content; its file is named, not read (a file outside the
    # repository by its name only: nothing of the compiling machine goes into the spec).
    source = local.description_file
    named = source if not os.path.isabs(source) else os.path.basename(source)
    return dataclasses.replace(local, dataset=local.dataset_name, description=description, description_file=named,
                               data_dir=data_dir, schema_dir=IMAGE_SCHEMA_DIR, schema_file=schema_file)


def parameterize(pipeline) -> Dict[str, Any]:
    """Replaces the data root and the Trainers' train_args by runtime parameters; returns their defaults.

    The defaults are the values the pipeline was built with, so a run that sets no
    parameter computes what the local runner would.
    """
    from tfx import v1 as tfx

    defaults: Dict[str, Any] = {}
    for component in pipeline.components:
        for (class_name, prop), name in _PARAMETERIZED.items():
            if type(component).__name__ != class_name or prop not in component.exec_properties:
                continue
            value = component.exec_properties[prop]
            if not isinstance(value, str):  # a proto (TrainArgs): its JSON, as the executor parses it
                from tfx.utils import proto_utils

                value = json.dumps(json.loads(proto_utils.proto_to_json(value)), sort_keys=True)
            if defaults.setdefault(name, value) != value:
                raise ValueError(f"{component.id}.{prop} is {value!r} but another component's is "
                                 f"{defaults[name]!r}; one runtime parameter {name!r} cannot hold both")
            component.exec_properties[prop] = tfx.dsl.experimental.RuntimeParameter(
                name=name, ptype=str, default=value)
    return defaults


def _with_defaults(spec: Dict[str, Any], defaults: Dict[str, Any]) -> None:
    """Writes the runtime parameters' defaults into the spec's root inputs (TFX 1.16 leaves them out)."""
    parameters = spec["root"].setdefault("inputDefinitions", {}).setdefault("parameters", {})
    for name, value in defaults.items():
        if name not in parameters:
            raise ValueError(f"runtime parameter {name!r} is not an input of the compiled spec")
        parameters[name]["defaultValue"] = value
        parameters[name]["isOptional"] = True


def _schema_titles(spec: Dict[str, Any]) -> None:
    """Rewrites every artifact type `{instanceSchema: "title: tfx.X ..."}` as `{schemaTitle: tfx.X}`.

    KFP v2 backends hand a container its artifacts with the type's schemaTitle only;
    TFX's container entrypoint maps a `tfx.<Type>` title to its artifact class.
    """

    def visit(node):
        if isinstance(node, dict):
            artifact_type = node.get("artifactType")
            if isinstance(artifact_type, dict) and "instanceSchema" in artifact_type:
                title = yaml.safe_load(artifact_type["instanceSchema"]).get("title", "tfx.Artifact")
                node["artifactType"] = {"schemaTitle": title, "schemaVersion": "0.0.1"}
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(spec)


def compile_pipeline(
    config: PipelineConfig,
    output_file: str = DEFAULT_OUTPUT_FILE,
    image: str = DEFAULT_IMAGE,
    pipeline_root: Optional[str] = None,
    target: str = "kubeflow",
) -> Dict[str, Any]:
    """Compiles the pipeline of `config` to a KFP v2 pipeline spec file; returns the spec.

    The file is written to a temporary name beside `output_file` and renamed into place.

    Args:
      config: what the pipeline computes (paths as the containers see them); its
        data_dir becomes the default of the `data_root` runtime parameter.
      output_file: `.yaml` (pipeline spec) or `.json` (Vertex PipelineJob), a local path.
      image: container image every component runs in.
      pipeline_root: pipeline root for the run's artifacts; default `config.pipeline_root`.
      target: `kubeflow` (artifact types as schemaTitles) or `vertex` (instanceSchemas).
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    if not output_file.endswith((".yaml", ".yml", ".json")):
        raise ValueError(f"output_file must end in .yaml (pipeline spec) or .json (PipelineJob): {output_file}")
    from tfx import v1 as tfx

    from pipeline.pipeline import create_pipeline

    pipeline = create_pipeline(config)  # no metadata connection: the cluster provides ML Metadata
    if pipeline_root:
        pipeline.pipeline_info.pipeline_root = pipeline_root
    defaults = parameterize(pipeline)

    output_file = os.path.abspath(output_file)
    out_dir = os.path.dirname(output_file)
    os.makedirs(out_dir, exist_ok=True)
    work_dir = tempfile.mkdtemp(prefix=".compile-", dir=out_dir)
    try:
        runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
            config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
                default_image=image, use_pipeline_spec_2_1=True),
            output_dir=work_dir,
        )
        job = runner.run(pipeline, parameter_values=defaults, write_out=False)
        spec = job["pipelineSpec"]
        _with_defaults(spec, defaults)
        if target == "kubeflow":
            _schema_titles(spec)
        tmp = os.path.join(work_dir, os.path.basename(output_file))
        with open(tmp, "w", encoding="utf-8") as f:
            if output_file.endswith(".json"):
                json.dump(job, f, indent=2, sort_keys=True)
            else:
                f.write(f"# PIPELINE DEFINITION\n# Name: {spec['pipelineInfo']['name']}\n"
                        f"# Families: {', '.join(config.families) or 'none'}\n")
                yaml.safe_dump(spec, f, sort_keys=True)
        os.replace(tmp, output_file)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    return copy.deepcopy(spec)


def task_names(spec: Dict[str, Any]) -> List[str]:
    """The task (component) names of a compiled pipeline spec, in file order."""
    return list(spec["root"]["dag"]["tasks"])


def _parse_args(argv: Optional[List[str]]):
    defaults = PipelineConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default=DEFAULT_IMAGE, help="container image of every component")
    parser.add_argument("--output_file", default=DEFAULT_OUTPUT_FILE,
                        help=".yaml: pipeline spec (KFP); .json: Vertex PipelineJob")
    parser.add_argument("--output_dir", required=True,
                        help="root of what a run writes, as the containers see it (gs:// or a mounted volume)")
    add_dataset_arguments(parser, data_dir_help="default of the data_root runtime parameter, as the containers "
                                                "see it (default: the description's data_dir inside the image)")
    parser.add_argument("--pipeline_root", default=None, help="default: <output_dir>/pipeline_root")
    parser.add_argument("--families", default=None, help="comma-separated, or 'none' for data stages only")
    parser.add_argument("--train_steps", type=int, default=defaults.train_steps,
                        help="default of the train_args runtime parameter's num_steps")
    parser.add_argument("--target", default="kubeflow", choices=TARGETS)
    parser.add_argument("--schema_file", default=None,
                        help="schema to validate against, as the containers see it (default: the curated one)")
    add_beam_arguments(parser)
    args = parser.parse_args(argv)
    try:
        config = image_config(dataclasses.replace(
            defaults,
            **dataset_overrides(args),
            output_dir=args.output_dir,
            families=families_arg(args.families),
            train_steps=args.train_steps,
            schema_file=args.schema_file,
        ))
        config = apply_beam_arguments(config, args)
    except ValueError as e:  # DescriptionError included
        parser.error(str(e))
    return config, args


def main(argv: Optional[List[str]] = None) -> int:
    config, args = _parse_args(argv)
    spec = compile_pipeline(config, args.output_file, args.image, args.pipeline_root, args.target)
    tasks = task_names(spec)
    parameters = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    print(f"Wrote {args.output_file}: {len(tasks)} tasks ({', '.join(tasks)}), image {args.image}")
    print("Runtime parameters: " + ", ".join(f"{k} (default {v.get('defaultValue')!r})"
                                             for k, v in sorted(parameters.items())))
    from pipeline.html_report import REPORT_NAME

    print(json.dumps({"pipeline_root": args.pipeline_root or config.pipeline_root,
                      "serving_base_dir": config.serving_model_dir,
                      "report": os.path.join(config.output_dir, REPORT_NAME)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
