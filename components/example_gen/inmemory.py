"""The ingest without Beam: input paths, loading a whole log into memory, and report assembly.

The Beam pipeline in `beam_pipeline` does the same steps distributed; this
module is what tests and quick counts use, and it shares every data rule with
the pipeline through `parsing` and `histories`.
"""

from __future__ import annotations

import os
from typing import Dict, List, Mapping, NamedTuple, Optional, Tuple

from components.example_gen import histories, parsing, report
from components.example_gen.config import SPLIT_NAMES, IngestConfig
from components.example_gen.histories import Catalogue, ExampleRecord
from components.example_gen.parsing import BadRow, Interaction
from contract import datasets

INTERACTIONS = "interactions"
ITEMS = "items"


def input_paths(input_base: str, config: IngestConfig) -> Dict[str, str]:
    """The files to read, by kind (`interactions`, `items`); raises FileNotFoundError naming a missing one.

    Args:
      input_base: the directory holding the files.
      config: names the files.
    """
    if not os.path.isdir(input_base):
        raise FileNotFoundError(f"input_base is not a directory: {input_base}")
    paths = {INTERACTIONS: os.path.join(input_base, config.interactions)}
    if config.items is not None:
        paths[ITEMS] = os.path.join(input_base, config.items)
    for kind, path in paths.items():
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{kind} file not found: {path}")
    return paths


class LoadedInputs(NamedTuple):
    """A parsed log: good rows, bad rows, the item catalogue, and data rows read per file kind."""

    interactions: List[Interaction]
    bad_rows: List[BadRow]
    catalogue: Catalogue
    rows_read: Dict[str, int]


def load_inputs(input_base: str, config: IngestConfig) -> LoadedInputs:
    """Parses the configured files into memory.

    Args:
      input_base: the directory holding the files.
      config: the ingest config.
    """
    paths = input_paths(input_base, config)
    bad_rows: List[BadRow] = []
    rows_read = {kind: 0 for kind in paths}
    interactions: List[Interaction] = []
    for parsed in parsing.read_interactions(paths[INTERACTIONS], config.dataset):
        rows_read[INTERACTIONS] += 1
        (bad_rows if isinstance(parsed, BadRow) else interactions).append(parsed)
    if config.dataset == datasets.MOVIELENS.name:
        items = {}
        for parsed in parsing.read_items(paths[ITEMS], config.dataset):
            rows_read[ITEMS] += 1
            if isinstance(parsed, BadRow):
                bad_rows.append(parsed)
            else:
                items[parsed[0]] = parsed[1]
        catalogue = Catalogue(items)
    else:
        catalogue = histories.taobao_catalogue(interactions)
    return LoadedInputs(interactions, bad_rows, catalogue, rows_read)


def build_report(config: IngestConfig, paths: Mapping[str, str], stats: Mapping[str, object],
                 bad: Mapping[str, object], elapsed_seconds: Optional[float] = None) -> Dict[str, object]:
    """The ingest report (the content of ingest_report.json).

    Args:
      config: the ingest config.
      paths: input files by kind.
      stats: summed counts: `rows_read` by file kind plus the stats of `histories`.
      bad: a `report.bad_summary` result.
      elapsed_seconds: wall time of the run, when measured.
    """
    def per_split(key: str) -> Dict[str, int]:
        counts = stats.get(key, {})
        return {split: int(counts.get(split, 0)) for split in SPLIT_NAMES}

    positives = per_split(histories.STAT_POSITIVES)
    negatives = per_split(histories.STAT_NEGATIVES)
    labels = stats.get(histories.STAT_LABEL_POSITIVES, {})
    rows_read = stats.get("rows_read", {})
    out: Dict[str, object] = {
        "dataset": config.dataset,
        "split": config.split,
        "config": config.to_json(),
        "input_files": dict(paths),
        "rows_read": {kind: int(rows_read.get(kind, 0)) for kind in paths},
        "users": int(stats.get(histories.STAT_USERS, 0)),
        "rows_written": {split: positives[split] + negatives[split] for split in SPLIT_NAMES},
        "positives_written": positives,
        "negatives_written": negatives,
        "negatives_total": sum(negatives.values()),
        "label_positives": {split: dict(sorted(labels.get(split, {}).items())) for split in SPLIT_NAMES},
        "dropped_after_test_day": int(stats.get(histories.STAT_DROPPED, 0)),
        "bad_rows": dict(bad, max_bad_rows=config.max_bad_rows),
    }
    if elapsed_seconds is not None:
        out["elapsed_seconds"] = round(elapsed_seconds, 3)
    return out


def ingest_in_memory(input_base: str, config: IngestConfig) -> Tuple[List[ExampleRecord], Dict[str, object]]:
    """The whole ingest in memory, without writing: (example records, report).

    Applies the same bad-row limit as `run_ingest`.

    Args:
      input_base: the directory holding the files.
      config: the ingest config.
    """
    loaded = load_inputs(input_base, config)
    examples, user_bad, stats = histories.build_examples(loaded.interactions, config, loaded.catalogue)
    histories.merge_stats(stats, {"rows_read": loaded.rows_read})
    bad = report.summarize_bad_rows(loaded.bad_rows + user_bad)
    report.check_bad_rows(bad, config.max_bad_rows)
    return examples, build_report(config, input_paths(input_base, config), stats, bad)
