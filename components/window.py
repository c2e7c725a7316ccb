"""The rolling window of a scheduled run: which spans it trains on and which judge it.

Each run's span ExampleGen (components/example_gen/span_component.py) publishes one
Examples artifact per new span (both views, every role) and the carried state. A span joins
the history only when the run that ingested it passed the data gates: the DriftGate
(components/drift.py) then publishes a `SpanAcceptance` naming that run's ingest. A stopped
run's spans are neither carried nor trained on; the next run ingests them again (fixed in
place, or as a new {VERSION}) together with whatever arrived since.

- `AcceptedStateStrategy` (a Resolver strategy): the carried state of the newest accepted
  ingest, which the next ExampleGen continues from.
- `WindowSpansStrategy`: the accepted spans' Examples, newest `spans` of them.
- `SpanWindow` (a component): this run's new spans plus the accepted ones, the newest
  `train_spans + 2` of them: train = all but the last two, eval = the next-to-newest, test =
  the newest, so the gate (eval) and the report (test) always judge on data newer than
  anything trained on. It publishes one Examples artifact per view with Split-train /
  Split-eval / Split-test made of the spans' files of that role, hard-linked (copied across
  file systems): nothing is re-read. StatisticsGen, the schema and drift gates, Transform,
  the Trainers and the Evaluators read these.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from tfx import types
from tfx.components.example_gen import utils as example_gen_utils
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.dsl.components.common import resolver
from tfx.proto import example_gen_pb2
from tfx.types import artifact, artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components import span_runs

INGEST_PROPERTY = "ingest"  # the ingest run (its state artifact's URI) on every span artifact
WINDOW_PROPERTY = "window"  # JSON {train: [spans], eval: span, test: span} on the window's artifacts
NEW_SPANS_PROPERTY = "new_spans"  # JSON [spans] this run ingested
WINDOW_REPORT = "window.json"
FILE_FORMAT = "tfrecords_gzip"
MIN_SPANS = 3  # one to train, one to gate (eval), one to report (test)


class SpanState(artifact.Artifact):
    """The per-user state carried from one span to the next (components/example_gen/spans.py)."""

    TYPE_NAME = "SpanState"
    PROPERTIES = {"span": artifact.Property(type=artifact.PropertyType.INT)}


class SpanAcceptance(artifact.Artifact):
    """A run's new spans passed the data gates: they join the carried history and later windows."""

    TYPE_NAME = "SpanAcceptance"


class WindowError(RuntimeError):
    """The window cannot be formed (too few spans, or a task without training positives)."""


def _ingest(a: types.Artifact) -> str:
    return a.get_string_custom_property(INGEST_PROPERTY)


def spans_of(examples: Sequence[types.Artifact]) -> List[types.Artifact]:
    """The span artifacts among a span ExampleGen's outputs: those naming their ingest (an
    orchestrator may also hand over the output template it registered before the executor
    ran, as Airflow's launcher does: no ingest, no span)."""
    return [a for a in examples if _ingest(a)]


def accepted_ingests(acceptances: Sequence[types.Artifact]) -> set:
    """The ingest ids the acceptance markers name."""
    return {_ingest(a) for a in acceptances if _ingest(a)}


class AcceptedStateStrategy(resolver.ResolverStrategy):
    """Resolves the carried state of the newest accepted ingest (none before the first).

    Inputs: `state` (every SpanState of the span ExampleGen) and `accepted` (every
    SpanAcceptance). Outputs the same keys: `state` holds at most one artifact, `accepted`
    none (the ExampleGen does not need them).
    """

    def resolve_artifacts(self, store, input_dict: Dict[str, List[types.Artifact]]
                          ) -> Optional[Dict[str, List[types.Artifact]]]:
        accepted = accepted_ingests(input_dict.get("accepted", []))
        states = sorted((s for s in input_dict.get("state", []) if _ingest(s) in accepted), key=lambda a: a.id)
        return {"state": states[-1:], "accepted": []}


def newest_spans(examples: Sequence[types.Artifact], count: int) -> List[types.Artifact]:
    """Per span number the newest artifact (highest id), the `count` highest span numbers, oldest first."""
    by_span: Dict[int, types.Artifact] = {}
    for a in sorted(examples, key=lambda a: a.id):
        by_span[a.span] = a
    return [by_span[s] for s in sorted(by_span)[-count:]] if count > 0 else []


