"""Drift of the newest span from the training window, and the gate that stops a run on it.

Measured with TFDV's drift comparators (`tfdv.validate_statistics` with the window's training
statistics as `previous_statistics`) on StatisticsGen's output of the window: Split-test (the
newest span) against Split-train (the spans the run trains on).

Which features and thresholds: a feature's `drift_comparator` in the schema file when it has
one (TFDV's format: `drift_comparator { infinity_norm { threshold: 0.3 } }` for a categorical
feature, `jensen_shannon_divergence` for a numeric one); otherwise these defaults, for the
features whose distribution is a property of the traffic rather than of the calendar:
- categorical values (history behaviors, categorical side-table features): L-infinity
  distance of the value frequencies (the largest change of one value's share), DEFAULT_L_INFTY;
- numbers (the rating and the 0/1 labels, numeric side-table features): Jensen-Shannon
  divergence of the histograms, DEFAULT_JSD.
Ids, the timestamp, the split, histories of ids, texts and documents are not watched (new
ids and a later time are what a new span is). `drift_thresholds` in the pipeline config
({feature: threshold}) overrides either; 0 or a negative value stops watching a feature.

The defaults are starting points, not tuned on real traffic: on the synthetic daily logs of
the tests (tests/daily_logs.py) a regular day measured below 0.08 (L-infinity)
and 0.06 (JSD) against its window, while a day whose ratings were all set to 0.5 is
far above both (tests/test_span_window.py). Measure your own days (the report's "Daily data"
section) before relying on them.
"""


import json
import os
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence

from tfx import v1 as tfx

from components import span_runs
from components.window import INGEST_PROPERTY, NEW_SPANS_PROPERTY, WINDOW_PROPERTY, SpanAcceptance
from contract import datasets
from contract import description as desc

DEFAULT_L_INFTY = 0.25
DEFAULT_JSD = 0.2
DRIFT_FILE = "drift.json"
L_INFTY = "L_INFTY"
JSD = "JENSEN_SHANNON_DIVERGENCE"
COMPONENT_ID = "DriftGate"


class DataDriftError(RuntimeError):
    """The newest span drifted from the training window beyond a threshold."""


class FeatureDrift(NamedTuple):
    """One feature's distance between the newest span and the training window."""

    feature: str
    measure: str  # L_INFTY or JENSEN_SHANNON_DIVERGENCE
    value: float
    threshold: float

    @property
    def exceeded(self) -> bool:
        return self.value > self.threshold


def watched_features(d: desc.Description) -> Dict[str, str]:
    """Raw feature name -> the default measure (L_INFTY or JSD) of every feature watched by default."""
    out: Dict[str, str] = {}
    for raw in desc.raw_features(d):
        if raw.role == "history" and raw.dtype == desc.BYTES and raw.domain:
            out[raw.name] = L_INFTY  # the history behaviors
        elif raw.role == "label":
            out[raw.name] = JSD
        elif raw.role == "feature":
            feature = next(f for f in d.features if f.raw_name == raw.name)
            if feature.type in (desc.CATEGORICAL, desc.MULTI_CATEGORICAL):
                out[raw.name] = L_INFTY
            elif feature.type in (desc.NUMERIC, desc.TIME):
                out[raw.name] = JSD
    return out


def with_comparators(schema, d: desc.Description, overrides: Mapping[str, float]):
    """A copy of `schema` with a drift comparator on every watched feature: the schema's own
    when it has one, else the default; `overrides` replace thresholds (<= 0: not watched)."""
    from tensorflow_metadata.proto.v0 import schema_pb2

    out = schema_pb2.Schema()
    out.CopyFrom(schema)
    defaults = watched_features(d)
    unknown = sorted(set(overrides) - {f.name for f in out.feature})
    if unknown:
        raise ValueError(f"drift_thresholds name features {unknown} that the schema does not have; its features: "
                         f"{', '.join(sorted(f.name for f in out.feature))}")
    for feature in out.feature:
        comparator = feature.drift_comparator
        has_own = comparator.HasField("infinity_norm") or comparator.HasField("jensen_shannon_divergence")
        if feature.name in overrides:
            threshold = float(overrides[feature.name])
            if threshold <= 0:
                feature.ClearField("drift_comparator")
                continue
            measure = (L_INFTY if comparator.HasField("infinity_norm") else JSD) if has_own else defaults.get(
                feature.name, L_INFTY if feature.type == 1 else JSD)  # 1: BYTES
        elif has_own:
            continue
        elif feature.name in defaults:
            measure, threshold = defaults[feature.name], None
        else:
            continue
        feature.ClearField("drift_comparator")
        if measure == L_INFTY:
            feature.drift_comparator.infinity_norm.threshold = DEFAULT_L_INFTY if threshold is None else threshold
        else:
            feature.drift_comparator.jensen_shannon_divergence.threshold = DEFAULT_JSD if threshold is None else threshold
    return out


