"""The ingest as one Beam pipeline, and `run_ingest`, which runs it and publishes the output atomically.

Shape: file paths -> per-file parse (good rows / bad rows / counts) -> good rows
keyed by user -> GroupByKey -> per-user examples (item catalogue as a side
input) -> Partition by split -> GZIP TFRecords per split. Bad rows and counts
are combined into single JSON records that `run_ingest` reads after the run.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.options.pipeline_options import PipelineOptions

from components.example_gen import encoding, histories, inmemory, parsing, report
from components.example_gen.config import SPLIT_NAMES, IngestConfig
from components.example_gen.histories import Catalogue
from components.example_gen.parsing import BadRow, Interaction, ItemMeta
from contract import datasets
from common.io_utils import atomic_write

SPLIT_DIR_PREFIX = "Split-"
FILE_PREFIX = "data_tfrecord"
FILE_SUFFIX = ".gz"
TMP_PREFIX = ".ingest-tmp-"
DEFAULT_BEAM_ARGS = ("--runner=DirectRunner", "--direct_running_mode=in_memory", "--direct_num_workers=1")

_BAD = "bad"
_STATS = "stats"
_ITEMS = "items"
_USERS = "users"
USER_VIEW_DIR = "user_view"  # under the work dir: the user view's Split-* directories
_BAD_FILE = "_bad_rows.json"
_STATS_FILE = "_stats.json"


def split_dir(output_dir: str, split: str) -> str:
    """`<output_dir>/Split-<split>`, where a split's TFRecord files are written."""
    return os.path.join(output_dir, SPLIT_DIR_PREFIX + split)


@beam.typehints.with_output_types(Tuple[str, tuple])
class ParseFileDoFn(beam.DoFn):
    """Parses one input file (kind, path): good rows keyed by user, items, bad rows, and rows read."""

    def __init__(self, dataset: str):
        self._dataset = dataset

    def process(self, element):
        kind, path = element
        count = 0
        if kind == inmemory.INTERACTIONS:
            for parsed in parsing.read_interactions(path, self._dataset):
                count += 1
                if isinstance(parsed, BadRow):
                    yield beam.pvalue.TaggedOutput(_BAD, tuple(parsed))
                else:
                    yield parsed.user_id, tuple(parsed)
        else:
            for parsed in parsing.read_items(path, self._dataset):
                count += 1
                if isinstance(parsed, BadRow):
                    yield beam.pvalue.TaggedOutput(_BAD, tuple(parsed))
                else:
                    item_id, meta = parsed
                    yield beam.pvalue.TaggedOutput(_ITEMS, (item_id, tuple(meta)))
        yield beam.pvalue.TaggedOutput(_STATS, {"rows_read": {kind: count}})


@beam.typehints.with_output_types(Tuple[int, bytes])
class UserExamplesDoFn(beam.DoFn):
    """Builds one user's serialized examples as (split index, bytes), plus bad rows and counts."""

    def __init__(self, config_json: str):
        self._config_json = config_json
        self._config: Optional[IngestConfig] = None

    def setup(self):
        self._config = IngestConfig.from_json(self._config_json)

    def process(self, element, catalogue: Catalogue):
        user_id, rows = element
        result = histories.build_user_examples(
            user_id, (Interaction(*row) for row in rows), self._config, catalogue)
        for record in result.examples:
            yield SPLIT_NAMES.index(record.split), encoding.serialize(record.features)
        for record in result.user_examples:
            yield beam.pvalue.TaggedOutput(_USERS, (SPLIT_NAMES.index(record.split),
                                                    encoding.serialize(record.features)))
        for bad in result.bad_rows:
            yield beam.pvalue.TaggedOutput(_BAD, tuple(bad))
        yield beam.pvalue.TaggedOutput(_STATS, histories.merge_stats({}, result.stats))


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


def _catalogue_from_items(items: Iterable) -> Catalogue:
    return Catalogue({item_id: ItemMeta(tuple(genres), year) for item_id, (genres, year) in items})


def _taobao_first_row(keyed_row):
    _, row = keyed_row
    row = Interaction(*row)
    return row.item_id, (row.timestamp, row.file, row.line, row.category)


def _taobao_item(item_and_first):
    item_id, (_, _, _, category) = item_and_first
    return item_id, tuple(parsing.taobao_item_meta(category))


def build_pipeline(pipeline: beam.Pipeline, paths: Dict[str, str], config: IngestConfig, work_dir: str) -> None:
    """Adds the ingest to `pipeline`: splits under `work_dir/Split-*`, summaries in `work_dir`.

    Args:
      pipeline: the Beam pipeline to extend.
      paths: input files by kind (see `inmemory.input_paths`).
      config: the ingest config.
      work_dir: directory that receives the outputs.
    """
    parsed = (
        pipeline
        | "InputFiles" >> beam.Create(sorted(paths.items()))
        | "ParseFiles" >> beam.ParDo(ParseFileDoFn(config.dataset)).with_outputs(_BAD, _STATS, _ITEMS, main="rows"))
    rows = parsed.rows

    if config.dataset == datasets.MOVIELENS.name:
        items = parsed[_ITEMS]
    else:
        items = (
            rows
            | "ItemFirstRow" >> beam.Map(_taobao_first_row)
            | "EarliestRowPerItem" >> beam.CombinePerKey(min)
            | "ItemCategory" >> beam.Map(_taobao_item))
    catalogue = (
        items
        | "CollectItems" >> beam.combiners.ToList()
        | "Catalogue" >> beam.Map(_catalogue_from_items))

    users = (
        rows
        | "GroupByUser" >> beam.GroupByKey()
        | "UserExamples" >> beam.ParDo(
            UserExamplesDoFn(config.to_json()), catalogue=beam.pvalue.AsSingleton(catalogue)
        ).with_outputs(_BAD, _STATS, _USERS, main="examples"))

    for view, examples, out_dir in (("", users.examples, work_dir),
                                    ("Users", users[_USERS], os.path.join(work_dir, USER_VIEW_DIR))):
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


def run_ingest(input_base: str, config: Union[str, Dict[str, Any], IngestConfig], output_dir: str,
               beam_pipeline_args: Optional[Sequence[str]] = None, *,
               make_pipeline: Optional[Callable[[], beam.Pipeline]] = None,
               user_output_dir: Optional[str] = None) -> Dict[str, Any]:
    """Reads the log under `input_base` and writes `output_dir/Split-{train,eval,test}` and the report.

    Everything is written under a temporary directory inside `output_dir` and
    moved into place only when the run succeeded and the bad rows are within
    `max_bad_rows`; on any failure no Split-* directory is left behind.

    Args:
      input_base: directory holding the configured files.
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
