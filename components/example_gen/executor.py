"""Beam executor of InteractionExampleGen: runs `run_ingest` into the Examples artifact."""

from __future__ import annotations

from typing import Any, Dict, List

from absl import logging
from tfx import types
from tfx.components.example_gen import utils as example_gen_utils
from tfx.dsl.components.base import base_beam_executor
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils

from components.example_gen.beam_pipeline import run_ingest
from components.example_gen.config import SPLIT_NAMES, IngestConfig

INPUT_BASE_KEY = "input_base"
CONFIG_KEY = "config"
EXAMPLES_KEY = "examples"
USER_EXAMPLES_KEY = "user_examples"
FILE_FORMAT = "tfrecords_gzip"  # the tfx_bsl name of GZIP TFRecord files


class Executor(base_beam_executor.BaseBeamExecutor):
    """Checks the data against the description (preflight), then reads the interaction log and
    its side tables and writes every split in one Beam pipeline (`run_ingest`)."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]], output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        """Writes `<examples.uri>/Split-*/data_tfrecord-*.gz` and `ingest_report.json`.

        Args:
          input_dict: unused (the component has no input channels).
          output_dict: `examples` (the interaction view) and `user_examples` (the user view):
            one Examples artifact each.
          exec_properties: `input_base` (the data directory; '': the description's) and `config`
            (IngestConfig JSON).
        """
        self._log_startup(input_dict, output_dict, exec_properties)
        examples = artifact_utils.get_single_instance(output_dict[EXAMPLES_KEY])
        user_examples = artifact_utils.get_single_instance(output_dict[USER_EXAMPLES_KEY])
        config = IngestConfig.from_json(exec_properties[CONFIG_KEY])
        report = run_ingest(exec_properties.get(INPUT_BASE_KEY) or None, config, examples.uri,
                            make_pipeline=self._make_beam_pipeline, user_output_dir=user_examples.uri)
        for artifact in (examples, user_examples):
            artifact.split_names = artifact_utils.encode_split_names(list(SPLIT_NAMES))
            artifact.set_string_custom_property(
                example_gen_utils.PAYLOAD_FORMAT_PROPERTY_NAME,
                example_gen_pb2.PayloadFormat.Name(example_gen_pb2.FORMAT_TF_EXAMPLE))
            artifact.set_string_custom_property(example_gen_utils.FILE_FORMAT_PROPERTY_NAME, FILE_FORMAT)
        logging.info("InteractionExampleGen wrote %s to %s", report["rows_written"], examples.uri)
