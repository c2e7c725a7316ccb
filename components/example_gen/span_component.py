"""SpanExampleGen: the ExampleGen of an interaction log laid out as spans (components/example_gen/spans.py).

A run ingests every span newer than the carried state's (the state of the newest accepted
ingest, resolved by components/window.py's AcceptedStateStrategy), oldest first, each with the
state the span before it left: in steady operation that is the one span that arrived since the
last run; the first run ingests every span in place; after a stopped run, the stopped spans
again with the new ones. Each span is one Examples artifact per view (properties `span` and
`version`, custom properties `input_fingerprint` and `ingest`), written under the execution's
output directory as `span-<span>/`; the state after the last one is one SpanState artifact.
"""

from __future__ import annotations

import copy
import os
from typing import Any, Dict, List, Optional

from absl import logging
from tfx import types
from tfx.components.example_gen import utils as example_gen_utils
from tfx.dsl.components.base import base_beam_component, base_beam_executor, executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components import span_runs
from components.example_gen import inmemory, spans
from components.example_gen.config import SPLIT_NAMES, IngestConfig
from components.window import FILE_FORMAT, INGEST_PROPERTY, SpanState

COMPONENT_ID = "SpanExampleGen"


class SpanExampleGenSpec(types.ComponentSpec):
    """Parameters: `input_base` (data directory), `config` (IngestConfig JSON), `output_dir` (the
    run record's directory). Input: the `carried_state` (optional). Outputs: `examples` and
    `user_examples` (one artifact per new span), `state`."""

    PARAMETERS = {
        "input_base": ExecutionParameter(type=str),
        "config": ExecutionParameter(type=str),
        "output_dir": ExecutionParameter(type=str),
    }
    INPUTS = {"carried_state": ChannelParameter(type=SpanState, optional=True)}
    OUTPUTS = {
        "examples": ChannelParameter(type=standard_artifacts.Examples),
        "user_examples": ChannelParameter(type=standard_artifacts.Examples),
        "state": ChannelParameter(type=SpanState),
    }


def _span_artifact(template: types.Artifact, span: spans.SpanFiles, ingest: str) -> types.Artifact:
    """An Examples artifact of one span under the execution's output directory."""
    out = copy.deepcopy(template)
    out.mlmd_artifact.ClearField("id")
    # ML Metadata names are unique per type: the orchestrator may have registered the template
    # under one (Airflow's launcher does), so each span's artifact gets its own.
    if template.mlmd_artifact.HasField("name"):
        out.mlmd_artifact.name = f"{template.mlmd_artifact.name}:span-{span.span}"
    if template.mlmd_artifact.HasField("external_id"):
        out.mlmd_artifact.ClearField("external_id")
    out.uri = os.path.join(template.uri, f"span-{span.span}")
    out.span = span.span
    if span.version is not None:
        out.version = span.version
    out.split_names = artifact_utils.encode_split_names(list(SPLIT_NAMES))
    out.set_string_custom_property(example_gen_utils.FINGERPRINT_PROPERTY_NAME, span.fingerprint)
    out.set_string_custom_property(example_gen_utils.PAYLOAD_FORMAT_PROPERTY_NAME,
                                   example_gen_pb2.PayloadFormat.Name(example_gen_pb2.FORMAT_TF_EXAMPLE))
    out.set_string_custom_property(example_gen_utils.FILE_FORMAT_PROPERTY_NAME, FILE_FORMAT)
    out.set_string_custom_property(INGEST_PROPERTY, ingest)
    return out


class Executor(base_beam_executor.BaseBeamExecutor):
    """Ingests the spans after the carried state's, one after the other (span_ingest.ingest_span)."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]], output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        todo: List[int] = []
        try:
            todo = self._ingest(input_dict, output_dict, exec_properties)
        except Exception as e:
            span_runs.record(exec_properties.get("output_dir", ""), COMPONENT_ID, span_runs.STOPPED,
                             f"{type(e).__name__}: {e}", todo or getattr(e, "spans", ()))
            raise

    def _ingest(self, input_dict, output_dict, exec_properties) -> List[int]:
        from components.example_gen import span_ingest

        config = IngestConfig.from_json(exec_properties["config"])
        data_dir = inmemory.data_dir_of(exec_properties.get("input_base") or None, config)
        carried = input_dict.get("carried_state") or []
        previous = carried[0] if carried else None
        last = previous.span if previous is not None else None
        available = spans.available_spans(data_dir, config.spec.description.interactions.files)
        todo = spans.spans_to_ingest(available, last)
        if not todo:
            error = spans.SpanError(
                f"no span after span {last} in {data_dir} ({', '.join(config.spec.description.interactions.files)}; "
                f"found {[s.span for s in available]}): nothing new to ingest; the run stops here and the next "
                "one ingests what arrives")
            raise error
        state_out = artifact_utils.get_single_instance(output_dict["state"])
        ingest = state_out.uri
        state_path = os.path.join(previous.uri, spans.STATE_FILE) if previous is not None else ""
        example_list, user_list = [], []
        template, user_template = output_dict["examples"][0], output_dict["user_examples"][0]
        for number, span in enumerate(todo):
            examples = _span_artifact(template, span, ingest)
            users = _span_artifact(user_template, span, ingest)
            next_state = os.path.join(state_out.uri, f"span-{span.span}", spans.STATE_FILE)
            report = span_ingest.ingest_span(data_dir, config, span, state_path, examples.uri, users.uri, next_state,
                                             make_pipeline=self._make_beam_pipeline)
            logging.info("span %s (version %s): %s", span.span, span.version, report["rows_written"])
            state_path = next_state
            example_list.append(examples)
            user_list.append(users)
        os.replace(state_path, os.path.join(state_out.uri, spans.STATE_FILE))
        state_out.span = todo[-1].span
        state_out.set_string_custom_property(INGEST_PROPERTY, ingest)
        output_dict["examples"][:] = example_list
        output_dict["user_examples"][:] = user_list
        return [s.span for s in todo]


class SpanExampleGen(base_beam_component.BaseBeamComponent):
    """Reads the spans of an interaction log that arrived since the carried state (see module docstring).

    Args:
      input_base: the data directory the description's patterns are relative to ('' for its data_dir).
      config: an IngestConfig (or its JSON); its description's interaction files have span specs.
      state: the carried state (a Resolver with AcceptedStateStrategy), or None on a first run.
      output_dir: where the run record is (components/span_runs.py).
    """

    SPEC_CLASS = SpanExampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)

    def __init__(self, input_base: Optional[str], config, state=None, output_dir: str = ""):
        if isinstance(config, str):
            config = IngestConfig.from_json(config)
        elif isinstance(config, dict):
            config = IngestConfig.from_dict(config)
        if not spans.is_spanned(config.description):
            raise spans.SpanError(f"SpanExampleGen reads span patterns; the interaction files of dataset "
                                  f"{config.spec.name!r} ({list(config.spec.description.interactions.files)}) have "
                                  "none: use InteractionExampleGen")
        super().__init__(spec=SpanExampleGenSpec(
            input_base=input_base or "", config=config.to_json(), output_dir=output_dir, carried_state=state,
            examples=types.Channel(type=standard_artifacts.Examples),
            user_examples=types.Channel(type=standard_artifacts.Examples),
            state=types.Channel(type=SpanState)))
