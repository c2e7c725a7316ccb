"""The ingest as one Beam pipeline, and `run_ingest`, which runs it and publishes the output atomically.

Shape: preflight checks (before any Beam work) -> file paths -> per-file parse (good
rows / bad rows / counts; side tables whole) -> good rows keyed by user -> GroupByKey ->
per-user examples (the item catalogue, the users table and, for descriptions with
documents, every item's training texts as side inputs) -> Partition by split -> GZIP
TFRecords per split. Bad rows and counts are combined into single JSON records that
`run_ingest` reads after the run.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.options.pipeline_options import PipelineOptions

from components.example_gen import encoding, histories, inmemory, parsing, preflight, report
from components.example_gen.config import SPLIT_NAMES, IngestConfig
from components.example_gen.histories import Catalogue
from components.example_gen.parsing import BadRow, Interaction
from contract import datasets
from common.io_utils import atomic_write

SPLIT_DIR_PREFIX = "Split-"
FILE_PREFIX = "data_tfrecord"
FILE_SUFFIX = ".gz"
TMP_PREFIX = ".ingest-tmp-"
DEFAULT_BEAM_ARGS = ("--runner=DirectRunner", "--direct_running_mode=in_memory", "--direct_num_workers=1")

_BAD = "bad"
_STATS = "stats"
_USER_VIEW = "user_view"
USER_VIEW_DIR = "user_view"  # under the work dir: the user view's Split-* directories
_BAD_FILE = "_bad_rows.json"
_STATS_FILE = "_stats.json"


def split_dir(output_dir: str, split: str) -> str:
    """`<output_dir>/Split-<split>`, where a split's TFRecord files are written."""
    return os.path.join(output_dir, SPLIT_DIR_PREFIX + split)


@beam.typehints.with_output_types(Tuple[str, tuple])
class ParseFileDoFn(beam.DoFn):
    """Parses input files (kind, paths): interaction rows keyed by user, side-table rows, bad
    rows, and data rows read. An interaction element holds one file; a side table's element
    holds all its files (read in order, so a repeated key keeps its first definition)."""

    def __init__(self, description_json: str):
        self._description_json = description_json
        self._d = None
        self._parser = None

    def setup(self):
        self._d = datasets.dataset_spec(self._description_json).description
        self._parser = parsing.InteractionParser(self._d)

    def process(self, element):
        kind, paths = element
        count = 0
        if kind == inmemory.INTERACTIONS:
            for path in paths:
                for parsed in parsing.read_interactions(path, self._d, self._parser):
                    count += 1
                    if parsed.__class__ is BadRow:
                        yield beam.pvalue.TaggedOutput(_BAD, tuple(parsed))
                    else:
                        yield parsed.user_id, tuple(parsed)
        else:
            features = self._d.item_features if kind == inmemory.ITEMS else self._d.user_features
            for parsed in parsing.read_table(paths, self._d, kind):
                count += 1
                if isinstance(parsed, BadRow):
                    yield beam.pvalue.TaggedOutput(_BAD, tuple(parsed))
                else:
                    key, values = parsed
                    yield beam.pvalue.TaggedOutput(kind, (key, parsing.feature_dict(features, values)))
        yield beam.pvalue.TaggedOutput(_STATS, {"rows_read": {kind: count}})


class UserDoFn(beam.DoFn):
    """A per-user step that needs the config (built once per worker from its JSON)."""

    def __init__(self, config_json: str):
        self._config_json = config_json
        self._config: Optional[IngestConfig] = None
        self._types: Dict[str, str] = {}

    def setup(self):
        self._config = IngestConfig.from_json(self._config_json)
        self._types = encoding.feature_types(self._config.spec.description)


@beam.typehints.with_output_types(Tuple[int, bytes])
class UserExamplesDoFn(UserDoFn):
    """Builds one user's serialized examples as (split index, bytes), plus bad rows and counts."""

    def process(self, element, catalogue: Catalogue, users=None, item_texts=None):
        user_id, rows = element
        result = histories.build_user_examples(
            user_id, (Interaction(*row) for row in rows), self._config, catalogue, users, item_texts)
        types = self._types
        for record in result.examples:
            yield SPLIT_NAMES.index(record.split), encoding.serialize(record.features, types)
        for record in result.user_examples:
            yield beam.pvalue.TaggedOutput(_USER_VIEW, (SPLIT_NAMES.index(record.split),
                                                        encoding.serialize(record.features, types)))
        for bad in result.bad_rows:
            yield beam.pvalue.TaggedOutput(_BAD, tuple(bad))
        yield beam.pvalue.TaggedOutput(_STATS, histories.merge_stats({}, result.stats))


class UserTextsDoFn(UserDoFn):
    """One user's training-split texts of the document columns (histories.TextEntry tuples)."""

    def process(self, element, catalogue: Catalogue, users=None):
        user_id, rows = element
        for entry in histories.training_texts(user_id, [Interaction(*row) for row in rows], self._config,
                                              catalogue, users):
            yield tuple(entry)