class WindowSpansStrategy(resolver.ResolverStrategy):
    """Resolves the accepted spans of the window: per span its newest accepted artifact of each
    view, the newest `spans` spans.

    Inputs: `examples`, `user_examples` (every span artifact of the span ExampleGen) and
    `accepted`; outputs `examples` and `user_examples` (matching spans), `accepted` empty.

    Args:
      spans: how many spans to resolve at most (the window's train spans + 2).
    """

    def __init__(self, spans: int):
        self._spans = int(spans)

    def resolve_artifacts(self, store, input_dict: Dict[str, List[types.Artifact]]
                          ) -> Optional[Dict[str, List[types.Artifact]]]:
        accepted = accepted_ingests(input_dict.get("accepted", []))
        examples = newest_spans([a for a in input_dict.get("examples", []) if _ingest(a) in accepted], self._spans)
        keys = {(_ingest(a), a.span) for a in examples}
        users = [a for a in input_dict.get("user_examples", []) if (_ingest(a), a.span) in keys]
        return {"examples": examples, "user_examples": users, "accepted": []}


# ----------------------------------------------------------------------------------------
# The window
# ----------------------------------------------------------------------------------------
def assemble(spans: Sequence[Tuple[int, str, str]], train_spans: int) -> Dict[str, Any]:
    """The window of a run: {train: [spans], eval: span, test: span} and the artifacts of each.

    Args:
      spans: (span, examples uri, user examples uri) of every candidate span (accepted and new).
      train_spans: N, the most spans to train on.

    Raises WindowError with fewer than MIN_SPANS spans.
    """
    by_span = {span: (ex, users) for span, ex, users in spans}
    order = sorted(by_span)
    if len(order) < MIN_SPANS:
        raise WindowError(f"the window needs at least {MIN_SPANS} spans (train, eval, test); the accepted and new "
                          f"spans are {order or 'none'}: the next runs add the spans that arrive (or put several "
                          f"spans in place before the first run: it ingests all of them)")
    chosen = order[-(train_spans + 2):]
    return {"train": chosen[:-2], "eval": chosen[-2], "test": chosen[-1],
            "uris": {span: by_span[span] for span in chosen}}


def _link_or_copy(source: str, target: str) -> None:
    import tensorflow as tf

    try:
        os.link(source, target)
    except OSError:  # another file system, or a URI
        tf.io.gfile.copy(source, target, overwrite=False)


def link_split(sources: Sequence[Tuple[int, str]], role: str, out_uri: str) -> int:
    """Links the files of `role` of each (span, artifact uri) into `out_uri/Split-<role>`, named
    `span-<span>-<file>`; returns the number of files."""
    import tensorflow as tf

    target_dir = os.path.join(out_uri, f"Split-{role}")
    tf.io.gfile.makedirs(target_dir)
    count = 0
    for span, uri in sources:
        split_dir = os.path.join(uri, f"Split-{role}")
        for name in sorted(tf.io.gfile.listdir(split_dir)):
            _link_or_copy(os.path.join(split_dir, name), os.path.join(target_dir, f"span-{span}-{name}"))
            count += 1
    return count


class SpanWindowSpec(types.ComponentSpec):
    """This run's new spans and the accepted ones in; the window's two views out."""

    PARAMETERS = {
        "train_spans": ExecutionParameter(type=int),
        "output_dir": ExecutionParameter(type=str),  # the run record's directory (span_runs)
        "description": ExecutionParameter(type=str),  # JSON: the dataset description (positives check)
    }
    INPUTS = {
        "new_examples": ChannelParameter(type=standard_artifacts.Examples),
        "new_user_examples": ChannelParameter(type=standard_artifacts.Examples),
        "examples": ChannelParameter(type=standard_artifacts.Examples, optional=True),
        "user_examples": ChannelParameter(type=standard_artifacts.Examples, optional=True),
    }
    OUTPUTS = {
        "window_examples": ChannelParameter(type=standard_artifacts.Examples),
        "window_user_examples": ChannelParameter(type=standard_artifacts.Examples),
    }


