"""The data stages of a log that keeps arriving (spans), in the order the data flows.

Resolver (carried state of the last accepted ingest) -> SpanExampleGen (the new spans) ->
Resolver (the accepted spans) -> SpanWindow (train: the last N spans before the two newest,
eval: the next-to-newest, test: the newest) -> [StatisticsGen, the schema gate] ->
DriftGate (the newest span against the training window; accepts the run's spans).

pipeline/pipeline.py puts these in place of InteractionExampleGen when the description's
interaction files have span specs (components/example_gen/spans.py). Everything after the
window (Transform, Trainers, Evaluators, Pushers) reads the window's Examples as it reads
InteractionExampleGen's.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, NamedTuple

from tfx import v1 as tfx
from tfx.types import standard_artifacts

from components import window as W
from components.example_gen.span_component import COMPONENT_ID as EXAMPLE_GEN_ID, SpanExampleGen
from pipeline.configs import PipelineConfig

WINDOW_ID = "SpanWindow"
STATE_RESOLVER_ID = "Resolver_span_state"
WINDOW_RESOLVER_ID = "Resolver_span_window"
DRIFT_GATE_ID = "DriftGate"


class IngestStages(NamedTuple):
    """The components up to the window, and the window's two views."""

    components: List[Any]
    examples: Any  # the window's interaction view (Split-train / eval / test)
    user_examples: Any  # the window's user view


def ingest_stages(config: PipelineConfig) -> IngestStages:
    """The state resolver, the span ExampleGen, the accepted-spans resolver and the window."""
    config = config.resolved()
    accepted = tfx.dsl.Channel(type=W.SpanAcceptance, producer_component_id=DRIFT_GATE_ID, output_key="accepted")
    state = tfx.dsl.Resolver(
        strategy_class=W.AcceptedStateStrategy,
        state=tfx.dsl.Channel(type=W.SpanState, producer_component_id=EXAMPLE_GEN_ID, output_key="state"),
        accepted=accepted,
    ).with_id(STATE_RESOLVER_ID)
    example_gen = SpanExampleGen(input_base=config.data_dir, config=json.dumps(config.ingest_config(), sort_keys=True),
                                 state=state.outputs["state"], output_dir=config.output_dir).with_id(EXAMPLE_GEN_ID)
    spans = tfx.dsl.Resolver(
        strategy_class=W.WindowSpansStrategy,
        config={"spans": config.train_spans + 2},
        examples=tfx.dsl.Channel(type=standard_artifacts.Examples, producer_component_id=EXAMPLE_GEN_ID,
                                 output_key="examples"),
        user_examples=tfx.dsl.Channel(type=standard_artifacts.Examples, producer_component_id=EXAMPLE_GEN_ID,
                                      output_key="user_examples"),
        accepted=accepted,
    ).with_id(WINDOW_RESOLVER_ID)
    spans.add_upstream_node(example_gen)  # resolved after this run's ingest, which it leaves out (not accepted yet)
    window = W.SpanWindow(
        new_examples=example_gen.outputs["examples"], new_user_examples=example_gen.outputs["user_examples"],
        examples=spans.outputs["examples"], user_examples=spans.outputs["user_examples"],
        train_spans=config.train_spans, output_dir=config.output_dir, description=config.description,
    ).with_id(WINDOW_ID)
    return IngestStages([state, example_gen, spans, window], window.outputs["window_examples"],
                        window.outputs["window_user_examples"])


def drift_gate(config: PipelineConfig, statistics, schema, examples):
    """The DriftGate of the window's statistics (components/drift.py)."""
    from components.drift import DriftGate

    config = config.resolved()
    return DriftGate(statistics=statistics, schema=schema, examples=examples,
                     description=json.dumps(config.description, sort_keys=True),
                     thresholds=json.dumps(config.drift_thresholds, sort_keys=True),
                     schema_file=config.schema_path, output_dir=config.output_dir).with_id(DRIFT_GATE_ID)


def record_outcomes(config: PipelineConfig, outputs: Dict[str, Dict[str, str]]) -> List[Dict[str, Any]]:
    """Appends one run-record entry per family of a run that got past the data gates: pushed
    (with the version) or not pushed (with the failed thresholds), its window, its gate
    metrics and what its warm start carried (components/span_runs.py); returns the entries.

    Args:
      config: the run's configuration.
      outputs: {component: {output key: directory}} of this run (report.output_dirs).
    """
    from components import span_runs
    from pipeline import report

    config = config.resolved()
    window = W.read_window(outputs.get(WINDOW_ID, {}).get("window_examples", ""))
    spans_of = [*window.get("train", []), window.get("eval"), window.get("test")] if window else []
    entries = []
    for family in config.families:
        outcome = report.family_outcome(None, family, outputs)
        if outcome is None:
            continue
        push = outcome.get("push", {})
        training = outcome.get("training", {})
        details = {"family": family, "metrics": outcome.get("metrics", {}),
                   "train_seconds": training.get("train_seconds"),
                   "warm_start": {k: v for k, v in training.get("warm_start", {}).items() if k != "initialised"}}
        if push.get("pushed"):
            status, reason = span_runs.PUSHED, f"{family}: blessed, pushed version {push.get('version')}"
            details["version"] = push.get("version")
        else:
            status = span_runs.NOT_PUSHED
            reason = f"{family}: not blessed ({'; '.join(outcome.get('failures', [])) or 'no blessing'}); the served " \
                     "model is unchanged"
        entries.append(span_runs.record(config.output_dir, f"Pusher_{family}", status, reason,
                                        window.get("new_spans", []), spans_of, details))
    return entries