class BadRowsCombineFn(beam.CombineFn):
    """Counts bad rows per reason and keeps the first ones by (file, line)."""

    def create_accumulator(self):
        return {}

    def add_input(self, acc, row):
        return report.add_bad_rows(acc, [BadRow(*row)])

    def merge_accumulators(self, accs):
        return report.merge_bad(accs)

    def extract_output(self, acc):
        return report.bad_summary(acc)


class StatsCombineFn(beam.CombineFn):
    """Sums nested count dicts."""

    def create_accumulator(self):
        return {}

    def add_input(self, acc, stats):
        return histories.merge_stats(acc, stats)

    def merge_accumulators(self, accs):
        total: Dict[str, Any] = {}
        for acc in accs:
            histories.merge_stats(total, acc)
        return total

    def extract_output(self, acc):
        return acc


def _first_row(keyed_row):
    _, row = keyed_row
    row = Interaction(*row)
    return row.item_id, histories.first_row_key(row)


def _no_features(keyed_row):
    return keyed_row[1][1], {}


def build_pipeline(pipeline: beam.Pipeline, paths: Mapping[str, Sequence[str]], config: IngestConfig,
                   work_dir: str) -> None:
    """Adds the ingest to `pipeline`: splits under `work_dir/Split-*`, summaries in `work_dir`.

    Args:
      pipeline: the Beam pipeline to extend.
      paths: input files by kind (see `inmemory.input_paths`).
      config: the ingest config.
      work_dir: directory that receives the outputs.
    """
    d = config.spec.description
    elements = [(inmemory.INTERACTIONS, (path,)) for path in paths[inmemory.INTERACTIONS]]
    elements += [(kind, tuple(paths[kind])) for kind in (inmemory.ITEMS, inmemory.USERS) if kind in paths]
    parsed = (
        pipeline
        | "InputFiles" >> beam.Create(elements)
        | "ParseFiles" >> beam.ParDo(ParseFileDoFn(json.dumps(config.description, sort_keys=True))).with_outputs(
            _BAD, _STATS, inmemory.ITEMS, inmemory.USERS, main="rows"))
    rows = parsed.rows

    if inmemory.ITEMS in paths:
        items = parsed[inmemory.ITEMS]
    elif d.items_from_interactions:
        items = (
            rows
            | "ItemFirstRow" >> beam.Map(_first_row)
            | "EarliestRowPerItem" >> beam.CombinePerKey(min)
            | "ItemFeatures" >> beam.MapTuple(lambda item, key: (item, parsing.feature_dict(d.item_features, key[3]))))
    else:
        items = (
            rows
            | "Items" >> beam.Map(_no_features)
            | "DistinctItems" >> beam.CombinePerKey(lambda values: {}))
    side = {"catalogue": beam.pvalue.AsSingleton(
        items
        | "CollectItems" >> beam.combiners.ToList()
        | "Catalogue" >> beam.Map(lambda pairs: Catalogue(dict(pairs))))}
    if inmemory.USERS in paths:
        side["users"] = beam.pvalue.AsSingleton(
            parsed[inmemory.USERS]
            | "CollectUsers" >> beam.combiners.ToList()
            | "UserTable" >> beam.Map(dict))

    grouped = rows | "GroupByUser" >> beam.GroupByKey()
    example_side = dict(side)
    if histories.plan_of(config).documents:
        example_side["item_texts"] = beam.pvalue.AsSingleton(
            grouped
            | "UserTexts" >> beam.ParDo(UserTextsDoFn(config.to_json()), **side)
            | "CollectTexts" >> beam.combiners.ToList()
            | "ItemTexts" >> beam.Map(lambda entries: histories.ItemTexts(histories.TextEntry(*e) for e in entries)))
    users = (
        grouped
        | "UserExamples" >> beam.ParDo(UserExamplesDoFn(config.to_json()), **example_side).with_outputs(
            _BAD, _STATS, _USER_VIEW, main="examples"))

    for view, examples, out_dir in (("", users.examples, work_dir),
                                    ("Users", users[_USER_VIEW], os.path.join(work_dir, USER_VIEW_DIR))):
        by_split = examples | f"{view}PartitionBySplit" >> beam.Partition(lambda kv, _: kv[0], len(SPLIT_NAMES))
        for index, split in enumerate(SPLIT_NAMES):
            _ = (
                by_split[index]
                | f"{view}Serialized[{split}]" >> beam.Map(lambda kv: kv[1])
                | f"{view}Write[{split}]" >> beam.io.WriteToTFRecord(
                    os.path.join(split_dir(out_dir, split), FILE_PREFIX),
                    file_name_suffix=FILE_SUFFIX,
                    compression_type=CompressionTypes.GZIP))

    _ = (
        (parsed[_BAD], users[_BAD])
        | "AllBadRows" >> beam.Flatten()
        | "SummarizeBadRows" >> beam.CombineGlobally(BadRowsCombineFn())
        | "BadRowsJson" >> beam.Map(json.dumps, sort_keys=True)
        | "WriteBadRows" >> beam.io.WriteToText(os.path.join(work_dir, _BAD_FILE), shard_name_template=""))
    _ = (
        (parsed[_STATS], users[_STATS])
        | "AllStats" >> beam.Flatten()
        | "SumStats" >> beam.CombineGlobally(StatsCombineFn())
        | "StatsJson" >> beam.Map(json.dumps, sort_keys=True)
        | "WriteStats" >> beam.io.WriteToText(os.path.join(work_dir, _STATS_FILE), shard_name_template=""))


