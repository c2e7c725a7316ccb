"""The curated schema of a dataset, generated from its description.

`contract.description.raw_features` lists every raw feature ExampleGen writes for a
description (type, values per example, presence, whether a serving client sends it, the
behavior and split domains, declared numeric ranges). This module writes them as a TFMD
schema text (`schemas/<name>/schema.pbtxt`) with a comment per entry, so the file reads
like the hand-curated one it replaces; the string domain of a small categorical feature
(at most MAX_DOMAIN_VALUES distinct values) is filled from the data's training split, so
a value that appears later stops a run at the anomaly gate. The generated file is
reviewed and checked in (frozen): `make update-schema ARGS="--generate ..."`
(pipeline/update_schema.py) writes it.

Encoding rules (what ExampleGen writes, raw_features):
- the ids, the timestamp, the split and the 0/1 labels (a required single value):
  `shape { dim { size: 1 } }` (parsed as a dense tensor);
- anything else, side-table features included: `value_count` (parsed as a sparse tensor);
  a single-valued feature that can be missing is absent from the example, so it holds one
  value whenever present;
- features a serving client does not send (labels, the timestamp, the split, interaction
  outcomes): `not_in_environment: "SERVING"`.
"""

from __future__ import annotations

import glob
import os
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from contract import description as desc

# A categorical feature with at most this many distinct training values gets a string
# domain (an unseen value is an anomaly); larger vocabularies (ids, categories) do not.
MAX_DOMAIN_VALUES = 100
SPLIT_DOMAIN = "split"
TRAIN_SPLIT = "train"

_TYPES = {desc.BYTES: "BYTES", desc.INT: "INT", desc.FLOAT: "FLOAT"}
# Roles whose required single value is parsed dense (a fixed shape); side-table features
# stay sparse (value_count) whatever their count, as Transform reads every typed feature.
_DENSE_ROLES = ("id", "time", "split", "label")
_HEADER = """\
# Schema of the {name} interaction examples (the raw features InteractionExampleGen writes),
# generated from the description {source} by
#   make update-schema ARGS="--generate {option}"
# then reviewed and checked in. Imported with ImportSchemaGen; ExampleValidator checks every
# split against it and the pipeline stops on any anomaly.
#
# Environments: TRAINING examples carry labels and the timestamp; SERVING requests
# (serving_default) carry only what a client knows when it asks for a score.
"""


def behavior_domain(d: desc.Description) -> str:
    """The string_domain name of the history behaviors."""
    return f"{d.name}_behavior"


def domain_features(d: desc.Description) -> Tuple[desc.Feature, ...]:
    """The categorical side-table features whose string domain comes from the data."""
    return tuple(f for f in d.features if f.type in (desc.CATEGORICAL, desc.MULTI_CATEGORICAL))


def _number(value: float, dtype: str) -> str:
    if dtype == desc.INT:
        return str(int(value))
    return repr(float(value))


def _comment(d: desc.Description, raw: desc.RawFeature) -> List[str]:
    """The comment lines of one feature entry: where it comes from and when it is absent."""
    implicit = d.implicit_label
    if raw.role == "split":
        return ["Which split the example belongs to; the Evaluator slices on it (gates on eval,",
                "reports test). Not sent by serving clients."]
    if raw.role == "label" and raw.name == next((l.name for l in d.labels if l.source == desc.RATING), None):
        return [f"Absent on sampled negatives ({implicit} = 0)."]
    if raw.role == "label":
        label = d.label(raw.name)
        if label.source == desc.IMPLICIT:
            return ["1 on every logged interaction, 0 on a sampled negative."]
        if d.anchor:
            within = f" within {label.horizon_seconds:g} s" if label.horizon_seconds is not None else ""
            return [f"1 when the user did {label.behavior!r} to the item at or after the example's first "
                    f"{d.anchor!r}{within}, in the example's split."]
        return [f"1 when the row's behavior is {label.behavior!r}; 0 on sampled negatives."]
    if raw.role == "document":
        column = next(c for c in d.text_columns if raw.name in c.document_names())
        side = "user" if raw.name.startswith("user_") else "item"
        return [f"The {side}'s most recent earlier training-split {column.name!r} texts, oldest first (at most",
                f"{column.max_documents}); never the row's own text, never an eval or test text."]
    if raw.role == "outcome":
        column = d.column(raw.name)
        lines = [f"Interaction column {column.column!r} ({column.type}): an outcome of the interaction, absent on",
                 "sampled negatives, never a model input for its own row."]
        if column.pattern:
            lines.append(f"Parsed by the pattern '{column.pattern}'; a row without a match has none.")
        return lines
    if raw.role == "feature":
        feature = next(f for f in d.features if f.raw_name == raw.name)
        how = f"{feature.side} feature {feature.name!r}: {feature.type}, column {feature.column!r}"
        if feature.separator:
            how += f" split by {feature.separator!r}"
        lines = [how[0].upper() + how[1:] + "."]
        if feature.pattern:
            lines.append(f"Parsed by the pattern '{feature.pattern}'; a row without a match has none.")
        return lines
    return []