class Executor(base_executor.BaseExecutor):
    """Assembles the window (see module docstring); records a stop in the run record."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]], output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        new = sorted(spans_of(input_dict["new_examples"]), key=lambda a: a.span)
        new_spans = [a.span for a in new]
        try:
            self._assemble(input_dict, output_dict, exec_properties)
        except Exception as e:
            span_runs.record(exec_properties["output_dir"], "SpanWindow", span_runs.STOPPED, str(e), new_spans)
            raise

    def _assemble(self, input_dict, output_dict, exec_properties) -> None:
        from components.example_gen import spans as S
        from contract import datasets

        new = spans_of(input_dict["new_examples"])
        new_users = {(_ingest(a), a.span): a for a in spans_of(input_dict["new_user_examples"])}
        old = input_dict.get("examples", [])
        old_users = {(_ingest(a), a.span): a for a in input_dict.get("user_examples", [])}
        candidates = []
        # A new span replaces an accepted one of the same number (later entries win in assemble).
        for a, users_of in [(a, old_users) for a in old] + [(a, new_users) for a in new]:
            users = users_of.get((_ingest(a), a.span))
            if users is None:
                raise WindowError(f"span {a.span} ({a.uri}) has no user-view artifact of the same ingest")
            candidates.append((a.span, a.uri, users.uri))
        window = assemble(candidates, int(exec_properties["train_spans"]))
        reports = {span: S.read_span_report(uris[0]) for span, uris in window["uris"].items()}
        spec = datasets.dataset_spec(json.loads(exec_properties["description"]))
        positives = S.window_positives([reports[s] for s in window["train"]])
        missing = [t.name for t in spec.tasks if t.kind == "binary" and not positives.get(t.label, 0)]
        if missing:
            raise WindowError(f"tasks {missing} have no positive example in the window's training spans "
                              f"{window['train']} (positives per label: {positives or 'none'}): train on more spans "
                              "(train_spans) or wait for spans that hold them")
        roles = [("train", window["train"]), ("eval", [window["eval"]]), ("test", [window["test"]])]
        summary = {"train": window["train"], "eval": window["eval"], "test": window["test"]}
        ingest = _ingest(new[0]) if new else ""
        new_spans = sorted(a.span for a in new)
        rows = {}
        for key, view in (("window_examples", 0), ("window_user_examples", 1)):
            out = artifact_utils.get_single_instance(output_dict[key])
            for role, members in roles:
                link_split([(s, window["uris"][s][view]) for s in members], role, out.uri)
            out.split_names = artifact_utils.encode_split_names(["train", "eval", "test"])
            out.span = window["test"]
            out.set_string_custom_property(example_gen_utils.PAYLOAD_FORMAT_PROPERTY_NAME,
                                           example_gen_pb2.PayloadFormat.Name(example_gen_pb2.FORMAT_TF_EXAMPLE))
            out.set_string_custom_property(example_gen_utils.FILE_FORMAT_PROPERTY_NAME, FILE_FORMAT)
            out.set_string_custom_property(WINDOW_PROPERTY, json.dumps(summary, sort_keys=True))
            out.set_string_custom_property(NEW_SPANS_PROPERTY, json.dumps(new_spans))
            out.set_string_custom_property(INGEST_PROPERTY, ingest)
            if view == 0:
                rows = {str(s): int(reports[s].get("rows_written", {}).get("train", 0)) for s in window["uris"]}
                details = dict(summary, new_spans=new_spans, rows=rows,
                               ingest_seconds={str(s): reports[s].get("elapsed_seconds") for s in new_spans
                                               if s in reports})
                _write_json(os.path.join(out.uri, WINDOW_REPORT), details)


def _write_json(path: str, value: Any) -> None:
    from common.io_utils import atomic_write

    atomic_write(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def read_window(examples_uri: str) -> Dict[str, Any]:
    """The window report beside a window's examples ({} when none): spans per role, rows per
    span, the run's new spans and their ingest seconds."""
    import tensorflow as tf

    path = os.path.join(examples_uri, WINDOW_REPORT)
    if not examples_uri or not tf.io.gfile.exists(path):
        return {}
    with tf.io.gfile.GFile(path) as f:
        return json.loads(f.read())


class SpanWindow(base_component.BaseComponent):
    """The window's Examples from this run's spans and the accepted ones (see module docstring).

    Args:
      new_examples / new_user_examples: this run's span ExampleGen outputs.
      examples / user_examples: the accepted spans (a Resolver with WindowSpansStrategy).
      train_spans: N, the most spans to train on.
      output_dir: where the run record is (components/span_runs.py).
      description: the dataset description mapping.
    """

    SPEC_CLASS = SpanWindowSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(self, new_examples, new_user_examples, examples, user_examples, train_spans: int,
                 output_dir: str, description: Dict[str, Any]):
        super().__init__(spec=SpanWindowSpec(
            new_examples=new_examples, new_user_examples=new_user_examples, examples=examples,
            user_examples=user_examples, train_spans=int(train_spans), output_dir=output_dir,
            description=json.dumps(description, sort_keys=True),
            window_examples=types.Channel(type=standard_artifacts.Examples),
            window_user_examples=types.Channel(type=standard_artifacts.Examples)))