def _thresholds(schema) -> Dict[str, tuple]:
    out = {}
    for f in schema.feature:
        c = f.drift_comparator
        if c.HasField("infinity_norm"):
            out[f.name] = (L_INFTY, c.infinity_norm.threshold)
        elif c.HasField("jensen_shannon_divergence"):
            out[f.name] = (JSD, c.jensen_shannon_divergence.threshold)
    return out


def measure(statistics_uri: str, schema_path: str, description: datasets.DatasetRef,
            overrides: Optional[Mapping[str, float]] = None, newest: str = "test",
            window: str = "train") -> List[FeatureDrift]:
    """Per watched feature, the distance between split `newest` and split `window` of a
    StatisticsGen output, with its threshold (see module docstring), by feature name.

    Args:
      statistics_uri: the ExampleStatistics artifact's directory (Split-*/FeatureStats.pb).
      schema_path: the schema file (text) the run validates against.
      description: the dataset description.
      overrides: feature -> threshold (the pipeline config's drift_thresholds).
      newest / window: the splits compared.
    """
    import tensorflow_data_validation as tfdv

    d = datasets.dataset_spec(description).description
    stats = {split: tfdv.load_stats_binary(os.path.join(statistics_uri, f"Split-{split}", "FeatureStats.pb"))
             for split in (newest, window)}
    schema = with_comparators(tfdv.load_schema_text(schema_path), d, overrides or {})
    anomalies = tfdv.validate_statistics(stats[newest], schema, previous_statistics=stats[window])
    thresholds = _thresholds(schema)
    out = []
    for info in anomalies.drift_skew_info:
        name = info.path.step[-1]
        for m in info.drift_measurements:
            kind = type(m).Type.Name(m.type)
            out.append(FeatureDrift(name, kind, float(m.value), float(m.threshold)))
    measured = {f.feature for f in out}
    for name, (kind, threshold) in sorted(thresholds.items()):
        if name not in measured:  # absent from one side (e.g. no rating in the span): nothing to compare
            out.append(FeatureDrift(name, kind, float("nan"), float(threshold)))
    return sorted(out, key=lambda f: f.feature)


def as_rows(drifts: Sequence[FeatureDrift]) -> List[Dict[str, Any]]:
    """JSON-able rows (what drift.json, the run record and the report hold)."""
    return [{"feature": f.feature, "measure": f.measure, "value": None if f.value != f.value else round(f.value, 6),
             "threshold": f.threshold, "exceeded": bool(f.exceeded)} for f in drifts]


def read_drift(accepted_uri: str) -> Dict[str, Any]:
    """drift.json of an accepted run ({} when none)."""
    import tensorflow as tf

    path = os.path.join(accepted_uri, DRIFT_FILE)
    if not accepted_uri or not tf.io.gfile.exists(path):
        return {}
    with tf.io.gfile.GFile(path) as f:
        return json.loads(f.read())


