"""The ingest of one span as a Beam pipeline (see components/example_gen/spans.py for what it writes).

Shape: the span's files -> per-file parse (as `beam_pipeline`) -> rows keyed by user,
joined with the carried state (CoGroupByKey) -> per user `spans.build_span_user` (or the
carried state passed on when the user has no row in the span) -> the two views per role as
GZIP TFRecords, the next state, bad rows and counts.
"""

from __future__ import annotations

import glob
import gzip
import json
import logging
import os
import shutil
import tempfile
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.options.pipeline_options import PipelineOptions

from components.example_gen import beam_pipeline as bp
from components.example_gen import histories, inmemory, parsing, report, spans
from components.example_gen.config import SPLIT_NAMES, TRAIN, IngestConfig
from components.example_gen.histories import Catalogue
from components.example_gen.parsing import Interaction
from common.io_utils import atomic_write

EXAMPLES = "examples"
USER_EXAMPLES = "user_examples"
_STATE = "state"
_USER_VIEW = "user_view"


class SpanUserDoFn(bp.UserDoFn):
    """One user of the span: examples per role, the user view and the next state (the carried
    state unchanged when the user has no row in the span), bad rows and counts."""

    def process(self, element, catalogue: Catalogue, users=None):
        user_id, joined = element
        rows = [Interaction(*row) for row in joined["rows"]]
        carried = list(joined[_STATE])
        prior = carried[0] if carried else None
        if not rows:
            yield beam.pvalue.TaggedOutput(_STATE, (user_id, prior))
            return
        result = spans.build_span_user(user_id, rows, prior, self._config, catalogue, users, self._types)
        for role, data in result.examples:
            yield role, data
        for role, data in result.user_examples:
            yield beam.pvalue.TaggedOutput(_USER_VIEW, (role, data))
        yield beam.pvalue.TaggedOutput(_STATE, (user_id, result.state))
        for bad in result.bad_rows:
            yield beam.pvalue.TaggedOutput(bp._BAD, tuple(bad))
        yield beam.pvalue.TaggedOutput(bp._STATS, histories.merge_stats({}, result.stats))


def _state_lines(path: str):
    import tensorflow as tf

    with tf.io.gfile.GFile(path, "rb") as f, gzip.GzipFile(fileobj=f) as lines:
        for line in lines:
            yield line.decode("utf-8")


def build_span_pipeline(pipeline: beam.Pipeline, files: Mapping[str, Sequence[str]], config: IngestConfig,
                        state_path: str, work_dir: str) -> None:
    """Adds one span's ingest to `pipeline`: `work_dir/{examples,user_examples}/Split-*`, the
    state shards under `work_dir/state/` and the bad-row and count summaries.

    Args:
      pipeline: the Beam pipeline.
      files: the span's files by kind (spans.span_inputs).
      config: the run's ingest config (spans.span_config is applied here).
      state_path: the carried state file ('' for none).
      work_dir: where everything is written.
    """
    config = spans.span_config(config)
    d = config.spec.description
    elements = [(inmemory.INTERACTIONS, (path,)) for path in files[inmemory.INTERACTIONS]]
    elements += [(kind, tuple(files[kind])) for kind in (inmemory.ITEMS, inmemory.USERS) if kind in files]
    parsed = (pipeline
              | "InputFiles" >> beam.Create(elements)
              | "ParseFiles" >> beam.ParDo(bp.ParseFileDoFn(json.dumps(config.description, sort_keys=True)))
              .with_outputs(bp._BAD, bp._STATS, inmemory.ITEMS, inmemory.USERS, main="rows"))
    rows = parsed.rows
    if inmemory.ITEMS in files:
        items = parsed[inmemory.ITEMS]
    elif d.items_from_interactions:  # an item's features: the values on its earliest row of the span
        items = (rows
                 | "ItemFirstRow" >> beam.Map(bp._first_row)
                 | "EarliestRowPerItem" >> beam.CombinePerKey(min)
                 | "ItemFeatures" >> beam.MapTuple(
                     lambda item, key: (item, parsing.feature_dict(d.item_features, key[3]))))
    else:
        items = rows | "Items" >> beam.Map(bp._no_features) | "DistinctItems" >> beam.CombinePerKey(lambda v: {})
    side = {"catalogue": beam.pvalue.AsSingleton(
        items | "CollectItems" >> beam.combiners.ToList() | "Catalogue" >> beam.Map(lambda p: Catalogue(dict(p))))}
    if inmemory.USERS in files:
        side["users"] = beam.pvalue.AsSingleton(
            parsed[inmemory.USERS] | "CollectUsers" >> beam.combiners.ToList() | "UserTable" >> beam.Map(dict))
    if state_path:
        carried = (pipeline
                   | "StateFile" >> beam.Create([state_path])
                   | "StateLines" >> beam.FlatMap(_state_lines)
                   | "ParseState" >> beam.Map(spans.parse_state_record))
    else:
        carried = pipeline | "NoState" >> beam.Create([])
    users = (
        {"rows": rows, _STATE: carried}
        | "JoinState" >> beam.CoGroupByKey()
        | "SpanUsers" >> beam.ParDo(SpanUserDoFn(config.to_json()), **side).with_outputs(
            bp._BAD, bp._STATS, _USER_VIEW, _STATE, main=EXAMPLES))
    for name, examples in ((EXAMPLES, users[EXAMPLES]), (USER_EXAMPLES, users[_USER_VIEW])):
        by_role = examples | f"{name}ByRole" >> beam.Partition(lambda kv, _: SPLIT_NAMES.index(kv[0]),
                                                               len(SPLIT_NAMES))
        for index, role in enumerate(SPLIT_NAMES):
            _ = (by_role[index]
                 | f"{name}Bytes[{role}]" >> beam.Map(lambda kv: kv[1])
                 | f"{name}Write[{role}]" >> beam.io.WriteToTFRecord(
                     os.path.join(bp.split_dir(os.path.join(work_dir, name), role), bp.FILE_PREFIX),
                     file_name_suffix=bp.FILE_SUFFIX, compression_type=CompressionTypes.GZIP))
    _ = (users[_STATE]
         | "StateJson" >> beam.MapTuple(spans.state_record)
         | "WriteState" >> beam.io.WriteToText(os.path.join(work_dir, _STATE, "part"), file_name_suffix=".jsonl"))
    _ = ((parsed[bp._BAD], users[bp._BAD])
         | "AllBadRows" >> beam.Flatten()
         | "SummarizeBadRows" >> beam.CombineGlobally(bp.BadRowsCombineFn())
         | "BadRowsJson" >> beam.Map(json.dumps, sort_keys=True)
         | "WriteBadRows" >> beam.io.WriteToText(os.path.join(work_dir, bp._BAD_FILE), shard_name_template=""))
    _ = ((parsed[bp._STATS], users[bp._STATS])
         | "AllStats" >> beam.Flatten()
         | "SumStats" >> beam.CombineGlobally(bp.StatsCombineFn())
         | "StatsJson" >> beam.Map(json.dumps, sort_keys=True)
         | "WriteStats" >> beam.io.WriteToText(os.path.join(work_dir, bp._STATS_FILE), shard_name_template=""))


