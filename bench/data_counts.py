"""Split counts of the real data, as the README's split table quotes them.

Each `--datasets` entry is a dataset description (a shipped name or a file) and, after a
colon, a split method (default: the description's). Its data is its description's data_dir
or `--data_dir DATASET=DIR`; a dataset whose data is not there is left out with a note.
MovieLens is shipped (data/movielens-small); the Taobao sample is not (its terms are for
research use): point `--data_dir taobao=DIR` at a copy of `taobao-userbehavior-sample`.
Tests check the same rules on small synthetic logs; this command checks the real ones.

    python -m bench.data_counts --data_dir taobao=../shared/data/taobao-userbehavior-sample
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from bench import common
from components.example_gen import inmemory
from components.example_gen.config import IngestConfig
from pipeline.configs import PipelineConfig

DATASETS = "movielens:hash,movielens:leave_last_two_out,taobao"  # the README's split table


def counts(config: PipelineConfig) -> dict:
    """ExampleGen's in-memory ingest of a resolved config's data: rows read and written per split."""
    _, report = inmemory.ingest_in_memory(config.data_dir, IngestConfig.from_dict(config.ingest_config()))
    return {"dataset": config.dataset_name, "split": config.split, "rows_read": report["rows_read"],
            "rows_written": report["rows_written"], "test_label_positives": report["label_positives"]["test"],
            "dropped_after_test_day": report["dropped_after_test_day"], "bad_rows": report["bad_rows"]["total"]}


def main(argv=None) -> int:
    from bench.multitask import keyed, per_dataset

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=DATASETS, help="comma-separated DATASET[:SPLIT] entries")
    parser.add_argument("--data_dir", action="append", default=[], metavar="DATASET=DIR",
                        help="the data of a dataset (repeatable; default: its description's data_dir)")
    parser.add_argument("--out", default=common.RESULTS_DIR)
    args = parser.parse_args(argv)
    dirs = per_dataset(args.data_dir, "--data_dir")
    rows = []
    for entry in filter(None, args.datasets.split(",")):
        dataset, _, split = entry.partition(":")
        config = dataclasses.replace(PipelineConfig(), dataset=dataset, split=split or None,
                                     data_dir=keyed(dirs, dataset))
        try:
            config = config.resolved()
        except ValueError as e:
            print(f"{entry}: left out: {e}", file=sys.stderr)
            continue
        if not os.path.isdir(config.data_dir):
            print(f"{entry}: left out: no data at {config.data_dir}", file=sys.stderr)
            continue
        rows.append(counts(config))
    command = common.command_line("bench.data_counts", argv)
    table = [{"dataset": r["dataset"], "split": r["split"], **r["rows_written"],
              "test positives": json.dumps(r["test_label_positives"])} for r in rows]
    markdown = "# Split counts of the real data\n\n" + common.md_table(
        table, ["dataset", "split", "train", "eval", "test", "test positives"])
    common.write_results("data_counts", rows, markdown, {"command": command,
                                                         "machine": json.dumps(common.machine())}, args.out)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
