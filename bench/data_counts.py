"""Split counts of the real data, as the README's split table quotes them.

MovieLens is shipped (data/movielens-small); the Taobao sample is not (its terms are
for research use): point `--taobao_dir` at a copy of `taobao-userbehavior-sample`.
Tests check the same rules on small synthetic logs; this command checks the real ones.

    python -m bench.data_counts --taobao_dir ../shared/data/taobao-userbehavior-sample
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from bench import common
from components.example_gen import inmemory
from contract import datasets as D
from components.example_gen.config import IngestConfig
from pipeline.configs import REPO_ROOT


def counts(input_base: str, config: IngestConfig) -> dict:
    _, report = inmemory.ingest_in_memory(input_base, config)
    return {"dataset": config.dataset, "split": config.split, "rows_read": report["rows_read"],
            "rows_written": report["rows_written"], "test_label_positives": report["label_positives"]["test"],
            "dropped_after_test_day": report["dropped_after_test_day"], "bad_rows": report["bad_rows"]["total"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--taobao_dir", default=os.path.join(str(REPO_ROOT.parent), "shared", "data",
                                                             "taobao-userbehavior-sample"))
    parser.add_argument("--out", default=common.RESULTS_DIR)
    args = parser.parse_args(argv)
    movielens = os.path.join(str(REPO_ROOT), "data", "movielens-small")
    rows = [counts(movielens, IngestConfig.movielens(split=s)) for s in (D.HASH_SPLIT, D.LEAVE_LAST_TWO_OUT_SPLIT)]
    if os.path.isdir(args.taobao_dir):
        rows.append(counts(args.taobao_dir, IngestConfig.taobao()))
    else:
        print(f"no Taobao sample at {args.taobao_dir}: MovieLens only", file=sys.stderr)
    command = "python -m bench.data_counts " + " ".join(argv if argv is not None else sys.argv[1:])
    table = [{"dataset": r["dataset"], "split": r["split"], **r["rows_written"],
              "test positives": json.dumps(r["test_label_positives"])} for r in rows]
    markdown = "# Split counts of the real data\n\n" + common.md_table(
        table, ["dataset", "split", "train", "eval", "test", "test positives"])
    common.write_results("data_counts", rows, markdown, {"command": command.strip(),
                                                         "machine": json.dumps(common.machine())}, args.out)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