def _merge_state_shards(work_dir: str, out_path: str) -> int:
    """Writes the state shards (JSON lines) as one gzip file at `out_path`, users in id order;
    returns the number of users."""
    records = []
    for shard in sorted(glob.glob(os.path.join(work_dir, _STATE, "part*"))):
        with open(shard, encoding="utf-8") as f:
            records.extend(line.rstrip("\n") for line in f if line.strip())
    records.sort(key=lambda line: parsing.id_sort_key(json.loads(line)["user"]))
    atomic_write(out_path, gzip.compress(("\n".join(records) + ("\n" if records else "")).encode("utf-8"), mtime=0))
    return len(records)


def ingest_span(data_dir: str, config: IngestConfig, span: spans.SpanFiles, state_path: str, examples_dir: str,
                user_examples_dir: str, state_out: str, make_pipeline: Optional[Callable[[], beam.Pipeline]] = None
                ) -> Dict[str, Any]:
    """Ingests one span into `examples_dir/Split-*` and `user_examples_dir/Split-*` (one copy per
    role), writes the next state at `state_out` and the span's report beside the examples;
    nothing is moved into place unless the span is within the bad-row limit.

    Args:
      data_dir: the directory the description's patterns are relative to.
      config: the run's ingest config.
      span: the span (spans.available_spans).
      state_path: the state carried from the span before ('' for none).
      examples_dir / user_examples_dir: the two views' output directories (must hold no split).
      state_out: the path of the next state file.
      make_pipeline: builds the Beam pipeline (the executor's); default: the in-memory DirectRunner.

    Returns:
      The span's report: ingest_report's fields plus span, version, fingerprint, patterns,
      carried_users (users in the state before) and state_users (after).
    """
    start = time.monotonic()
    files = spans.span_inputs(config, data_dir, span)
    for out in (examples_dir, user_examples_dir):
        os.makedirs(out, exist_ok=True)
        existing = [n for n in os.listdir(out) if n.startswith(bp.SPLIT_DIR_PREFIX)]
        if existing:
            raise FileExistsError(f"output directory {out} already holds {sorted(existing)}")
    work_dir = tempfile.mkdtemp(prefix=bp.TMP_PREFIX, dir=examples_dir)
    moved: List[str] = []
    try:
        pipeline = make_pipeline() if make_pipeline else beam.Pipeline(options=PipelineOptions(
            list(bp.DEFAULT_BEAM_ARGS)))
        build_span_pipeline(pipeline, files, config, state_path, work_dir)
        pipeline.run().wait_until_finish()
        bad = bp._read_json(os.path.join(work_dir, bp._BAD_FILE))
        stats = bp._read_json(os.path.join(work_dir, bp._STATS_FILE))
        report.check_bad_rows(bad, config.max_bad_rows)
        for name, out in ((EXAMPLES, examples_dir), (USER_EXAMPLES, user_examples_dir)):
            for role in SPLIT_NAMES:
                source = bp.split_dir(os.path.join(work_dir, name), role)
                os.makedirs(source, exist_ok=True)
                os.rename(source, bp.split_dir(out, role))
                moved.append(bp.split_dir(out, role))
        state_users = _merge_state_shards(work_dir, state_out)
        result = inmemory.build_report(config, files, stats, bad, time.monotonic() - start)
        result.update(span=span.span, version=span.version, fingerprint=span.fingerprint,
                      patterns=list(span.patterns), state_users=state_users)
        atomic_write(os.path.join(examples_dir, spans.SPAN_REPORT),
                     json.dumps(result, indent=2, sort_keys=True) + "\n")
    except BaseException:
        for path in moved:
            shutil.rmtree(path, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    logging.info("span %s: %s rows in %.1f s", span.span, result["rows_written"][TRAIN], time.monotonic() - start)
    return result
