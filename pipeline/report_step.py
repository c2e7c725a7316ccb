"""The run report and model cards as the pipeline's last step, for scheduled runs.

Airflow and Kubeflow runs end with this component (`RunReport`); the local runner writes
the same report itself after its run, with each component's time, and leaves it out of
its pipeline (pipeline/pipeline.py `report_step`). It reads only this run's artifacts,
handed to it as inputs: StatisticsGen's statistics, ExampleValidator's anomalies, and per
family the Trainer's model run, the Evaluator's evaluation and the Pusher's result, so it
runs after every Evaluator and Pusher; a family whose model was not blessed shows as such
and gets no card. It writes `report.html` into its output artifact and to
`<output_dir>/report.html`, a local path or a URI such as gs://... (through TensorFlow's
file systems), a model card into each pushed version, and logs the paths; the artifact's
`report_path` property names the copy in the output directory.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Dict, List, Sequence

from absl import logging
from tfx import types
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils
from tfx.types.component_spec import ChannelParameter, ExecutionParameter
from tfx.types.experimental.simple_artifacts import File

from common.io_utils import atomic_write
from pipeline.configs import PipelineConfig

COMPONENT_ID = "RunReport"
REPORT_KEY = "report"  # the output artifact
REPORT_PATH_PROPERTY = "report_path"
# What the report reads: (component id, output key) of the data stages, and per family.
DATA_OUTPUTS = (("StatisticsGen", "statistics"), ("ExampleValidator", "anomalies"))
FAMILY_OUTPUTS = (("Trainer_{family}", "model_run"), ("Evaluator_{family}", "evaluation"),
                  ("Pusher_{family}", "pushed_model"))


# A run on spans (pipeline/span_stages.py) also reports its window and the drift it measured.
SPAN_OUTPUTS = (("SpanWindow", "window_examples"), ("DriftGate", "accepted"))


def report_sources(families: Sequence[str], spanned: bool = False) -> List[tuple]:
    """(component id, output key) of every output the report of a run of `families` reads
    (`spanned`: a run on spans)."""
    return list(DATA_OUTPUTS) + (list(SPAN_OUTPUTS) if spanned else []) + [
        (component.format(family=family), key) for family in families for component, key in FAMILY_OUTPUTS]


def _input_key(component_id: str, output_key: str) -> str:
    return re.sub(r"[^a-z0-9_]", "_", f"{component_id}_{output_key}".lower())


class RunReportSpec(types.ComponentSpec):
    """The report's parameters and output; its inputs are the run's outputs it reads (RunReport)."""

    PARAMETERS = {
        "config": ExecutionParameter(type=str),  # PipelineConfig.to_json()
        "data_dir": ExecutionParameter(type=str),  # the Kubeflow spec's data_root parameter
        "sources": ExecutionParameter(type=str),  # JSON {input key: [component id, output key]}
    }
    INPUTS: Dict[str, ChannelParameter] = {}
    OUTPUTS = {REPORT_KEY: ChannelParameter(type=File)}


class Executor(base_executor.BaseExecutor):
    """Writes the report and the model cards from the input artifacts."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]], output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        import tensorflow as tf

        from pipeline import html_report, model_card

        config = dataclasses.replace(PipelineConfig.from_json(exec_properties["config"]),
                                     data_dir=exec_properties["data_dir"])
        outputs: Dict[str, Dict[str, str]] = {}
        for key, (component, output) in json.loads(exec_properties["sources"]).items():
            outputs.setdefault(component, {})[output] = artifact_utils.get_single_uri(input_dict[key])
        report = artifact_utils.get_single_instance(output_dict[REPORT_KEY])

        if config.spanned:  # each family's push or its reason, in the run record
            from pipeline import span_stages

            span_stages.record_outcomes(config, outputs)
        for path in model_card.write_cards(config, outputs):
            logging.info("Model card: %s", path)
        path = html_report.write(config, outputs=outputs)
        with tf.io.gfile.GFile(path) as f:
            artifact_copy = atomic_write(os.path.join(report.uri, html_report.REPORT_NAME), f.read())
        report.set_string_custom_property(REPORT_PATH_PROPERTY, path)
        logging.info("Report: %s (this run's copy: %s)", path, artifact_copy)


class RunReport(base_component.BaseComponent):
    """The run's HTML report and model cards, from the outputs `report_sources` names.

    Args:
      config: the run's configuration (its families, output directory, ...).
      outputs: {(component id, output key): channel} holding every pair of
        `report_sources(config.families, config.spanned)`.
    """

    SPEC_CLASS = RunReportSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(self, config: PipelineConfig, outputs: Dict[tuple, types.BaseChannel]):
        sources = report_sources(config.families, config.spanned)
        missing = [f"{component}.{key}" for component, key in sources if (component, key) not in outputs]
        if missing:
            raise ValueError(f"the run report reads {', '.join(missing)}, which the pipeline does not produce")
        inputs = {_input_key(*source): outputs[source] for source in sources}
        # The inputs depend on the families, so each pipeline gets its own spec class.
        spec_class = type("RunReportSpec", (RunReportSpec,), {
            "INPUTS": {key: ChannelParameter(type=channel.type) for key, channel in inputs.items()}})
        super().__init__(spec=spec_class(
            config=config.to_json(),
            data_dir=config.data_dir,
            sources=json.dumps({_input_key(*source): list(source) for source in sources}, sort_keys=True),
            report=types.Channel(type=File),
            **inputs,
        ))