def _feature_text(d: desc.Description, raw: desc.RawFeature, domain: Optional[str]) -> List[str]:
    lines = ["feature {"]
    lines += [f"  # {line}" for line in _comment(d, raw)]
    lines += [f'  name: "{raw.name}"', f"  type: {_TYPES[raw.dtype]}"]
    if domain:
        lines.append(f'  domain: "{domain}"')
    bounds = []
    if raw.minimum is not None:
        bounds.append(f"min: {_number(raw.minimum, raw.dtype)}")
    if raw.maximum is not None:
        bounds.append(f"max: {_number(raw.maximum, raw.dtype)}")
    if raw.role == "label" and raw.dtype == desc.INT:
        bounds.append("is_categorical: true")
    if bounds and raw.dtype != desc.BYTES:
        lines.append(f"  {'int' if raw.dtype == desc.INT else 'float'}_domain {{ {' '.join(bounds)} }}")
    if raw.required:
        lines.append("  presence { min_fraction: 1.0 min_count: 1 }")
    else:
        lines.append("  presence { min_fraction: 0.0 }")
    if raw.required and raw.min_count == raw.max_count == 1 and raw.role in _DENSE_ROLES:
        lines.append("  shape { dim { size: 1 } }")
    else:
        low = max(raw.min_count, 1) if raw.max_count == 1 else raw.min_count
        high = f" max: {raw.max_count}" if raw.max_count is not None else ""
        lines.append(f"  value_count {{ min: {low}{high} }}")
    if not raw.serving:
        lines.append('  not_in_environment: "SERVING"')
    lines.append("}")
    return lines


def _domain_text(name: str, values: Sequence[str], comment: Sequence[str] = ()) -> List[str]:
    lines = ["string_domain {"] + [f"  # {line}" for line in comment] + [f'  name: "{name}"']
    lines += [f'  value: "{_escape(v)}"' for v in values]
    return lines + ["}"]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def regenerate_option(d: desc.Description, source: str) -> str:
    """The options of `make update-schema ARGS="--generate ..."` that regenerate the schema of
    `d`, read from `source` (a shipped file under datasets/ or a file of one's own)."""
    option = f"--dataset {d.name}" if source.startswith("datasets/") else f"--dataset_file {source}"
    if domain_features(d) and not d.data_dir:
        option += " --data_dir DIR"  # the domains are read from the data
    return option


def render(d: desc.Description, domain_values: Mapping[str, Sequence[str]], source: str = "",
           option: str = "") -> str:
    """The schema text of a description.

    Args:
      d: the description.
      domain_values: raw feature name -> its training-split values, for the features of
        `domain_features(d)` that get a string domain (a feature left out gets none).
      source: the description's file as the header names it.
      option: the options of the command that regenerates the file (regenerate_option).
    """
    lines = _HEADER.format(name=d.name, source=source or d.path or "(a mapping)",
                           option=option or regenerate_option(d, source or d.path)).splitlines()
    if d.anchor:
        lines.insert(5, f"# One example per (user, item) at its first {d.anchor!r} event; the behavior labels "
                        "come from later events.")
    lines += ['default_environment: "TRAINING"', 'default_environment: "SERVING"', ""]
    domains: List[List[str]] = []
    for raw in desc.raw_features(d):
        domain = None
        if raw.name == "history_behaviors":
            domain = behavior_domain(d)
            domains.append(_domain_text(domain, d.behaviors, ["History behaviors, weakest first (the description's)."]))
        elif raw.name == "split":
            domain = SPLIT_DOMAIN
            domains.append(_domain_text(domain, desc.SPLIT_VALUES))
        elif raw.name in domain_values:
            domain = raw.name
            domains.append(_domain_text(domain, sorted(domain_values[raw.name]), [
                "The values of the training split when the schema was generated: an eval or test",
                "value outside them, or a new one in a later release, stops the run at the gate."]))
        lines += _feature_text(d, raw, domain)
    lines.append("")
    for domain in domains:
        lines += domain
    return "\n".join(lines) + "\n"


def training_values(files: Iterable[str], names: Sequence[str]) -> Dict[str, List[str]]:
    """The distinct values of the bytes features `names` in GZIP TFRecord files of tf.Examples.

    Args:
      files: the training split's files (ExampleGen's Split-train/*).
      names: raw feature names.
    """
    import tensorflow as tf

    found: Dict[str, set] = {name: set() for name in names}
    files = sorted(files)
    if not files:
        raise FileNotFoundError("no training-split files to read the domain values from")
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator():
        feature = tf.train.Example.FromString(record).features.feature
        for name in names:
            if name in feature:
                found[name].update(v.decode("utf-8") for v in feature[name].bytes_list.value)
    return {name: sorted(values) for name, values in found.items()}


def small_domains(d: desc.Description, values: Mapping[str, Sequence[str]]) -> Tuple[Dict[str, List[str]], List[str]]:
    """(the domains to write, notes on features left without one) from training values."""
    kept: Dict[str, List[str]] = {}
    notes = []
    for feature in domain_features(d):
        seen = list(values.get(feature.raw_name, ()))
        if len(seen) > MAX_DOMAIN_VALUES:
            notes.append(f"{feature.raw_name}: {len(seen)} distinct training values (more than "
                         f"{MAX_DOMAIN_VALUES}): no string domain")
        elif not seen:
            notes.append(f"{feature.raw_name}: no value in the training split: no string domain")
        else:
            kept[feature.raw_name] = sorted(seen)
    return kept, notes


def split_files(examples_dir: str, split: str = TRAIN_SPLIT) -> List[str]:
    """The files of one split under an ExampleGen output directory."""
    return sorted(glob.glob(os.path.join(examples_dir, f"Split-{split}", "*")))


def checked_in_domains(schema_text: str, d: desc.Description) -> Dict[str, List[str]]:
    """The string domains a schema file gives the features of `domain_features(d)` (what
    the file froze from the data), by raw feature name."""
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2

    schema = text_format.Parse(schema_text, schema_pb2.Schema())
    domains = {domain.name: list(domain.value) for domain in schema.string_domain}
    names = {f.raw_name for f in domain_features(d)}
    return {feature.name: domains[feature.domain] for feature in schema.feature
            if feature.name in names and feature.domain in domains}