def how_to_proceed(exceeded: Sequence[FeatureDrift], schema_file: str, newest_span: Any) -> List[str]:
    """The lines telling the user what to do after a drift stop."""
    raise_lines = "; ".join(
        f"feature {f.feature!r}: drift_comparator {{ {'infinity_norm' if f.measure == L_INFTY else 'jensen_shannon_divergence'}"
        f" {{ threshold: {max(f.value * 1.2, f.threshold):.3g} }} }}" for f in exceeded)
    overrides = json.dumps({f.feature: round(max(f.value * 1.2, f.threshold), 3) for f in exceeded})
    return [
        "How to proceed:",
        f"  - If span {newest_span}'s data is wrong, deliver it again (fixed in place, or as a new {{VERSION}}): a "
        "stopped run's spans are neither carried nor trained on, and the next run ingests them again.",
        f"  - If the shift is real, raise the threshold in {schema_file or 'the schema file'} ({raise_lines}), or set "
        f"drift_thresholds {overrides} in the run's configuration (RECSYS_CONFIG_JSON for Airflow, "
        "--drift_threshold FEATURE=VALUE for the local runner), and run again.",
        "  - Nothing was trained or pushed by this run: the served models are unchanged.",
    ]


def _drift_gate(statistics_uri: str, schema_uri: str, window: Mapping[str, Any], accepted_uri: str,
                description: str, thresholds: str, schema_file: str, output_dir: str, ingest: str,
                new_spans: Sequence[int]) -> List[FeatureDrift]:
    schema_path = os.path.join(schema_uri, "schema.pbtxt")
    drifts = measure(statistics_uri, schema_path, json.loads(description), json.loads(thresholds or "{}"))
    exceeded = [f for f in drifts if f.exceeded]
    spans_of = [*window.get("train", []), window.get("eval"), window.get("test")]
    if exceeded:
        lines = [f"feature {f.feature!r}: {f.measure} {f.value:.4f} > threshold {f.threshold:g}" for f in exceeded]
        message = (f"the newest span ({window.get('test')}) drifted from the training window (spans "
                   f"{window.get('train')}) beyond the thresholds (pipeline stopped before Transform):\n  "
                   + "\n  ".join(lines) + "\n" + "\n".join(how_to_proceed(exceeded, schema_file, window.get("test"))))
        span_runs.record(output_dir, COMPONENT_ID, span_runs.STOPPED, "drift: " + "; ".join(lines), new_spans,
                         spans_of, {"drift": as_rows(drifts)})
        raise DataDriftError(message)
    from common.io_utils import atomic_write

    atomic_write(os.path.join(accepted_uri, DRIFT_FILE), json.dumps(
        {"window": dict(window), "new_spans": list(new_spans), "ingest": ingest, "drift": as_rows(drifts)},
        indent=2, sort_keys=True) + "\n")
    return drifts


@tfx.dsl.components.component
def DriftGate(  # noqa: N802
    statistics: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ExampleStatistics],
    schema: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Schema],
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    accepted: tfx.dsl.components.OutputArtifact[SpanAcceptance],
    description: tfx.dsl.components.Parameter[str],
    thresholds: tfx.dsl.components.Parameter[str] = "{}",
    schema_file: tfx.dsl.components.Parameter[str] = "",
    output_dir: tfx.dsl.components.Parameter[str] = "",
) -> None:
    """Stops the run when the newest span drifted from the window; otherwise accepts the run's
    new spans (`accepted`: they join the carried history and later windows).

    Args:
      statistics: StatisticsGen's output on the window.
      schema: the schema the run validates against (its drift comparators apply).
      examples: the window's examples (which spans, which ingest).
      accepted: the acceptance of this run's ingest, with drift.json.
      description: the dataset description (JSON), for the default watched features.
      thresholds: JSON {feature: threshold} overriding the schema's and the defaults.
      schema_file: the schema file named in the message.
      output_dir: where the run record is.
    """
    window = json.loads(examples.get_string_custom_property(WINDOW_PROPERTY) or "{}")
    ingest = examples.get_string_custom_property(INGEST_PROPERTY)
    new_spans = json.loads(examples.get_string_custom_property(NEW_SPANS_PROPERTY) or "[]")
    _drift_gate(statistics.uri, schema.uri, window, accepted.uri, description, thresholds, schema_file,
                output_dir, ingest, new_spans)
    accepted.set_string_custom_property(INGEST_PROPERTY, ingest)
    accepted.set_string_custom_property(NEW_SPANS_PROPERTY, json.dumps(new_spans))
    accepted.set_string_custom_property(WINDOW_PROPERTY, json.dumps(window, sort_keys=True))
