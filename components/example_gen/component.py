"""InteractionExampleGen: a TFX component that turns an interaction log into split tf.Examples."""

from __future__ import annotations

from typing import Any, Dict, Optional, Union

from tfx import types
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components.example_gen import executor
from components.example_gen.config import IngestConfig


class InteractionExampleGenSpec(types.ComponentSpec):
    """Parameters `input_base` (the data directory; '' for the description's) and `config`
    (IngestConfig JSON, holding the whole dataset description).

    Outputs `examples` (the interaction view: one example per interaction) and
    `user_examples` (the user view: one example per user and split).
    """

    PARAMETERS = {
        executor.INPUT_BASE_KEY: ExecutionParameter(type=str),
        executor.CONFIG_KEY: ExecutionParameter(type=str),
    }
    INPUTS: Dict[str, ChannelParameter] = {}
    OUTPUTS = {
        executor.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
        executor.USER_EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
    }


class InteractionExampleGen(base_beam_component.BaseBeamComponent):
    """Reads an interaction log (and its side tables) as its dataset description says and
    publishes train/eval/test Examples.

    Beam options given with `with_beam_pipeline_args` (or the pipeline's
    `beam_pipeline_args`) apply to the ingest pipeline.
    """

    SPEC_CLASS = InteractionExampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(self, input_base: Optional[str], config: Union[str, Dict[str, Any], IngestConfig]):
        """Builds the component; the config is validated here, before any pipeline runs.

        Args:
          input_base: the data directory the description's file paths are relative to
            (None or '': the description's data_dir).
          config: an IngestConfig, its JSON, or a dict of its fields.
        """
        if isinstance(config, str):
            config = IngestConfig.from_json(config)
        elif isinstance(config, dict):
            config = IngestConfig.from_dict(config)
        elif not isinstance(config, IngestConfig):
            raise TypeError(f"config must be an IngestConfig, JSON text or dict, got {type(config).__name__}")
        spec = InteractionExampleGenSpec(
            input_base=input_base or "",
            config=config.to_json(),
            examples=types.Channel(type=standard_artifacts.Examples),
            user_examples=types.Channel(type=standard_artifacts.Examples))
        super().__init__(spec=spec)
