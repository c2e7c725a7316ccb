"""The ingest without Beam: input files, loading a whole log into memory, and report assembly.

The Beam pipeline in `beam_pipeline` does the same steps distributed; this module is
what tests and quick counts use, and it shares every data rule with the pipeline
through `readers`, `parsing` and `histories`.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from components.example_gen import histories, parsing, preflight, report
from components.example_gen.config import SPLIT_NAMES, IngestConfig
from components.example_gen.histories import Catalogue, ExampleRecord, FeatureDict
from components.example_gen.parsing import BadRow, Interaction

INTERACTIONS = preflight.INTERACTIONS
ITEMS = preflight.ITEMS
USERS = preflight.USERS


def data_dir_of(input_base: Optional[str], config: IngestConfig) -> str:
    """The data directory: `input_base` when given, else the description's data_dir; ValueError
    when neither names one."""
    data_dir = input_base or config.data_dir
    if not data_dir:
        raise ValueError(f"no data directory for dataset {config.spec.name!r}: pass one (input_base, --data_dir) "
                         f"or set data_dir in its description")
    return data_dir


def input_paths(input_base: Optional[str], config: IngestConfig) -> Dict[str, List[str]]:
    """The files to read, by kind (`interactions`, and `items` / `users` when declared), after
    the preflight checks (`preflight.preflight`).

    Args:
      input_base: the data directory (None: the description's data_dir).
      config: the ingest config.
    """
    return preflight.preflight(config.spec.description, data_dir_of(input_base, config)).files


class LoadedInputs(NamedTuple):
    """A parsed log: good rows, bad rows, the item catalogue, user features and data rows read per kind."""

    interactions: List[Interaction]
    bad_rows: List[BadRow]
    catalogue: Catalogue
    rows_read: Dict[str, int]
    users: Optional[Dict[str, FeatureDict]] = None


def load_inputs(input_base: Optional[str], config: IngestConfig,
                paths: Optional[Mapping[str, Sequence[str]]] = None) -> LoadedInputs:
    """Parses the description's files into memory.

    Args:
      input_base: the data directory (None: the description's data_dir).
      config: the ingest config.
      paths: the files by kind, when already checked (see `input_paths`).
    """
    d = config.spec.description
    paths = paths if paths is not None else input_paths(input_base, config)
    bad_rows: List[BadRow] = []
    rows_read = {kind: 0 for kind in paths}
    interactions: List[Interaction] = []
    parser = parsing.InteractionParser(d)
    for path in paths[INTERACTIONS]:
        for parsed in parsing.read_interactions(path, d, parser):
            rows_read[INTERACTIONS] += 1
            (bad_rows if isinstance(parsed, BadRow) else interactions).append(parsed)
    tables: Dict[str, Dict[str, FeatureDict]] = {}
    for kind, features in ((ITEMS, d.item_features), (USERS, d.user_features)):
        if kind not in paths:
            continue
        good = []
        for parsed in parsing.read_table(paths[kind], d, kind):
            rows_read[kind] += 1
            (bad_rows if isinstance(parsed, BadRow) else good).append(parsed)
        tables[kind] = parsing.table_dict(good, features)
    if ITEMS in tables:
        catalogue = Catalogue(tables[ITEMS])
    else:
        catalogue = histories.catalogue_from_interactions(interactions, d)
    return LoadedInputs(interactions, bad_rows, catalogue, rows_read, tables.get(USERS))


def build_report(config: IngestConfig, paths: Mapping[str, Sequence[str]], stats: Mapping[str, object],
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
    settings = config.to_dict()
    settings.pop("description")
    out: Dict[str, object] = {
        "dataset": config.spec.name,
        "split": config.split,
        "config": settings,
        "input_files": {kind: list(files) for kind, files in paths.items()},
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


def ingest_in_memory(input_base: Optional[str], config: IngestConfig) -> Tuple[List[ExampleRecord], Dict[str, object]]:
    """The whole ingest in memory, without writing: (example records, report).

    Applies the same preflight checks, bad-row limit and training-positive check as
    `run_ingest`.

    Args:
      input_base: the data directory (None: the description's data_dir).
      config: the ingest config.
    """
    paths = input_paths(input_base, config)
    loaded = load_inputs(input_base, config, paths)
    examples, user_bad, stats = histories.build_examples(loaded.interactions, config, loaded.catalogue,
                                                         loaded.users)
    histories.merge_stats(stats, {"rows_read": loaded.rows_read})
    bad = report.summarize_bad_rows(loaded.bad_rows + user_bad)
    report.check_bad_rows(bad, config.max_bad_rows)
    result = build_report(config, paths, stats, bad)
    preflight.check_training_positives(config.spec, result)
    return examples, result
