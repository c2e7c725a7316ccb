"""Trains one family once and prints its protocol S metrics on the eval and test splits.

A quick check of a sequential (or any retrieving) family on the data stages of a
pipeline run with `--split leave_last_two_out`; the multi-seed benchmark with peers is
bench/sequential.py. The Trainer's own code trains (early stopping on the eval split's
full NDCG@10); the metrics are evaluation.definitions' through training.topk.

    python -m pipeline.local_runner --split leave_last_two_out --families none --output_dir /tmp/s
    python -m training.protocol_s --run_dir /tmp/s --dataset NAME_OR_FILE --family sasrec \
        [--hparam softmax=sampled] [--out FILE]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow_transform as tft  # noqa: E402

from common.io_utils import atomic_write  # noqa: E402
from contract import datasets as D  # noqa: E402
from contract import features as F  # noqa: E402
from contract import run  # noqa: E402
from models.hparams import parse_assignments  # noqa: E402
from training import topk  # noqa: E402
from training.trainer import TrainConfig, train  # noqa: E402
from training.views import ItemRows, load_user_view  # noqa: E402


def _newest(run_dir: str, component: str, output: str) -> str:
    runs = glob.glob(os.path.join(run_dir, "pipeline_root", component, output, "*"))
    runs = [r for r in runs if os.path.basename(r).isdigit()]
    if not runs:
        raise FileNotFoundError(f"no {component} output {output!r} under {run_dir}/pipeline_root: run the data "
                                f"stages first (python -m pipeline.local_runner --split leave_last_two_out "
                                f"--families none --output_dir {run_dir})")
    return max(runs, key=lambda r: int(os.path.basename(r)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run_dir", required=True, help="output_dir of a pipeline run (leave_last_two_out)")
    parser.add_argument("--family", required=True)
    parser.add_argument("--dataset", required=True,
                        help="the run's dataset: a shipped description's name or a description file")
    parser.add_argument("--hparam", action="append", default=[], help="NAME=VALUE, repeatable")
    parser.add_argument("--max_history", type=int, default=F.MAX_HISTORY)
    parser.add_argument("--seed", type=int, default=run.SEED)
    parser.add_argument("--out", help="also write the result as JSON here")
    args = parser.parse_args(argv)
    users = _newest(args.run_dir, "InteractionExampleGen", "user_examples")
    graph = _newest(args.run_dir, "Transform", "transform_graph")
    hparams = parse_assignments([f"{args.family}.{h}" for h in args.hparam]).get(args.family, {})
    spec = D.dataset_spec(args.dataset)
    config = TrainConfig(family=args.family, description=spec.to_dict(), hparams=hparams, max_history=args.max_history,
                         seed=args.seed, tasks=(D.RETRIEVAL_TASK,), split=D.LEAVE_LAST_TWO_OUT_SPLIT)
    files = {s: [os.path.join(users, f"Split-{s}", "*")] for s in ("train", "eval", "test")}
    started = time.monotonic()
    model, summary, valid = train(config, files["train"], files["eval"], graph)
    rows = ItemRows(tft.TFTransformOutput(graph).vocabulary_by_name(F.ITEM_VOCAB),
                    spec.behaviors)
    result = {
        "command": "python -m training.protocol_s " + " ".join(sys.argv[1:] if argv is None else argv),
        "family": args.family, "dataset": spec.name, "split": D.LEAVE_LAST_TWO_OUT_SPLIT, "seed": args.seed,
        "max_history": args.max_history, "hparams": summary["hparams"], "epochs_run": summary["epochs_run"],
        "best_epoch": summary["best_epoch"], "train_seconds": summary["train_seconds"],
    }
    for split in ("eval", "test"):
        view = load_user_view(sorted(glob.glob(files[split][0])), rows)
        metrics = topk.evaluate_next_item(topk.model_scores(model), view, args.max_history, valid)
        result[split] = {name: round(value, 4) for name, value in metrics.items()}
    result["seconds"] = round(time.monotonic() - started, 1)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        atomic_write(args.out, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
