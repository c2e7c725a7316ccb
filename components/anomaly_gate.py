"""Stops the pipeline when ExampleValidator found anomalies, and says how to proceed.

ExampleValidator records anomalies but lets downstream components run. This gate sits
between it and Transform: with any anomaly in any split it fails, and its error
message is the anomaly list, so the user sees what is wrong with the data instead of
a model trained on it, followed by what to do: which schema file and which entry to
change when the data is right (a new release of a dataset with a new genre, say), the
command that writes the schema the data implies beside the curated one for review, and
the option that points a run at another schema.
"""


import os
from typing import Dict, List, Optional, Tuple

from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import v1 as tfx
from tfx.types import artifact_utils

ANOMALIES_FILE = "SchemaDiff.pb"  # what ExampleValidator writes per split
UPDATE_SCHEMA_COMMAND = "make update-schema"  # pipeline/update_schema.py
SCHEMA_OPTION = "--schema_file"  # pipeline/local_runner.py

Type = anomalies_pb2.AnomalyInfo.Type


class DataAnomaliesError(RuntimeError):
    """The examples do not match the curated schema."""


def read_anomalies(anomalies_uri: str, split_names: List[str]) -> List[Tuple[str, str, anomalies_pb2.AnomalyInfo]]:
    """(split, feature or '' for the dataset, AnomalyInfo) per anomaly."""
    found = []
    for split in split_names:
        path = os.path.join(anomalies_uri, f"Split-{split}", ANOMALIES_FILE)
        anomalies = anomalies_pb2.Anomalies()
        with open(path, "rb") as f:
            anomalies.ParseFromString(f.read())
        for feature, info in sorted(anomalies.anomaly_info.items()):
            found.append((split, feature, info))
        if anomalies.HasField("dataset_anomaly_info"):
            found.append((split, "", anomalies.dataset_anomaly_info))
    return found


def describe_anomalies(anomalies_uri: str, split_names: List[str]) -> List[str]:
    """One line per anomaly: split, feature, short and long description."""
    lines = []
    for split, feature, info in read_anomalies(anomalies_uri, split_names):
        where = f"feature {feature!r}" if feature else "dataset"
        lines.append(f"split {split}: {where}: {info.short_description}: {info.description}")
    return lines


def _feature_domains(schema_file: str) -> Dict[str, str]:
    """Feature name -> the name of its string_domain, from the schema file ({} if unreadable)."""
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2

    try:
        with open(schema_file, encoding="utf-8") as f:
            schema = text_format.Parse(f.read(), schema_pb2.Schema())
    except (OSError, text_format.ParseError):
        return {}
    return {feature.name: feature.domain for feature in schema.feature if feature.domain}


def _schema_change(feature: str, info: anomalies_pb2.AnomalyInfo, domains: Dict[str, str]) -> str:
    """Which entry of the schema file to change for one anomaly, if the data is right."""
    reasons = {reason.type for reason in info.reason}
    if not feature:
        return f"the dataset-level constraints ({info.short_description})"
    if Type.ENUM_TYPE_UNEXPECTED_STRING_VALUES in reasons and feature in domains:
        return f"add the new values to string_domain {domains[feature]!r} (the domain of feature {feature!r})"
    if Type.SCHEMA_NEW_COLUMN in reasons:
        return f"add a feature {feature!r}"
    return f"the entry of feature {feature!r} ({info.short_description})"


def _output_dir(anomalies_uri: str) -> Optional[str]:
    """The run's output directory when the pipeline root is `<output_dir>/pipeline_root`."""
    parts = os.path.abspath(anomalies_uri).split(os.sep)
    if "pipeline_root" in parts:
        return os.sep.join(parts[: len(parts) - 1 - parts[::-1].index("pipeline_root")]) or os.sep
    return None


def how_to_proceed(anomalies_uri: str, split_names: List[str], schema_file: str) -> List[str]:
    """The lines telling the user what to do next."""
    domains = _feature_domains(schema_file) if schema_file else {}
    changes = []
    for _, feature, info in read_anomalies(anomalies_uri, split_names):
        change = _schema_change(feature, info, domains)
        if change not in changes:
            changes.append(change)
    target = schema_file or "the curated schema (schemas/<description name>/schema.pbtxt)"
    output_dir = _output_dir(anomalies_uri) or "<this run's output directory>"
    return [
        "How to proceed:",
        "  - If the data is wrong, fix the input files and run again.",
        f"  - If the data is right (a new release of the dataset, say), the schema must change: in {target}, "
        + "; ".join(changes) + ".",
        f'    {UPDATE_SCHEMA_COMMAND} ARGS="--output_dir {output_dir}" writes the schema this data implies '
        "beside it (schema.inferred.pbtxt) and prints the difference to review.",
        f"    Then edit the curated schema, or run with {SCHEMA_OPTION} FILE to validate against another schema.",
        "  - If the dataset description changed (a feature or label added, renamed or retyped), generate the "
        f'schema from it: {UPDATE_SCHEMA_COMMAND} ARGS="--generate --dataset NAME" (or --dataset_file FILE), '
        "review it and check it in.",
    ]


@tfx.dsl.components.component
def AnomalyGate(  # noqa: N802
    anomalies: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ExampleAnomalies],
    schema_file: tfx.dsl.components.Parameter[str] = "",
    output_dir: tfx.dsl.components.Parameter[str] = "",
) -> None:
    """Fails with the list of anomalies and how to proceed when ExampleValidator found any.

    Args:
      anomalies: ExampleValidator's output.
      schema_file: the schema file the run validated against (named in the message).
      output_dir: a spanned run's output directory: a stop is written to its run record
        (components/span_runs.py); '' records nothing.
    """
    splits = artifact_utils.decode_split_names(anomalies.split_names)
    found = describe_anomalies(anomalies.uri, splits)
    if found and output_dir:
        from components import span_runs

        span_runs.record(output_dir, "AnomalyGate", span_runs.STOPPED, "anomalies: " + "; ".join(found))
    if found:
        where = f" {schema_file}" if schema_file else ""
        raise DataAnomaliesError(
            f"ExampleValidator found {len(found)} anomal{'y' if len(found) == 1 else 'ies'} "
            f"against the schema{where} (pipeline stopped before Transform):\n  "
            + "\n  ".join(found)
            + "\n"
            + "\n".join(how_to_proceed(anomalies.uri, splits, schema_file))
        )