def _read_json(path: str) -> Dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return json.loads(f.read())


def _as_config(config: Union[str, Dict[str, Any], IngestConfig]) -> IngestConfig:
    if isinstance(config, IngestConfig):
        return config
    if isinstance(config, dict):
        return IngestConfig.from_dict(config)
    return IngestConfig.from_json(config)


def _write_json_atomically(path: str, value: Dict[str, Any]) -> None:
    atomic_write(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def run_ingest(input_base: Optional[str], config: Union[str, Dict[str, Any], IngestConfig], output_dir: str,
               beam_pipeline_args: Optional[Sequence[str]] = None, *,
               make_pipeline: Optional[Callable[[], beam.Pipeline]] = None,
               user_output_dir: Optional[str] = None) -> Dict[str, Any]:
    """Reads the dataset's files and writes `output_dir/Split-{train,eval,test}` and the report.

    `preflight.preflight` runs first (files, columns, empty tables, behaviors the tasks
    need), before any Beam work. Everything is written under a temporary directory inside
    `output_dir` and moved into place only when the run succeeded, the bad rows are within
    `max_bad_rows` and every declared task has training positives
    (`preflight.check_training_positives`); on any failure no Split-* directory is left behind.

    Args:
      input_base: the data directory the description's paths are relative to (None or '':
        the description's data_dir).
      config: an IngestConfig, its JSON, or a dict of its fields.
      output_dir: local directory to write into (created when missing; must not hold splits yet).
      beam_pipeline_args: Beam options; default: the in-memory DirectRunner.
      make_pipeline: builds the Beam pipeline instead (the TFX executor passes its own); wins over
        beam_pipeline_args.
      user_output_dir: where the user view's `Split-*` go (same rules); None skips publishing it.

    Returns:
      The report also written to `output_dir/ingest_report.json`.
    """
    start = time.monotonic()
    config = _as_config(config)
    paths = inmemory.input_paths(input_base, config)
    os.makedirs(output_dir, exist_ok=True)
    for out in [output_dir] + ([user_output_dir] if user_output_dir else []):
        os.makedirs(out, exist_ok=True)
        existing = [name for name in os.listdir(out)
                    if name.startswith(SPLIT_DIR_PREFIX) or name == report.REPORT_FILE]
        if existing:
            raise FileExistsError(f"output directory {out} already holds {sorted(existing)}")

    work_dir = tempfile.mkdtemp(prefix=TMP_PREFIX, dir=output_dir)
    moved: List[str] = []
    try:
        if make_pipeline is not None:
            pipeline = make_pipeline()
        else:
            args = list(DEFAULT_BEAM_ARGS if beam_pipeline_args is None else beam_pipeline_args)
            pipeline = beam.Pipeline(options=PipelineOptions(args))
        build_pipeline(pipeline, paths, config, work_dir)
        pipeline.run().wait_until_finish()

        bad = _read_json(os.path.join(work_dir, _BAD_FILE))
        stats = _read_json(os.path.join(work_dir, _STATS_FILE))
        report.check_bad_rows(bad, config.max_bad_rows)
        preflight.check_training_positives(config.spec, inmemory.build_report(config, paths, stats, bad))
        if bad["total"]:
            logging.warning("dropped %d bad input rows (limit %d): %s", bad["total"], config.max_bad_rows,
                            "; ".join(bad["first"]))
        publish = [(work_dir, output_dir)]
        if user_output_dir:
            publish.append((os.path.join(work_dir, USER_VIEW_DIR), user_output_dir))
        for source_dir, out in publish:
            for split in SPLIT_NAMES:
                source = split_dir(source_dir, split)
                os.makedirs(source, exist_ok=True)
                os.rename(source, split_dir(out, split))
                moved.append(split_dir(out, split))
        result = inmemory.build_report(config, paths, stats, bad, time.monotonic() - start)
        _write_json_atomically(os.path.join(output_dir, report.REPORT_FILE), result)
    except BaseException:
        for path in moved:
            shutil.rmtree(path, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    logging.info("ingest wrote %s to %s", result["rows_written"], output_dir)
    return result
