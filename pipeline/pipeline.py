"""The pipeline, in the order the data flows.

ExampleGen -> StatisticsGen -> ImportSchemaGen -> ExampleValidator -> AnomalyGate ->
Transform -> per family: Trainer -> Resolver (latest blessed) -> Evaluator -> Pusher
-> RunReport (scheduled runs).

A log laid out as spans (pipeline/span_stages.py) reads its new spans and a window of the
accepted ones instead of the whole log, and a DriftGate follows the AnomalyGate.
"""

from __future__ import annotations

import json
from typing import List

from tfx import v1 as tfx
from tfx.proto import transform_pb2

from components.anomaly_gate import AnomalyGate
from components.example_gen import InteractionExampleGen
from pipeline.configs import PIPELINE_NAME, PipelineConfig


def create_pipeline(
    config: PipelineConfig,
    metadata_connection_config=None,
    enable_cache: bool = False,
    report_step: bool = True,
) -> tfx.dsl.Pipeline:
    """Builds the TFX pipeline for one configuration (see pipeline/configs.py).

    Args:
      config: what the pipeline computes (resolved here: the description's settings fill
        what it leaves unset, and every component carries the description's content).
      metadata_connection_config: the ML Metadata store (none: the orchestrator's).
      enable_cache: reuse a component's outputs when its inputs and settings are unchanged.
      report_step: end with the run report and model cards (pipeline/report_step.py), after
        every Pusher; the local runner writes them itself after the run, with each
        component's time.
    """
    config = config.resolved()
    components: List = []

    if config.spanned:  # the new spans, and the window of spans the run trains and is judged on
        from pipeline import span_stages

        ingest = span_stages.ingest_stages(config)
        components.extend(ingest.components)
        examples, user_examples = ingest.examples, ingest.user_examples
    else:
        example_gen = InteractionExampleGen(
            input_base=config.data_dir, config=json.dumps(config.ingest_config(), sort_keys=True)
        )
        components.append(example_gen)
        examples, user_examples = example_gen.outputs["examples"], example_gen.outputs["user_examples"]

    statistics_gen = tfx.components.StatisticsGen(examples=examples)
    components.append(statistics_gen)

    schema_gen = tfx.components.ImportSchemaGen(schema_file=config.schema_path)
    components.append(schema_gen)

    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    )
    components.append(example_validator)

    anomaly_gate = AnomalyGate(anomalies=example_validator.outputs["anomalies"], schema_file=config.schema_path,
                               output_dir=config.output_dir if config.spanned else "")
    components.append(anomaly_gate)
    data_gate = anomaly_gate
    if config.spanned:  # the newest span against the training window; accepts the run's spans
        data_gate = span_stages.drift_gate(config, statistics_gen.outputs["statistics"],
                                           schema_gen.outputs["schema"], examples)
        data_gate.add_upstream_node(anomaly_gate)
        components.append(data_gate)

    transform = tfx.components.Transform(
        examples=examples,
        schema=schema_gen.outputs["schema"],
        preprocessing_fn="transform.preprocessing.preprocessing_fn",
        splits_config=transform_pb2.SplitsConfig(
            analyze=["train"], transform=["train", "eval", "test"]
        ),
        custom_config=config.transform_config(),
        # StatisticsGen already profiled the raw data; pre/post-transform statistics
        # would double Transform's time.
        disable_statistics=True,
        force_tf_compat_v1=config.transform_tf_compat_v1,
    )
    transform.add_upstream_node(data_gate)
    components.append(transform)

    if config.families:
        from pipeline import model_stages  # the trainer/evaluator/pusher stages

        components.extend(
            model_stages.create_model_stages(
                config,
                examples=transform.outputs["transformed_examples"],
                raw_examples=examples,
                user_examples=user_examples,
                transform_graph=transform.outputs["transform_graph"],
                schema=schema_gen.outputs["schema"],
            )
        )

    if report_step:
        from pipeline.report_step import COMPONENT_ID, RunReport

        produced = {(c.id, key): channel for c in components for key, channel in c.outputs.items()}
        run_report = RunReport(config, produced).with_id(COMPONENT_ID)
        run_report.add_upstream_node(transform)  # with no families, after the data stages all the same
        components.append(run_report)

    return tfx.dsl.Pipeline(
        pipeline_name=PIPELINE_NAME,
        pipeline_root=config.pipeline_root,
        components=components,
        enable_cache=enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(config.beam_pipeline_args),
    )

